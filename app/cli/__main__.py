"""`python -m app.cli` is the `atelier` command."""

from app.cli import main

main()
