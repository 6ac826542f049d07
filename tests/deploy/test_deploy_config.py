"""No drift between what the deploy files say and what the code reads: every IDBODY_* name is a
field of shared.settings.Settings (and its value parses), every `idbody ...` command parses with
the real CLI, ports match the settings defaults, and the gpu worker's GPU wiring is where it
should be (present in the base stack and the cluster, gone in the tiny override)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from idbody import cli
from shared.settings import ENV_PREFIX, Settings
from tests.compose_files import interpolate, load_compose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TINY = ROOT / "docker-compose.tiny.yml"
K8S = ROOT / "deploy" / "k8s"
SEAWEED = ROOT / "deploy" / "seaweedfs"
DOCKERFILES = sorted((ROOT / "deploy").glob("*.Dockerfile"))
ENV_NAME = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]*[A-Z0-9]\b")
SIBLING_BRANCHES = "service-api, service-worker, engine-models"

# what the stack needs the CLI to offer (argv after `idbody`)
REQUIRED_COMMANDS = {
    ("api",), ("worker", "--queues", "gpu"), ("worker", "--queues", "io"),
    ("worker", "ready"), ("models", "download"), ("models", "verify"),
}


def _default(field: str) -> Any:
    value = Settings.model_fields[field].default
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _port(url: str) -> int:
    return int(urlsplit(url).port)


# ---------------------------------------------------------------- files and what they contain

def _k8s_docs() -> list[dict]:
    return [d for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _k8s(kind: str, name: str) -> dict:
    return next(d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def _pod_containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    return spec.get("template", {}).get("spec", {}).get("containers", [])


def _idbody_argvs(argv: list[str] | str) -> list[list[str]]:
    """`idbody` invocations in a command: direct, or inside `sh -c "a && b"`."""
    if isinstance(argv, str):
        argv = ["/bin/sh", "-c", argv]
    if argv and argv[0] == "idbody":
        return [argv]
    if len(argv) >= 3 and argv[0] in {"/bin/sh", "sh"} and argv[1] == "-c":
        parts = re.split(r"&&|\|\||;", argv[2])
        return [shlex.split(p) for p in parts if shlex.split(p)[:1] == ["idbody"]]
    return []


def _healthcheck_argv(test: list[str] | str) -> list[str] | str:
    if isinstance(test, str):
        return test
    if test[0] == "CMD":
        return test[1:]
    if test[0] == "CMD-SHELL":
        return test[1]
    return []


def _compose_commands() -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for label, model in (("compose", load_compose(COMPOSE)), ("compose+tiny", load_compose(COMPOSE, TINY))):
        for name, service in model["services"].items():
            for argv in (service.get("command") or [], _healthcheck_argv(service["healthcheck"]["test"])):
                found.setdefault(f"{label}:{name}", []).extend(_idbody_argvs(argv))
    return found


def _k8s_commands() -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for doc in _k8s_docs():
        for c in _pod_containers(doc) or _job_containers(doc):
            where = f"k8s:{doc['metadata']['name']}/{c['name']}"
            found.setdefault(where, []).extend(_idbody_argvs(c.get("command", []) + c.get("args", [])))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if "exec" in c.get(probe, {}):
                    found[where].extend(_idbody_argvs(c[probe]["exec"]["command"]))
    return found


def _job_containers(doc: dict) -> list[dict]:
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) if doc["kind"] == "Job" else []


def _dockerfile_commands() -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for path in DOCKERFILES:
        for line in path.read_text().splitlines():
            if line.startswith("CMD ["):
                found.setdefault(path.name, []).extend(_idbody_argvs(yaml.safe_load(line[4:])))
    return found


def _all_commands() -> list[tuple[str, list[str]]]:
    out = []
    for source in (_compose_commands(), _k8s_commands(), _dockerfile_commands()):
        out.extend((where, argv) for where, argvs in source.items() for argv in argvs)
    return out


# ---------------------------------------------------------------- settings names and values

def _env_name_sources() -> list[Path]:
    return [COMPOSE, TINY, ROOT / ".env.example", *sorted(K8S.glob("*.yaml")), *sorted(SEAWEED.glob("*.sh")), *DOCKERFILES]


def test_every_idbody_env_name_is_a_settings_field() -> None:
    unknown = {}
    for path in _env_name_sources():
        for name in set(ENV_NAME.findall(path.read_text())):
            if name[len(ENV_PREFIX):].lower() not in Settings.model_fields:
                unknown.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    assert unknown == {}, f"not fields of shared.settings.Settings: {unknown}"


def _environment(service: dict, dotenv: dict[str, str] | None = None) -> dict[str, str]:
    """The service's ``environment`` as Compose passes it, ``${...}`` filled from ``dotenv``."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v), dotenv or {}) for k, v in env.items()}


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_environment_values_in_compose_parse_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = {}
    for label, files in (("base", (COMPOSE,)), ("tiny", (COMPOSE, TINY))):
        for name, service in load_compose(*files)["services"].items():
            env = {k: v for k, v in _environment(service).items() if k.startswith(ENV_PREFIX)}
            with monkeypatch.context() as m:
                parsed[label, name] = _settings_from(env, m)  # raises on a value Settings refuses
    assert (parsed["base", "worker-gpu"].model_profile, parsed["base", "worker-gpu"].device) == ("instantid", "cuda")
    assert (parsed["tiny", "worker-gpu"].model_profile, parsed["tiny", "worker-gpu"].device) == ("tiny", "cpu")
    assert parsed["tiny", "worker-gpu"].onnx_providers == ["CPUExecutionProvider"]
    assert parsed["base", "api"].redis_url == "redis://redis:6379/0"


def test_result_urls_name_the_s3_port_published_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services write through http://s3:8333; the URLs they hand out must name the address a client
    on the host reaches, unless .env names another (a LAN or public name)."""
    services = load_compose(COMPOSE)["services"]
    published = [str(p) for p in services["s3"]["ports"]]
    for dotenv, expected in (({}, None), ({"IDBODY_S3_PRESIGN_ENDPOINT_URL": "https://s3.lan.test"}, "https://s3.lan.test")):
        for name in ("api", "worker-gpu", "worker-io"):
            with monkeypatch.context() as m:
                settings = _settings_from(_environment(services[name], dotenv), m)
            url = urlsplit(settings.s3_presign_endpoint_url)
            if expected:
                assert settings.s3_presign_endpoint_url == expected, name
            else:
                assert f"{url.hostname}:{url.port}:{_port(settings.s3_endpoint_url)}" in published, name


def _dotenv(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _mounts(service: dict) -> dict[str, str]:
    """volume name -> mount point in the container."""
    return {v.split(":")[0]: v.split(":")[1] for v in service.get("volumes", [])}


def test_a_copied_env_example_cannot_move_the_stack_off_its_volumes_and_services(monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = _dotenv(ROOT / ".env.example")  # the user ran `cp .env.example .env`
    for files in ((COMPOSE,), (COMPOSE, TINY)):
        services = load_compose(*files)["services"]
        for name in ("api", "models", "worker-gpu", "worker-io"):
            service = services[name]
            # Compose: `environment` wins over `env_file`
            with monkeypatch.context() as m:
                settings = _settings_from({**dotenv, **_environment(service, dotenv)}, m)
            assert urlsplit(settings.redis_url).hostname == "redis", name
            assert urlsplit(settings.s3_endpoint_url).hostname == "s3", name
            mounts = _mounts(service)
            if "models" in mounts:
                assert settings.model_dir == Path(mounts["models"]), name
            if "tiny-models" in mounts:
                assert settings.tiny_model_dir == Path(mounts["tiny-models"]), name
    assert _mounts(load_compose(COMPOSE, TINY)["services"]["worker-gpu"]) == {"tiny-models": "/var/cache/idbody/tiny-models"}


def test_environment_values_in_k8s_parse_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _k8s("ConfigMap", "idbody-settings")["data"]
    settings = _settings_from(config, monkeypatch)
    assert settings.broker_visibility_timeout_s > settings.task_time_limit_s
    for doc in _k8s_docs():
        for c in _pod_containers(doc):
            env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
            with monkeypatch.context() as m:
                _settings_from({**config, **env}, m)


def test_seaweedfs_scripts_default_to_the_settings_defaults() -> None:
    expected = {
        "IDBODY_S3_ACCESS_KEY": _default("s3_access_key"),
        "IDBODY_S3_SECRET_KEY": _default("s3_secret_key"),
        "IDBODY_S3_BUCKET_UPLOADS": _default("s3_bucket_uploads"),
        "IDBODY_S3_BUCKET_RESULTS": _default("s3_bucket_results"),
    }
    found = {}
    for script in SEAWEED.glob("*.sh"):
        found.update(re.findall(r"\$\{(IDBODY_[A-Z0-9_]+):-([^}]*)\}", script.read_text()))
    assert found == expected


# ---------------------------------------------------------------- commands

def test_every_idbody_command_in_the_deploy_files_parses() -> None:
    commands = _all_commands()
    seen = {tuple(argv[1:]) for _, argv in commands}
    for required in REQUIRED_COMMANDS:
        assert any(s[: len(required)] == required for s in seen), f"no deploy file runs `idbody {' '.join(required)}`"

    if not cli.COMMAND_MODULES:
        pytest.fail(
            "idbody.cli.COMMAND_MODULES is empty, so no `idbody` subcommand exists yet; the deploy files "
            f"need: {sorted(' '.join(c) for c in REQUIRED_COMMANDS)}. Merge the branches that add them "
            f"({SIBLING_BRANCHES}).",
            pytrace=False,
        )
    parser = cli.build_parser()
    failures = []
    for where, argv in commands:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(argv[1:])
        except SystemExit:
            failures.append(f"{where}: `{shlex.join(argv)}`: {stderr.getvalue().strip().splitlines()[-1:]}")
            continue
        if argv[1] == "api" and hasattr(args, "port"):
            assert args.port == _default("api_port"), where
    assert failures == [], (
        "commands the CLI does not accept (COMMAND_MODULES = "
        f"{cli.COMMAND_MODULES}; merge {SIBLING_BRANCHES} if they have landed):\n" + "\n".join(failures)
    )
