#!/usr/bin/env bash
# Sets up dhr on a fresh machine; safe to run again (idempotent).
#   bash scripts/setup.sh          # library + CLI + face tools
#   bash scripts/setup.sh --dev    # + test / web-UI test dependencies (pytest, onnx, playwright, chromium)
#   bash scripts/setup.sh --torch-plan   # only print which torch build it would install and why
# Installs into the Python environment of $PYTHON (default: python3; use a venv if you prefer).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=0
for a in "$@"; do [[ $a == --dev ]] && DEV=1; done
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch first, pinned: an unpinned torch (or torchvision) would pull GBs of CUDA packages.
#    No NVIDIA GPU: the CPU build from PyTorch's CPU wheel index (~200 MB instead of several GB of CUDA
#    packages); that index unreachable: the default index. NVIDIA GPU: the default index (CUDA build).
#    Overrides: DHR_TORCH_INDEX=URL (or "default"); DHR_SETUP_PROBE_TIMEOUT=seconds (default 8).
TORCH_PIN=torch==2.13.0
CPU_INDEX=${DHR_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
PROBE_TIMEOUT=${DHR_SETUP_PROBE_TIMEOUT:-8}
NVIDIA_PROC=${DHR_NVIDIA_PROC:-/proc/driver/nvidia}   # only tests point this elsewhere
has_nvidia_gpu() {
  [[ -e $NVIDIA_PROC ]] && return 0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}
index_reachable() {  # $1 = index URL; true when its torch page answers within PROBE_TIMEOUT seconds
  local limit=()  # a hanging DNS lookup is not covered by urlopen's timeout
  command -v timeout >/dev/null 2>&1 && limit=(timeout "$((PROBE_TIMEOUT + 2))")
  ${limit[@]+"${limit[@]}"} "$PY" - "$1" "$PROBE_TIMEOUT" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=float(sys.argv[2])).read(1)
PYEOF
}
# Sets TORCH_INDEX (empty = pip's default index) and TORCH_WHY.
choose_torch_index() {
  if [[ -n ${DHR_TORCH_INDEX:-} ]]; then
    TORCH_INDEX=${DHR_TORCH_INDEX/#default/}
    TORCH_WHY="DHR_TORCH_INDEX=${DHR_TORCH_INDEX} was set"
  elif has_nvidia_gpu; then
    TORCH_INDEX=""
    TORCH_WHY="an NVIDIA GPU is present, so the default index's build (with CUDA) is kept"
  elif index_reachable "$CPU_INDEX"; then
    TORCH_INDEX=$CPU_INDEX
    TORCH_WHY="no NVIDIA GPU (no nvidia-smi, no $NVIDIA_PROC), so the CPU-only build (no CUDA packages)"
  else
    TORCH_INDEX=""
    TORCH_WHY="no NVIDIA GPU, but $CPU_INDEX did not answer within ${PROBE_TIMEOUT}s, so the default index (on Linux its torch may be the large CUDA build)"
  fi
}
describe_torch() {
  "$PY" -c 'import torch; print(torch.__version__, "(CUDA " + torch.version.cuda + " build)" if torch.version.cuda else "(CPU build)")'
}
install_torch() {
  choose_torch_index
  if [[ -n $TORCH_INDEX ]]; then
    echo "setup: installing $TORCH_PIN from $TORCH_INDEX: $TORCH_WHY"
    if ! pip_install "$TORCH_PIN" --index-url "$TORCH_INDEX" --timeout "$PROBE_TIMEOUT" --retries 1; then
      echo "setup: $TORCH_INDEX failed; installing $TORCH_PIN from the default index instead"
      pip_install "$TORCH_PIN"
    fi
  else
    echo "setup: installing $TORCH_PIN from the default index: $TORCH_WHY"
    pip_install "$TORCH_PIN"
  fi
}
if [[ ${1:-} == --torch-plan ]]; then  # prints the choice and exits (used by the tests; installs nothing)
  choose_torch_index
  echo "setup: torch index: ${TORCH_INDEX:-default}: $TORCH_WHY"
  exit 0
fi
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  echo "setup: torch $(describe_torch) already installed; keeping it"
else
  install_torch
fi
# 2. the package with its face extras (torch>=2.1 is already satisfied, so nothing else is pulled).
extras="faces,video,bench"
[[ $DEV == 1 ]] && extras="$extras,dev,web,dist"
pip_install -e ".[${extras}]"
if [[ $DEV == 1 ]]; then
  pip_install onnx
  # Web-UI tests drive Debian's chromium through Playwright (browser downloads are not possible here).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian chromium for the web-UI tests"
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed; web-UI browser tests will skip"
  fi
fi
"$PY" -c 'import dhr, torch; b = "CUDA " + torch.version.cuda if torch.version.cuda else "CPU"
print(f"setup: dhr {dhr.__version__} ready (torch {torch.__version__}, {b} build)")'
