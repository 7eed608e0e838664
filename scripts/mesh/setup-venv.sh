#!/usr/bin/env bash
# Creates the Python virtualenv used by scripts/mesh/train.py (LightGBM from PyPI).
# Usage: scripts/mesh/setup-venv.sh [VENV_DIR]   (default: data/mesh/venv)
# Only needed to retrain; CI uses the committed model and fixtures.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/data/mesh/venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -c 'import lightgbm, numpy; print("lightgbm", lightgbm.__version__, "numpy", numpy.__version__)'
echo "venv ready: $venv"
