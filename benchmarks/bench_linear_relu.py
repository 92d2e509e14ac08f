"""linear_relu against what a user would pick instead: eager
`relu(linear(x))`, torch.compile of it, the vendor's fused op (GPU:
cuBLASLt's bias+ReLU epilogue through torch._addmm_activation; CPU: oneDNN's
torch.ops.mkldnn._linear_pointwise, forward only: it has no derivative).
Forward and forward+backward, wall time per call and (GPU) CUDA-event time.
"fastlayers" is the default (auto) policy and "own kernel" forces
fastlayers' hand-written GEMM (fastlayers.backends.cuda_gemm / cpu_gemm), so
the crossover to the vendor GEMM shows. The CPU model and the kernels' path
are printed with the table.

    python -m benchmarks.bench_linear_relu [--quick] [--device cpu|cuda] [--json FILE]
"""

import contextlib
import sys

import torch

from fastlayers import backends
from fastlayers import functional as FL
from fastlayers import reference as ref

from .timing import bench_main, gpu_us, wall_us

# (batch, in_features, out_features): the anchor shapes, from the chapter's 2x20 to 8192^3.
GPU_SHAPES = [(2, 20, 256), (64, 512, 512), (256, 1024, 4096), (4096, 4096, 4096), (8192, 8192, 8192)]
CPU_SHAPES = [(2, 20, 256), (64, 512, 512), (256, 1024, 1024), (1024, 1024, 1024), (4096, 1024, 4096)]
QUICK_SHAPES = {
    "cpu": [(2, 20, 256), (64, 512, 512), (512, 512, 512)],
    "cuda": [(2, 20, 256), (64, 512, 512), (2048, 2048, 2048)],
}


def contenders(device, compile_too):
    c = {"eager": ref.linear_relu, "fastlayers": FL.linear_relu}
    if compile_too:
        torch._dynamo.reset()  # a fresh compile per case, not a recompile
        c["compile"] = torch.compile(ref.linear_relu, fullgraph=True, dynamic=False)
    if device == "cuda":
        c["cublaslt"] = lambda x, w, b: torch._addmm_activation(b, x, w.t(), use_gelu=False)
    elif has_onednn_fused():
        c["onednn"] = lambda x, w, b: torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
    c["own kernel"] = FL.linear_relu
    return c


def has_onednn_fused():
    try:
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 1), torch.ones(1, 1), None, "relu", [], "")
        return True
    except (AttributeError, RuntimeError):
        return False


FORWARD_ONLY = ("cublaslt", "onednn")  # no derivative registered for either


def policy_for(name):
    """The GEMM policy a contender is timed under (both devices' switches)."""
    if name != "own kernel":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(backends.cuda_gemm("fastlayers"))
    stack.enter_context(backends.cpu_gemm("fastlayers"))
    return stack


def inputs(m, k, n, dtype, device, sets=1, grad=False):
    out = []
    for _ in range(sets):
        x = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype) / k**0.5
        b = torch.randn(n, device=device, dtype=dtype)
        if grad:
            x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
        out.append((x, w, b))
    return out


def bench_shape(m, k, n, dtype, device, compile_too):
    row_fwd = {"case": f"fwd {m}x{k}->{n} {str(dtype)[6:]}"}
    row_bwd = {"case": f"fwd+bwd {m}x{k}->{n} {str(dtype)[6:]}"}
    big = m * k * n >= 2**30
    huge = m * k * n >= 2**33
    gpu_repeats = 10 if m * k * n >= 2**36 else 50
    # Rotate input sets on the GPU unless one set already overflows L2.
    sets = 1 if device == "cpu" or big else 4
    fwd_sets = inputs(m, k, n, dtype, device, sets)
    bwd_sets = inputs(m, k, n, dtype, device, sets, grad=True)
    grads = [torch.randn(m, n, device=device, dtype=dtype) for _ in range(sets)]
    for name, f in contenders(device, compile_too).items():
        if name in FORWARD_ONLY and dtype in (torch.float64, torch.float16):
            continue
        calls = [lambda a=a, f=f: f(*a) for a in fwd_sets]
        with torch.no_grad(), policy_for(name):
            row_fwd[f"{name} wall"] = wall_us(
                calls[0],
                calls=(1 if huge else 3) if big and device == "cpu" else None,
                repeats=3 if huge and device == "cpu" else 7,
            )
            if device == "cuda":
                row_fwd[f"{name} gpu"] = gpu_us(calls, repeats=gpu_repeats)

        if name in FORWARD_ONLY:  # forward-only anchors
            continue

        def step(f=f, a=bwd_sets[0], g=grads[0]):
            f(*a).backward(g)

        with policy_for(name):
            row_bwd[f"{name} wall"] = wall_us(
                step,
                calls=(1 if huge else 2) if big and device == "cpu" else None,
                repeats=3 if huge and device == "cpu" else 7,
            )
            if device == "cuda" and big:  # large shapes: GPU time decides
                row_bwd[f"{name} gpu"] = gpu_us([step], repeats=gpu_repeats)
    for row in (row_fwd, row_bwd):
        metric = " gpu" if "fastlayers gpu" in row and big else " wall"
        base = [v for key, v in row.items() if key.endswith(metric) and key.split(" ")[0] not in ("fastlayers", "own")]
        row["speedup vs best"] = min(base) / row["fastlayers" + metric] if base else None
        if "own kernel gpu" in row and "cublaslt gpu" in row:  # the hand-written kernel alone
            row["own vs cublaslt"] = row["cublaslt gpu"] / row["own kernel gpu"]
        if "own kernel wall" in row and "onednn wall" in row:
            row["own vs onednn"] = row["onednn wall"] / row["own kernel wall"]
    return [row_fwd, row_bwd]


def run(device, quick=False, compile_too=None):
    if compile_too is None:
        compile_too = not quick
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    shapes = QUICK_SHAPES[device] if quick else (GPU_SHAPES if device == "cuda" else CPU_SHAPES)
    dtypes = [torch.float32, torch.bfloat16]
    rows = []
    for dtype in dtypes:
        for m, k, n in shapes:
            rows += bench_shape(m, k, n, dtype, device, compile_too)
    return rows


def main(argv=None):
    bench_main(
        argv,
        __doc__,
        run,
        "linear_relu, µs per call (wall: N calls then one sync; gpu: CUDA events, median)",
        "fewer and smaller shapes, no torch.compile",
    )


if __name__ == "__main__":
    sys.exit(main())
