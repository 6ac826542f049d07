#!/usr/bin/env bash
# The project's virtualenv (.venv) on a Debian/Ubuntu machine, for ./start (`stack`) and .ci/run
# (`test`): the Debian tools it needs, Python >= 3.11's venv, the right torch, the project and its
# extras, every version held to deploy/constraints.txt. A second run whose inputs did not change
# (this script, pyproject.toml, the constraints, the no-deps list, the GPU) does nothing.
#
#   deploy/local-env.sh stack    # .[test] (the stack's extras and the tests'); .[ml,gpu,local] with an NVIDIA GPU
#   deploy/local-env.sh test     # .[test], the deploy-check tools, chromium for the browser tests
#
# torch: the CUDA build where `nvidia-smi` finds a GPU; otherwise the CPU build, taken from
# PyTorch's CPU wheel index whenever the plain index would resolve torch with CUDA libraries
# (Linux x86_64: ~2.7 GB against a 192 MB CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
VENV=.venv
what="${1:-stack}"

say() { printf 'local-env: %s\n' "$*" >&2; }

gpu=no
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=yes; fi

# --- Debian packages: curl and jq (the README's try-it block), chromium (browser tests), venv ---
need=(curl jq)
[ "$what" = test ] && need+=(chromium)
missing=()
for tool in "${need[@]}"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
    say "install these Debian packages first (as root): apt-get install -y ${missing[*]}"; exit 1
  fi
  say "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 - <<'PY' || { say "Python 3.11 or newer is needed (python3 is $(python3 -V 2>&1))"; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

# --- skip when nothing changed since the last complete install ---
stamp="$VENV/.idbody-$what"
inputs="$(cat "$0" pyproject.toml deploy/constraints.txt deploy/requirements-no-deps.txt | sha256sum | cut -c1-16)-gpu=$gpu"
# a venv made for the tests also serves the stack
for done in "$stamp" "$VENV/.idbody-test"; do
  if [ -f "$done" ] && [ "$(cat "$done")" = "$inputs" ] && [ -x "$VENV/bin/python" ]; then
    say "$VENV is up to date"
    exit 0
  fi
done

[ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
py="$VENV/bin/python"
pip() { "$py" -m pip --disable-pip-version-check "$@"; }
pip install --quiet --upgrade pip

cuda_from_plain_index() {
  # what the plain index would install for torch==$TORCH_VERSION (metadata only, nothing installed)
  local report
  report="$(pip install --quiet --dry-run --report - "torch==$TORCH_VERSION" 2>/dev/null || true)"
  grep -qE '"name": ?"nvidia-' <<<"$report"
}
if "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "torch $TORCH_VERSION already installed"
elif [ "$gpu" = yes ]; then
  say "NVIDIA GPU found: torch $TORCH_VERSION with CUDA"
  pip install --quiet "torch==$TORCH_VERSION"
elif cuda_from_plain_index; then
  # the local version label makes 2.13.0+cpu the newer candidate, so pip takes the CPU wheel
  say "no NVIDIA GPU: torch $TORCH_VERSION, the CPU build from PyTorch's CPU wheel index"
  pip install --quiet --extra-index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION"
else
  say "no NVIDIA GPU: torch $TORCH_VERSION (the index's build has no CUDA libraries)"
  pip install --quiet "torch==$TORCH_VERSION"
fi

# the tests run on CPU machines (CI's); a GPU box's stack gets onnxruntime-gpu, not the CPU flavour
if [ "$gpu" = yes ] && [ "$what" = stack ]; then extras="ml,gpu,local"; else extras="test"; fi
say "installing the project (.[$extras]) held to deploy/constraints.txt"
pip install --quiet -c deploy/constraints.txt -e ".[$extras]"
# insightface without the CPU onnxruntime/opencv-python it declares (see the file's comment)
pip install --quiet --no-deps -c deploy/constraints.txt -r deploy/requirements-no-deps.txt
if [ "$what" = test ]; then PYTHON="$py" bash deploy/ci-tools.sh; fi

echo "$inputs" > "$stamp"
say "$VENV ready ($what)"
