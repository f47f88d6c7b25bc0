"""deploy/kubernetes: both kustomizations render, every resource passes the Kubernetes (or KEDA)
schema, and the manifests say what the issue asks of them. The last tests break a copy of the
manifests and show that the same checks then fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.jobs.kinds import KINDS, queue_name
from app.jobs.models import Job
from tests.deploy.conftest import (
    JOB_KINDS,
    KUBERNETES_DIR,
    KUSTOMIZATIONS,
    Doc,
    Rendered,
    RenderError,
    containers,
    find,
    keda_errors,
    kubectl_kustomize,
    kustomize_build,
    manifest_errors,
    render,
)

SECRET_EXAMPLE = KUBERNETES_DIR / "secret.example.yaml"


def env(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


# --------------------------------------------------------------------------------------------
# Rendering and schemas
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_resource_passes_its_schema(kustomization: str) -> None:
    docs = render(KUBERNETES_DIR / kustomization)
    kinds = sorted({doc["kind"] for doc in docs})
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(
        kinds
    ), kinds
    assert {"ScaledObject", "TriggerAuthentication", "ConfigMap"} <= set(kinds), kinds
    assert manifest_errors(docs) == []


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_same(kustomization: str) -> None:
    """Operators run `kubectl apply -k` (kustomize v5 inside kubectl): it must build the same
    objects as the pinned kustomize the suite renders with."""
    directory = KUBERNETES_DIR / kustomization
    by_kubectl = kubectl_kustomize(directory)
    if by_kubectl is None:
        pytest.skip("kubectl is not installed; the pinned kustomize still renders and validates")
    assert list(yaml.safe_load_all(by_kubectl)) == list(
        yaml.safe_load_all(kustomize_build(directory))
    )


def test_the_example_secret_is_valid_and_has_every_key_the_manifests_use(
    rendered: Rendered,
) -> None:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    assert manifest_errors([secret]) == []
    provided = set(secret["stringData"])
    used = set()
    for doc in rendered.gpu:
        if doc["kind"] == "Deployment":
            for container in containers(doc):
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == secret["metadata"]["name"]
                        used.add(ref["key"])
        if doc["kind"] == "TriggerAuthentication":
            for ref in doc["spec"]["secretTargetRef"]:
                assert ref["name"] == secret["metadata"]["name"]
                used.add(ref["key"])
    assert used == provided, (
        f"missing from the example: {used - provided}; unused: {provided - used}"
    )


def test_no_secret_is_committed(rendered: Rendered) -> None:
    assert [doc for doc in rendered.gpu if doc["kind"] == "Secret"] == []


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


def test_api_probes_security_and_resources(rendered: Rendered) -> None:
    api = find(rendered.gpu, "Deployment", "atelier-api")
    pod = api["spec"]["template"]["spec"]
    (container,) = containers(api)
    assert container["command"] == ["atelier", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "model loading time"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    data_dir = env(container).get("ATELIER_DATA_DIR", {}).get("value") or settings_value(
        rendered.gpu, "ATELIER_DATA_DIR"
    )
    assert data_dir in mounts, "the data dir must be a volume (the root filesystem is read-only)"
    assert "/tmp" in mounts

    resources = container["resources"]
    assert resources["requests"]["memory"] and resources["requests"]["cpu"]
    assert resources["limits"]["memory"]
    assert "nvidia.com/gpu" not in resources.get("limits", {}), "the API runs on CPU nodes"

    variables = env(container)
    for name, key in (("ATELIER_API_KEYS", "api-keys"), ("ATELIER_DATABASE_URL", "database-url")):
        assert variables[name]["valueFrom"]["secretKeyRef"]["key"] == key
    assert variables["ATELIER_EMBEDDED_WORKER"]["value"] == "false"
    assert any("configMapRef" in source for source in container["envFrom"])


def test_api_shutdown_fits_its_grace_period(rendered: Rendered) -> None:
    api = find(rendered.gpu, "Deployment", "atelier-api")
    (container,) = containers(api)
    grace_s = float(settings_value(rendered.gpu, "ATELIER_SHUTDOWN_GRACE_S"))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(pre_stop[1]) + grace_s + 10 <= budget, "room for the drain, the bound and one pass"


def test_api_service_autoscaler_and_disruption_budget(rendered: Rendered) -> None:
    api = find(rendered.gpu, "Deployment", "atelier-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    service = find(rendered.gpu, "Service", "atelier-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = find(rendered.gpu, "HorizontalPodAutoscaler", "atelier-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "atelier-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in api["spec"], "the autoscaler owns the replica count"
    pdb = find(rendered.gpu, "PodDisruptionBudget", "atelier-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain can proceed"


def settings_value(docs: list[Doc], name: str) -> str:
    (config,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    return config["data"][name]


# --------------------------------------------------------------------------------------------
# Workers and KEDA
# --------------------------------------------------------------------------------------------


def test_every_job_kind_is_deployed() -> None:
    """A new job kind needs its worker Deployment and ScaledObject (and a compose service)."""
    assert set(JOB_KINDS) == set(KINDS)


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_each_kind_has_a_gpu_worker(rendered: Rendered, kind: str) -> None:
    worker = find(rendered.gpu, "Deployment", f"atelier-worker-{kind}")
    (container,) = containers(worker)
    assert container["command"] == ["atelier", "worker", "--kind", kind]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert env(container)["ATELIER_DEVICE"]["value"] == "cuda"
    pod = worker["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] >= 60, "time to checkpoint and hand the job back"
    assert "replicas" not in worker["spec"], "KEDA owns the replica count"
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "no GPU for a surge pod"


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_base_workers_run_without_gpus(rendered: Rendered, kind: str) -> None:
    (container,) = containers(find(rendered.base, "Deployment", f"atelier-worker-{kind}"))
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert env(container)["ATELIER_DEVICE"]["value"] == "cpu"


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_each_worker_scales_to_zero_on_its_queue(rendered: Rendered, kind: str) -> None:
    scaled = find(rendered.gpu, "ScaledObject", f"atelier-worker-{kind}")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == f"atelier-worker-{kind}"
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] >= 1
    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    redis = triggers["redis"]["metadata"]
    assert redis["listName"] == queue_name(kind) == f"atelier.{kind}"
    assert int(redis["listLength"]) >= 1
    assert int(redis["activationListLength"]) == 0
    postgres = triggers["postgresql"]["metadata"]
    assert f"kind = '{kind}'" in postgres["query"]
    for trigger in triggers.values():
        ref = trigger["authenticationRef"]["name"]
        find(rendered.gpu, "TriggerAuthentication", ref)


def test_the_job_count_query_matches_the_job_table(rendered: Rendered) -> None:
    """KEDA's PostgreSQL trigger reads the job table directly: its table and columns must be the
    ones app/jobs/models.py creates."""
    columns = set(Job.__table__.columns.keys())
    for doc in rendered.gpu:
        if doc["kind"] != "ScaledObject":
            continue
        for trigger in doc["spec"]["triggers"]:
            if trigger["type"] != "postgresql":
                continue
            query = trigger["metadata"]["query"]
            table = re.search(r"\bFROM\s+(\w+)", query, re.IGNORECASE)
            assert table is not None and table.group(1) == Job.__tablename__, query
            used = set(re.findall(r"\b(\w+)\s*(?:=|\bIN\b)", query, re.IGNORECASE))
            assert used and used <= columns, f"{query}: {used - columns} not in {Job.__tablename__}"


# --------------------------------------------------------------------------------------------
# Broken on purpose: the checks above must catch these
# --------------------------------------------------------------------------------------------


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_misspelt_field_fails(deploy_copy: Path) -> None:
    edit(
        deploy_copy / "base" / "api-deployment.yaml", "failureThreshold: 60", "failureTreshold: 60"
    )
    errors = manifest_errors(render(deploy_copy / "overlays" / "gpu"))
    assert any("Deployment/atelier-api" in e and "failureTreshold" in e for e in errors), errors


def test_a_wrong_type_fails(deploy_copy: Path) -> None:
    edit(deploy_copy / "base" / "api-hpa.yaml", "minReplicas: 2", "minReplicas: two")
    errors = manifest_errors(render(deploy_copy / "base"))
    assert any("HorizontalPodAutoscaler/atelier-api" in e for e in errors), errors


def test_broken_yaml_fails_to_render(deploy_copy: Path) -> None:
    edit(deploy_copy / "base" / "api-service.yaml", "  selector:\n", "  selector: [\n")
    with pytest.raises(RenderError):
        render(deploy_copy / "overlays" / "gpu")


def test_a_missing_resource_file_fails_to_render(deploy_copy: Path) -> None:
    (deploy_copy / "base" / "api-pdb.yaml").unlink()
    with pytest.raises(RenderError, match=r"api-pdb\.yaml"):
        render(deploy_copy / "base")


def test_a_scaled_object_without_its_target_fails(deploy_copy: Path) -> None:
    path = deploy_copy / "base" / "keda-scaledobjects.yaml"
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    del docs[0]["spec"]["scaleTargetRef"]
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    errors = manifest_errors(render(deploy_copy / "overlays" / "gpu"))
    assert any("ScaledObject/atelier-worker-gatys" in e and "scaleTargetRef" in e for e in errors)


def test_a_misspelt_keda_field_fails(deploy_copy: Path) -> None:
    edit(deploy_copy / "base" / "keda-scaledobjects.yaml", "cooldownPeriod:", "cooldownPeriods:")
    errors = manifest_errors(render(deploy_copy / "base"))
    assert any("unknown field .spec.cooldownPeriods" in e for e in errors), errors


def test_a_keda_trigger_without_a_type_fails() -> None:
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"metadata": {}}]},
    }
    assert any("type" in error for error in keda_errors(scaled))


def test_a_broken_overlay_patch_fails(deploy_copy: Path) -> None:
    edit(
        deploy_copy / "overlays" / "gpu" / "worker-gpu.yaml",
        "nvidia.com/gpu: 1",
        "nvidia.com/gpu: lots",
    )
    errors = manifest_errors(render(deploy_copy / "overlays" / "gpu"))
    assert any("atelier-worker-gatys" in e for e in errors), errors


def test_the_copy_itself_is_clean(deploy_copy: Path) -> None:
    """The broken-copy tests start from a copy that passes, so each failure is its own edit."""
    assert manifest_errors(render(deploy_copy / "overlays" / "gpu")) == []
