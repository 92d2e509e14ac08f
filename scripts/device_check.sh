#!/usr/bin/env bash
# The GPU machine's one call: build for Hopper, run the CUDA tests, the
# large-tensor cases, compute-sanitizer's small case and the CUDA benchmark
# (with the GEMM crossover's quick sweep and the GEMM targets, experimental
# kernels included), each stage under its own time limit so the whole stays
# under 8 minutes.
#
#   bash scripts/device_check.sh [stage ...]     stages: build tests large sanitize bench (default: all)
#
# Uses the python3 that already has torch (the GPU machine has no package
# registry; pytest and hypothesis are there). Writes at most 8 files to $OUT
# (or device-results/ where OUT is unset): summary.txt, one log per stage,
# and the benchmark's results.md/results.json. The summary table prints last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-device-results}
mkdir -p "$out"
PY=${PY:-python3}
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build tests large sanitize bench)
export PYTHONUNBUFFERED=1 FASTLAYERS_HYPOTHESIS_PROFILE=${FASTLAYERS_HYPOTHESIS_PROFILE:-ci}
summary="$out/summary.txt"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1
} >"$summary" 2>&1
rows=()

# stage NAME LIMIT_SECONDS COMMAND...: runs it into $out/NAME.log, records the verdict.
stage() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -eq 124 ] && verdict="TIMEOUT (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
  local detail  # each pytest run's last line
  detail=$(grep -E "[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s" "$out/$name.log" | tr -d '=' | paste -sd ';' -)
  [ -n "$detail" ] || detail=$(grep -E "passed|failed|error" "$out/$name.log" | tail -1)
  rows+=("$(printf '%-9s %-18s %4ss  %s' "$name" "$verdict" $((SECONDS - start)) "$detail")")
  return $rc
}

for s in "${stages[@]}"; do
  case $s in
    build)
      # Hopper only (half the compile of the default 8.0;9.0+PTX), as sm_90a code so that the
      # wgmma kernel is in; a torch whose cpp_extension does not know 9.0a gets plain 9.0.
      arch=${TORCH_CUDA_ARCH_LIST:-9.0a}
      FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=16 stage build 240 "$PY" setup.py build_ext --inplace ||
        { [ "$arch" = 9.0a ] && grep -q "Unknown CUDA arch (9.0a)" "$out/build.log" &&
          FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 stage build 240 "$PY" setup.py build_ext --inplace; } ||
        break
      ;;
    tests)
      # Every test with a CUDA case (the ids and names say "cuda"); the CPU cases and the
      # emulator's are CI's. The experimental kernels' tests (never yet run on a GPU) go second,
      # in their own process under their own limit: a fault or a hang there (their mbarrier
      # waits trap after 10 s) cannot take the others' results with it.
      stage tests 170 bash -c "'$PY' -m pytest -q -p no:cacheprovider -k 'cuda and not emulated and not experimental_kernels and not wgmma' tests; a=\$?;
        timeout 60 '$PY' -m pytest -q -p no:cacheprovider -k 'cuda and not emulated and (experimental_kernels or wgmma)' tests; b=\$?;
        exit \$((a > b ? a : b))"
      ;;
    large)
      FASTLAYERS_LARGE_TESTS=1 stage large 90 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_large_tensors.py
      ;;
    sanitize)
      PY=$PY stage sanitize 100 bash scripts/sanitize.sh "$out" tiny 24
      ;;
    bench)
      # the benchmark table, the crossover sweep's three sizes and the GEMM targets (4096^3,
      # 8192^3), with the experimental kernels timed beside fastlayers' and the vendor's
      # (three processes: one that fails leaves the others' tables)
      stage bench 150 bash -c "'$PY' -m benchmarks --device cuda --quick --out '$out/bench'; a=\$?;
        '$PY' -m benchmarks.bench_gemm_crossover --quick; b=\$?; '$PY' -m benchmarks.bench_gemm_targets; c=\$?;
        exit \$((a | b | c))"
      for f in results.md results.json; do [ -f "$out/bench/$f" ] && mv "$out/bench/$f" "$out/bench_$f"; done
      rm -rf "$out/bench"
      ;;
    *) echo "device_check: unknown stage '$s' (build tests large sanitize bench)" && exit 2 ;;
  esac
done
# The sanitizer writes one log per tool: their ends go into sanitize.log (8 files come back at most).
for f in "$out"/sanitize_tiny_*.log; do
  [ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; } >>"$out/sanitize.log"
done
cat "$out"/sanitize_tiny_summary.txt >>"$summary" 2>/dev/null
rm -f "$out"/sanitize_tiny_*.log "$out"/sanitize_tiny_summary.txt
printf '%s\n' "${rows[@]}" | tee -a "$summary"
