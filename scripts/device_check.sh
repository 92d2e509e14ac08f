#!/usr/bin/env bash
# The GPU machine's one call: build for Hopper, run the CUDA tests and time
# the kernels against the vendor's, each stage under its own time limit, in
# the order that matters most when device time is short.
#
#   bash scripts/device_check.sh [stage ...]
#
# stages (default: build exp targets tests bench crossover):
#   build      setup.py build_ext for sm_90a; the built extension is kept in $OUT (_C*.so.gz without
#              debug info, build_info.py) so that a second call can carry it instead of building again
#   exp        the switched kernels' GPU tests (backends.cuda_experimental), in their own process: a
#              fault there (their mbarrier waits trap after 10 s) cannot take other results with it
#   targets    benchmarks/bench_gemm_targets.py: the GEMM speed targets, experimental kernels beside
#   tests      every other test with a CUDA case (pytest-xdist, 8 workers, where it is there)
#   bench      python -m benchmarks --quick (BENCH_OPS: default all three ops; BENCH_ARGS= for the
#              full shapes, BENCH_LIMIT seconds)
#   crossover  benchmarks/bench_gemm_crossover.py --quick (CROSSOVER_ARGS= for the full sweep)
#   large      the large-tensor cases;  sanitize: compute-sanitizer's small case
#
# Uses the python3 that already has torch (the GPU machine has no package
# registry; pytest and hypothesis are there). Writes at most 8 files to $OUT
# (or device-results/ where OUT is unset): summary.txt, logs.tar.gz (one log per
# stage), the kept build, and the benchmarks' JSON/markdown. The stage table and
# the GEMM targets' table print last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-device-results}
mkdir -p "$out/logs"
PY=${PY:-python3}
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build exp targets tests bench crossover)
export PYTHONUNBUFFERED=1 FASTLAYERS_HYPOTHESIS_PROFILE=${FASTLAYERS_HYPOTHESIS_PROFILE:-ci}
summary="$out/summary.txt"
{
  date -u
  git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-100
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1
  nproc
} >"$summary" 2>&1
rows=()

# stage NAME LIMIT_SECONDS COMMAND...: runs it into logs/NAME.log, records the verdict.
stage() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS log="$out/logs/$name.log"
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -eq 124 ] && verdict="TIMEOUT (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
  local detail  # each pytest run's last line
  detail=$(grep -E "[0-9]+ (passed|failed|errors?|skipped|deselected).* in [0-9.]+s" "$log" | tr -d '=' | paste -sd ';' -)
  [ -n "$detail" ] || detail=$(grep -E "passed|failed|error" "$log" | tail -1)
  rows+=("$(printf '%-9s %-18s %4ss  %s' "$name" "$verdict" $((SECONDS - start)) "$detail")")
  return $rc
}

xdist=()
"$PY" -c "import xdist" 2>/dev/null && xdist=(-n 8)

for s in "${stages[@]}"; do
  case $s in
    build)
      # Hopper only (half the compile of the default 8.0;9.0+PTX), as sm_90a code so that the
      # wgmma kernel is in; a torch whose cpp_extension does not know 9.0a gets plain 9.0.
      arch=${TORCH_CUDA_ARCH_LIST:-9.0a}
      FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=16 stage build 120 "$PY" setup.py build_ext --inplace ||
        { [ "$arch" = 9.0a ] && grep -q "Unknown CUDA arch (9.0a)" "$out/logs/build.log" &&
          FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 stage build 120 "$PY" setup.py build_ext --inplace; } ||
        break
      so=$(ls fastlayers/_C*.so)
      { strip --strip-debug -o "$out/${so##*/}" "$so" || cp "$so" "$out/"; } && gzip "$out/${so##*/}"
      cp fastlayers/_build_info.py "$out/build_info.py"
      ;;
    exp)
      stage exp 50 "$PY" -m pytest -q -p no:cacheprovider -k 'cuda and not emulated and (experimental_kernels or wgmma)' tests
      ;;
    targets)
      stage targets 60 "$PY" -m benchmarks.bench_gemm_targets --json "$out/targets.json"
      ;;
    tests)
      stage tests 120 "$PY" -m pytest -q -p no:cacheprovider "${xdist[@]}" \
        -k 'cuda and not emulated and not experimental_kernels and not wgmma and not fit_two_blocks' tests
      ;;
    bench)
      stage bench "${BENCH_LIMIT:-150}" "$PY" -m benchmarks --device cuda ${BENCH_ARGS---quick} --ops "${BENCH_OPS:-linear_relu,center,fixed_hidden_mlp}" --out "$out/bench"
      for f in results.md results.json; do [ -f "$out/bench/$f" ] && mv "$out/bench/$f" "$out/bench_$f"; done
      rm -rf "$out/bench"
      ;;
    crossover)
      stage crossover 80 "$PY" -m benchmarks.bench_gemm_crossover ${CROSSOVER_ARGS---quick} --json "$out/crossover.json"
      ;;
    large)
      FASTLAYERS_LARGE_TESTS=1 stage large 90 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_large_tensors.py
      ;;
    sanitize)
      PY=$PY stage sanitize 100 bash scripts/sanitize.sh "$out/logs" tiny 24
      cat "$out"/logs/sanitize_tiny_summary.txt >>"$summary" 2>/dev/null
      ;;
    *) echo "device_check: unknown stage '$s' (build exp targets tests bench crossover large sanitize)" && exit 2 ;;
  esac
done
printf '%s\n' "${rows[@]}" >>"$summary"
tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$out/logs"
# The reply carries the output's end: the failures first, then the targets and crossover tables, then the stage table.
tar -xzOf "$out/logs.tar.gz" 2>/dev/null | grep -E "^(FAILED|ERROR) |mbarrier|illegal|CUDA error" | cut -c1-220 | head -20
tar -xzOf "$out/logs.tar.gz" logs/targets.log logs/crossover.log 2>/dev/null | grep -v "^torch "
cat "$summary"
