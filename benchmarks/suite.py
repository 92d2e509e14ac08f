"""Every fastlayers op against its anchors, on the device at hand, in one
process: `python -m benchmarks`.

    python -m benchmarks [--quick] [--ops linear_relu,center,fixed_hidden_mlp]
                         [--dtypes float32,bfloat16] [--device cpu|cuda] [--out DIR]

Anchors: eager PyTorch and torch.compile of it for every op; for
linear_relu the vendor's fused op (cuBLASLt's bias+ReLU epilogue through
torch._addmm_activation on CUDA, oneDNN's torch.ops.mkldnn._linear_pointwise
on the CPU; both forward only) and fastlayers' own kernel forced; for
FixedHiddenMLP the chapter's block, torch.compile of it, the block with the
loop written as torch._higher_order_ops.while_loop under torch.compile, and
the closed form a PyTorch user would write instead of the loop.

Each case: wall time per call (median of repeats, and their spread; every
contender is timed in two sweeps, in order and then reversed, and the faster
median kept), CUDA event time on the GPU, forward and forward+backward; the memory a
forward+backward step keeps for the backward (and the CUDA peak) against
eager's; the GEMM route the default policy took. Ceilings measured in the
same run: a memory copy and a large vendor GEMM. TF32 is off, inputs are
random, every timing is warmed up first, and a case whose inputs take under
16 MiB rotates over 4 sets of them, so the cache is not what gets timed.

Into --out (default benchmarks/results/<machine class>/) it writes
results.json (the environment and every record), results.md (the tables)
and plots/*.png (speedup against size; GFLOP/s and GB/s against the
ceilings; needs matplotlib, skipped with a message without it). Writing
under benchmarks/results/ regenerates that folder's index and the README's
results section (benchmarks/report.py).
"""

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import torch

import fastlayers
from fastlayers import backends
from fastlayers import functional as FL
from fastlayers import reference as ref

from .anchors import EagerFixedHiddenMLP, WhileLoopFixedHiddenMLP, has_onednn_fused, smart_eager
from .timing import cpu_model, gpu_stats, wall_stats, warm_up_gpu

OPS = ("linear_relu", "center", "fixed_hidden_mlp")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ---- environment and ceilings ----------------------------------------------


def machine_class(device):
    """The folder name of this machine's results: the CPU's best instruction
    set, and its core where the policy tells cores apart (cpu_avx2,
    cpu_avx512, cpu_avx512_bf16_zen5, cpu_amx ...), or the GPU's model."""
    if device == "cuda":
        name = torch.cuda.get_device_name().lower().replace("nvidia", "").strip()
        return "gpu_" + "".join(c if c.isalnum() else "_" for c in name).strip("_")
    info = backends.cpu_info()
    return "cpu_" + info["best"] + ("" if info["core"] == "other" else "_" + info["core"])


def driver_version():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(device):
    info = backends.cpu_info()
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device,
        "machine class": machine_class(device),
        "cpu": cpu_model(),
        "cpu instruction sets": ",".join(info["supported"]),
        "cpu core": info["core"],
        "cpu kernels": f"{info['active']} (best {info['best']}; AMX: {info['amx']})",
        "aten cpu capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "fastlayers build": "with CUDA kernels" if fastlayers._library.WITH_CUDA else "CPU kernels only",
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
        env["driver"] = driver_version()
    return env


# One set of a case's inputs smaller than this is made SETS times and the
# calls rotate over them, so that the timing is not of inputs left warm in
# the cache by the call before.
ROTATE_BELOW = 16 * 2**20
SETS = 4


def input_sets(make, nbytes):
    """`make()` builds one set of inputs; small ones come SETS times."""
    return [make() for _ in range(SETS if nbytes < ROTATE_BELOW else 1)]


def measure(fns, device, big=False):
    """Wall time (and GPU time on CUDA) of a call, as a dict; `fns` is the
    call or a list of it on rotating input sets."""
    fns = fns if isinstance(fns, list) else [fns]
    turn = itertools.cycle(fns)
    call = fns[0] if len(fns) == 1 else (lambda: next(turn)())
    wall, spread = wall_stats(call, calls=1 if big and device == "cpu" else None, repeats=3 if big else 7)
    out = {"wall_us": wall, "wall_spread": spread, "input_sets": len(fns)}
    if device == "cuda":
        gpu, gspread = gpu_stats(fns, repeats=10 if big else 50)
        out.update(gpu_us=gpu, gpu_spread=gspread)
    return out


def ceilings(device, quick):
    """A memory copy (GB/s: bytes read + written) and the vendor's GEMM
    (GFLOP/s) per dtype, measured now on this device."""
    n = 2**26 if device == "cuda" else 2**24
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    t = measure(lambda: b.copy_(a), device)
    copy_us = t.get("gpu_us", t["wall_us"])
    out = {"copy_GBps": 2 * a.numel() * a.element_size() / copy_us / 1e3, "copy_MiB": a.numel() * 4 // 2**20}
    out["gemm_GFLOPs"] = {}
    size = (4096 if quick else 8192) if device == "cuda" else (512 if quick else 1024)
    for name in ("float32", "bfloat16"):
        x = torch.randn(size, size, device=device, dtype=DTYPES[name])
        t = measure(lambda x=x: torch.mm(x, x), device, big=device == "cpu" and not quick)
        us = t.get("gpu_us", t["wall_us"])
        out["gemm_GFLOPs"][name] = 2 * size**3 / us / 1e3
    out["gemm_size"] = size
    return out


# ---- memory ------------------------------------------------------------------


def saved_bytes(step):
    """The bytes autograd keeps for the backward while `step` builds its
    graph (storages counted once)."""
    seen = {}

    def pack(t):
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    del out
    return sum(seen.values())


def cuda_peak_bytes(step_and_backward):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step_and_backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# ---- the cases ----------------------------------------------------------------


def finish(record, anchors):
    """Speedups of the fastlayers default against eager and the best anchor,
    on GPU time where there is one, else wall time."""
    key = "gpu_us" if all("gpu_us" in v for v in record["times"].values()) else "wall_us"
    record["metric"] = key
    ours = record["times"]["fastlayers"][key]
    timed = {n: v[key] for n, v in record["times"].items() if n in anchors}
    if timed:
        best = min(timed, key=timed.get)
        record["best_anchor"] = best
        record["speedup_vs_best"] = timed[best] / ours
    if "eager" in timed:
        record["speedup_vs_eager"] = timed["eager"] / ours
    return record


def try_measure(record, name, fn, device, big=False):
    """Times one contender and keeps the faster of this and an earlier
    timing of it; an anchor the installed torch cannot run is recorded as
    unsupported, with the reason. fastlayers' own calls are not excused."""
    if name in record.get("unsupported", {}):
        return
    try:
        t = measure(fn, device, big)
    except Exception as e:
        if name in ("fastlayers", "own kernel"):
            raise
        record.setdefault("unsupported", {})[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return
    old = record["times"].get(name)
    t["sweeps"] = old["sweeps"] + 1 if old else 1
    if old and old.get("gpu_us", old["wall_us"]) <= t.get("gpu_us", t["wall_us"]):
        t = dict(old, sweeps=t["sweeps"])
    record["times"][name] = t


def side_by_side(calls, device, big=False):
    """Times every (record, name, calls on the input sets, context) twice:
    in the order given, then reversed, keeping each contender's faster
    median. Noise on a shared machine only adds time, and what runs first,
    or after another's leftovers (compile workers, a cold clock), no longer
    pays for it alone."""
    for order in (calls, calls[::-1]):
        for record, name, fns, context in order:
            with context():
                try_measure(record, name, fns, device, big)


LINEAR_SHAPES = {
    "cpu": [(2, 20, 256), (64, 512, 512), (256, 1024, 1024), (1024, 1024, 1024), (4096, 1024, 4096)],
    "cuda": [(2, 20, 256), (64, 512, 512), (256, 1024, 4096), (4096, 4096, 4096), (8192, 8192, 8192)],
}
LINEAR_QUICK = {
    "cpu": [(2, 20, 256), (64, 512, 512), (256, 512, 512)],
    "cuda": [(2, 20, 256), (64, 512, 512), (2048,) * 3],
}


def linear_relu_cases(device, dtypes, quick):
    for dtype in dtypes:
        for m, k, n in (LINEAR_QUICK if quick else LINEAR_SHAPES)[device]:
            yield f"{m}x{k}->{n}", dtype, lambda m=m, k=k, n=n, dtype=dtype: linear_relu_case(m, k, n, dtype, device)


def linear_relu_case(m, k, n, dtype, device):
    dt = DTYPES[dtype]
    big = m * k * n >= 2**32

    def make():
        x = torch.randn(m, k, device=device, dtype=dt)
        w = (torch.randn(n, k, device=device, dtype=dt) / k**0.5).requires_grad_()
        b = torch.randn(n, device=device, dtype=dt).requires_grad_()
        return x, w, b, x.clone().requires_grad_(), torch.randn(m, n, device=device, dtype=dt)

    sets = input_sets(make, (m * k + n * k + m * n) * torch.finfo(dt).bits // 8)
    x, w, b, xg, g = sets[0]
    torch._dynamo.reset()
    compiled = torch.compile(ref.linear_relu, fullgraph=True, dynamic=False)
    fwd_only = {}
    if device == "cuda":
        fwd_only["cublaslt"] = lambda x, w, b: torch._addmm_activation(b, x, w.t(), use_gelu=False)
    elif has_onednn_fused() and dtype in ("float32", "bfloat16"):
        fwd_only["onednn"] = lambda x, w, b: torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
    contenders = {"fastlayers": FL.linear_relu, "eager": ref.linear_relu, "compile": compiled}
    size = {"m": m, "k": k, "n": n}
    route = {
        "forward": backends.gemm_route(device, dt, m, n, k),
        "backward": backends.gemm_route(device, dt, m, k, n, backward=True),
    }
    common = {"op": "linear_relu", "case": f"{m}x{k}->{n}", "dtype": dtype, "size": size, "route": route}
    fwd = dict(common, **{"pass": "fwd", "work": 2 * m * k * n, "unit": "flop", "times": {}})
    bwd = dict(common, **{"pass": "fwd+bwd", "work": 6 * m * k * n, "unit": "flop", "times": {}})

    def forward(f):
        return [lambda s=s: f(s[0], s[1], s[2]) for s in sets]

    def step(f):
        return [lambda s=s: f(s[3], s[1], s[2]).backward(s[4]) for s in sets]

    def own_kernel(no_grad=False):  # fastlayers' kernels forced
        stack = contextlib.ExitStack()
        if no_grad:
            stack.enter_context(torch.no_grad())
        stack.enter_context(backends.cpu_gemm("fastlayers"))
        stack.enter_context(backends.cuda_gemm("fastlayers"))
        return stack

    calls = [(fwd, name, forward(f), torch.no_grad) for name, f in {**contenders, **fwd_only}.items()]
    calls.append((fwd, "own kernel", forward(FL.linear_relu), lambda: own_kernel(no_grad=True)))
    calls += [(bwd, name, step(f), contextlib.nullcontext) for name, f in contenders.items()]
    calls.append((bwd, "own kernel", step(FL.linear_relu), own_kernel))
    side_by_side(calls, device, big)
    bwd["memory"] = memory_of({n: (lambda f=f: f(xg, w, b)) for n, f in contenders.items() if n != "compile"}, g)
    anchors = ("eager", "compile", "cublaslt", "onednn")
    return [finish(fwd, anchors), finish(bwd, anchors)]


def memory_of(forwards, grad):
    """Bytes kept for the backward by each forward (and the CUDA peak of a
    forward+backward step)."""
    out = {"saved_for_backward": {n: saved_bytes(f) for n, f in forwards.items()}}
    if grad.is_cuda:
        out["cuda_peak"] = {n: cuda_peak_bytes(lambda f=f: f().backward(grad)) for n, f in forwards.items()}
    return out


CENTER_SIZES = {"cpu": [10**3, 2**16, 2**20, 2**24], "cuda": [10**3, 2**16, 2**20, 2**24, 2**26, 2**28]}
CENTER_QUICK = {"cpu": [10**3, 2**16, 2**20], "cuda": [10**3, 2**16, 2**24]}
ROW = 1024


def center_cases(device, dtypes, quick):
    for dtype in dtypes:
        for n in (CENTER_QUICK if quick else CENTER_SIZES)[device]:
            kinds = [("whole", (n,), None)]
            if n >= ROW:
                kinds += [("rows", (n // ROW, ROW), -1), ("cols", (n // ROW, ROW), 0)]
            for kind, shape, dim in kinds:
                yield (
                    f"{kind} {n}",
                    dtype,
                    lambda kind=kind, shape=shape, dim=dim, dtype=dtype, n=n: center_case(
                        kind, n, shape, dim, dtype, device
                    ),
                )


def center_case(kind, n, shape, dim, dtype, device):
    dt = DTYPES[dtype]

    def make():
        x = (torch.randn(shape, device=device) + 3.0).to(dt)
        return x, x.clone().requires_grad_(), torch.randn(shape, device=device, dtype=dt)

    sets = input_sets(make, n * torch.finfo(dt).bits // 8)
    x, xg, g = sets[0]
    torch._dynamo.reset()
    compiled = torch.compile(ref.center, fullgraph=True, dynamic=False)
    contenders = {
        "fastlayers": lambda t: FL.center(t, dim),
        "eager": lambda t: ref.center(t, dim),
        "compile": lambda t: compiled(t, dim),
    }
    nbytes = x.numel() * x.element_size()
    common = {"op": "center", "case": f"{kind} {n}", "dtype": dtype, "size": {"numel": n, "kind": kind}}
    # the least traffic: read the input once, write the output once (per pass)
    fwd = dict(common, **{"pass": "fwd", "work": 2 * nbytes, "unit": "byte", "times": {}, "route": "no GEMM"})
    bwd = dict(common, **{"pass": "fwd+bwd", "work": 4 * nbytes, "unit": "byte", "times": {}, "route": "no GEMM"})
    calls = [(fwd, name, [lambda f=f, s=s: f(s[0]) for s in sets], torch.no_grad) for name, f in contenders.items()]
    calls += [
        (bwd, name, [lambda f=f, s=s: f(s[1]).backward(s[2]) for s in sets], contextlib.nullcontext)
        for name, f in contenders.items()
    ]
    side_by_side(calls, device)
    bwd["memory"] = memory_of({n: (lambda f=f: f(xg)) for n, f in contenders.items() if n != "compile"}, g)
    return [finish(fwd, ("eager", "compile")), finish(bwd, ("eager", "compile"))]


FHM_SHAPES = {"cpu": [(2, 20), (64, 20), (4096, 256)], "cuda": [(2, 20), (64, 20), (4096, 256), (65536, 1024)]}
FHM_QUICK = {"cpu": [(2, 20), (64, 20)], "cuda": [(2, 20), (64, 20), (4096, 256)]}


def fixed_hidden_mlp_cases(device, dtypes, quick):
    for dtype in dtypes:
        for batch, f in (FHM_QUICK if quick else FHM_SHAPES)[device]:
            yield f"{batch}x{f}", dtype, lambda b=batch, f=f, dtype=dtype: fixed_hidden_mlp_case(b, f, dtype, device)


def fixed_hidden_mlp_case(batch, features, dtype, device):
    dt = DTYPES[dtype]
    torch.manual_seed(0)
    eager = EagerFixedHiddenMLP(features).to(device, dt)
    fused = fastlayers.FixedHiddenMLP(features).to(device, dt)
    fused.load_state_dict(eager.state_dict())
    xs = input_sets(lambda: torch.rand(batch, features, device=device, dtype=dt), batch * features * 4)
    x = xs[0]
    torch._dynamo.reset()
    contenders = {
        "fastlayers": fused,
        "eager": eager,
        "compile": torch.compile(eager),
        "while_loop compile": torch.compile(WhileLoopFixedHiddenMLP(eager), fullgraph=True),
        "smart eager": smart_eager(eager),
    }
    big = batch * features * features >= 2**30
    mnk = batch * features * features
    route = backends.gemm_route(device, dt, batch, features, features)
    common = {"op": "fixed_hidden_mlp", "case": f"{batch}x{features}", "dtype": dtype, "route": route}
    common["size"] = {"batch": batch, "features": features}
    fwd = dict(common, **{"pass": "fwd", "work": 3 * 2 * mnk, "unit": "flop", "times": {}})
    bwd = dict(common, **{"pass": "fwd+bwd", "work": 3 * 6 * mnk, "unit": "flop", "times": {}})
    calls = [
        (fwd, name, [lambda model=model, x=x: model(x) for x in xs], torch.no_grad)
        for name, model in contenders.items()
    ]
    calls += [
        (bwd, name, [lambda model=model, x=x: model(x).backward() for x in xs], contextlib.nullcontext)
        for name, model in contenders.items()
    ]
    side_by_side(calls, device, big)
    one = torch.ones((), device=device, dtype=dt)
    bwd["memory"] = memory_of({"fastlayers": lambda: fused(x), "eager": lambda: eager(x)}, one)
    anchors = ("eager", "compile", "while_loop compile", "smart eager")
    return [finish(fwd, anchors), finish(bwd, anchors)]


CASES = {"linear_relu": linear_relu_cases, "center": center_cases, "fixed_hidden_mlp": fixed_hidden_mlp_cases}


# ---- output ----------------------------------------------------------------------


def fmt_us(v):
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def markdown(result):
    env, recs = result["environment"], result["records"]
    lines = [
        f"# fastlayers benchmarks: {env['machine class']}",
        "",
        f"{env['date']}; {env.get('gpu') or env['cpu']}; torch {env['torch']}; {env['threads']} threads; "
        f"CPU kernels {env['cpu kernels']}.",
        "",
        f"Ceilings measured in the same run: a copy of {result['ceilings']['copy_MiB']} MiB "
        f"{result['ceilings']['copy_GBps']:.1f} GB/s (read + write; cache-resident cases can exceed it); vendor GEMM "
        + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in result["ceilings"]["gemm_GFLOPs"].items())
        + f" at {result['ceilings']['gemm_size']}³.",
        "",
        "Times in µs per call (GPU time where the device is a GPU, else wall time); speedups are the",
        "fastlayers default against eager and against the best anchor; spread is the largest",
        "(slowest - fastest) / median of the row's timings; memory is what a forward keeps for the",
        "backward, fastlayers ÷ eager.",
    ]
    for op in OPS:
        rows = [r for r in recs if r["op"] == op]
        if not rows:
            continue
        names = []
        for r in rows:
            names += [n for n in r["times"] if n not in names]
        lines += ["", f"## {op}", ""]
        head = ["case", "dtype", "pass", *names, "vs eager", "vs best", "best anchor", "spread", "memory", "route"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            key = r["metric"]
            cells = [r["case"], r["dtype"], r["pass"]]
            cells += [fmt_us(r["times"][n][key]) if n in r["times"] else "—" for n in names]
            cells += [f"{r['speedup_vs_eager']:.2f}×" if "speedup_vs_eager" in r else "—"]
            cells += [f"{r['speedup_vs_best']:.2f}×" if "speedup_vs_best" in r else "—", r.get("best_anchor", "—")]
            spread_key = key.replace("_us", "_spread")
            cells.append(f"{max(v.get(spread_key, 0) for v in r['times'].values()):.0%}")
            saved = r.get("memory", {}).get("saved_for_backward", {})
            if not saved:
                cells.append("—")
            elif saved["eager"] == 0:
                cells.append("none kept" if saved["fastlayers"] == 0 else f"{saved['fastlayers']:,} B vs none")
            else:
                cells.append(f"{saved['fastlayers'] / saved['eager']:.2f}")
            route = r["route"]
            cells.append(route if isinstance(route, str) else f"{route['forward']} / {route['backward']}")
            lines.append("| " + " | ".join(cells) + " |")
        unsupported = {n: why for r in rows for n, why in r.get("unsupported", {}).items()}
        for n, why in unsupported.items():
            lines.append(f"\n{n}: not run here ({why}).")
    return "\n".join(lines) + "\n"


def series_of(record):
    """A plotted line: dtype, pass, and for center the kind of reduction."""
    return (record["dtype"], record["pass"], record["size"].get("kind", ""))


def plots(result, out_dir):
    """The PNG plots; returns their paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    recs, env, ceil = result["records"], result["environment"], result["ceilings"]
    paths = []

    def save(fig, ax, name):
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, "plots", name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    for op in OPS:
        rows = [r for r in recs if r["op"] == op and "speedup_vs_eager" in r]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for series in sorted({series_of(r) for r in rows}):
            sel = sorted((r for r in rows if series_of(r) == series), key=lambda r: r["work"])
            style = "-o" if series[1] == "fwd" else "--s"
            ax.plot([r["work"] for r in sel], [r["speedup_vs_best"] for r in sel], style, label=" ".join(series))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("work per call (" + rows[0]["unit"] + "s)")
        ax.set_ylabel("speedup vs the best anchor (×)")
        ax.set_title(f"{op}: fastlayers vs the best anchor\n{env['machine class']}, torch {env['torch']}")
        paths.append(save(fig, ax, f"{op}_speedup.png"))
    for op, unit, ceiling_of in (
        ("linear_relu", "GFLOP/s", lambda dtype: ceil["gemm_GFLOPs"].get(dtype)),
        ("center", "GB/s", lambda dtype: ceil["copy_GBps"]),
    ):
        rows = [r for r in recs if r["op"] == op and r["pass"] == "fwd" and "fastlayers" in r["times"]]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for series in sorted({series_of(r) for r in rows}):
            sel = sorted((r for r in rows if series_of(r) == series), key=lambda r: r["work"])
            for name, style in (("fastlayers", "-o"), ("eager", ":x")):
                pts = [(r["work"], r["work"] / r["times"][name][r["metric"]] / 1e3) for r in sel if name in r["times"]]
                ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=f"{name} " + " ".join(series[::2]))
        for dtype in sorted({r["dtype"] for r in rows}):
            c = ceiling_of(dtype)
            if c:
                ax.axhline(c, ls="--", lw=0.8, color="gray")
                label = (
                    f"vendor GEMM {dtype} at {ceil['gemm_size']}³: {c:,.0f}"
                    if unit == "GFLOP/s"
                    else f"copy of {ceil['copy_MiB']} MiB: {c:,.0f} (data that fits in the caches can go faster)"
                )
                ax.annotate(label, (min(r["work"] for r in rows), c), fontsize=7, va="bottom")
        ax.set_xscale("log")
        ax.set_xlabel("work per call (" + rows[0]["unit"] + "s)")
        ax.set_ylabel(f"achieved {unit} (forward)")
        what = "vendor GEMM" if unit == "GFLOP/s" else "memory copy"
        ax.set_title(f"{op}: achieved {unit} against the {what} ceiling\n{env['machine class']}")
        paths.append(save(fig, ax, f"{op}_{'gflops' if unit == 'GFLOP/s' else 'bandwidth'}.png"))
    return paths


# ---- the command ---------------------------------------------------------------


def parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="fewer and smaller shapes (minutes on 2 CPU cores)")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, from {','.join(OPS)}")
    p.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, from {','.join(DTYPES)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--out", help="the folder for results.json, results.md and plots/ (default: benchmarks/results/<machine class>)"
    )
    args = p.parse_args(argv)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for o in args.ops:
        if o not in OPS:
            p.error(f"--ops: unknown op {o!r} (choose from {', '.join(OPS)})")
    for d in args.dtypes:
        if d not in DTYPES:
            p.error(f"--dtypes: unknown dtype {d!r} (choose from {', '.join(DTYPES)})")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    return args


def main(argv=None):
    args = parse(argv)
    device = args.device
    out_dir = args.out or os.path.join(RESULTS, machine_class(device))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    if device == "cuda":
        warm_up_gpu()
    env = environment(device)
    print(f"fastlayers benchmarks on {env.get('gpu') or env['cpu']} ({env['machine class']}), torch {env['torch']}")
    print("measuring the ceilings (memory copy, vendor GEMM) ...", flush=True)
    ceil = ceilings(device, args.quick)
    plan = [(op, *case) for op in args.ops for case in CASES[op](device, args.dtypes, args.quick)]
    records, start = [], time.perf_counter()
    for i, (op, name, dtype, run) in enumerate(plan, 1):
        elapsed = time.perf_counter() - start
        eta = f", about {elapsed / (i - 1) * (len(plan) - i + 1):.0f} s left" if i > 1 else ""
        print(f"[{i}/{len(plan)}] {op} {name} {dtype} ({elapsed:.0f} s{eta})", flush=True)
        records += run()
    result = {"environment": env, "ceilings": ceil, "quick": args.quick, "records": records}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    md = markdown(result)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    made = plots(result, out_dir)
    print()
    print(md)
    print(f"wrote {out_dir}/results.json, results.md" + (f" and {len(made)} plots" if made else ""))
    if os.path.dirname(os.path.abspath(out_dir)) == RESULTS:
        from . import report

        report.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
