"""``identity_body_client`` ships in the wheel and needs nothing of the server side."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_includes_the_client():
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert "identity_body_client" in find_packages(str(REPO), include=find["include"])


def test_the_client_imports_only_httpx_and_the_standard_library():
    code = (
        "import sys, identity_body_client\n"
        "server = [m for m in ('api', 'shared', 'worker', 'fastapi', 'pydantic', 'redis', 'standardwebhooks')"
        " if m in sys.modules]\n"
        "assert not server, server\n"
        "assert 'httpx' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
