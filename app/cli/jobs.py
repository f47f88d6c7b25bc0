"""`atelier gatys` (run the optimisation on local files, no HTTP or database) and `atelier worker`
(serve queued jobs from the broker)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from app.core.config import get_settings
from app.core.number_lists import parse_numbers

if TYPE_CHECKING:
    import numpy as np

IMAGE_FORMATS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".webp": "webp",
    ".avif": "avif",
}


def gatys(
    content: Annotated[Path, typer.Argument(help="The photo to stylise.", exists=True)],
    styles: Annotated[
        list[Path], typer.Argument(help="One or more style images (paintings).", exists=True)
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Result file (.jpg, .png, .webp or .avif).")
    ] = Path("gatys.png"),
    iterations: Annotated[int, typer.Option(min=1, help="Objective evaluations.")] = 300,
    size: Annotated[int, typer.Option(min=16, help="Output long side in pixels.")] = 512,
    content_weight: Annotated[float | None, typer.Option(min=0.0)] = None,
    style_weight: Annotated[float | None, typer.Option(min=0.0)] = None,
    tv_weight: Annotated[float | None, typer.Option(min=0.0)] = None,
    optimizer: Annotated[str, typer.Option(help="lbfgs or adam.")] = "lbfgs",
    init: Annotated[str, typer.Option(help="content, noise or style.")] = "content",
    seed: Annotated[int | None, typer.Option(min=0, help="Fix for repeatable results.")] = None,
    style_scale: Annotated[float, typer.Option(help="Style size relative to the output.")] = 1.0,
    preserve_color: Annotated[str, typer.Option(help="none, luminance or histogram.")] = "none",
    style_weights: Annotated[
        str | None, typer.Option(help="Comma list, one weight per style image.")
    ] = None,
    scales: Annotated[
        str | None, typer.Option(help="Comma list of long sides, coarse to fine.")
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="auto, vgg19, vgg16 or efficientnet-lite0 (ATELIER_GATYS_BACKBONE)."),
    ] = None,
) -> None:
    """Stylise CONTENT with STYLES by Gatys optimisation, with a progress bar."""
    from tqdm import tqdm

    from app.core.device import configure_threads, select_device, uses_bf16
    from app.gatys.optimize import GatysOptions, Progress, run
    from app.imaging.decode import ImageRejected
    from app.imaging.encode import OutputFormat, encode_image
    from app.perceptual.backbones import BackboneUnavailable, load_backbone

    fmt = IMAGE_FORMATS.get(output.suffix.lower())
    if fmt is None:
        _fail(f"output must end in {', '.join(IMAGE_FORMATS)}, not {output.name!r}", code=2)
    settings = get_settings()
    try:
        options = GatysOptions(
            iterations=iterations,
            size=size,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            optimizer=optimizer,  # type: ignore[arg-type]  # validated by GatysOptions
            init=init,  # type: ignore[arg-type]
            seed=seed,
            style_scale=style_scale,
            preserve_color=preserve_color,  # type: ignore[arg-type]
            style_blend=_numbers(style_weights, float),
            scales=_numbers(scales, int),
        )
    except ValueError as exc:
        _fail(str(exc), code=2)
    try:
        content_pixels = _load(content, options.output_size, settings.max_pixels)
        style_side = max(16, round(options.output_size * options.style_scale))
        style_pixels = [_load(path, style_side, settings.max_pixels) for path in styles]
        configure_threads(settings.torch_threads, settings.torch_interop_threads)
        device = select_device(settings.device)
        net = load_backbone(
            backbone or settings.gatys_backbone,
            settings.models_dir,
            device,
            cache_dir=settings.cache_dir,
        )
    except (ImageRejected, BackboneUnavailable, RuntimeError, ValueError) as exc:
        _fail(str(exc))

    with tqdm(total=options.iterations, unit="it", desc=f"gatys {net.name} {device}") as bar:

        def on_progress(progress: Progress) -> None:
            bar.update(progress.iteration - bar.n)
            bar.set_postfix(
                content=f"{progress.content_loss:.3g}",
                style=f"{progress.style_loss:.3g}",
                tv=f"{progress.tv_loss:.3g}",
            )

        try:
            image = run(
                content_pixels,
                style_pixels,
                options,
                net,
                device=device,
                bf16=uses_bf16(settings.gatys_precision, device),
                on_progress=on_progress,
                tile_pixels=settings.gatys_tile_size**2,
            )
        except ValueError as exc:
            _fail(str(exc))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(encode_image(image, OutputFormat(fmt)))
    typer.echo(f"wrote {output} ({image.shape[1]}x{image.shape[0]})")


def worker(
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Job kind(s) whose queue this worker serves (gatys, training, video); "
            "repeat for several. Default: all.",
        ),
    ] = None,
) -> None:
    """Run queued jobs from ATELIER_BROKER_URL, one at a time (Celery, solo pool)."""
    from app.jobs.kinds import KINDS

    kinds = kind or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        _fail(f"unknown job kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}", code=2)
    settings = get_settings()
    if not settings.broker_url:
        _fail(
            "no broker configured; set ATELIER_BROKER_URL (e.g. redis://127.0.0.1:6379/0) "
            "and ATELIER_DATABASE_URL, or let `atelier serve` run jobs itself",
            code=2,
        )
    from app.jobs.runners.celery_worker import start_worker

    logging.getLogger("atelier").setLevel(logging.INFO)
    start_worker(settings, kinds)


def _load(path: Path, long_side: int, max_pixels: int) -> np.ndarray:
    from app.imaging.decode import ImageRejected, decode_image

    try:
        return decode_image(path.read_bytes(), max_pixels=max_pixels, max_size=long_side).pixels
    except ImageRejected as exc:
        raise ImageRejected(f"{path}: {exc}") from exc


def _numbers(raw: str | None, kind: type[float] | type[int]) -> Any:
    try:
        return parse_numbers(raw, kind)
    except ValueError as exc:
        _fail(str(exc), code=2)


def _fail(message: str, *, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
