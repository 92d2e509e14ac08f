#!/usr/bin/env bash
# Sets up, builds, and runs the main job: every op checked against its
# reference, a model trained on real data, and a benchmark table for the
# device at hand. Extra arguments go to benchmarks/main.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
"$PY" -m benchmarks.main "$@"
