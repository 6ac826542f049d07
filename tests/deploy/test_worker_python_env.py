"""The worker image's Python environment, built here the way deploy/worker.Dockerfile builds it:
a fresh virtualenv, the build context the `gpu-build` stage COPYs, and that stage's own RUN lines
(deploy/install-python-env.sh), in order. Only torch differs: the image takes torch's default (CUDA)
wheel, this machine's pip takes the local CPU wheel of the same version, which resolves the
same way and keeps the environment small.

What it asserts is what the image needs on a GPU box: one onnxruntime distribution, the GPU one,
with the CUDA provider compiled in; only the headless OpenCV; `import cv2` with no libGL on the
machine (python slim has none); the worker's face code importing from the installed package."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from deploy.pyproject_requirements import requirements
from tests.deploy.test_deploy_lint import (
    API,
    ROOT,
    WORKER,
    _build_context_sources,
    _stages,
    copy_build_context,
)

SCRIPT = "deploy/install-python-env.sh"
# measured on the 2-core development VM with a warm pip cache: about 2 to 4 minutes for all steps;
# each step gets a generous multiple of its share, so a busy machine does not fail the test
STEP_TIMEOUT_S = 1200


def _install_steps(dockerfile: Path, stage: str) -> list[str]:
    """The install-python-env.sh arguments of a stage's RUN lines, in order."""
    steps = []
    for instruction in _stages(dockerfile)[stage]:
        match = re.search(rf"sh {re.escape(SCRIPT)}\s+(.*)$", instruction)
        if instruction.startswith("RUN") and match:
            steps.append(match.group(1).strip())
    return steps


def _arg_default(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    assert match, f"{dockerfile.name} has no ARG {name}=..."
    return match.group(1)


def _ci_torch_version() -> str:
    # .ci/run installs through deploy/local-env.sh, which pins torch
    match = re.search(r"^TORCH_VERSION=(\S+)$", (ROOT / "deploy" / "local-env.sh").read_text(), re.MULTILINE)
    assert match, "deploy/local-env.sh does not pin torch"
    return match.group(1)


def test_images_install_dependencies_in_layers_before_the_sources() -> None:
    for dockerfile, stage, extras in ((WORKER, "gpu-build", "ml,gpu"), (WORKER, "cpu-build", "ml,cpu"),
                                      (API, "build", None)):
        expected = ["tools", *(["torch"] if extras else []), f"deps {extras}" if extras else "deps", "project"]
        assert _install_steps(dockerfile, stage) == expected, f"{dockerfile.name}:{stage}"
        instructions = _stages(dockerfile)[stage]
        first_source = next(i for i, line in enumerate(instructions) if re.match(r"COPY (shared|api|worker)\b", line))
        deps_at = next(i for i, line in enumerate(instructions) if f"{SCRIPT} deps" in line)
        project_at = next(i for i, line in enumerate(instructions) if f"{SCRIPT} project" in line)
        assert deps_at < first_source < project_at, f"{dockerfile.name}:{stage}: sources copied before the deps layer"


def test_images_ship_the_torch_version_ci_tests() -> None:
    assert _arg_default(WORKER, "TORCH_VERSION") == _ci_torch_version()


def test_constraints_never_hold_the_cpu_only_opencv_or_torch() -> None:
    constraints = (ROOT / "deploy" / "constraints.txt").read_text()
    assert not re.search(r"^opencv-python==", constraints, re.MULTILINE)
    assert re.search(r"^opencv-python-headless==", constraints, re.MULTILINE)
    assert re.search(r"^onnxruntime-gpu==", constraints, re.MULTILINE)
    assert not re.search(r"^(torch|nvidia-\S+|cuda-\S+)==", constraints, re.MULTILINE)


PROBE = r"""
import importlib.metadata as md, json, onnxruntime, torch
names = sorted({(d.metadata["Name"] or "").lower() for d in md.distributions()})
from insightface.app import FaceAnalysis  # noqa: F401
import worker.face.analysis, worker.celery_worker  # noqa: F401
from worker.pose.blazepose import PoseDetector
PoseDetector.load()  # the pose models from the mediapipe wheel, on LiteRT
print(json.dumps({
    "onnxruntime": [n for n in names if n.startswith("onnxruntime")],
    "opencv": [n for n in names if n.startswith("opencv")],
    "providers": onnxruntime.get_available_providers(),
    "torch": torch.__version__,
    "worker_from": worker.__file__,
}))
"""


def _lib_paths(name: str) -> list[str]:
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    return sorted({line.split("=>")[-1].strip() for line in listing.splitlines() if f"{name} " in line})


def _import_cv2_without_libgl(python: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`import cv2` with every libGL on this machine hidden (an empty file mounted over it, in a
    private mount namespace), as on an image that has none."""
    hide = "; ".join(f"mount --bind /dev/null {path}" for path in _lib_paths("libGL.so.1")) or "true"
    return subprocess.run(["unshare", "-m", "sh", "-c", f'{hide} && exec "$0" -c "import cv2; print(cv2.__version__)"',
                           str(python)], env=env, capture_output=True, text=True, timeout=120)


def _needs_libgl(site_packages: Path) -> list[str]:
    """OpenCV's shared objects whose dynamic section names libGL (the headless build has none)."""
    found = []
    for so in site_packages.glob("*cv*/**/*.so*"):
        if so.is_file() and b"libGL.so" in so.read_bytes():
            found.append(str(so.relative_to(site_packages)))
    return found


def _env_inputs_key() -> str:
    """A hash of everything the dependencies are built from: the stage's instructions up to the
    sources (the `project` step runs again on every use), the install
    script and its helper, the requirements it reads from pyproject.toml, the constraints, the
    --no-deps list, this Python."""
    digest = hashlib.sha256()
    stage = _stages(WORKER)["gpu-build"]
    first_source = next(i for i, line in enumerate(stage) if re.match(r"COPY (shared|api|worker|idbody)\b", line))
    digest.update("\n".join(stage[:first_source]).encode())  # the layers before the sources
    for name in ("deploy/install-python-env.sh", "deploy/pyproject_requirements.py",
                 "deploy/constraints.txt", "deploy/requirements-no-deps.txt"):
        digest.update((ROOT / name).read_bytes())
    # of pyproject.toml, what the stage installs: the base and the extras it names
    extras = next(step.split()[1] for step in _install_steps(WORKER, "gpu-build") if step.startswith("deps "))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    digest.update("\n".join(requirements(pyproject, extras.split(","))).encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


def _build_env(venv: Path, workdir: Path, steps: list[str] | None = None) -> None:
    """The gpu-build stage's install steps (or the named ones), run as the Dockerfile runs them."""
    context = workdir / "src"
    copy_build_context(_build_context_sources(WORKER, "gpu-build"), context)
    if not venv.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _venv_env(venv)
    # no .pyc at install time: a good share of the install's time here, and nothing pip resolves
    # depends on it (the image compiles them; they are a cache, not a dependency)
    env["PIP_NO_COMPILE"] = "1"
    timings = {}
    for step in steps or _install_steps(WORKER, "gpu-build"):
        started = time.monotonic()
        result = subprocess.run(["sh", SCRIPT, *step.split()], cwd=context, env=env, capture_output=True,
                                text=True, timeout=STEP_TIMEOUT_S)
        timings[step] = round(time.monotonic() - started, 1)
        assert result.returncode == 0, f"{step}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print("install steps (s):", timings)


def _venv_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "TORCH_INDEX_URL", "PIP_CONSTRAINT"}}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv),
               TORCH_VERSION=_arg_default(WORKER, "TORCH_VERSION"))
    return env


def _worker_env(tmp_path: Path) -> Path:
    """The built environment. It takes minutes (measured: 4 min on an idle 2-core VM, 9 under load),
    so one built from exactly the same dependency inputs (``_env_inputs_key``) is reused from the
    cache folder, with the `project` step run again for this checkout's sources;
    ``IDBODY_TEST_FRESH_ENV=1`` builds anew. Only the newest one is kept."""
    cache = Path(os.environ.get("IDBODY_TEST_ENV_CACHE", Path.home() / ".cache" / "identity-body" / "test-envs"))
    venv = cache / f"worker-gpu-{_env_inputs_key()}"
    if (venv / "built").exists() and os.environ.get("IDBODY_TEST_FRESH_ENV") != "1":
        _build_env(venv, tmp_path, steps=["project"])  # this checkout's sources, the one layer they are
        return venv
    building = tmp_path / "venv"
    _build_env(building, tmp_path)
    (building / "built").write_text("all install steps passed\n")
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("worker-gpu-*"):
        shutil.rmtree(old, ignore_errors=True)
    # the test runs `python -m ...` only, which works from the moved folder (console scripts would not)
    shutil.move(str(building), str(venv))
    return venv


@pytest.mark.integration
def test_gpu_worker_environment_has_only_onnxruntime_gpu_and_headless_opencv(tmp_path: Path) -> None:
    venv = _worker_env(tmp_path)
    env = _venv_env(venv)

    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["onnxruntime"] == ["onnxruntime-gpu"]
    assert "CUDAExecutionProvider" in found["providers"]
    assert found["opencv"] == ["opencv-python-headless"]
    assert found["torch"].split("+")[0] == _ci_torch_version()
    assert str(venv) in found["worker_from"]  # the installed package, not this checkout

    (site_packages,) = venv.glob("lib/python3*/site-packages")
    assert _needs_libgl(site_packages) == []
    if os.geteuid() == 0 and shutil.which("unshare"):
        without_gl = _import_cv2_without_libgl(python, env)
        assert without_gl.returncode == 0, without_gl.stderr[-2000:]

    # pip's own consistency check: the only complaints are what insightface, nudenet and mediapipe
    # declare and we skip (deploy/requirements-no-deps.txt says why for each)
    check = subprocess.run([str(python), "-m", "pip", "check"], env=env, capture_output=True, text=True, timeout=120)
    complaints = sorted(re.sub(r"^(insightface|nudenet|mediapipe) \S+ (.*?)(, but you have .*)?$", r"\1 \2", line)
                        for line in check.stdout.splitlines() if line.strip())
    mediapipe_skips = [f"mediapipe requires {name}, which is not installed." for name in (
        "absl-py", "attrs", "jax", "jaxlib", "matplotlib", "opencv-contrib-python", "sentencepiece", "sounddevice")]
    assert complaints == sorted(["insightface requires onnxruntime, which is not installed.",
                                 "insightface requires opencv-python, which is not installed.",
                                 "nudenet requires onnxruntime, which is not installed.", *mediapipe_skips,
                                 "mediapipe has requirement numpy<2", "mediapipe has requirement protobuf<5,>=4.25.3"]), check.stdout
