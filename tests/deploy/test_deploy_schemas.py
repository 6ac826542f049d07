"""The compose files and the cluster manifests validate against their published schemas, offline.

Compose: the Compose Specification JSON schema as vendored by the ``check-jsonschema`` package.
Kubernetes: the per-version schemas the ``kubernetes-validate`` package ships (strict: unknown
fields fail). KEDA's ScaledObject is a CRD those schemas lack: deploy/schemas/ holds one written
from KEDA's documented fields. Tools are installed by deploy/ci-tools.sh.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose_files import load_compose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TINY = ROOT / "docker-compose.tiny.yml"
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMA = ROOT / "deploy" / "schemas" / "keda-scaledobject-v1alpha1.json"
# validated against our own schema, or (kustomize's file) checked by test_kustomization_lists_every_manifest
NOT_IN_K8S_SCHEMAS = {"ScaledObject", "TriggerAuthentication", "Kustomization"}
KEDA_AUTH_SCHEMA = ROOT / "deploy" / "schemas" / "keda-triggerauthentication-v1alpha1.json"

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with the test extra")


def _tool_missing(what: str) -> pytest.fail.Exception:
    return pytest.fail(f"{what} is not installed: run deploy/ci-tools.sh (as .ci/run does)", pytrace=False)


@pytest.fixture(scope="module")
def compose_validator() -> Any:
    try:
        schema_text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    except ModuleNotFoundError:
        _tool_missing("check-jsonschema (it ships the Compose Specification schema)")
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ModuleNotFoundError:
        _tool_missing("kubernetes-validate (it ships the Kubernetes schemas)")
    return kubernetes_validate


def _errors(validator: Any, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def _manifests() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def test_compose_file_matches_the_compose_specification(compose_validator) -> None:
    assert _errors(compose_validator, load_compose(COMPOSE)) == []


def test_compose_with_tiny_override_matches_the_compose_specification(compose_validator) -> None:
    assert _errors(compose_validator, load_compose(COMPOSE, TINY)) == []


def test_compose_schema_check_rejects_a_misspelt_field(compose_validator) -> None:
    broken = copy.deepcopy(load_compose(COMPOSE))
    broken["services"]["api"]["healthcheck"]["retires"] = 3
    broken["services"]["worker-gpu"]["depends_on"]["redis"]["condition"] = "service_ready"
    errors = _errors(compose_validator, broken)
    assert any("retires" in e for e in errors)
    assert any("service_ready" in e for e in errors)


def test_kubernetes_manifests_match_the_kubernetes_schemas(kubernetes_validate) -> None:
    version = kubernetes_validate.latest_version()
    checked = []
    for name, doc in _manifests():
        if doc["kind"] in NOT_IN_K8S_SCHEMAS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(f"{name}:{doc['kind']}")
    kinds = {c.split(":")[1] for c in checked}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret", "Job", "PersistentVolumeClaim"} <= kinds


def test_kubernetes_check_rejects_an_unknown_field(kubernetes_validate) -> None:
    deployment = next(doc for name, doc in _manifests() if name == "worker-gpu.yaml")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {"limits": {"nvidia.com/gpu": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_keda_scaledobject_matches_the_documented_fields() -> None:
    schema = json.loads(KEDA_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    scaled = [doc for _, doc in _manifests() if doc["kind"] == "ScaledObject"]
    assert len(scaled) == 1
    assert _errors(validator, scaled[0]) == []

    broken = copy.deepcopy(scaled[0])
    del broken["spec"]["triggers"][0]["metadata"]["listLength"]
    broken["spec"]["triggers"][0]["metadata"]["listLenght"] = "4"
    broken["spec"]["minReplicas"] = 1
    errors = _errors(validator, broken)
    assert any("listLength" in e for e in errors)
    assert any("listLenght" in e for e in errors)
    assert any("minReplicas" in e for e in errors)


def test_keda_reads_redis_address_and_password_from_a_secret() -> None:
    """No Redis address in the trigger: KEDA gets it, and the password, from a Secret through a
    TriggerAuthentication, so the scaler works on a managed Redis with AUTH."""
    schema = json.loads(KEDA_AUTH_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    docs = _manifests()
    (scaled,) = [doc for _, doc in docs if doc["kind"] == "ScaledObject"]
    (auth,) = [doc for _, doc in docs if doc["kind"] == "TriggerAuthentication"]
    assert _errors(validator, auth) == []
    trigger = scaled["spec"]["triggers"][0]
    assert not {"address", "host", "port", "addressFromEnv"} & set(trigger["metadata"])
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert {"address", "password"} <= set(refs)
    secrets = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "Secret"}
    for ref in refs.values():
        assert ref["key"] in secrets[ref["name"]]["stringData"], ref
    broken = copy.deepcopy(auth)
    broken["spec"]["secretTargetRef"][0]["parameter"] = "adress"
    assert any("adress" in e for e in _errors(validator, broken))
    # without the authenticationRef the trigger must say where Redis is
    keda = jsonschema.Draft202012Validator(json.loads(KEDA_SCHEMA.read_text()))
    unauthenticated = copy.deepcopy(scaled)
    del unauthenticated["spec"]["triggers"][0]["authenticationRef"]
    assert _errors(keda, unauthenticated)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
