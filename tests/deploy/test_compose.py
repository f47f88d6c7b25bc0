"""docker-compose.yml against the Compose Specification schema, and its per-kind workers."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.conftest import COMPOSE_FILE, JOB_KINDS, compose_errors


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]


def test_compose_file_matches_the_specification() -> None:
    assert compose_errors(COMPOSE_FILE) == []


def test_one_gpu_worker_per_job_kind() -> None:
    defined = services()
    for kind in JOB_KINDS:
        worker = defined[f"worker-{kind}"]
        assert worker["command"] == ["atelier", "worker", "--kind", kind]
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["count"] == 1
        assert worker["environment"]["ATELIER_DEVICE"] == "cuda"
        assert worker["healthcheck"] == {"disable": True}, "workers serve no HTTP"
    assert "worker" not in defined, "the single catch-all worker is gone"


def test_api_runs_no_jobs_and_stops_within_its_grace_period() -> None:
    api = services()["api"]
    assert api["environment"]["ATELIER_EMBEDDED_WORKER"] == "false"
    grace_s = float(api["environment"]["ATELIER_SHUTDOWN_GRACE_S"])
    assert float(api["stop_grace_period"].removesuffix("s")) >= grace_s + 10


def test_a_wrong_type_fails(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    broken.write_text(text.replace('      - "8000:8000"\n', "      8000: 8000\n", 1), "utf-8")
    errors = compose_errors(broken)
    assert any(error.startswith("docker-compose.yml: services/api/ports") for error in errors)


def test_an_unknown_key_fails(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    broken.write_text(text.replace("    stop_grace_period: 60s", "    stop_grace: 60s", 1), "utf-8")
    errors = compose_errors(broken)
    assert any("stop_grace" in error for error in errors), errors


def test_broken_yaml_fails(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text(encoding="utf-8") + "\n  - [unclosed\n", "utf-8")
    assert compose_errors(broken)
