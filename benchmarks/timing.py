"""How fastlayers measures: ratios side by side in one
run, warm-up first, medians of many repeats, random inputs, rotating input
sets on the GPU so the cache is not what gets timed."""

import argparse
import json
import platform
import statistics
import time

import torch


def wall_stats(fn, calls=None, repeats=7, budget_s=0.25):
    """Wall time per call (Python and dispatch included): `calls` calls, then
    one synchronize, `repeats` such runs. Returns (median µs, spread), the
    spread being (slowest - fastest run) / median."""
    fn()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    if calls is None:  # enough calls for ~budget_s/repeats per run
        t = time.perf_counter()
        fn()
        sync()
        once = max(time.perf_counter() - t, 1e-7)
        calls = int(min(max(budget_s / repeats / once, 1), 10_000))
    for _ in range(min(calls, 20)):
        fn()
    sync()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        runs.append((time.perf_counter() - t) / calls)
    median = statistics.median(runs)
    return median * 1e6, (max(runs) - min(runs)) / median


def wall_us(fn, calls=None, repeats=7, budget_s=0.25):
    """The median of wall_stats, in µs."""
    return wall_stats(fn, calls, repeats, budget_s)[0]


def gpu_stats(fns, repeats=50):
    """GPU time per call with CUDA events; `fns` is a list of equivalent
    calls on different input sets, used in turn. Returns (median µs, spread
    between the 10th and 90th percentile over the median)."""
    for f in fns:
        f()
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fns[i % len(fns)]()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    times.sort()
    median = statistics.median(times)
    lo, hi = times[len(times) // 10], times[min(len(times) - 1, (len(times) * 9) // 10)]
    return median, (hi - lo) / median


def gpu_us(fns, repeats=50):
    """The median of gpu_stats, in µs."""
    return gpu_stats(fns, repeats)[0]


def warm_up_gpu(seconds=1.0):
    """Keep the GPU busy for a while before the first timing: an idle GPU
    runs at a low clock, and the first case measured would pay for the ramp."""
    a = torch.randn(2048, 2048, device="cuda")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def fmt_table(rows, columns):
    """Rows of dicts as an aligned plain-text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


# Ratio columns: printed last, with two decimals.
RATIO_COLUMNS = (
    "of bw limit",
    "vs eager",
    "own vs cublaslt",
    "own vs onednn",
    "speedup vs best",
    "fwd own ÷ vendor",
    "bwd own ÷ vendor",
    "own ÷ vendor",
    "exp ÷ vendor",
)


def cpu_model():
    """The CPU's model name (lscpu's), or the platform's words for it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device):
    import fastlayers
    from fastlayers import backends

    info = backends.cpu_info()
    return {
        "torch": torch.__version__,
        # the GPU targets say whether sm_90a kernels (wgmma) can run at all
        "fastlayers": f"built with CUDA for {fastlayers._library.CUDA_ARCH_LIST or 'the default targets'}"
        if fastlayers._library.WITH_CUDA
        else "CPU build",
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu kernels": f"{info['active']} (best {info['best']}; core {info['core']}; AMX: {info['amx']})",
        "aten cpu capability": torch.backends.cpu.get_cpu_capability(),
    }


def format_rows(rows):
    columns = ["case"]
    for r in rows:
        columns += [c for c in r if c not in columns and c not in RATIO_COLUMNS]
    columns += [c for c in RATIO_COLUMNS if any(c in r for r in rows)]
    shown = [
        {c: (f"{v:.2f}" if c in RATIO_COLUMNS else f"{v:.1f}") if isinstance(v, float) else v for c, v in r.items()}
        for r in rows
    ]
    return fmt_table(shown, columns)


def bench_main(argv, doc, run, title, quick_help):
    """The command line every benchmark script shares: --device, --quick, --json."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", help="also write the rows and the environment here")
    args = p.parse_args(argv)
    if args.device == "cuda":
        warm_up_gpu()
    rows = run(args.device, args.quick)
    env = environment(args.device)
    print(title)
    print(", ".join(f"{k} {v}" for k, v in env.items()))
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)
