"""Process-wide choices of how fastlayers' ops run."""

import contextlib

import torch

_CUDA_GEMM_POLICIES = {"auto": 0, "fastlayers": 1, "vendor": 2}


@contextlib.contextmanager
def cuda_gemm(policy):
    """Which matrix product the CUDA linear_relu ops use inside the block:

    - ``"auto"`` (the default): cuBLASLt (through ATen) for large products,
      fastlayers' own kernels for the rest;
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
