"""The style catalog: names, lookups, blends and manifest styles."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from app.styles.catalog import (
    InvalidBlend,
    MultiStyleBlend,
    NetworkFamily,
    SingleStyle,
    Style,
    StyleCatalog,
    StyleOrigin,
    UnknownStyle,
    builtin_styles,
    manifest_styles,
)
from app.weights.manifest import Manifest, StyleEntry

NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def local_style(name: str, tmp_path: Path) -> Style:
    return Style(
        name=name,
        title=name.title(),
        description="",
        source="test",
        license="MIT",
        network=NetworkFamily.transformer,
        origin=StyleOrigin.local,
        checkpoint=tmp_path / f"{name}.pth",
    )


@pytest.fixture
def catalog() -> StyleCatalog:
    return StyleCatalog(builtin_styles())


def test_26_unique_lowercase_hyphen_builtins(catalog: StyleCatalog) -> None:
    styles = catalog.all()
    assert len(styles) == 26 == len(catalog)
    names = [s.name for s in styles]
    assert len(set(names)) == 26
    for name in names:
        assert NAME.match(name), name
    assert sorted(s.index for s in styles) == list(range(26))
    assert all(
        s.network is NetworkFamily.multistyle and s.origin is StyleOrigin.builtin for s in styles
    )
    assert len({s.title for s in styles}) == 26
    assert all(s.description and s.license and s.source for s in styles)


def test_known_names_keep_their_indices(catalog: StyleCatalog) -> None:
    """Names are a public API: the ones the docs use must keep pointing at the same row."""
    assert catalog.get("golden-haze").index == 0
    assert catalog.get("indigo-cells").index == 6
    assert catalog.get("starry-swirls").index == 19
    assert catalog.get("crimson-fire").index == 20
    assert catalog.get("tapestry").index == 25


@pytest.mark.parametrize(
    "spelling", ["starry-swirls", "Starry_Swirls", "STARRY-SWIRLS", " starry_swirls "]
)
def test_lookup_accepts_case_and_underscores(catalog: StyleCatalog, spelling: str) -> None:
    assert catalog.get(spelling).name == "starry-swirls"
    assert spelling in catalog
    choice = catalog.resolve(spelling)
    assert isinstance(choice, SingleStyle) and choice.style.index == 19


def test_max_era_names_resolve_once_installed(catalog: StyleCatalog, tmp_path: Path) -> None:
    catalog.add(local_style("rain-princess", tmp_path))
    assert catalog.get("Rain_Princess").name == "rain-princess"
    assert catalog.get("rain_princess").network is NetworkFamily.transformer
    catalog.remove("Rain_Princess")
    assert "rain-princess" not in catalog


@pytest.mark.parametrize("name", ["nope", "../etc/passwd", "starry", "starry-swirls-2", ""])
def test_unknown_names_list_what_is_available(catalog: StyleCatalog, name: str) -> None:
    with pytest.raises(UnknownStyle) as info:
        catalog.get(name)
    assert info.value.name == name
    assert len(info.value.available) == 26
    assert "starry-swirls" in info.value.available and "golden-haze" in info.value.available


def test_blend_weights_are_normalised(catalog: StyleCatalog) -> None:
    choice = catalog.resolve("starry-swirls:0.7, golden-haze:0.3")
    assert isinstance(choice, MultiStyleBlend)
    expected = torch.zeros(26)
    expected[19], expected[0] = 0.7, 0.3
    assert torch.allclose(choice.weights, expected, atol=1e-6)

    # 3 and 1 -> 3/4 and 1/4; a missing weight counts as 1.
    choice = catalog.resolve("crimson-fire:3,tapestry")
    expected = torch.zeros(26)
    expected[20], expected[25] = 0.75, 0.25
    assert torch.allclose(choice.weights, expected, atol=1e-6)

    # Repeated names add up: 1 + 1 + 2 -> indigo 2/4, starry 2/4.
    choice = catalog.resolve("Indigo_Cells:1,indigo-cells:1,starry-swirls:2")
    expected = torch.zeros(26)
    expected[6], expected[19] = 0.5, 0.5
    assert torch.allclose(choice.weights, expected, atol=1e-6)


def test_single_weighted_name_is_a_blend_of_one(catalog: StyleCatalog) -> None:
    choice = catalog.resolve("tapestry:5")
    assert isinstance(choice, MultiStyleBlend)
    assert float(choice.weights[25]) == pytest.approx(1.0) and float(choice.weights.sum()) == 1.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("starry-swirls:nan,golden-haze:1", "must be from 0 to 1e\\+06, got nan"),
        ("starry-swirls:-1,golden-haze:1", "must be from 0 to 1e\\+06, got -1"),
        ("starry-swirls:inf", "must be from 0 to 1e\\+06, got inf"),
        ("starry-swirls:0,golden-haze:0", "must not all be zero"),
        ("starry-swirls:abc", "not a number"),
        ("", "empty"),
        (" , ", "empty"),
    ],
)
def test_invalid_blends_are_refused(catalog: StyleCatalog, spec: str, message: str) -> None:
    with pytest.raises(InvalidBlend, match=message):
        catalog.resolve(spec)


def test_blend_with_unknown_name_is_unknown_style(catalog: StyleCatalog) -> None:
    with pytest.raises(UnknownStyle):
        catalog.resolve("starry-swirls:1,no-such-style:1")


def test_only_builtins_can_be_blended(catalog: StyleCatalog, tmp_path: Path) -> None:
    catalog.add(local_style("my-style", tmp_path))
    assert isinstance(catalog.resolve("my-style"), SingleStyle)
    with pytest.raises(InvalidBlend, match="only built-in styles"):
        catalog.resolve("my-style:0.5,starry-swirls:0.5")


def test_manifest_styles_appear_only_when_their_file_exists(tmp_path: Path) -> None:
    def entry(name: str, file: str, official: bool = False) -> StyleEntry:
        return StyleEntry(name, file, name.title(), "desc", "src", "MIT", official)

    manifest = Manifest(
        downloads={},
        styles={
            "present": entry("present", "present.pth"),
            "missing": entry("missing", "missing.pth"),
            "fetched": entry("fetched", "sub/fetched.pth", official=True),
        },
    )
    (tmp_path / "present.pth").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "fetched.pth").write_bytes(b"x")
    styles = {s.name: s for s in manifest_styles(manifest, tmp_path)}
    assert set(styles) == {"present", "fetched"}
    assert styles["present"].origin is StyleOrigin.local
    assert styles["fetched"].origin is StyleOrigin.official
    assert styles["present"].checkpoint == tmp_path / "present.pth"
    assert all(s.network is NetworkFamily.transformer and s.index is None for s in styles.values())


def test_a_style_whose_file_is_not_the_pinned_one_is_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = b"the trained weights", b"a truncated copy"
    pins = {"kept": hashlib.sha256(good).hexdigest(), "dropped": hashlib.sha256(good).hexdigest()}
    manifest = Manifest(
        downloads={},
        styles={
            name: StyleEntry(name, f"{name}.safetensors", name, "d", "s", "MIT", sha256=pin)
            for name, pin in pins.items()
        },
    )
    (tmp_path / "kept.safetensors").write_bytes(good)
    (tmp_path / "dropped.safetensors").write_bytes(bad)
    with caplog.at_level(logging.ERROR):
        served = [style.name for style in manifest_styles(manifest, tmp_path)]
    assert served == ["kept"]
    assert (
        "style dropped not served" in caplog.text and hashlib.sha256(bad).hexdigest() in caplog.text
    )


def test_catalog_keeps_display_order_and_add_replaces(
    catalog: StyleCatalog, tmp_path: Path
) -> None:
    catalog.add(local_style("zz-local", tmp_path))
    names = catalog.names()
    assert names[:26] == [s.name for s in sorted(builtin_styles(), key=lambda s: s.index)]
    assert names[-1] == "zz-local"
    catalog.add(local_style("zz-local", tmp_path))
    assert len(catalog) == 27


def test_an_inbox_style_stands_in_for_the_official_name_until_that_is_fetched(
    tmp_path: Path,
) -> None:
    manifest = Manifest(
        downloads={},
        styles={
            "rain-princess": StyleEntry(
                "rain-princess", "rain_princess.pth", "Rain Princess", "", "", "BSD", True
            ),
            "rain-princess-atelier": StyleEntry(
                "rain-princess-atelier", "rain-princess-atelier.safetensors", "Ours", "", "",
                "MIT", stands_in_for="rain-princess",
            ),
        },
    )  # fmt: skip
    (tmp_path / "rain-princess-atelier.safetensors").write_bytes(b"x")
    offline = StyleCatalog(manifest_styles(manifest, tmp_path))
    ours = offline.get("rain_princess")  # a MAX client's spelling
    assert ours.name == "rain-princess-atelier" and ours.origin is StyleOrigin.local
    assert ours.checkpoint == tmp_path / "rain-princess-atelier.safetensors"
    assert offline.get("rain-princess-atelier") is ours
    # One network, listed once, saying which names it answers to.
    assert offline.names() == ["rain-princess-atelier"] and len(offline) == 1
    assert ours.aliases == ("rain-princess",) and "rain-princess" in offline

    (tmp_path / "rain_princess.pth").write_bytes(b"x")
    fetched = StyleCatalog(manifest_styles(manifest, tmp_path))
    assert fetched.names() == ["rain-princess", "rain-princess-atelier"]
    assert all(style.aliases == () for style in fetched.all())
    assert fetched.get("rain_princess").origin is StyleOrigin.official
    assert fetched.get("rain-princess-atelier").origin is StyleOrigin.local


def test_an_alias_resolves_until_its_style_is_replaced_or_removed(tmp_path: Path) -> None:
    ours = replace(local_style("mosaic-atelier", tmp_path), aliases=("mosaic",))
    catalog = StyleCatalog([ours])
    assert catalog.get("Mosaic") is ours and catalog.names() == ["mosaic-atelier"]
    catalog.add(replace(ours, aliases=()))
    assert "mosaic" not in catalog
    catalog.add(ours)
    catalog.remove("mosaic-atelier")
    assert "mosaic" not in catalog and len(catalog) == 0
    # A listed name wins over another style's alias of the same name.
    official = local_style("mosaic", tmp_path)
    catalog = StyleCatalog([ours, official])
    assert catalog.get("mosaic") is official
