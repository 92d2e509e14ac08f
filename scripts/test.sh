#!/usr/bin/env bash
# Sets up, builds, and runs the whole test suite (CUDA cases run when a GPU
# is visible). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
"$PY" -m pytest -q "$@" tests
