#!/bin/sh
# Installs identity-body's Python environment into the active virtualenv, one step per image
# layer, so the Dockerfiles and the test that builds the same environment
# (tests/deploy/test_worker_python_env.py) run the same commands:
#
#   deploy/install-python-env.sh tools          # pinned pip, setuptools, wheel
#   deploy/install-python-env.sh torch          # torch==$TORCH_VERSION [from $TORCH_INDEX_URL]
#   deploy/install-python-env.sh deps ml,gpu    # third-party packages of the base + these extras
#                                               # (+ deploy/requirements-no-deps.txt with `ml`)
#   deploy/install-python-env.sh project        # the project itself (needs the sources), no deps
#
# Only `project` reads the sources: a code edit rebuilds that one layer, not the dependencies.
# Every pip call holds versions to deploy/constraints.txt (what CI tests with).
set -eu
cd "$(dirname "$0")/.."
pip() { python -m pip --disable-pip-version-check "$@"; }

case "${1:-}" in
  tools)
    pip install --quiet pip==25.3 setuptools==80.9.0 wheel==0.45.1
    ;;
  torch)
    : "${TORCH_VERSION:?set TORCH_VERSION (CI tests 2.13.0)}"
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      pip install --quiet --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
    else
      pip install --quiet "torch==$TORCH_VERSION"
    fi
    ;;
  deps)
    # the requirement lines of pyproject.toml (base + the named extras, self-references expanded),
    # so this layer needs pyproject.toml and not the sources
    requirements="$(mktemp)"
    python deploy/pyproject_requirements.py "${2:-}" > "$requirements"
    pip install --quiet --constraint deploy/constraints.txt --requirement "$requirements"
    case ",${2:-}," in
      *,ml,*) pip install --quiet --no-deps --constraint deploy/constraints.txt --requirement deploy/requirements-no-deps.txt ;;
    esac
    rm -f "$requirements"
    ;;
  project)
    pip install --quiet --no-deps --no-build-isolation .
    ;;
  *)
    echo "usage: $0 tools | torch | deps [EXTRA,...] | project" >&2
    exit 2
    ;;
esac
