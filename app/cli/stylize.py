"""`atelier stylize`: the predict pipeline on local files, without HTTP."""

from __future__ import annotations

from pathlib import Path

import typer

from app.config import get_settings
from app.imaging.decode import ImageRejected
from app.imaging.encode import OutputFormat
from app.inference.predict import PredictOptions, predict_bytes
from app.service import Service
from app.styles.catalog import InvalidBlend, UnknownStyle

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Expand folders to the images they hold, in name order."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
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
) -> int:
    """Stylize each input; returns the exit code (0 all good, 1 some failed, 2 bad usage)."""
    try:
        output_format = OutputFormat(fmt.lower())
    except ValueError:
        typer.echo(f"error: format must be jpeg, png or webp, not {fmt!r}", err=True)
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
    weights = None
    try:
        if style_weights is not None:
            weights = tuple(float(part) for part in style_weights.split(","))
            if len(weights) != len(paintings) or min(weights) < 0 or sum(weights) <= 0:
                raise ValueError("one non-negative weight per --style-image, not all zero")
        painting_bytes = tuple(path.read_bytes() for path in paintings)
        choice = None if paintings else service.catalog.resolve(style or service.default_style)
    except (UnknownStyle, InvalidBlend, ValueError, OSError) as exc:
        hint = f"; available: {', '.join(exc.available)}" if isinstance(exc, UnknownStyle) else ""
        typer.echo(f"error: {exc}{hint}", err=True)
        return 2
    options = PredictOptions(
        choice=choice,
        max_size=max_size or settings.default_max_size,
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
