"""Every README code block runs as written: the files it names ship with the repository (the
blocks that start servers are run by tests/e2e/test_readme_local.py), its Python compiles and its
shell parses."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.readme_blocks import README

ROOT = README.parent
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# a path with a file extension, not part of a URL, a variable or a longer path
_PATH = re.compile(r"(?<![\w/$.{:])((?:[\w.-]+/)*[\w-]+\.(?:jpe?g|png|webp|txt|sh|ya?ml|toml|py))\b")
# what the examples write, not read (identity_body_<i>: the result images' own names)
OUTPUTS = ("out/", "generated/", "body_", "identity_body_")


def _blocks() -> list[tuple[str, str]]:
    return _FENCE.findall(README.read_text())


def test_the_examples_name_only_files_that_ship() -> None:
    named = {path for _, body in _blocks() for path in _PATH.findall(body) if not path.startswith(OUTPUTS)}
    assert "docs/examples/face.jpg" in named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README examples name files the repository does not ship: {missing}"


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(_blocks()) if lang in ("python", "bash")])
def test_each_example_compiles_or_parses(index: int) -> None:
    lang, body = _blocks()[index]
    if lang == "python":
        compile(body, f"README.md block {index}", "exec")
    else:
        run = subprocess.run(["bash", "-n"], check=False, input=body, capture_output=True, text=True)
        assert run.returncode == 0, f"README.md bash block {index}: {run.stderr}\n{body}"
