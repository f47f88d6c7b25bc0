"""Video benchmark: throughput per engine and size, and temporal stability with and without the
flow stabilizer, in one run on this machine.

    python bench/video.py [--frames 24] [--sizes 256,512,1024] [--out bench-video.md]

Part 1 (throughput): the whole job pipeline (decode, stylize, stabilize, encode in chunks, mux)
on a short pan clip, frames per second, for each engine at each long side.
Part 2 (stability): pan-and-zoom clips across two photos, stylized per frame once per style,
then stabilized at several weights. For each: the temporal warping error (Farneback flow on the
source, 0..1 scale; the source clip's own value is the floor), the Gram distance to the plain
per-frame output (does the style stay?) and the sharpness relative to per-frame output (does it
blur?).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.config import Settings
from app.imaging.encode import OutputFormat, encode_image
from app.serving.predict import painting_style
from app.serving.service import Service
from app.styles.catalog import StyleChoice
from app.video.live_frames import stylize_live_frame
from app.video.pipeline import VideoOptions, stylize_video
from app.video.probe import VideoLimits
from app.video.stabilize import Stabilizer
from app.video.stylizer import FrameStylizer
from app.video.synthetic import pan_frames, write_clip
from app.video.temporal import gram_distance, sharpness, warping_error

SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"
PHOTOS = ("tubingen.jpg", "golden_gate.jpg")
PAINTING = "starry_night.jpg"
BUILTIN_STYLES = ("starry-swirls", "crimson-fire")
WEIGHTS = (0.0, 0.5, 0.7, 0.85)
DEFAULT_WEIGHT = 0.7  # ATELIER_VIDEO_DEFAULT_STABILIZE
LIMITS = VideoLimits(10**9, 3600, 10**5, 10**8)


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(SHARED / "photos" / name).convert("RGB"))


def engines(service: Service) -> dict[str, StyleChoice]:
    """One style per engine that this install can run."""
    runner = service.runner
    assert runner is not None
    chosen: dict[str, StyleChoice] = {
        f"multistyle26 ({name})": service.catalog.resolve(name) for name in BUILTIN_STYLES
    }
    painting = (SHARED / "paintings" / PAINTING).read_bytes()
    chosen[f"arbitrary ({PAINTING})"] = painting_style(runner, (painting,), None, max_pixels=10**8)
    for style in service.catalog.all():
        if style.network.value == "transformer-net":
            chosen[f"transformer-net ({style.name})"] = service.catalog.resolve(style.name)
            break
    return chosen


def throughput(
    service: Service, choices: dict[str, StyleChoice], sizes: list[int], frames: int
) -> list[str]:
    rows = [
        "| engine | long side | frames/s, per frame | frames/s, stabilized |",
        "|---|---|---|---|",
    ]
    assert service.runner is not None
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            count = max(4, frames * 256 // size)
            clip = Path(folder) / f"pan-{size}.mp4"
            write_clip(clip, pan_frames(photo(PHOTOS[0]), count, (size, size * 9 // 16 // 2 * 2)))
            for label, choice in choices.items():
                cells = []
                for weight in (0.0, 0.7):
                    stylizer = FrameStylizer(service.runner, choice)
                    stylizer([np.zeros((32, 32, 3), np.uint8)])  # warm-up (ONNX session per size)
                    options = VideoOptions(LIMITS, max_size=size, stabilize=weight)
                    started = time.perf_counter()
                    stylize_video(clip, Path(folder) / "out.mp4", stylizer, options)
                    cells.append(f"{count / (time.perf_counter() - started):.2f}")
                rows.append(f"| {label} | {size} | {cells[0]} | {cells[1]} |")
                print(rows[-1], flush=True)
    return rows


def stability(service: Service, choices: dict[str, StyleChoice], frames: int) -> list[str]:
    assert service.runner is not None
    rows = [
        "| clip | engine | stabilize | warping error | vs per-frame | Gram distance "
        "to per-frame | sharpness vs per-frame |",
        "|---|---|---|---|---|---|---|",
    ]
    reductions = []
    for name in PHOTOS:
        sources = pan_frames(photo(name), frames, (384, 256), zoom=0.15)
        floor = warping_error(sources, sources)
        rows.append(f"| {name} | source (floor) | | {floor:.4f} | | | |")
        for label, choice in choices.items():
            plain = FrameStylizer(service.runner, choice)(sources)
            base_error = warping_error(sources, plain)
            base_sharpness = sharpness(plain)
            # Scale for the Gram column: the unstylized source is this far from the style.
            unstyled = gram_distance(sources, plain)
            rows.append(f"| {name} | {label} | unstylized source | | | {unstyled:.3f} | |")
            for weight in WEIGHTS:
                stabilizer = Stabilizer(weight)
                outputs = [stabilizer(s, p) for s, p in zip(sources, plain, strict=True)]
                error = warping_error(sources, outputs)
                change = error / base_error - 1.0
                if weight == DEFAULT_WEIGHT:
                    reductions.append(-change)
                gram = gram_distance(outputs, plain)
                sharp = sharpness(outputs) / base_sharpness
                rows.append(
                    f"| {name} | {label} | {weight} | {error:.4f} | {change:+.0%} | "
                    f"{gram:.3f} | {sharp:.2f} |"
                )
                print(rows[-1], flush=True)
    rows.append("")
    mean = float(np.mean(reductions))
    rows.append(f"Mean warping-error reduction at stabilize={DEFAULT_WEIGHT}: {mean:.0%}")
    return rows


def live(service: Service, frames: int) -> list[str]:
    """The live path's server side at 320x240: JPEG decode, stylize, JPEG encode, one client."""
    assert service.runner is not None
    camera = pan_frames(photo(PHOTOS[1]), frames, (320, 240))
    jpegs = [encode_image(frame, OutputFormat.jpeg, quality=80) for frame in camera]
    choice = service.catalog.resolve("starry-swirls")

    def one(data: bytes) -> None:
        stylize_live_frame(
            service.runner, data, choice, strength=1.0, keep_colors=False,
            max_size=640, max_pixels=10**8,
        )  # fmt: skip

    one(jpegs[0])
    started = time.perf_counter()
    for data in jpegs:
        one(data)
    fps = len(jpegs) / (time.perf_counter() - started)
    return [f"Live frames (320x240 JPEG in and out, starry-swirls): {fps:.1f} frames/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    service = Service(Settings(warmup=False))
    service.load(warmup=False)
    choices = engines(service)
    sizes = [int(s) for s in args.sizes.split(",")]
    lines = ["## Throughput (whole pipeline, MP4 out)", ""]
    lines += throughput(service, choices, sizes, args.frames)
    lines += ["", "## Temporal stability (384x256 pan-and-zoom clips)", ""]
    lines += stability(service, choices, args.frames)
    lines += ["", "## Live stream, server side", ""]
    lines += live(service, args.frames)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
