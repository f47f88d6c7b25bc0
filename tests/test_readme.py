"""The manual (README.md and docs/*.md) names every setting and every route."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.config import Settings
from app.main import create_app

REPO = Path(__file__).resolve().parents[1]
MANUAL = "\n".join(
    page.read_text(encoding="utf-8")
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
)


def without_parameter_names(text: str) -> str:
    """`/jobs/{job_id}` and `/jobs/{id}` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", text)


def test_every_setting_is_documented() -> None:
    missing = [
        f"ATELIER_{name.upper()}"
        for name in Settings.model_fields
        if f"`ATELIER_{name.upper()}`" not in MANUAL
    ]
    assert not missing, f"settings missing from README.md and docs/: {missing}"


def test_every_route_is_documented() -> None:
    spec = create_app(Settings(data_dir=Path("data"), warmup=False)).openapi()
    manual = without_parameter_names(MANUAL)
    missing = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if f"{method.upper()} {without_parameter_names(path)}" not in manual
    ]
    assert not missing, f"routes missing from README.md and docs/: {missing}"
