"""`atelier models ...`: fetch the official weights and show what is installed.

Errors are one line on stderr and a non-zero exit, never a traceback: this runs on operators'
machines, often as a provisioning step whose log is all anyone will read.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from app.core.config import get_settings
from app.perceptual.backbones import loss_networks
from app.weights.fetch import FetchError, FetchResult, InstalledEntry, fetch, installed
from app.weights.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest

models_app = typer.Typer(
    help="Download the official weights (checksummed) and list installed models.",
    no_args_is_help=True,
)


@models_app.command("fetch")
def fetch_command(
    names: list[str] | None = typer.Argument(
        None, help="Downloads to fetch, as named in the manifest. Default: all of them."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    timeout: float = typer.Option(60.0, min=1, help="Seconds to wait for the server to answer."),
) -> None:
    """Download, verify and install weights listed in the manifest (models/manifest.toml)."""
    models_dir = get_settings().models_dir
    manifest = _load(models_dir)
    if not manifest.downloads:
        _fail(f"{models_dir / MANIFEST_NAME} lists no [downloads]: nothing to fetch")
    wanted = names or list(manifest.downloads)
    unknown = [name for name in wanted if name not in manifest.downloads]
    if unknown:
        known = ", ".join(manifest.downloads)
        _fail(f"unknown download {', '.join(unknown)} (known: {known})", code=2)
    for name in dict.fromkeys(wanted):
        try:
            result = fetch(manifest.downloads[name], models_dir, progress=progress, timeout=timeout)
        except FetchError as exc:
            _fail(str(exc))
        typer.echo(_describe(result))
        if result.status == "installed" and not result.pinned:
            typer.echo(
                f"warning: {name} has no published checksum, so its origin was not verified; "
                f"it downloaded as sha256 {result.sha256}, size {result.bytes_downloaded}: "
                f"pin these in {MANIFEST_NAME} once you trust this copy",
                err=True,
            )


@models_app.command("list")
def list_command() -> None:
    """Show every download and style in the manifest and whether its files are present."""
    models_dir = get_settings().models_dir
    rows = installed(_load(models_dir), models_dir)
    if not rows:
        typer.echo(f"{models_dir / MANIFEST_NAME} lists no downloads or styles")
        return
    table = [("KIND", "NAME", "INSTALLED", "FILE", "SIZE", "LICENSE")]
    table += [_cells(row) for row in rows]
    widths = [max(len(line[col]) for line in table) for col in range(len(table[0]))]
    for line in table:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    settings = get_settings()
    for use, network in loss_networks(settings.job_backbone, settings.models_dir).items():
        typer.echo(f"{use} loss network: {network}")


def _load(models_dir: Path) -> Manifest:
    try:
        return load_manifest(models_dir)
    except ManifestError as exc:
        _fail(f"bad manifest: {exc}")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _describe(result: FetchResult) -> str:
    files = ", ".join(path.name for path in result.paths)
    if result.status == "already installed":
        return f"{result.name}: already installed ({files})"
    note = {
        "sha256": "sha256 verified",
        "sha256 prefix": "sha256 prefix verified",
        "zip crc only": "zip CRCs checked, no published sha256",
        "none": "no published checksum",
    }[result.verified]
    return f"{result.name}: installed {files} ({_human(result.bytes_downloaded)}, {note})"


def _cells(row: InstalledEntry) -> tuple[str, str, str, str, str, str]:
    size = _human(row.size_bytes) if row.size_bytes is not None else "-"
    return (
        row.kind,
        row.name,
        "yes" if row.installed else "no",
        ",".join(row.files),
        size,
        row.license,
    )


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
