"""The `atelier` command line (its commands are in `app.cli.commands`)."""

from __future__ import annotations

import logging


def main() -> None:
    """Restart with the kept heap first (app/core/heap.py), then load the commands: they
    import torch, which a restart would otherwise pay for twice."""
    from app.core.config import get_settings
    from app.core.heap import restart_with_kept_memory, wants_kept_memory

    restart_with_kept_memory(wants_kept_memory(get_settings()))
    from app.cli.commands import cli

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cli()
