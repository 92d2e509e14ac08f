"""The hand-written GEMM kernels against the vendor's at the sizes where
their speed targets are set (benchmarks/NOTES.md, the CUDA GEMM issue):
linear_relu's forward, or its backward (both products: input gradient, and
weight gradient with the bias gradient), forced onto fastlayers' kernels
(the defaults, then each switched kernel that applies on its own), against
the vendor's: on the GPU the forward's anchor is cuBLASLt's bias+ReLU
epilogue called directly (torch._addmm_activation; fastlayers' own vendor
route adds a separate ReLU, which keeps NaN), the backward's is fastlayers'
vendor route (cuBLAS products); on the CPU the vendor route (oneDNN). TF32 off.

On the GPU: GPU time per call (CUDA events, inputs rotated between two
sets), at the target sizes. On the CPU the same comparison at 1/16 of each
size, so that the script runs anywhere; the CPU's own targets are the
suite's. "÷ vendor" > 1 means faster than the vendor.

    python -m benchmarks.bench_gemm_targets [--quick] [--json FILE]
"""

import contextlib
import sys

import torch

from fastlayers import backends
from fastlayers import functional as FL

from .timing import bench_main, gpu_us, wall_us

OPS = torch.ops.fastlayers

# (pass, dtype, (rows, in_features, out_features), target, the switched
# kernels that apply, one row each on its own, or joined by "+"; "none":
# fastlayers' first kernels): the target is fastlayers ÷ vendor in speed.
FLOAT_PIPELINED = "float_warp_tiled+float_warp_pipelined"
TARGETS = [
    ("forward", torch.float32, (4096, 4096, 4096), 0.85, ("none", "float_warp_tiled", FLOAT_PIPELINED)),
    ("forward", torch.bfloat16, (4096, 4096, 4096), 0.9, ("none", "wgmma", "wgmma_wide")),
    ("forward", torch.bfloat16, (8192, 8192, 8192), 0.9, ("none", "wgmma", "wgmma_wide")),
    ("backward", torch.bfloat16, (4096, 4096, 4096), 0.7, ("none", "tensor_core_backward", "wgmma", "wgmma_wide")),
    ("backward", torch.float32, (4096, 4096, 4096), None, ("none", "float_warp_tiled", FLOAT_PIPELINED)),
]
CPU_SCALE = 16


def kernels(experimental):
    """The switched CUDA kernels named on (the rest off), or the defaults where none are named."""
    return backends.cuda_experimental(*experimental) if experimental else contextlib.nullcontext()


def inputs(device, dtype, m, k, n, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, device=device, dtype=dtype, generator=g)
    w = torch.randn(n, k, device=device, dtype=dtype, generator=g) / k**0.5
    b = torch.randn(n, device=device, dtype=dtype, generator=g)
    grad = torch.randn(m, n, device=device, dtype=dtype, generator=g)
    with torch.no_grad():
        out = FL.linear_relu(x, w, b)
    return x, w, b, grad, out


def call(which, x, w, b, grad, out, anchor=False):
    if which == "forward" and anchor:
        return lambda: torch._addmm_activation(b, x, w.t(), use_gelu=False)
    if which == "forward":
        return lambda: FL.linear_relu(x, w, b)
    return lambda: (OPS.linear_relu_backward_input(grad, out, w), OPS.linear_relu_backward_params(grad, out, x, True))


def time_route(which, sets, policy, experimental=(), repeats=20):
    """µs per call of the pass on each input set in turn, under one policy."""
    cuda = sets[0][0].is_cuda
    switch = backends.cuda_gemm if cuda else backends.cpu_gemm
    with switch(policy), kernels(experimental), torch.no_grad():
        fns = [call(which, *s, anchor=cuda and policy == "vendor") for s in sets]
        if cuda:
            return gpu_us(fns, repeats=repeats)
        return wall_us(fns[0], repeats=3, budget_s=0.3)


def run(device, quick=False):
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for which, dtype, (m, k, n), target, experimental in TARGETS:
        if device != "cuda":  # the GPU's targets do not apply, nor its experimental kernels
            m, k, n = m // CPU_SCALE, k // CPU_SCALE, n // CPU_SCALE
            target, experimental = None, ()
        repeats = 10 if quick else 30
        sets = [inputs(device, dtype, m, k, n, seed) for seed in range(2 if device == "cuda" else 1)]
        vendor = time_route(which, sets, "vendor", repeats=repeats)
        own = time_route(which, sets, "fastlayers", repeats=repeats)
        row = {
            "case": f"{which} {m}x{k}->{n} {str(dtype)[6:]}",
            "target": "-" if target is None else f"{target:.2f}",
            "vendor µs": vendor,
            "own µs": own,
            "own ÷ vendor": vendor / own,
        }
        for kernel in experimental:
            exp = time_route(which, sets, "fastlayers", experimental=kernel.split("+"), repeats=repeats)
            rows.append({**row, "exp": kernel, "exp µs": exp, "exp ÷ vendor": vendor / exp})
        if not experimental:
            rows.append(row)
        del sets
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None):
    bench_main(
        argv,
        __doc__,
        run,
        "GEMM targets: linear_relu at the target sizes, each route forced (GPU: GPU µs per call)",
        "fewer repeats",
    )


if __name__ == "__main__":
    sys.exit(main())
