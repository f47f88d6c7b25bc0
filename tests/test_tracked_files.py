"""Generated state never belongs in git: databases, caches, exports, results and data folders
are rebuilt at run time, and a committed copy goes stale and bloats every clone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Path patterns of generated state, matched against `git ls-files` output (POSIX paths).
GENERATED = (
    re.compile(r"(^|/)__pycache__/"),
    re.compile(r"\.py[co]$"),
    re.compile(r"\.(db|sqlite|sqlite3)(-journal|-wal|-shm)?$"),
    re.compile(r"\.onnx(\.tmp)?$"),
    re.compile(r"\.safetensors$"),
    re.compile(r"(^|/)data(-[^/]*)?/"),
    re.compile(r"(^|/)[^/]*cache[^/]*/"),
    re.compile(r"(^|/)(results|test-artifacts|thumbnails)/"),
    re.compile(r"\.egg-info/"),
)
# Deliberately committed: trained style weights shipped with the service.
ALLOWED = (re.compile(r"^models/[^/]+\.safetensors$"),)


def generated_paths(paths: list[str]) -> list[str]:
    return [
        path
        for path in paths
        if any(p.search(path) for p in GENERATED) and not any(a.match(path) for a in ALLOWED)
    ]


def tracked_files() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"git ls-files failed in {REPO}: {exc}")
    return [path for path in listing.stdout.decode().split("\0") if path]


def test_no_generated_state_is_tracked() -> None:
    tracked = tracked_files()
    assert "app/main.py" in tracked, "git ls-files did not list the repository"
    assert generated_paths(tracked) == []


def test_the_patterns_catch_what_they_are_for() -> None:
    """The check itself must be able to fail: each kind of generated file is caught, and
    source files and deliberately committed weights are not."""
    generated = [
        "data-schema-only/jobs.db",
        "data-schema-only/cache/onnx/MultiStyleNet-79ee45330ee49c0e.onnx",
        "data/cache/multistyle26.safetensors",
        "app/__pycache__/main.cpython-311.pyc",
        "bench/results/predict.json",
        "jobs.db",
        "exports/net.onnx",
    ]
    kept = [
        "models/my-style.safetensors",
        "models/manifest.toml",
        "app/weights/tensor_cache.py",
        "app/main.py",
        "docs/styles/tapestry.jpg",
    ]
    assert generated_paths(generated + kept) == generated
