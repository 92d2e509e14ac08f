"""Tensors past 2^31 elements: the kernels' int64 indexing, against
references computed in float64 chunk by chunk.

Opt-in (FASTLAYERS_LARGE_TESTS=1): each case needs several GiB and tens of
seconds on a small CPU. A case skips, saying how much it needs, where the
device has less memory free. The GPU machine's script (scripts/device_check.sh)
turns them on; on a 24 GiB CPU machine they run one at a time within memory.

Memory per case (the inputs and outputs, plus the largest temporary):
- center, whole tensor and along a dim: 2 * N * itemsize, N = 2^31 + 2^20 + 7
  (bfloat16 8.6 GB; float32 17.2 GB);
- linear_relu forward, output M x 1024 with M = 2^21 + 3: output 4.3 GB in
  bfloat16 (8.6 GB float32) plus small operands;
- linear_relu forward and backward: three such M x 1024 tensors
  (output, grad_output, the masked gradient inside the vendor's backward).
"""

import os

import pytest
import torch

import fastlayers  # noqa: F401
from fastlayers import backends
from fastlayers import functional as FL

from .conftest import DEVICES

pytestmark = pytest.mark.skipif(
    os.environ.get("FASTLAYERS_LARGE_TESTS") != "1", reason="large-tensor tests are opt-in: FASTLAYERS_LARGE_TESTS=1"
)

BIG = 2**31 + 2**20 + 7  # elements: past int32, and not a multiple of any tile
ROWS = 2**21 + 3  # linear_relu: ROWS x OUT outputs > 2^31
OUT = 1024
IN = 16
CHUNK = 2**26  # elements per reference chunk


def _dtype_for(device):
    # bfloat16 keeps the CPU cases inside a 24 GiB machine; the GPU has room for float32.
    return torch.bfloat16 if device == "cpu" else torch.float32


def _require_memory(device, nbytes):
    if device == "cpu":
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    else:
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info()[0]
    if free < nbytes * 1.1:
        pytest.skip(f"needs {nbytes / 2**30:.1f} GiB free on {device}, has {free / 2**30:.1f} GiB")


def _fill_normal(t, offset, seed):
    """Normal values + offset into a large tensor, a chunk at a time (no
    full-size float32 temporary)."""
    flat = t.view(-1)
    gen = torch.Generator(device=t.device).manual_seed(seed)
    for start in range(0, flat.numel(), CHUNK):
        part = flat[start : start + CHUNK]
        part.copy_(torch.randn(part.shape, generator=gen, device=t.device).add_(offset))


def _chunks(n):
    return range(0, n, CHUNK)


def _center_bound(dtype):
    # One rounding of the result to `dtype` plus the float32 mean's error.
    return torch.finfo(dtype).eps


@pytest.mark.parametrize("device", DEVICES)
def test_center_whole_tensor_past_2_31_elements(device):
    dtype = _dtype_for(device)
    _require_memory(device, 2 * BIG * dtype.itemsize)
    x = torch.empty(BIG, dtype=dtype, device=device)
    _fill_normal(x, 3.0, seed=0)
    out = FL.center(x)
    mean = sum(x[s : s + CHUNK].double().sum() for s in _chunks(BIG)) / BIG
    worst = 0.0
    for s in _chunks(BIG):
        exact = x[s : s + CHUNK].double() - mean
        err = (out[s : s + CHUNK].double() - exact).abs() / (exact.abs() + 1)
        worst = max(worst, err.max().item())
    assert worst <= 2 * _center_bound(dtype), worst
    # the last elements, past every 32-bit offset, are centered too
    assert abs(out[-1].double().item() - (x[-1].double().item() - mean.item())) <= 0.05


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [1, 0])
def test_center_along_a_dim_past_2_31_elements(dim, device):
    """(2, N/2): dim=1 centers two groups of 2^30 elements (the long-group
    path); dim=0 centers 2^30 pairs (the column path), whose second row
    starts past 2^30 and ends past 2^31."""
    dtype = _dtype_for(device)
    cols = BIG // 2 + 1
    _require_memory(device, 2 * 2 * cols * dtype.itemsize)
    x = torch.empty(2, cols, dtype=dtype, device=device)
    _fill_normal(x, 3.0, seed=1)
    out = FL.center(x, dim)
    if dim == 1:
        means = [sum(x[r, s : s + CHUNK].double().sum() for s in _chunks(cols)) / cols for r in range(2)]
        for r in range(2):
            for s in _chunks(cols):
                exact = x[r, s : s + CHUNK].double() - means[r]
                err = (out[r, s : s + CHUNK].double() - exact).abs() / (exact.abs() + 1)
                assert err.max().item() <= 2 * _center_bound(dtype)
    else:
        for s in _chunks(cols):
            block = x[:, s : s + CHUNK].double()
            exact = block - block.mean(0, keepdim=True)
            err = (out[:, s : s + CHUNK].double() - exact).abs() / (exact.abs() + 1)
            assert err.max().item() <= 2 * _center_bound(dtype)


def _linear_operands(device, dtype):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(ROWS, IN, generator=gen).to(device, dtype)
    w = (torch.randn(OUT, IN, generator=gen) / IN**0.5).to(device, dtype)
    b = torch.randn(OUT, generator=gen).to(device, dtype)
    return x, w, b


def _policies(device):
    if device == "cpu":
        return {"fastlayers": backends.cpu_gemm("fastlayers"), "vendor": backends.cpu_gemm("vendor")}
    return {"fastlayers": backends.cuda_gemm("fastlayers"), "vendor": backends.cuda_gemm("vendor")}


def _dot_bound(dtype, terms):
    """The relative rounding bound of a sum of `terms` products accumulated
    in float32 (gamma_n, n = terms, unit roundoff eps32 / 2) and then rounded
    to `dtype` once; times the sum of the products' absolute values. (2 eps
    alone held for bfloat16 but not for float32 outputs, the GPU's: seen on
    the H200, every route.)"""
    return torch.finfo(dtype).eps + terms * torch.finfo(torch.float32).eps / 2


def _check_rows(got, exact, bound, what):
    """|got - exact| <= bound elementwise (bound: a rounding-error bound from
    the absolute values)."""
    excess = ((got.double() - exact).abs() - bound).max().item()
    assert excess <= 0, f"{what}: error exceeds the rounding bound by {excess}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
def test_linear_relu_output_past_2_31_elements(policy, device):
    dtype = _dtype_for(device)
    _require_memory(device, ROWS * OUT * dtype.itemsize + (1 << 30))
    x, w, b = _linear_operands(device, dtype)
    with _policies(device)[policy]:
        out = FL.linear_relu(x, w, b)
    assert out.shape == (ROWS, OUT) and out.numel() > 2**31
    w64, b64 = w.double(), b.double()
    for s in range(0, ROWS, CHUNK // OUT):
        xc = x[s : s + CHUNK // OUT].double()
        exact = torch.relu(xc @ w64.T + b64)
        bound = _dot_bound(dtype, IN + 1) * (xc.abs() @ w64.abs().T + b64.abs()) + 1e-30
        _check_rows(out[s : s + CHUNK // OUT], exact, bound, f"rows {s}..")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
def test_linear_relu_backward_past_2_31_elements(policy, device):
    dtype = _dtype_for(device)
    _require_memory(device, 3 * ROWS * OUT * dtype.itemsize + (1 << 30))
    x, w, b = _linear_operands(device, dtype)
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    with _policies(device)[policy]:
        out = FL.linear_relu(x, w, b)
        grad_out = torch.empty_like(out)
        _fill_normal(grad_out, 0.0, seed=3)
        out.backward(grad_out)
    out = out.detach()
    eps = torch.finfo(dtype).eps
    w64 = w.detach().double()
    gw = torch.zeros(OUT, IN, dtype=torch.float64, device=device)
    gw_abs = torch.zeros_like(gw)
    gb = torch.zeros(OUT, dtype=torch.float64, device=device)
    gb_abs = torch.zeros_like(gb)
    step = CHUNK // OUT
    for s in range(0, ROWS, step):
        xc = x.detach()[s : s + step].double()
        # The mask as autograd defines it: where the output is > 0.
        g = grad_out[s : s + step].double() * (out[s : s + step] > 0)
        gi_exact = g @ w64
        bound = _dot_bound(dtype, OUT) * (g.abs() @ w64.abs()) + 1e-30
        _check_rows(x.grad[s : s + step], gi_exact, bound, f"grad_input rows {s}..")
        gw += g.T @ xc
        gw_abs += g.abs().T @ xc.abs()
        gb += g.sum(0)
        gb_abs += g.abs().sum(0)
    # A sum over 2^21 rows: float32 accumulation error grows like sqrt(rows)
    # in practice (rows * eps32 is the worst case), on top of the rounding.
    acc = torch.finfo(torch.float32).eps * ROWS**0.5 * 8
    _check_rows(w.grad, gw, (2 * eps + acc) * gw_abs + 1e-30, "grad_weight")
    _check_rows(b.grad, gb, (2 * eps + acc) * gb_abs + 1e-30, "grad_bias")
