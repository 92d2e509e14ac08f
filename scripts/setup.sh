# Sourced by scripts/demo.sh and scripts/test.sh: finds (or makes) a Python
# with torch, builds fastlayers into it, and leaves its path in $PY.
#
# - A python3 that already holds torch >= 2.6 (a GPU machine, an activated
#   environment) is used as it is: nothing is downloaded.
# - Otherwise a .venv is made here with torch 2.14.1 and the test tools.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

has_torch() {
  "$1" - <<'PY' 2>/dev/null
import sys, torch
major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 6) else 1)
PY
}

if has_torch python3; then
  PY=$(command -v python3)
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY="$ROOT/.venv/bin/python"
  # torch 2.14.1 is a CUDA 13 build: with nvcc present it compiles the CUDA
  # kernels too (FORCE_CUDA=1 on a machine without a GPU).
  "$PY" -m pip install -q --disable-pip-version-check torch==2.14.1 numpy pytest hypothesis ninja "setuptools>=64" wheel scikit-learn matplotlib
fi

echo "fastlayers: building with $("$PY" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__)')"
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e . \
  || { echo "fastlayers: build failed (see above)"; exit 1; }
