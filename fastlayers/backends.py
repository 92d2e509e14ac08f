"""Process-wide choices of how fastlayers' ops run."""

import contextlib

import torch

_CUDA_GEMM_POLICIES = {"auto": 0, "fastlayers": 1, "vendor": 2}


@contextlib.contextmanager
def _scoped(setter, value):
    """Sets a process-wide switch through `setter` (which returns the
    previous value) for the block, and restores it after."""
    previous = setter(value)
    try:
        yield
    finally:
        setter(previous)


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
        raise ValueError(
            f"fastlayers.backends.cuda_gemm: policy must be one of {sorted(_CUDA_GEMM_POLICIES)}, got {policy!r}"
        )
    with _scoped(torch.ops.fastlayers.set_cuda_gemm_policy, _CUDA_GEMM_POLICIES[policy]):
        yield


_CPU_GEMM_POLICIES = {"auto": 0, "fastlayers": 1, "vendor": 2}
CPU_ISAS = ("portable", "avx2", "avx512", "avx512_bf16", "amx", "amx_emulated")


@contextlib.contextmanager
def cpu_gemm(policy):
    """Which matrix product the CPU linear_relu ops use inside the block:

    - ``"auto"`` (the default): fastlayers' kernels, except where oneDNN/MKL
      measured faster on this CPU's instruction set (csrc/common/gemm_policy.h);
    - ``"fastlayers"``: always fastlayers' kernels;
    - ``"vendor"``: always oneDNN's fused linear+ReLU
      (``torch.ops.mkldnn._linear_pointwise``) where the installed torch has
      it, else ``addmm`` + ``relu``; the backward through ATen's
      ``threshold_backward``, ``mm`` and ``sum``.

    Read when an op runs: set it outside compiled regions.
    """
    if policy not in _CPU_GEMM_POLICIES:
        raise ValueError(
            f"fastlayers.backends.cpu_gemm: policy must be one of {sorted(_CPU_GEMM_POLICIES)}, got {policy!r}"
        )
    with _scoped(torch.ops.fastlayers.set_cpu_gemm_policy, _CPU_GEMM_POLICIES[policy]):
        yield


@contextlib.contextmanager
def cpu_isa(name):
    """Caps the instruction set of fastlayers' CPU kernels inside the block
    (``"auto"``, or one of :data:`CPU_ISAS` that this CPU supports; see
    :func:`cpu_info`). ``"amx"`` is opt-in: by default an AMX CPU runs the
    ``avx512_bf16`` kernels. ``"amx_emulated"`` runs the AMX kernel on a
    software tile unit (slow; for tests). The environment variable
    ``FASTLAYERS_CPU_ISA`` sets the same at start-up, ``FASTLAYERS_CPU_AMX=0``
    keeps fastlayers from asking the OS for the AMX tile state.
    """
    if name != "auto" and name not in CPU_ISAS:
        raise ValueError(f"fastlayers.backends.cpu_isa: name must be 'auto' or one of {list(CPU_ISAS)}, got {name!r}")
    with _scoped(torch.ops.fastlayers.set_cpu_isa, -1 if name == "auto" else CPU_ISAS.index(name)):
        yield


def cpu_info():
    """What the CPU kernels found: ``best`` (the CPU's best instruction set),
    ``default``, ``active``, ``supported`` (a list), ``amx`` (why AMX is or is
    not used), and the cache sizes ``l1d``, ``l2``, ``l3`` in bytes."""
    info = dict(line.split("=", 1) for line in torch.ops.fastlayers.cpu_features().splitlines())
    info["supported"] = info["supported"].split(",")
    for key in ("l1d", "l2", "l3"):
        info[key] = int(info[key])
    return info


def gemm_route(device, dtype, m, n, k, backward=False):
    """Which matrix product a product ``C[m, n] = A[m, k] @ B[k, n]`` of
    ``dtype`` on ``device`` ("cpu" or "cuda") runs under the policy now set:
    ``"vendor"`` (oneDNN/MKL, cuBLAS/cuBLASLt through ATen) or
    ``"fastlayers"`` (the hand-written kernels). ``backward`` asks for the
    backward's products, whose crossovers differ."""
    return "vendor" if torch.ops.fastlayers.uses_vendor_gemm(device, dtype, m, n, k, backward) else "fastlayers"
