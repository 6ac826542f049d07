#!/usr/bin/env bash
# Install the offline validators the deploy tests need (tests/deploy/test_deploy_schemas.py,
# tests/deploy/test_deploy_lint.py): the `deploy-check` extra of pyproject.toml, without installing the
# project itself. Called by .ci/run; safe to run twice.
#   PYTHON=/path/to/venv/bin/python deploy/ci-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"

mapfile -t requirements < <("$python" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as fh:
    for requirement in tomllib.load(fh)["project"]["optional-dependencies"]["deploy-check"]:
        print(requirement)
PY
)
"$python" -m pip install --quiet "${requirements[@]}"

# fail here, not in the middle of the test run, if a tool did not land
"$python" - <<'PY'
import importlib.resources, pathlib, shutil, sys
import kubernetes_validate
(importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
hadolint = shutil.which("hadolint") or pathlib.Path(sys.executable).with_name("hadolint")
assert pathlib.Path(hadolint).exists(), "hadolint binary missing after install"
print("deploy-check tools ready: kubernetes schemas", kubernetes_validate.latest_version())
PY
