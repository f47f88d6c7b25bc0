"""Short clips made in code: a camera pan across a photo, with a sine tone.

Tests, the benchmark and demos need real-looking motion without committing media: a crop window
gliding (and slowly zooming) across a still photo gives true, known parallax-free motion that
optical flow can follow, and the tone gives an audio stream to check for.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

TONE_HZ = 440.0
SAMPLE_RATE = 48_000


def pan_frames(
    photo: np.ndarray, frames: int, size: tuple[int, int], *, zoom: float = 0.1
) -> list[np.ndarray]:
    """`frames` crops of `photo` (HxWx3 uint8) of `size` (w, h), panning left to right."""
    image = Image.fromarray(photo)
    width, height = size
    base = min(image.width / (width * (1 + zoom)), image.height / height)
    out = []
    for index in range(frames):
        t = index / max(frames - 1, 1)
        scale = base * (1.0 - zoom * t)
        crop_w, crop_h = width * scale, height * scale
        left = t * (image.width - crop_w)
        top = (image.height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        out.append(np.asarray(image.resize(size, Image.Resampling.BILINEAR, box=box)))
    return out


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 25,
    *,
    audio: bool = True,
    codec: str = "libx264",
) -> None:
    """Encode frames as MP4/MOV (H.264 + AAC) or WebM (VP9 + Opus), chosen by `codec`."""
    height, width = frames[0].shape[:2]
    audio_codec = "libopus" if codec == "libvpx-vp9" else "aac"
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        sound = out.add_stream(audio_codec, rate=SAMPLE_RATE) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for pixels in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(out, sound, len(frames) / fps)


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    samples = int(SAMPLE_RATE * seconds)
    tone = (0.2 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / SAMPLE_RATE)).astype(np.float32)
    block = 960
    for start in range(0, samples, block):
        piece = tone[None, start : start + block]
        frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_animation(
    path: Path, frames: list[np.ndarray], durations_ms: list[int], fmt: str = "GIF"
) -> None:
    """An animated GIF or WebP with per-frame durations."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(
        path, fmt, save_all=True, append_images=images[1:], duration=durations_ms, loop=0
    )


def main() -> None:
    """`python -m app.video.synthetic clip.mp4 [--photo P] [--seconds 10] [--size 854x480]`."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a pan-across-a-photo clip with a tone.")
    parser.add_argument("output", type=Path)
    parser.add_argument("--photo", type=Path, default=None, help="default: the reference photo")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", default="854x480", help="width x height")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    photo = args.photo or Path(__file__).resolve().parents[1] / "styles" / "reference.jpg"
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    frames = pan_frames(pixels, round(args.seconds * args.fps), (width, height))
    codec = "libvpx-vp9" if args.output.suffix.lower() == ".webm" else "libx264"
    write_clip(args.output, frames, args.fps, codec=codec)
    print(f"{args.output}: {len(frames)} frames, {width}x{height}, {args.fps} fps, with a tone")


if __name__ == "__main__":
    main()
