"""The README's Quick start is two commands, the scripts it names exist and parse, and the test
command is the one CI runs: .ci/run hands its arguments to pytest. (Running ./start on a fresh
clone installs gigabytes; its measured run is in the README and the branch's notes.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.readme_blocks import blocks_under

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("start", ".ci/run", "deploy/local-env.sh")


def _quick_start_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Quick start\n"):text.index("\n## ", text.index("## Quick start\n") + 1)]


def test_quick_start_is_exactly_two_commands_each_in_its_own_block() -> None:
    blocks = blocks_under("## Quick start", "bash")
    assert [block.strip() for block in blocks] == ["./start", ".ci/run"]
    assert _quick_start_section().count("```") == 4  # no other fenced block in the section


def test_quick_start_states_prerequisites_and_measured_times() -> None:
    section = _quick_start_section()
    assert "Python 3.11" in section and "Debian" in section
    for tool in ("curl", "jq", "python3-venv", "chromium"):
        assert f"`{tool}`" in section, tool
    # each command is followed by what it took, in seconds or minutes
    first, second = section.split("```bash\n.ci/run\n```")
    measured = re.compile(r"Measured\b.*?\d+ ?(s|min|CPU-seconds)\b", re.DOTALL)
    assert measured.search(first), first
    assert measured.search(second), second


def test_the_scripts_exist_are_executable_and_parse() -> None:
    for name in SCRIPTS:
        path = ROOT / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        run = subprocess.run(["bash", "-n", str(path)], check=False, capture_output=True, text=True)
        assert run.returncode == 0, f"{name}: {run.stderr}"


def test_ci_runs_the_readme_test_command_with_its_arguments() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash deploy/local-env.sh test" in ci
    assert ci.rstrip().splitlines()[-1] == 'python -m pytest "$@"'
    start = (ROOT / "start").read_text()
    assert "bash deploy/local-env.sh stack" in start
    assert start.rstrip().splitlines()[-1] == 'exec .venv/bin/idbody up "$@"'


def test_every_project_install_is_held_to_the_constraints() -> None:
    script = (ROOT / "deploy" / "local-env.sh").read_text()
    installs = [line for line in script.splitlines()
                if re.search(r"\bpip install\b", line) and "torch" not in line and "--upgrade pip" not in line]
    assert installs and all("-c deploy/constraints.txt" in line for line in installs), installs
    constraints = (ROOT / "deploy" / "constraints.txt").read_text()
    pins = [line for line in constraints.splitlines() if line and not line.startswith("#")]
    assert len(pins) > 100 and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==\S+", line) for line in pins), pins
    assert not any(line.lower().startswith("identity-body") for line in pins)  # never the project itself
    # the CPU build comes from PyTorch's CPU index only where the plain index would bring CUDA
    assert re.search(r"^TORCH_CPU_INDEX=https://\S+/whl/cpu$", script, re.MULTILINE)
    assert "nvidia-smi" in script
