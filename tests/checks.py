"""Checks that more than one test module runs (on the real kernels and on
the emulated CUDA ones)."""

import torch
import torch.nn.functional as TF

from fastlayers import reference as ref
from fastlayers.testing import eager_bound, rel_error


def check_half_precision(op, x, w, b, c, return_sum):
    """float16/bfloat16 against float64 (at most 2x the error of eager in
    the same dtype), with k equal to the loop's on the exact h."""
    out, hidden, k = op(x, w, b, c, return_sum)
    dtype = x.dtype
    x64, w64, b64, c64 = (t.double() for t in (x, w, b, c))
    h3 = TF.linear(TF.relu(TF.linear(x64, w64, b64) @ c64 + 1), w64, b64)
    _, k_exact = ref.fixed_hidden_mlp(x64, w64, b64, c64, return_halvings=True)
    assert int(k) == k_exact
    exact = h3 / 2**k_exact
    h3_eager = TF.linear(TF.relu(TF.linear(x, w, b) @ c + 1), w, b)
    eager = h3_eager / 2**k_exact
    bound_extra = 1e-6
    if return_sum:
        exact, eager = exact.sum(), eager.sum()
        # One scalar: eager's single rounding may land nearer by luck; allow
        # ours one rounding of the result on top.
        bound_extra = torch.finfo(dtype).eps
    assert out.dtype == dtype and out.shape == exact.shape
    assert rel_error(out, exact) <= eager_bound(rel_error(eager, exact), slack=bound_extra)
    assert rel_error(hidden, TF.relu(TF.linear(x64, w64, b64) @ c64 + 1)) <= 2e-2


# (shape, dim): a short and a chunked whole tensor, rows, and columns (a
# leading dim), so every kernel path meets a non-finite shift.
NON_FINITE_CENTER_CASES = [((5,), None), ((70_000,), None), ((3, 4), 1), ((4, 70_000), 1), ((4, 3), 0), ((300, 40), 0)]


def check_non_finite_first_element(center, device="cpu"):
    """center(x, dim) with each group's first element +inf, -inf or NaN (the
    kernels shift a group by its first element): the same NaN and infinity
    positions as x - x.mean(dim), the finite rest within float32 rounding."""
    for first in (float("inf"), float("-inf"), float("nan")):
        for shape, dim in NON_FINITE_CENTER_CASES:
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            if dim is None:
                x.view(-1)[0] = first
            else:
                x.select(dim, 0).fill_(first)
            want = ref.center(x.double(), dim)
            got = center(x.to(device), dim).cpu()
            assert torch.equal(got.isnan(), want.isnan()), (first, shape, dim)
            assert torch.equal(got.isposinf(), want.isposinf()) and torch.equal(got.isneginf(), want.isneginf())
            finite = want.isfinite()
            if finite.any():
                assert rel_error(got[finite], want[finite]) <= 1e-6
