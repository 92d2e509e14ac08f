#!/usr/bin/env bash
# Lint and format checks: ruff (lint and format, configured in
# pyproject.toml) for Python, clang-format (.clang-format) for C++ and CUDA.
# Fails on any finding. The tools come at pinned versions into their own
# environment, .lint-venv. `scripts/lint.sh --fix` first applies what the
# tools can fix.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUFF_VERSION=0.17.6
CLANG_FORMAT_VERSION=23.1.5

if ! .lint-venv/bin/ruff --version 2>/dev/null | grep -qx "ruff $RUFF_VERSION" ||
   ! .lint-venv/bin/clang-format --version 2>/dev/null | grep -q "version $CLANG_FORMAT_VERSION"; then
  python3 -m venv .lint-venv
  .lint-venv/bin/python -m pip install -q --disable-pip-version-check "ruff==$RUFF_VERSION" "clang-format==$CLANG_FORMAT_VERSION"
fi

# The C++ and CUDA sources git tracks (or would track: new, not ignored).
mapfile -t CXX < <(git ls-files --cached --others --exclude-standard -- csrc tests/cuda_emulation |
                   grep -E '\.(cpp|h|cu|cuh|inl)$')

if [ "${1:-}" = "--fix" ]; then  # what the tools can fix; the check below names the rest
  .lint-venv/bin/ruff format -q .
  .lint-venv/bin/ruff check -q --fix --exit-zero .
  .lint-venv/bin/ruff format -q .
  .lint-venv/bin/clang-format -i "${CXX[@]}"
fi
status=0
.lint-venv/bin/ruff check . || status=1
.lint-venv/bin/ruff format --check . || status=1
.lint-venv/bin/clang-format --dry-run --Werror "${CXX[@]}" || status=1
if [ "$status" -ne 0 ]; then
  echo "fastlayers: lint or format check failed; 'bash scripts/lint.sh --fix' applies the fixes"
fi
exit "$status"
