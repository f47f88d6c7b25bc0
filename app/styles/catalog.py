"""StyleCatalog: every style the service can render, by stable name.

Names are lowercase words joined by hyphens; lookups also accept underscores so MAX-era names
such as `rain_princess` keep working. The catalog is pure data: loading networks is the
inference layer's job.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch

from app.core.files import file_sha256
from app.nets.multistyle import NUM_STYLES
from app.styles.builtin import ATTRIBUTION, BUILTIN_STYLES, LICENSE
from app.weights.manifest import Manifest, StyleEntry

log = logging.getLogger(__name__)


class NetworkFamily(StrEnum):
    """Which network renders a style."""

    multistyle = "multistyle26"
    transformer = "transformer-net"
    arbitrary = "arbitrary"


class StyleOrigin(StrEnum):
    builtin = "builtin"
    official = "official"
    local = "local"
    user = "user"


@dataclass(frozen=True)
class Style:
    name: str
    title: str
    description: str
    source: str
    license: str
    network: NetworkFamily
    origin: StyleOrigin
    index: int | None = None
    checkpoint: Path | None = None
    weights: bytes | None = field(default=None, compare=False, repr=False)
    style_vector: torch.Tensor | None = field(default=None, compare=False, repr=False)
    owner: str | None = None
    # Other names this style answers to without being listed under them (a stand-in's official
    # name), so a network appears once however many names reach it.
    aliases: tuple[str, ...] = ()

    @property
    def answers_to(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class UnknownStyle(LookupError):
    """No style by that name; carries the names a client may use instead."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"unknown style {name!r}")
        self.name = name
        self.available = available


class InvalidBlend(ValueError):
    """A `name:weight,...` blend that cannot be rendered in one pass."""


@dataclass(frozen=True)
class MultiStyleBlend:
    """Weights over the 26 built-in styles, summing to 1."""

    weights: torch.Tensor


@dataclass(frozen=True)
class SingleStyle:
    style: Style


@dataclass(frozen=True)
class StyleVector:
    """An arbitrary style given as the predictor's 100-d vector (e.g. from uploaded paintings)."""

    vector: torch.Tensor


StyleChoice = MultiStyleBlend | SingleStyle | StyleVector


STYLE_NAME_MAX = 40
# Blend weights are relative (normalised to sum 1); the bound only refuses nonsense like inf.
MAX_BLEND_WEIGHT = 1e6


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def builtin_styles() -> list[Style]:
    return [
        Style(
            name=b.name,
            title=b.title,
            description=b.description,
            source=ATTRIBUTION,
            license=LICENSE,
            network=NetworkFamily.multistyle,
            origin=StyleOrigin.builtin,
            index=b.index,
        )
        for b in BUILTIN_STYLES
    ]


def manifest_styles(manifest: Manifest, models_dir: Path) -> list[Style]:
    """Manifest styles whose checkpoint file is present (official ones appear once fetched).

    A style that `stands_in_for` another name (Atelier's own mosaic for the official `mosaic`)
    also answers to that name, as an alias, while no style of that name is installed; once the
    official weights are fetched, the name is theirs and ours keeps only its own.
    """
    present = [
        entry
        for entry in manifest.styles.values()
        if (models_dir / entry.file).exists() and _as_pinned(entry, models_dir / entry.file)
    ]
    installed = {entry.name for entry in present}
    styles = []
    for entry in present:
        target = entry.stands_in_for
        stands_in = target is not None and target not in installed
        styles.append(
            Style(
                name=entry.name,
                title=entry.title,
                description=entry.description,
                source=entry.source,
                license=entry.license,
                network=NetworkFamily.transformer,
                origin=StyleOrigin.official if entry.official else StyleOrigin.local,
                checkpoint=models_dir / entry.file,
                aliases=(target,) if stands_in and target is not None else (),
            )
        )
        if stands_in and target is not None:
            installed.add(target)  # a second stand-in for the same name gets no alias
    return styles


def _as_pinned(entry: StyleEntry, path: Path) -> bool:
    """False (and an error in the log) for a file that is not the one the manifest pins: a
    truncated copy or a stray file must not be served under a style's name."""
    if not entry.sha256:
        return True
    found = file_sha256(path)
    if found == entry.sha256:
        return True
    log.error(
        "style %s not served: %s has sha256 %s, the manifest pins %s",
        entry.name,
        path,
        found,
        entry.sha256,
    )
    return False


class StyleCatalog:
    """Thread-safe name -> Style map, in a stable display order; aliases resolve, unlisted."""

    def __init__(self, styles: list[Style]) -> None:
        self._styles: dict[str, Style] = {}
        self._aliases: dict[str, str] = {}
        self._lock = threading.Lock()
        for style in styles:
            self._add(style)

    def __len__(self) -> int:
        return len(self._styles)

    def __contains__(self, name: str) -> bool:
        key = normalise_name(name)
        with self._lock:
            return key in self._styles or key in self._aliases

    def all(self) -> list[Style]:
        """Every style once, under its own name."""
        with self._lock:
            return list(self._styles.values())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._styles)

    def get(self, name: str) -> Style:
        """The style listed as `name`, else the one that has `name` as an alias."""
        key = normalise_name(name)
        with self._lock:
            style = self._styles.get(key)
            if style is None and key in self._aliases:
                style = self._styles.get(self._aliases[key])
        if style is None:
            raise UnknownStyle(name, self.names())
        return style

    def add(self, style: Style) -> None:
        with self._lock:
            self._add(style)

    def _add(self, style: Style) -> None:
        previous = self._styles.get(style.name)
        if previous is not None:
            self._drop_aliases(previous)
        self._styles[style.name] = style
        for alias in style.aliases:
            self._aliases[alias] = style.name

    def remove(self, name: str) -> None:
        with self._lock:
            style = self._styles.pop(normalise_name(name), None)
            if style is not None:
                self._drop_aliases(style)

    def _drop_aliases(self, style: Style) -> None:
        for alias in style.aliases:
            if self._aliases.get(alias) == style.name:
                del self._aliases[alias]

    def resolve(self, spec: str) -> StyleChoice:
        """Parse `name` or a blend `name:weight,name:weight` of built-in styles."""
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise InvalidBlend("style is empty")
        if len(parts) == 1 and ":" not in parts[0]:
            return SingleStyle(self.get(parts[0]))
        weights = torch.zeros(NUM_STYLES)
        for part in parts:
            name, _, raw_weight = part.partition(":")
            style = self.get(name)
            if style.network is not NetworkFamily.multistyle or style.index is None:
                raise InvalidBlend(
                    f"only built-in styles can be blended; {style.name!r} is {style.network}"
                )
            try:
                weight = float(raw_weight) if raw_weight else 1.0
            except ValueError:
                raise InvalidBlend(f"blend weight {raw_weight!r} is not a number") from None
            if not 0.0 <= weight <= MAX_BLEND_WEIGHT:
                raise InvalidBlend(
                    f"blend weight for {style.name!r} must be from 0 to {MAX_BLEND_WEIGHT:g}, "
                    f"got {raw_weight}"
                )
            weights[style.index] += weight
        total = float(weights.sum())
        if total <= 0.0:
            raise InvalidBlend("blend weights must not all be zero")
        return MultiStyleBlend(weights / total)
