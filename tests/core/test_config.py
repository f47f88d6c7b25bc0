"""Settings read under deprecated names: ATELIER_JOB_* for Gatys, `cached` tile statistics."""

from __future__ import annotations

import pytest

from app.core.config import Settings

RENAMED = {
    "gatys_backbone": "vgg16",
    "gatys_default_iterations": 123,
    "gatys_max_iterations": 456,
    "gatys_default_size": 321,
    "gatys_max_size": 777,
    "gatys_max_style_images": 2,
}


@pytest.mark.parametrize("prefix", ["ATELIER_GATYS_", "ATELIER_JOB_"])
def test_gatys_settings_are_read_under_the_new_and_the_deprecated_name(
    monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    for field, value in RENAMED.items():
        monkeypatch.setenv(prefix + field.removeprefix("gatys_").upper(), str(value))
    settings = Settings()
    assert {field: getattr(settings, field) for field in RENAMED} == RENAMED


def test_the_new_name_wins_over_the_deprecated_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_JOB_MAX_SIZE", "640")
    monkeypatch.setenv("ATELIER_GATYS_MAX_SIZE", "800")
    assert Settings().gatys_max_size == 800


def test_code_sets_them_by_field_name_and_bad_values_still_fail() -> None:
    assert Settings(gatys_max_size=900).gatys_max_size == 900
    with pytest.raises(ValueError, match=r"gatys_max_size|ATELIER_GATYS_MAX_SIZE"):
        Settings(gatys_max_size=8)


@pytest.mark.parametrize(("value", "read"), [("cached", "exact"), ("exact", "exact")])
def test_the_retired_cached_tile_statistics_read_as_exact(
    monkeypatch: pytest.MonkeyPatch, value: str, read: str
) -> None:
    monkeypatch.setenv("ATELIER_TILE_STATS", value)
    assert Settings().tile_stats == read


def test_unknown_tile_statistics_still_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_TILE_STATS", "refined")
    with pytest.raises(ValueError, match="tile_stats"):
        Settings()
