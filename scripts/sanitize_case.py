"""The small case scripts/sanitize.sh runs under compute-sanitizer: one
forward+backward of every op on CUDA, on shapes that reach each kernel path
(single launch, tiled, ragged tile edges, split reductions), float32 and
bfloat16, on each GEMM route named in FASTLAYERS_SANITIZE_ROUTES (default
"fastlayers,vendor"), fastlayers' route with the default kernels and then
with every switched one on (split-K, 128-wide wgmma, ...). Prints one line
per dtype; fails loudly."""

import contextlib
import os

import torch

import fastlayers
from fastlayers import backends
from fastlayers import functional as FL

dev = os.environ.get("FASTLAYERS_SANITIZE_DEVICE", "cuda")  # "cpu" checks this script without a GPU
assert dev == "cpu" or torch.cuda.is_available(), "sanitize_case: needs a CUDA device"
routes = os.environ.get("FASTLAYERS_SANITIZE_ROUTES", "fastlayers,vendor").split(",")
# (policy, switched kernels: None for the defaults)
runs = [(p, kernels) for p in routes for kernels in ((None, "all") if p == "fastlayers" else (None,))]
torch.manual_seed(0)
for dtype in (torch.float32, torch.bfloat16):
    for policy, kernels in runs:
        switched = backends.cuda_experimental(kernels) if kernels else contextlib.nullcontext()
        with backends.cuda_gemm(policy), switched:
            for m, k, n in [(2, 20, 256), (67, 130, 97), (300, 128, 200)]:
                x = torch.randn(m, k, device=dev, dtype=dtype, requires_grad=True)
                w = torch.randn(n, k, device=dev, dtype=dtype, requires_grad=True)
                b = torch.randn(n, device=dev, dtype=dtype, requires_grad=True)
                FL.linear_relu(x, w, b).sum().backward()
            for rows, f in [(2, 20), (64, 20), (300, 128)]:
                for return_sum in (True, False):
                    layer = fastlayers.FixedHiddenMLP(f, return_sum=return_sum).to(dev, dtype)
                    out = layer(torch.randn(rows, f, device=dev, dtype=dtype, requires_grad=True))
                    (out if return_sum else out.sum()).backward()
    for shape, dim in [
        ((1000,), None),
        ((3, 70_001), None),
        ((5, 1000), 1),
        ((4, 70_001), 1),
        ((300, 40), 0),
        ((2000, 3), 0),
        ((6, 50, 7), 1),
        ((3, 4, 5), (0, 2)),
    ]:
        x = torch.randn(shape, device=dev, dtype=dtype, requires_grad=True)
        FL.center(x, dim).square().sum().backward()
    if dev == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize_case: {dtype}: linear_relu, fixed_hidden_mlp and center forward+backward ran ({routes})")
