"""`atelier stylize`: the predict pipeline on local files, without HTTP.

Inputs are told apart by content, not name: a video (MP4, MOV, WebM) or an animated GIF/WebP
goes through the video engine with a progress bar, a still image through the instant path.
"""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm import tqdm

from app.core.config import get_settings
from app.core.number_lists import blend_weights
from app.imaging.decode import ImageRejected
from app.imaging.encode import OutputFormat
from app.serving.predict import PredictOptions, painting_style, predict_bytes
from app.serving.service import Service
from app.styles.catalog import InvalidBlend, UnknownStyle
from app.video.encode import VideoFormat
from app.video.pipeline import VideoOptions, VideoProgress, plan, stylize_video
from app.video.probe import VideoLimits, is_animated
from app.video.stylizer import FrameStylizer

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".heic",
    ".heif",
    ".avif",
    ".gif",
    ".tif",
    ".tiff",
    ".bmp",
}
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv"}


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Expand folders to the images they hold, in name order."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
            files.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in suffixes))
        else:
            files.append(item)
    return files


def stylize_files(
    inputs: list[Path],
    *,
    style: str | None,
    output: Path,
    max_size: int | None,
    strength: float,
    preserve_color: bool,
    fmt: str,
    style_images: list[Path] | None = None,
    style_weights: str | None = None,
    stabilize: float | None = None,
) -> int:
    """Stylize each input; returns the exit code (0 all good, 1 some failed, 2 bad usage)."""
    try:
        output_format = OutputFormat(fmt.lower())
    except ValueError:
        typer.echo(f"error: format must be jpeg, png, webp or avif, not {fmt!r}", err=True)
        return 2
    files = collect_inputs(inputs)
    if not files:
        typer.echo("error: no input images found", err=True)
        return 2
    settings = get_settings()
    service = Service(settings)
    service.load(warmup=False)
    assert service.runner is not None
    paintings = style_images or []
    try:
        weights = blend_weights(style_weights, len(paintings))
        painting_bytes = tuple(path.read_bytes() for path in paintings)
        choice = None if paintings else service.catalog.resolve(style or service.default_style)
    except (UnknownStyle, InvalidBlend, ValueError, OSError) as exc:
        hint = f"; available: {', '.join(exc.available)}" if isinstance(exc, UnknownStyle) else ""
        typer.echo(f"error: {exc}{hint}", err=True)
        return 2
    if max_size is None:
        max_size = settings.default_max_size
    elif max_size == 0:
        # Full size: the largest side allowed; ATELIER_MAX_PIXELS still bounds the area.
        max_size = settings.max_size_limit
    elif max_size > settings.max_size_limit:
        typer.echo(
            f"error: --max-size {max_size} exceeds ATELIER_MAX_SIZE_LIMIT "
            f"({settings.max_size_limit}); 0 = full size",
            err=True,
        )
        return 2
    options = PredictOptions(
        choice=choice,
        max_size=max_size,
        strength=strength,
        keep_colors=preserve_color,
        output=output_format,
        style_images=painting_bytes,
        style_weights=weights,
    )
    single = len(files) == 1 and output.suffix != ""
    if not single:
        output.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in files:
        if is_animated(path):
            try:
                stylize_clip(service, path, output, options, stabilize, into_folder=not single)
            except (OSError, ValueError) as exc:
                typer.echo(f"{path}: {exc}", err=True)
                failures += 1
            continue
        target = output if single else output / f"{path.stem}.{output_format.value}"
        try:
            result = predict_bytes(
                service.runner,
                path.read_bytes(),
                options,
                max_pixels=settings.max_pixels,
                min_side=settings.min_side,
            )
        except (OSError, ImageRejected) as exc:
            typer.echo(f"{path}: {exc}", err=True)
            failures += 1
            continue
        target.write_bytes(result.data)
        typer.echo(
            f"{path} -> {target} ({result.width}x{result.height}, {result.inference_ms:.0f} ms)"
        )
    return 1 if failures else 0


def stylize_clip(
    service: Service,
    path: Path,
    output: Path,
    options: PredictOptions,
    stabilize: float | None,
    *,
    into_folder: bool,
) -> None:
    """One video or animation through the video engine, with a frames progress bar.

    `output` is the target file (its suffix picks mp4/webm/gif/webp) or, `into_folder`, the
    folder that gets `<name>.mp4` (or .gif/.webp for animations).
    """
    settings = service.settings
    runner = service.runner
    assert runner is not None
    choice = options.choice
    if options.style_images:
        choice = painting_style(
            runner, options.style_images, options.style_weights, max_pixels=settings.max_pixels
        )
    assert choice is not None
    requested = "" if into_folder else output.suffix.lower().lstrip(".")
    if requested and requested not in set(VideoFormat):
        raise ValueError(f"a clip's output must end in .mp4, .webm, .gif or .webp, not {output}")
    video_options = VideoOptions(
        limits=VideoLimits.from_settings(settings),
        max_size=options.max_size,
        output=VideoFormat(requested) if requested in set(VideoFormat) else None,
        stabilize=settings.video_default_stabilize if stabilize is None else stabilize,
        chunk_frames=settings.video_chunk_frames,
    )
    info, fmt = plan(path, video_options)
    target = output / f"{path.stem}.{fmt.value}" if into_folder else output
    stylizer = FrameStylizer(
        runner, choice, strength=options.strength, keep_colors=options.keep_colors
    )
    with tqdm(total=info.frames, unit="frame", desc=path.name) as bar:

        def advance(progress: VideoProgress) -> None:
            bar.total = max(bar.total or 0, progress.total)
            bar.update(progress.frames_done - bar.n)

        summary = stylize_video(path, target, stylizer, video_options, on_progress=advance)
    typer.echo(f"{path} -> {target} ({summary.width}x{summary.height}, {summary.frames} frames)")
