"""The `atelier` commands: serve, stylize files, inspect styles, manage weights, run jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.jobs import gatys, worker
from app.cli.models import models_app
from app.cli.train import train
from app.core.config import get_settings
from app.observability.logs import configure_logging

cli = typer.Typer(
    name="atelier",
    help="Atelier: neural style transfer service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(models_app, name="models")
cli.command("gatys")(gatys)
cli.command("worker")(worker)
cli.command("train")(train)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (ATELIER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (ATELIER_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Run the HTTP service."""
    import uvicorn

    from app.api.routes.live import ws_max_size

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    uvicorn.run(
        "app.main:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        # SIGTERM: stop accepting, let in-flight requests finish within the bound, then exit.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        ws_max_size=ws_max_size(settings),
    )


@cli.command()
def styles() -> None:
    """List the styles the service would offer with the current models folder."""
    from app.serving.service import Service

    service = Service(get_settings())
    service.load(warmup=False)
    default = service.default_style
    for style in service.catalog.all():
        marker = "*" if style.name == default else " "
        index = f"#{style.index}" if style.index is not None else ""
        aliases = f" (also {', '.join(style.aliases)})" if style.aliases else ""
        typer.echo(
            f"{marker} {style.name:<22} {style.network.value:<16} {index:<4} {style.title}{aliases}"
        )
    for problem in service.problems:
        typer.echo(f"skipped: {problem}", err=True)


@cli.command()
def stylize(
    inputs: Annotated[
        list[Path], typer.Argument(help="Images, videos, animated GIF/WebP, or folders.")
    ],
    style: Annotated[str | None, typer.Option("--style", "-s", help="Style or blend.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="File, or folder.")] = Path(
        "stylized"
    ),
    max_size: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Longest output side; 0 = full size (print size, run in tiles above "
            "ATELIER_TILE_SIZE).",
        ),
    ] = None,
    strength: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    preserve_color: Annotated[bool, typer.Option(help="Keep the photo's colours.")] = False,
    format: Annotated[str, typer.Option(help="jpeg, png, webp or avif.")] = "jpeg",
    style_image: Annotated[
        list[Path] | None,
        typer.Option(help="A painting to use as the style (repeat to blend); overrides -s."),
    ] = None,
    style_weights: Annotated[
        str | None, typer.Option(help="Blend weights for several --style-image, e.g. 0.7,0.3.")
    ] = None,
    stabilize: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=0.95, help="Videos: temporal stabilization weight (0 = per frame)."
        ),
    ] = None,
) -> None:
    """Stylize images with the same options as POST /model/predict; videos and animated
    GIF/WebP (recognised by content) frame by frame, e.g. `-o out.mp4`."""
    from app.cli.stylize import stylize_files

    code = stylize_files(
        inputs,
        style=style,
        output=output,
        max_size=max_size,
        strength=strength,
        preserve_color=preserve_color,
        fmt=format,
        style_images=style_image or [],
        style_weights=style_weights,
        stabilize=stabilize,
    )
    raise typer.Exit(code)
