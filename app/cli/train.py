"""`atelier train`: train a fast style network on a painting, with a progress bar and resume."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.core.config import get_settings

if TYPE_CHECKING:
    import numpy as np

WEIGHT_SUFFIXES = (".pth", ".safetensors")


def train(
    painting: Annotated[Path, typer.Argument(help="The painting to learn.", exists=True)],
    photos: Annotated[
        list[Path],
        typer.Option(
            "--photos", help="Folder (or file) of content photos; repeat for several.", exists=True
        ),
    ],
    name: Annotated[str, typer.Option(help="Style name, used in the progress bar and files.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Weights file: .pth (fp32, pytorch/examples) or "
            ".safetensors (fp16). Default: NAME.safetensors.",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint file: resumed from when it exists, written as it trains."),
    ] = None,
    iterations: Annotated[int, typer.Option(min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(min=1)] = 2,
    crop_size: Annotated[int, typer.Option(min=64)] = 192,
    style_size: Annotated[int, typer.Option(min=64)] = 320,
    content_weight: Annotated[float | None, typer.Option(min=0.0)] = None,
    style_weight: Annotated[float | None, typer.Option(min=0.0)] = None,
    tv_weight: Annotated[float | None, typer.Option(min=0.0)] = None,
    learning_rate: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    backbone: Annotated[str, typer.Option(help="auto, vgg16 or efficientnet-lite0.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16.")] = "auto",
    checkpoint_interval: Annotated[int, typer.Option(min=0)] = 100,
    preview: Annotated[
        Path | None,
        typer.Option(help="JPEG of the network on a probe photo, refreshed as it trains."),
    ] = None,
    preview_interval: Annotated[int, typer.Option(min=1)] = 100,
    warm_start: Annotated[
        bool,
        typer.Option(
            "--warm-start/--cold-start",
            help="Begin from the installed style ATELIER_TRAINING_WARM_START_STYLE "
            "(default mosaic-atelier), or from random weights.",
        ),
    ] = True,
    start_from: Annotated[
        Path | None,
        typer.Option(
            "--start",
            help="Begin from this TransformerNet file (.pth or .safetensors) instead: to train "
            "a style further. A checkpoint being resumed wins over it.",
            exists=True,
        ),
    ] = None,
) -> None:
    """Train a Johnson et al. TransformerNet on PAINTING's style (resumable with --checkpoint)."""
    from tqdm import tqdm

    from app.core.device import configure_threads, select_device
    from app.jobs.kinds.training import (
        PHOTO_SUFFIXES,
        load_photos,
        photo_folder_files,
        warm_start_weights,
    )
    from app.jobs.stored_inputs import JobInputError
    from app.perceptual.backbones import BackboneUnavailable, load_backbone
    from app.styles.thumbnails import reference_photo
    from app.training import Progress, TrainOptions
    from app.training import train as run_training
    from app.training.checkpoint import load_checkpoint, save_checkpoint
    from app.weights.checkpoints import (
        CheckpointError,
        load_transformer_net,
        transformer_net_pth,
        transformer_net_safetensors,
    )

    output = output or Path(f"{name}.safetensors")
    if output.suffix not in WEIGHT_SUFFIXES:
        _fail(f"output must end in {' or '.join(WEIGHT_SUFFIXES)}, not {output.name!r}")
    settings = get_settings()
    try:
        options = TrainOptions(
            iterations=iterations,
            batch_size=batch_size,
            crop_size=crop_size,
            style_size=style_size,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            learning_rate=learning_rate,
            seed=seed,
            backbone=backbone,
            precision=precision,
            checkpoint_interval=checkpoint_interval,
            preview_interval=preview_interval if preview is not None else 0,
            warm_start=warm_start,
        )
    except ValueError as exc:
        _fail(str(exc))
    files = [f for path in photos for f in (photo_folder_files(path) if path.is_dir() else [path])]
    if not files:
        _fail(f"no photos found ({', '.join(PHOTO_SUFFIXES)}) in " + ", ".join(map(str, photos)))
    try:
        photo_pixels = load_photos([f.read_bytes() for f in files], settings, "photo")
        painting_pixels = load_photos([painting.read_bytes()], settings, "painting")[0]
        configure_threads(settings.torch_threads, settings.torch_interop_threads)
        device = select_device(settings.device)
        net = load_backbone(
            backbone, settings.models_dir, device, preferred="vgg16", cache_dir=settings.cache_dir
        )
    except (JobInputError, BackboneUnavailable, RuntimeError) as exc:
        _fail(str(exc))
    resume = (
        load_checkpoint(checkpoint) if checkpoint is not None and checkpoint.is_file() else None
    )
    start = resume.iteration if resume is not None else 0
    weights = None
    if start_from is not None and resume is None:
        try:
            weights = load_transformer_net(start_from).state_dict()
        except CheckpointError as exc:
            _fail(str(exc))
    elif warm_start and resume is None:
        weights = warm_start_weights(settings)
    if start_from is None and warm_start and resume is None and weights is None:
        typer.echo(
            f"warning: warm start style {settings.training_warm_start_style!r} is not installed; "
            "starting from random weights",
            err=True,
        )
    label = f"train {name} {net.name} {device}"
    with tqdm(total=iterations, initial=start, unit="it", desc=label) as bar:

        def on_progress(progress: Progress) -> None:
            bar.update(progress.iteration - bar.n)
            bar.set_postfix(
                content=f"{progress.content_loss:.3g}",
                style=f"{progress.style_loss:.3g}",
                img_s=f"{progress.images_per_s:.2f}",
            )

        result = run_training(
            photo_pixels,
            painting_pixels,
            options,
            net,
            start=weights,
            resume=resume,
            on_checkpoint=(lambda c: save_checkpoint(checkpoint, c)) if checkpoint else None,
            on_progress=on_progress,
            probe=reference_photo(),
            on_preview=(lambda image: _write_jpeg(preview, image)) if preview else None,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    data = (
        transformer_net_pth(result.net)
        if output.suffix == ".pth"
        else transformer_net_safetensors(result.net)
    )
    output.write_bytes(data)
    typer.echo(f"wrote {output} after {result.iterations} iterations on {len(files)} photos")


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    from app.imaging.encode import OutputFormat, encode_image

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(image, OutputFormat.jpeg, quality=90))


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
