"""The stack's shape in the deploy files: ports match the settings defaults, every compose service
has a healthcheck, the GPU wiring is present in the base stack and the cluster and gone in the tiny
override, and the cluster runs one beat."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from shared.queues import GPU_QUEUE
from shared.settings import Settings
from tests.compose_files import load_compose
from tests.deploy.test_deploy_config import (
    COMPOSE,
    SEAWEED,
    TINY,
    _default,
    _idbody_argvs,
    _job_containers,
    _k8s,
    _k8s_docs,
    _pod_containers,
    _port,
)

# ---------------------------------------------------------------- ports

def _api_paths() -> set[str]:
    from api.main import create_app

    return set(create_app(Settings(_env_file=None)).openapi()["paths"])


def test_compose_ports_match_settings_defaults() -> None:
    services = load_compose(COMPOSE)["services"]
    api_port = _default("api_port")
    s3_port = _port(_default("s3_endpoint_url"))
    redis_port = _port(_default("redis_url"))
    assert (api_port, s3_port, redis_port) == (8000, 8333, 6379)

    def container_ports(service: dict) -> set[int]:
        return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}

    assert container_ports(services["api"]) == {api_port}
    assert container_ports(services["s3"]) == {s3_port}
    assert container_ports(services["redis"]) == {redis_port}
    api_cmd = services["api"]["command"]
    assert api_cmd[api_cmd.index("--port") + 1] == str(api_port)

    in_network = services["api"]["environment"]
    assert _port(in_network["IDBODY_REDIS_URL"]) == redis_port
    assert _port(in_network["IDBODY_S3_ENDPOINT_URL"]) == s3_port
    assert urlsplit(in_network["IDBODY_REDIS_URL"]).hostname == "redis"
    assert urlsplit(in_network["IDBODY_S3_ENDPOINT_URL"]).hostname == "s3"
    assert f"-s3.port={s3_port}" in (SEAWEED / "s3-start.sh").read_text()
    assert f"127.0.0.1:{s3_port}/healthz" in " ".join(services["s3"]["healthcheck"]["test"])
    api_check = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(services["api"]["healthcheck"]["test"]))
    assert api_check and int(api_check.group(1)) == api_port and api_check.group(2) in _api_paths()


def test_k8s_ports_match_settings_defaults() -> None:
    api_port = _default("api_port")
    deployment = _k8s("Deployment", "idbody-api")
    container = _pod_containers(deployment)[0]
    assert [p["containerPort"] for p in container["ports"]] == [api_port]
    assert container["command"][container["command"].index("--port") + 1] == str(api_port)
    assert [p["port"] for p in _k8s("Service", "idbody-api")["spec"]["ports"]] == [api_port]
    paths = _api_paths()
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths & {"/healthz", "/readyz"}

    config = _k8s("ConfigMap", "idbody-settings")["data"]
    trigger = _k8s("ScaledObject", "idbody-worker-gpu")["spec"]["triggers"][0]["metadata"]
    redis = urlsplit(config["IDBODY_REDIS_URL"])
    keda_redis = _k8s("Secret", "idbody-keda-redis")["stringData"]  # via the TriggerAuthentication
    assert keda_redis["address"] == f"{redis.hostname}:{redis.port}"
    assert trigger["databaseIndex"] == redis.path.strip("/")


# ---------------------------------------------------------------- stack shape

def test_every_compose_service_has_a_healthcheck_and_conditional_dependencies() -> None:
    for files in ((COMPOSE,), (COMPOSE, TINY)):
        services = load_compose(*files)["services"]
        for name, service in services.items():
            assert service["healthcheck"]["test"], name
            for dep, spec in (service.get("depends_on") or {}).items():
                assert dep in services, f"{name} depends on unknown {dep}"
                assert spec["condition"] in {"service_healthy", "service_completed_successfully"}, f"{name}->{dep}"
                if spec["condition"] == "service_completed_successfully":
                    assert services[dep].get("restart") == "no", f"{dep} is a one-shot"


def test_gpu_worker_reserves_one_gpu_and_waits_for_the_weights() -> None:
    services = load_compose(COMPOSE)["services"]
    worker = services["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "models:/models:ro" in worker["volumes"]
    assert worker["command"] == ["idbody", "worker", "--queues", GPU_QUEUE]
    assert worker["healthcheck"]["test"] == ["CMD", "idbody", "worker", "ready"]
    assert worker["depends_on"]["models"] == {"condition": "service_completed_successfully"}
    assert worker["environment"]["IDBODY_MODEL_PROFILE"] == "instantid"
    models = services["models"]
    assert "models:/models" in models["volumes"]
    assert [a[1:] for a in _idbody_argvs(models["command"])] == [["models", "download"], ["models", "verify"]]
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"


def test_tiny_override_runs_on_cpu_without_the_gpu_or_the_download() -> None:
    services = load_compose(COMPOSE, TINY)["services"]
    worker = services["worker-gpu"]
    assert "deploy" not in worker
    assert "models" not in worker["depends_on"]
    assert worker["build"]["target"] == "cpu"
    assert worker["environment"]["IDBODY_MODEL_PROFILE"] == "tiny"
    assert worker["environment"]["IDBODY_DEVICE"] == "cpu"
    assert not any(v.startswith("models:") for v in worker["volumes"])
    # the download service stays defined but is only started when its profile is asked for
    assert services["models"]["profiles"] == ["instantid"]
    assert not any("models" in (s.get("depends_on") or {}) for s in services.values())


def test_k8s_gpu_workers_run_one_pod_per_gpu_on_a_read_only_model_volume() -> None:
    deployment = _k8s("Deployment", "idbody-worker-gpu")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"] == ["idbody", "worker", "--queues", GPU_QUEUE]
    assert container["readinessProbe"]["exec"]["command"] == ["idbody", "worker", "ready"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is True
    model_dir = _k8s("ConfigMap", "idbody-settings")["data"]["IDBODY_MODEL_DIR"]
    job_container = _job_containers(_k8s("Job", "idbody-models"))[0]
    assert mount["mountPath"] == model_dir == job_container["volumeMounts"][0]["mountPath"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert pod["terminationGracePeriodSeconds"] >= _default("task_time_limit_s")

    scaled = _k8s("ScaledObject", "idbody-worker-gpu")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert (trigger["type"], trigger["metadata"]["listName"]) == ("redis", GPU_QUEUE)

    pdb = _k8s("PodDisruptionBudget", "idbody-worker-gpu")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_k8s_runs_exactly_one_beat() -> None:
    beats = [
        (d["metadata"]["name"], d["spec"]["replicas"])
        for d in _k8s_docs() if d["kind"] == "Deployment"
        for c in _pod_containers(d) if "--beat" in c.get("command", [])
    ]
    assert beats == [("idbody-worker-io-beat", 1)]
