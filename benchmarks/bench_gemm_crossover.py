"""Where the auto GEMM policy (csrc/common/gemm_policy.h) should hand the
products to the vendor: linear_relu's forward and its two backward ops, each
forced onto fastlayers' kernels and onto the vendor's (cuBLAS/cuBLASLt
through ATen on the GPU; oneDNN's fused linear+ReLU and MKL/oneDNN through
ATen on the CPU), over a sweep of product sizes. On the CPU the crossover
depends on the instruction set: the table prints the CPU and the path.

Wall time per call (N calls, then one synchronize): for small products the
launch and dispatch are what a user pays, for large ones it is GPU time.
"own ÷ vendor" > 1 means fastlayers' kernels are faster there ("own": the
default kernels). On the GPU, "exp" is fastlayers' kernels with every
switched one on (fastlayers.backends.cuda_experimental("all"): split-K and
128-wide wgmma too), for deciding where they become the default.

    python -m benchmarks.bench_gemm_crossover [--quick] [--json FILE]
"""

import contextlib
import math
import sys

import torch

from fastlayers import backends
from fastlayers import functional as FL

from .timing import bench_main, wall_us

OPS = torch.ops.fastlayers

# (rows, in_features, out_features): 2^16 to 2^31 multiply-adds.
SHAPES = [
    (16, 64, 64),
    (32, 128, 128),
    (64, 128, 256),
    (64, 256, 512),
    (128, 512, 512),
    (256, 512, 1024),
    (512, 1024, 1024),
    (1024, 1024, 2048),
]
QUICK_SHAPES = [(32, 128, 128), (64, 512, 512), (512, 1024, 1024)]
# 2^13 to 2^32 multiply-adds on the CPU.
CPU_SHAPES = [
    (2, 20, 256),
    (16, 64, 64),
    (32, 128, 128),
    (64, 256, 256),
    (64, 512, 512),
    (256, 512, 512),
    (256, 1024, 1024),
    (1024, 1024, 1024),
    (1024, 2048, 2048),
]


def kernels(experimental):
    """The switched CUDA kernels named on (the rest off), or the defaults where none are named."""
    return backends.cuda_experimental(*experimental) if experimental else contextlib.nullcontext()


def time_policy(policy, x, w, b, g, experimental=()):
    """Forward and backward (both backward ops) wall µs under one policy (on
    CUDA, with the experimental kernels named in `experimental` on)."""
    switch = backends.cuda_gemm if x.is_cuda else backends.cpu_gemm
    with switch(policy), kernels(experimental), torch.no_grad():
        out = FL.linear_relu(x, w, b)
        fwd = wall_us(lambda: FL.linear_relu(x, w, b))
        bwd = wall_us(
            lambda: (OPS.linear_relu_backward_input(g, out, w), OPS.linear_relu_backward_params(g, out, x, True))
        )
    return fwd, bwd


def run(device, quick=False):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    rows = []
    if device == "cpu":
        info = backends.cpu_info()
        print(
            f"CPU kernels: {info['active']} (best {info['best']}; core {info['core']}; AMX: {info['amx']})", flush=True
        )
    for dtype in (torch.float32, torch.bfloat16):
        for m, k, n in QUICK_SHAPES if quick else (SHAPES if device == "cuda" else CPU_SHAPES):
            x = torch.randn(m, k, device=device, dtype=dtype)
            w = torch.randn(n, k, device=device, dtype=dtype) / k**0.5
            b = torch.randn(n, device=device, dtype=dtype)
            g = torch.randn(m, n, device=device, dtype=dtype)
            own_fwd, own_bwd = time_policy("fastlayers", x, w, b, g)
            vendor_fwd, vendor_bwd = time_policy("vendor", x, w, b, g)
            row = {
                "case": f"{m}x{k}->{n} {str(dtype)[6:]}",
                "log2 macs": round(math.log2(m * k * n), 1),
                "own fwd": own_fwd,
                "vendor fwd": vendor_fwd,
                "own bwd": own_bwd,
                "vendor bwd": vendor_bwd,
                "fwd own ÷ vendor": vendor_fwd / own_fwd,
                "bwd own ÷ vendor": vendor_bwd / own_bwd,
            }
            if device == "cuda":  # every switched kernel on (backends.cuda_experimental), same product
                exp_fwd, exp_bwd = time_policy("fastlayers", x, w, b, g, experimental=("all",))
                row.update(
                    {
                        "exp fwd": exp_fwd,
                        "exp bwd": exp_bwd,
                        "fwd exp ÷ vendor": vendor_fwd / exp_fwd,
                        "bwd exp ÷ vendor": vendor_bwd / exp_bwd,
                    }
                )
            rows.append(row)
    return rows


def main(argv=None):
    bench_main(argv, __doc__, run, "GEMM crossover: linear_relu wall µs per call, each route forced", "three sizes")


if __name__ == "__main__":
    sys.exit(main())
