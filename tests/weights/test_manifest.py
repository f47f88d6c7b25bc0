"""`load_manifest`: what operators may write in models/manifest.toml, and what is refused."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from app.weights.manifest import ManifestError, load_manifest

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
DIGEST = "ab" * 32

GOOD = f"""
[downloads.plain]
description = "One checkpoint"
url = "https://example.org/plain-abababab.pth"
sha256 = "{DIGEST.upper()}"
size = 1234
license = "MIT"
file = "plain.pth"

[downloads.bundle]
url = "https://example.org/bundle.zip"
sha256 = ""
size = 0
license = "BSD-3-Clause"
archive_members = {{ "a.pth" = "inner/a.pth", "b.pth" = "inner/b.pth" }}

[downloads.prefixed]
url = "https://example.org/prefixed-0123abcd.pth"
sha256_prefix = "0123ABCD"
size = 0
license = "MIT"
file = "prefixed-0123abcd.pth"

[styles.starry-night]
file = "a.pth"
official = true
description = "Swirls."
source = "somewhere"
license = "BSD-3-Clause"

[styles.b2]
file = "b.pth"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "manifest.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_parses_downloads_and_styles(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, GOOD))

    plain = manifest.downloads["plain"]
    assert plain.sha256 == DIGEST and plain.size == 1234 and plain.files == ("plain.pth",)
    assert not plain.is_archive and plain.description == "One checkpoint"
    assert plain.sha256_prefix == ""

    bundle = manifest.downloads["bundle"]
    assert bundle.is_archive and bundle.files == ("a.pth", "b.pth")
    assert bundle.archive_members["b.pth"] == "inner/b.pth"
    assert bundle.sha256 == "" and bundle.size == 0

    prefixed = manifest.downloads["prefixed"]
    assert prefixed.sha256 == "" and prefixed.sha256_prefix == "0123abcd"

    starry = manifest.styles["starry-night"]
    assert starry.file == "a.pth" and starry.official and starry.title == "Starry Night"
    b2 = manifest.styles["b2"]
    assert b2.license == "unknown" and not b2.official and b2.title == "B2"


def test_missing_manifest_is_empty(tmp_path: Path) -> None:
    manifest = load_manifest(tmp_path)
    assert manifest.downloads == {} and manifest.styles == {}


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=re.escape(str(tmp_path / "manifest.toml"))):
        load_manifest(write(tmp_path, "[downloads.x\nurl = 1\n"))


DOWNLOAD = 'url = "https://example.org/x.pth"\nlicense = "MIT"\nfile = "x.pth"\n'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('sha256 = ""\nsize = 1\nlicense = "MIT"\nfile = "x.pth"\n', id="no url"),
        pytest.param(f"{DOWNLOAD}size = 1\n", id="no sha256 and no prefix"),
        pytest.param(f'{DOWNLOAD}sha256 = ""\nsize = "big"\n', id="size not a number"),
        pytest.param(f'{DOWNLOAD}sha256 = ""\n', id="no size"),
        pytest.param(
            'url = "u"\nsha256 = ""\nsize = 0\nlicense = "MIT"\n', id="neither file nor members"
        ),
        pytest.param(
            'url = "u"\nsha256 = ""\nsize = 0\nlicense = "MIT"\narchive_members = "a.pth"\n',
            id="members not a table",
        ),
        pytest.param(f'{DOWNLOAD}sha256_prefix = "xyz"\nsize = 0\n', id="prefix not hex"),
        pytest.param(
            f'{DOWNLOAD}sha256 = "{DIGEST}"\nsha256_prefix = "dcbb9e9d"\nsize = 0\n',
            id="sha256 disagrees with prefix",
        ),
    ],
)
def test_malformed_download_names_the_entry(tmp_path: Path, body: str) -> None:
    with pytest.raises(ManifestError, match="download 'broken'"):
        load_manifest(write(tmp_path, f"[downloads.broken]\n{body}"))


def test_style_without_file_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="style 'lonely': missing field 'file'"):
        load_manifest(write(tmp_path, '[styles.lonely]\ntitle = "Lonely"\n'))


@pytest.mark.parametrize(
    "name", ["Mosaic", "rain_princess", "-lead", "trail-", "two--hyphens", "with space", "é"]
)
def test_bad_style_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ManifestError, match=re.escape(f"style {name!r}")):
        load_manifest(write(tmp_path, f'[styles."{name}"]\nfile = "x.pth"\n'))


def test_stands_in_for_must_name_a_style(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="stands_in_for must be a style name"):
        load_manifest(
            write(
                tmp_path, '[styles.ours]\nfile = "o.safetensors"\nstands_in_for = "Rain Princess"\n'
            )
        )
    manifest = load_manifest(
        write(tmp_path, '[styles.ours]\nfile = "o.safetensors"\nstands_in_for = "mosaic"\n')
    )
    assert manifest.styles["ours"].stands_in_for == "mosaic"


def test_repository_manifest_is_pinned_where_a_checksum_is_published() -> None:
    """The shipped manifest parses, and torchvision's file-name hash agrees with the pin."""
    manifest = load_manifest(REPO_MODELS)
    vgg = manifest.downloads["vgg19"]
    assert re.fullmatch(r"[0-9a-f]{64}", vgg.sha256) and vgg.size == 574673361
    assert vgg.sha256.startswith(vgg.sha256_prefix) and vgg.sha256_prefix in vgg.url
    for download in manifest.downloads.values():
        assert download.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", download.sha256)
    vgg16 = manifest.downloads["vgg16"]
    assert vgg16.sha256_prefix in vgg16.url and vgg16.files == ("vgg16-397923af.pth",)
    styles = manifest.downloads["pytorch-examples-styles"]
    assert set(styles.files) == {"mosaic.pth", "candy.pth", "rain_princess.pth", "udnie.pth"}
    official = {s.file for s in manifest.styles.values() if s.official}
    assert official == set(styles.files), "every official style comes from the fetch"
    # The others are Atelier's own, committed beside the manifest, each standing in for one.
    for style in manifest.styles.values():
        if not style.official:
            assert (REPO_MODELS / style.file).is_file(), f"{style.file} is not in models/"
            assert style.stands_in_for in manifest.styles and style.recipe


def test_committed_inbox_weights_are_the_ones_the_manifest_pins() -> None:
    """Each in-box style file hashes (here, independently of the app) to its manifest pin."""
    manifest = load_manifest(REPO_MODELS)
    inbox = [style for style in manifest.styles.values() if not style.official]
    assert inbox, "the repository ships in-box styles"
    for style in inbox:
        found = hashlib.sha256((REPO_MODELS / style.file).read_bytes()).hexdigest()
        assert style.sha256 == found, f"{style.file}: manifest pins {style.sha256!r}"


def test_style_sha256_must_be_a_full_digest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"'short'.*64 hex digits"):
        load_manifest(write(tmp_path, '[styles.short]\nfile = "s.pth"\nsha256 = "abc"\n'))
