"""Process-wide choices of how fastlayers' ops run."""

import contextlib

import torch

_CUDA_GEMM_POLICIES = {"auto": 0, "fastlayers": 1, "vendor": 2}


@contextlib.contextmanager
def cuda_gemm(policy):
    """Which matrix product the CUDA ops use inside the block (linear_relu,
    and FixedHiddenMLP above its single-launch sizes):

    - ``"auto"`` (the default): cuBLAS/cuBLASLt (through ATen) for large
      products, fastlayers' own kernels where they measured faster
      (csrc/common/gemm_policy.h);
    - ``"fastlayers"``: always fastlayers' kernels;
    - ``"vendor"``: always cuBLASLt / cuBLAS.

    The setting is read when an op runs, so set it outside compiled regions
    and CUDA-graph captures, not inside them.
    """
    if policy not in _CUDA_GEMM_POLICIES:
        raise ValueError(f"fastlayers.backends.cuda_gemm: policy must be one of {sorted(_CUDA_GEMM_POLICIES)}, got {policy!r}")
    previous = torch.ops.fastlayers.set_cuda_gemm_policy(_CUDA_GEMM_POLICIES[policy])
    try:
        yield
    finally:
        torch.ops.fastlayers.set_cuda_gemm_policy(previous)
