"""The Dockerfile: hadolint finds nothing (every level, info included), and the image is built
the way the deployment needs: two stages, nothing built in the runtime stage, the CUDA build of
torch, weights fetched at build time, a non-root user, a HEALTHCHECK."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.conftest import DOCKERFILE, REPO, hadolint


def stages(text: str) -> list[str]:
    """The Dockerfile split at each FROM, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    parts = re.split(r"(?m)^FROM\s", joined)
    return ["FROM " + part for part in parts[1:]]


def instructions(stage: str, keyword: str) -> list[str]:
    return [
        line.split(None, 1)[1] if " " in line else ""
        for line in stage.splitlines()
        if line.split(None, 1)[:1] == [keyword]
    ]


def test_hadolint_finds_nothing() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text(encoding="utf-8")
    text = text.replace("ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python")
    text = text.replace("WORKDIR /src\n", "RUN cd /src && apt-get install gcc\n", 1)
    broken.write_text(text, encoding="utf-8")
    codes = {finding["code"] for finding in hadolint(broken)}
    assert {"DL3003", "DL3008"} <= codes, codes


def test_hadolint_reports_syntax_errors(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text(encoding="utf-8") + "\nCOPYY app /x\n", "utf-8")
    assert hadolint(broken), "an unknown instruction must be a finding"


def test_runtime_stage_builds_nothing() -> None:
    build, runtime = stages(DOCKERFILE.read_text(encoding="utf-8"))
    assert " AS build" in build.splitlines()[0] and " AS runtime" in runtime.splitlines()[0]
    assert re.search(r'pip install --no-cache-dir "torch==2\.14\.1"', build)
    assert "atelier models fetch" in build, "weights are fetched at build time"
    for command in instructions(runtime, "RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\s+install\b", command), command
    assert "pip uninstall" in runtime, "the installer does not ship"
    copies = instructions(runtime, "COPY")
    assert any(c.startswith("--from=build /opt/venv") for c in copies)
    assert any(c.startswith("--from=build /srv/atelier/models") for c in copies)


def test_runtime_stage_runs_unprivileged_with_a_healthcheck() -> None:
    _, runtime = stages(DOCKERFILE.read_text(encoding="utf-8"))
    (user,) = instructions(runtime, "USER")
    assert user.split(":")[0] not in ("root", "0")
    (healthcheck,) = instructions(runtime, "HEALTHCHECK")
    assert "/health/ready" in healthcheck
    assert instructions(runtime, "CMD") == ['["atelier", "serve"]']


def test_the_build_context_keeps_what_the_image_needs() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for needed in ("app", "models", "pyproject.toml", "README.md", "swagger-samples"):
        assert needed not in ignored, f"{needed} is copied into the image"
    for heavy in (".venv", ".git", "tests", "data"):
        assert heavy in ignored


def test_the_installed_package_ships_its_data(tmp_path: Path) -> None:
    """The image installs the package with `pip install .` (not editable): the web assets, the
    style photos and the job table's migrations must be inside the wheel, or the image lacks
    them. Built offline from a copy of the sources, so the checkout gets no build/ folder."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*pip_wheel, "--quiet", "--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = wheels.glob("atelier-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = [
        path.relative_to(REPO).as_posix()
        for folder in ("app/web", "app/migrations")
        if (REPO / folder).is_dir()
        for path in (REPO / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".mako"
    ]
    expected += [p.relative_to(REPO).as_posix() for p in (REPO / "app" / "styles").glob("*.jpg")]
    assert any(name.startswith("app/web/") for name in expected)
    missing = sorted(set(expected) - shipped)
    assert not missing, f"not in the wheel the image installs: {missing}"
