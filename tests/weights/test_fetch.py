"""`fetch`, `installed` and the `atelier models` CLI against a local HTTP server (offline)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from app.cli.models import models_app
from app.core.config import get_settings
from app.weights.fetch import FetchError, fetch, installed
from app.weights.manifest import Download, load_manifest

WEIGHTS = b"pretend checkpoint bytes " * 4096


class LocalServer:
    """Routes path -> (kind, body); counts hits so tests can prove nothing was re-downloaded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.hits: Counter[str] = Counter()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, kind: str = "ok") -> str:
        self.routes[path] = (kind, body)
        return self.url(path)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        state: LocalServer = self.server.state  # type: ignore[attr-defined]
        state.hits[self.path] += 1
        kind, body = state.routes.get(self.path, ("missing", b""))
        if kind == "missing":
            self.send_error(404)
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", body.decode())
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(200)
            declared = len(body) * 2 if kind == "truncate" else len(body)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if kind == "truncate" else body)
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Keep pytest output clean."""


@pytest.fixture
def server() -> Iterator[LocalServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = LocalServer(httpd.server_address[1])
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on, so connecting fails the way it does offline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plain(url: str, data: bytes = WEIGHTS, **overrides: object) -> Download:
    fields: dict = {
        "name": "weights",
        "url": url,
        "sha256": sha(data),
        "size": len(data),
        "license": "MIT",
        "files": ("w.pth",),
    }
    fields.update(overrides)
    return Download(**fields)


def make_zip(members: dict[str, bytes]) -> bytes:
    """Fixed timestamps, so the same members always give the same bytes (and sha256)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def archive(url: str, data: bytes, members: dict[str, str], pinned: bool = True) -> Download:
    return Download(
        name="styles",
        url=url,
        sha256=sha(data) if pinned else "",
        size=len(data) if pinned else 0,
        license="BSD-3-Clause",
        files=tuple(members),
        archive_members=members,
    )


def listing(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()} if directory.exists() else set()


def test_good_file_is_installed_with_the_served_bytes(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    result = fetch(plain(url), tmp_path / "models", progress=False)
    assert result.status == "installed"
    assert result.verified == "sha256" and result.pinned
    assert result.sha256 == sha(WEIGHTS) and result.bytes_downloaded == len(WEIGHTS)
    assert (tmp_path / "models" / "w.pth").read_bytes() == WEIGHTS
    assert listing(tmp_path / "models") == {"w.pth"}


def test_redirects_are_followed(server: LocalServer, tmp_path: Path) -> None:
    target = server.serve("/real.pth", WEIGHTS)
    url = server.serve("/moved.pth", target.encode(), kind="redirect")
    fetch(plain(url), tmp_path, progress=False)
    assert (tmp_path / "w.pth").read_bytes() == WEIGHTS


def test_wrong_sha256_is_rejected_and_nothing_installed(
    server: LocalServer, tmp_path: Path
) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    expected = "0" * 64
    with pytest.raises(FetchError) as caught:
        fetch(plain(url, sha256=expected), tmp_path, progress=False)
    message = str(caught.value)
    assert message == (
        f"sha256 mismatch for w.pth: expected {expected}, got {sha(WEIGHTS)} — file discarded"
    )
    assert listing(tmp_path) == set()


def test_wrong_size_is_rejected_and_nothing_installed(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    with pytest.raises(FetchError, match=re.escape("size mismatch for w.pth")):
        fetch(plain(url, size=len(WEIGHTS) + 1), tmp_path, progress=False)
    assert listing(tmp_path) == set()


def test_sha256_prefix_is_checked_when_no_full_digest_is_published(
    server: LocalServer, tmp_path: Path
) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    good = plain(url, sha256="", sha256_prefix=sha(WEIGHTS)[:8], size=0)
    assert fetch(good, tmp_path, progress=False).verified == "sha256 prefix"
    assert (tmp_path / "w.pth").read_bytes() == WEIGHTS

    wrong = plain(url, sha256="", sha256_prefix="00000000", size=0, files=("x.pth",))
    with pytest.raises(FetchError, match=re.escape("sha256 mismatch for w.pth: expected 00000000")):
        fetch(wrong, tmp_path, progress=False)
    assert listing(tmp_path) == {"w.pth"}


def test_interrupted_download_leaves_no_partial_file(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS, kind="truncate")
    with pytest.raises(FetchError) as caught:
        fetch(plain(url), tmp_path, progress=False)
    assert "interrupted" in str(caught.value) and "\n" not in str(caught.value)
    assert listing(tmp_path) == set()


def test_http_error_is_one_line(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"^download of weights failed: HTTP 404 .*127\.0\.0\.1$"):
        fetch(plain(server.url("/nowhere.pth")), tmp_path, progress=False)
    assert listing(tmp_path) == set()


def test_offline_is_one_clear_line(closed_port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port}/w.pth"
    with pytest.raises(FetchError) as caught:
        fetch(plain(url), tmp_path / "models", progress=False, timeout=5)
    message = str(caught.value)
    assert message.startswith("cannot reach 127.0.0.1: ")
    assert message.endswith(
        "(no internet? run this on a machine with internet access, then copy models/ over)"
    )
    assert "\n" not in message
    assert listing(tmp_path / "models") == set()


def test_zip_archive_installs_each_member(server: LocalServer, tmp_path: Path) -> None:
    contents = {"saved_models/a.pth": b"A" * 5000, "saved_models/b.pth": b"B" * 7000}
    data = make_zip({**contents, "saved_models/readme.txt": b"not wanted"})
    url = server.serve("/saved_models.zip", data)
    members = {"a.pth": "saved_models/a.pth", "b.pth": "saved_models/b.pth"}
    result = fetch(archive(url, data, members), tmp_path, progress=False)
    assert result.status == "installed"
    assert [path.name for path in result.paths] == ["a.pth", "b.pth"]
    assert (tmp_path / "a.pth").read_bytes() == contents["saved_models/a.pth"]
    assert (tmp_path / "b.pth").read_bytes() == contents["saved_models/b.pth"]
    assert listing(tmp_path) == {"a.pth", "b.pth"}


def test_zip_missing_a_member_installs_nothing(server: LocalServer, tmp_path: Path) -> None:
    data = make_zip({"saved_models/a.pth": b"A"})
    url = server.serve("/saved_models.zip", data)
    members = {"a.pth": "saved_models/a.pth", "b.pth": "saved_models/b.pth"}
    with pytest.raises(FetchError, match=re.escape("saved_models.zip lacks saved_models/b.pth")):
        fetch(archive(url, data, members), tmp_path, progress=False)
    assert listing(tmp_path) == set()


def test_unpinned_archive_relies_on_zip_crc(server: LocalServer, tmp_path: Path) -> None:
    data = make_zip({"m/a.pth": b"A" * 100})
    url = server.serve("/ok.zip", data)
    result = fetch(archive(url, data, {"a.pth": "m/a.pth"}, pinned=False), tmp_path, progress=False)
    assert result.verified == "zip crc only" and not result.pinned
    assert result.sha256 == sha(data)

    broken = server.serve("/broken.zip", b"this is not a zip archive")
    download = archive(broken, b"", {"c.pth": "m/c.pth"}, pinned=False)
    with pytest.raises(FetchError, match=re.escape("broken.zip is not a valid zip archive")):
        fetch(download, tmp_path, progress=False)
    assert listing(tmp_path) == {"a.pth"}


def test_member_failing_its_crc_installs_nothing(server: LocalServer, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("m/a.pth", b"A" * 1000)
        zf.writestr("m/b.pth", b"B" * 1000)
    data = buffer.getvalue().replace(b"B" * 1000, b"B" * 999 + b"X")
    url = server.serve("/crc.zip", data)
    download = archive(url, data, {"a.pth": "m/a.pth", "b.pth": "m/b.pth"}, pinned=False)
    with pytest.raises(FetchError, match=re.escape("crc.zip is not a valid zip archive (Bad CRC")):
        fetch(download, tmp_path, progress=False)
    assert listing(tmp_path) == set()


def test_second_fetch_does_not_download_again(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    zip_data = make_zip({"m/a.pth": b"A"})
    zip_url = server.serve("/s.zip", zip_data)
    styles = archive(zip_url, zip_data, {"a.pth": "m/a.pth"})
    fetch(plain(url), tmp_path, progress=False)
    fetch(styles, tmp_path, progress=False)

    again = fetch(plain(url), tmp_path, progress=False)
    again_zip = fetch(styles, tmp_path, progress=False)
    assert again.status == again_zip.status == "already installed"
    assert server.hits == Counter({"/w.pth": 1, "/s.zip": 1})


def test_corrupted_installed_file_is_downloaded_again(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    (tmp_path / "w.pth").write_bytes(b"x" * len(WEIGHTS))
    assert fetch(plain(url), tmp_path, progress=False).status == "installed"
    assert (tmp_path / "w.pth").read_bytes() == WEIGHTS
    assert server.hits["/w.pth"] == 1


def test_file_names_cannot_escape_models_dir(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    with pytest.raises(FetchError, match="must be a plain file name"):
        fetch(plain(url, files=("../evil.pth",)), tmp_path / "models", progress=False)
    assert server.hits["/w.pth"] == 0 and not (tmp_path / "evil.pth").exists()


def test_malformed_pin_fails_before_downloading(server: LocalServer, tmp_path: Path) -> None:
    url = server.serve("/w.pth", WEIGHTS)
    with pytest.raises(FetchError, match="sha256 must be 64 hex digits"):
        fetch(plain(url, sha256="TODO"), tmp_path, progress=False)
    assert server.hits["/w.pth"] == 0


def test_installed_reports_present_files(tmp_path: Path) -> None:
    write_manifest(tmp_path, "http://127.0.0.1:9/w.pth", "http://127.0.0.1:9/s.zip")
    (tmp_path / "w.pth").write_bytes(WEIGHTS)
    (tmp_path / "a.pth").write_bytes(b"A")
    rows = {(row.kind, row.name): row for row in installed(load_manifest(tmp_path), tmp_path)}
    assert rows["download", "weights"].installed
    assert rows["download", "weights"].size_bytes == len(WEIGHTS)
    assert not rows["download", "styles"].installed
    assert rows["download", "styles"].size_bytes is None
    assert rows["style", "alpha"].installed and rows["style", "alpha"].files == ("a.pth",)
    assert not rows["style", "beta"].installed


# --- the CLI -------------------------------------------------------------------------------


def write_manifest(
    models_dir: Path, weights_url: str, styles_url: str, *, pin_styles: bool = True
) -> None:
    zip_data = make_zip({"m/a.pth": b"A", "m/b.pth": b"B"})
    styles_sha, styles_size = (sha(zip_data), len(zip_data)) if pin_styles else ("", 0)
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "manifest.toml").write_text(
        f"""
[downloads.weights]
url = "{weights_url}"
sha256 = "{sha(WEIGHTS)}"
size = {len(WEIGHTS)}
license = "MIT"
file = "w.pth"

[downloads.styles]
url = "{styles_url}"
sha256 = "{styles_sha}"
size = {styles_size}
license = "BSD-3-Clause"
archive_members = {{ "a.pth" = "m/a.pth", "b.pth" = "m/b.pth" }}

[styles.alpha]
file = "a.pth"
license = "BSD-3-Clause"

[styles.beta]
file = "b.pth"
""",
        encoding="utf-8",
    )


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "models"
    monkeypatch.setenv("ATELIER_MODELS_DIR", str(directory))
    get_settings.cache_clear()
    yield directory
    get_settings.cache_clear()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(models_app, name="models")
    return app


def serve_manifest(server: LocalServer, models_dir: Path, *, pin_styles: bool = True) -> None:
    zip_data = make_zip({"m/a.pth": b"A", "m/b.pth": b"B"})
    write_manifest(
        models_dir,
        server.serve("/w.pth", WEIGHTS),
        server.serve("/styles.zip", zip_data),
        pin_styles=pin_styles,
    )


def test_cli_fetch_installs_everything(
    cli: typer.Typer, server: LocalServer, models_dir: Path
) -> None:
    serve_manifest(server, models_dir)
    result = CliRunner().invoke(cli, ["models", "fetch", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "weights: installed w.pth" in result.stdout
    assert "styles: installed a.pth, b.pth" in result.stdout
    assert (models_dir / "b.pth").read_bytes() == b"B"

    again = CliRunner().invoke(cli, ["models", "fetch", "weights", "--no-progress"])
    assert again.exit_code == 0
    assert again.stdout.strip() == "weights: already installed (w.pth)"
    assert server.hits["/w.pth"] == 1


def test_cli_warns_once_about_an_unpinned_download(
    cli: typer.Typer, server: LocalServer, models_dir: Path
) -> None:
    serve_manifest(server, models_dir, pin_styles=False)
    result = CliRunner().invoke(cli, ["models", "fetch", "styles", "--no-progress"])
    assert result.exit_code == 0
    assert "zip CRCs checked, no published sha256" in result.stdout
    digest = sha(make_zip({"m/a.pth": b"A", "m/b.pth": b"B"}))
    assert result.stderr.startswith("warning: styles has no published checksum")
    assert f"sha256 {digest}" in result.stderr

    again = CliRunner().invoke(cli, ["models", "fetch", "styles", "--no-progress"])
    assert again.exit_code == 0 and again.stderr == ""


def test_cli_fetch_offline_is_one_line_without_traceback(
    cli: typer.Typer, closed_port: int, models_dir: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    write_manifest(models_dir, f"{url}/w.pth", f"{url}/s.zip")
    result = CliRunner().invoke(cli, ["models", "fetch", "--no-progress", "--timeout", "5"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach 127.0.0.1: ")
    assert "Traceback" not in result.output
    assert listing(models_dir) == {"manifest.toml"}


def test_cli_fetch_unknown_name_exits_2(cli: typer.Typer, models_dir: Path) -> None:
    write_manifest(models_dir, "http://127.0.0.1:9/w.pth", "http://127.0.0.1:9/s.zip")
    result = CliRunner().invoke(cli, ["models", "fetch", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown download nope (known: weights, styles)"


def test_cli_bad_manifest_is_one_line(cli: typer.Typer, models_dir: Path) -> None:
    models_dir.mkdir()
    (models_dir / "manifest.toml").write_text("[downloads.x]\nfile = 'x.pth'\n")
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: bad manifest: download 'x'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_list_shows_installed_status(
    cli: typer.Typer, server: LocalServer, models_dir: Path
) -> None:
    serve_manifest(server, models_dir)
    before = CliRunner().invoke(cli, ["models", "list"])
    assert before.exit_code == 0
    assert "yes" not in before.stdout

    assert CliRunner().invoke(cli, ["models", "fetch", "styles", "--no-progress"]).exit_code == 0
    after = CliRunner().invoke(cli, ["models", "list"])
    rows = {tuple(line.split()[:3]) for line in after.stdout.splitlines()}
    assert ("KIND", "NAME", "INSTALLED") in rows
    assert ("download", "styles", "yes") in rows
    assert ("download", "weights", "no") in rows
    assert ("style", "alpha", "yes") in rows and ("style", "beta", "yes") in rows
