#!/usr/bin/env bash
# Sets up dhr on a fresh machine; safe to run again (idempotent).
#   bash scripts/setup.sh          # library + CLI + face tools
#   bash scripts/setup.sh --dev    # + test / web-UI test dependencies (pytest, onnx, playwright, chromium)
# Installs into the Python environment of $PYTHON (default: python3; use a venv if you prefer).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=0
for a in "$@"; do [[ $a == --dev ]] && DEV=1; done
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch first, pinned: an unpinned torch (or torchvision) would pull GBs of CUDA packages.
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  echo "setup: installing torch==2.13.0"
  pip_install torch==2.13.0
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
"$PY" -c 'import dhr, torch; print(f"setup: dhr {dhr.__version__} ready (torch {torch.__version__})")'
