"""The accuracy rule fastlayers' tests and benchmarks hold every kernel to,
for anyone who checks a model the same way.

A result is compared with the float64 reference by its relative error (the
norm of the difference over the norm of the reference). float64 and float32
results must be within a fixed bound; float16 and bfloat16 ones may err at
most twice as much as eager PyTorch does in the same dtype, plus a small
`slack`, so that an eager result that happens to be exact still leaves room
for one rounding.
"""

import torch

__all__ = ["FIXED_TOLERANCE", "eager_bound", "rel_error", "tolerance"]

# The bounds that do not depend on eager's error.
FIXED_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def rel_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    """||out - expected|| / ||expected||, in float64 (a zero reference counts
    as 1e-30)."""
    out, expected = out.double(), expected.double()
    return ((out - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def eager_bound(eager_error: float, slack: float = 1e-6) -> float:
    """The half-precision rule: at most twice eager's own error, plus `slack`."""
    return 2 * eager_error + slack


def tolerance(dtype: torch.dtype, eager_error: float, slack: float = 1e-6) -> float:
    """The largest relative error allowed for a result in `dtype` whose eager
    counterpart errs by `eager_error`: FIXED_TOLERANCE for float64 and float32,
    eager_bound for the rest."""
    return FIXED_TOLERANCE.get(dtype, eager_bound(eager_error, slack))
