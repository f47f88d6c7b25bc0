"""Every ATELIER_* variable the deploy files set is a setting of app/core/config.py: a misspelt or
removed setting is otherwise ignored silently (pydantic-settings reads only what it knows)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.core.config import Settings
from tests.deploy.conftest import (
    COMPOSE_FILE,
    DOCKERFILE,
    KUBERNETES_DIR,
    KUSTOMIZATIONS,
    Doc,
    render,
)

PREFIX = "ATELIER_"


def known_variables() -> set[str]:
    assert Settings.model_config.get("env_prefix") == PREFIX
    return {PREFIX + name.upper() for name in Settings.model_fields}


def manifest_variables(docs: list[Doc]) -> set[str]:
    found = set()
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            found.update(doc.get("data", {}))
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            found.update(item["name"] for item in container.get("env", []))
    return {name for name in found if name.startswith(PREFIX)}


def compose_variables(path: Path) -> set[str]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    found = set()
    for service in data["services"].values():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        found.update(environment)
    return {name for name in found if name.startswith(PREFIX)}


def dockerfile_variables(path: Path) -> set[str]:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    return set(re.findall(r"\b(ATELIER_[A-Z0-9_]+)=", text))


def unknown(found: set[str]) -> set[str]:
    return found - known_variables()


def test_kubernetes_manifests_set_only_real_settings() -> None:
    for kustomization in KUSTOMIZATIONS:
        found = manifest_variables(render(KUBERNETES_DIR / kustomization))
        assert {"ATELIER_DATABASE_URL", "ATELIER_BROKER_URL", "ATELIER_API_KEYS"} <= found
        assert unknown(found) == set(), kustomization


def test_compose_file_sets_only_real_settings() -> None:
    found = compose_variables(COMPOSE_FILE)
    assert {"ATELIER_DATABASE_URL", "ATELIER_BROKER_URL"} <= found
    assert unknown(found) == set()


def test_dockerfile_sets_only_real_settings() -> None:
    found = dockerfile_variables(DOCKERFILE)
    assert "ATELIER_DATA_DIR" in found
    assert unknown(found) == set()


def test_a_misspelt_setting_is_reported(deploy_copy: Path, tmp_path: Path) -> None:
    settings_env = deploy_copy / "base" / "settings.env"
    settings_env.write_text(
        settings_env.read_text(encoding="utf-8") + "ATELIER_SHUTDOWN_GRACE=20\n", "utf-8"
    )
    assert unknown(manifest_variables(render(deploy_copy / "base"))) == {"ATELIER_SHUTDOWN_GRACE"}

    compose = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    compose.write_text(text.replace("ATELIER_DEVICE: cuda", "ATELIER_DEVIC: cuda"), "utf-8")
    assert unknown(compose_variables(compose)) == {"ATELIER_DEVIC"}
