"""The README is the operator's manual: every setting and every route must appear in it."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings
from app.main import create_app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def without_parameter_names(text: str) -> str:
    """`/jobs/{job_id}` and `/jobs/{id}` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", text)


def test_every_setting_is_documented() -> None:
    missing = [
        f"ATELIER_{name.upper()}"
        for name in Settings.model_fields
        if f"`ATELIER_{name.upper()}`" not in README
    ]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_route_is_documented() -> None:
    spec = create_app(Settings(data_dir=Path("data"), warmup=False)).openapi()
    readme = without_parameter_names(README)
    missing = [
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if f"{method.upper()} {without_parameter_names(path)}" not in readme
    ]
    assert not missing, f"routes missing from README.md: {missing}"
