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


CUDA_EXPERIMENTAL = (
    "split_k",
    "tensor_core_backward",
    "float_warp_tiled",
    "wgmma",
    "wgmma_wide",
    "split_k_float32",
    "float_warp_pipelined",
)
# On unless switched off: measured faster on an H200 than the kernels they replace (benchmarks/NOTES.md).
CUDA_DEFAULT_KERNELS = ("tensor_core_backward", "float_warp_tiled", "wgmma_wide", "split_k_float32")


def _experimental_flags(kernels):
    flags = 0
    for name in kernels:
        if name == "all":
            flags |= (1 << len(CUDA_EXPERIMENTAL)) - 1
        elif name == "none":
            continue
        elif name in CUDA_EXPERIMENTAL:
            flags |= 1 << CUDA_EXPERIMENTAL.index(name)
        else:
            raise ValueError(
                "fastlayers.backends.cuda_experimental: kernels must be 'all', 'none' or among "
                f"{list(CUDA_EXPERIMENTAL)}, got {name!r}"
            )
    return flags


@contextlib.contextmanager
def cuda_experimental(*kernels):
    """Turns on, inside the block, exactly the switched CUDA kernels named
    (the rest off; no names: all off, fastlayers' first kernels only). They
    pass their tests under the CPU emulator and on an H200; on by default
    (``CUDA_DEFAULT_KERNELS``), each measured faster there than the kernel
    it replaces, are the three that run only on products large enough to
    fill the GPU and split-K for float32 (faster or even at every size
    measured); split-K for the other dtypes and 128-wide wgmma on products
    too small for the wide tiles are off by default (with every switch on,
    bfloat16 lost to the defaults below 2^25 multiply-adds: an extra launch,
    the tensor maps' host set-up):

    - ``"split_k"``: products with too few output tiles to fill the GPU split
      the reduction among more blocks and add the slices up in a fixed order
      (deterministic); ``"split_k_float32"``: the same for float32 only;
    - ``"tensor_core_backward"``: float16/bfloat16 products with the ReLU
      mask or with operands contiguous along m or n (the backward's) on
      tensor cores, reading 16-byte vectors and transposing with
      ``ldmatrix.trans``;
    - ``"float_warp_tiled"``: float32 products with enough 128x128 output
      tiles to fill the GPU on a warp-tiled kernel that reads every operand
      in 16-byte vectors (where their layout allows);
    - ``"wgmma"``: float16/bfloat16 products, forward and backward, on
      Hopper's warpgroup MMA (``wgmma``) fed by the TMA, on compute
      capability 9.0 when the extension was built with sm_90a code
      (``TORCH_CUDA_ARCH_LIST`` naming ``9.0a``);
    - ``"wgmma_wide"``: the same with 128x256 output tiles, where they fill
      the GPU (on its own: only there);
    - ``"float_warp_pipelined"``: with ``"float_warp_tiled"``, that kernel
      with each step unrolled and the next k's operands read into registers
      while this k's multiply-adds run (passes under the emulator; not yet
      run on a GPU, so off by default);
    - ``"all"``: all seven; ``"none"``: none.

    They apply where fastlayers' kernels run (see :func:`cuda_gemm`). The
    environment variable ``FASTLAYERS_CUDA_EXPERIMENTAL`` (comma-separated
    names, ``all`` or ``none``) sets the same at start-up. Read when an op runs: set it outside
    compiled regions and CUDA-graph captures.
    """
    with _scoped(torch.ops.fastlayers.set_cuda_experimental_kernels, _experimental_flags(kernels)):
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
    not used), ``core`` (``"zen4"``, ``"zen5"`` or ``"other"``: the cores
    whose GEMM policy was measured apart), and the cache sizes ``l1d``,
    ``l2``, ``l3`` in bytes."""
    info = dict(line.split("=", 1) for line in torch.ops.fastlayers.cpu_features().splitlines())
    info["supported"] = info["supported"].split(",")
    for key in ("l1d", "l2", "l3"):
        info[key] = int(info[key])
    return info


def gemm_route(device, dtype, m, n, k, backward=False, vector_layout=True):
    """Which matrix product a product ``C[m, n] = A[m, k] @ B[k, n]`` of
    ``dtype`` on ``device`` ("cpu" or "cuda") runs under the policy now set:
    ``"vendor"`` (oneDNN/MKL, cuBLAS/cuBLASLt through ATen) or
    ``"fastlayers"`` (the hand-written kernels). ``backward`` asks for the
    backward's products, whose crossovers differ. ``vector_layout``
    (float16/bfloat16 on CUDA only): whether the operands are in the layouts
    of linear_relu's fast tensor-core kernels (contiguous rows of whole
    16-byte vectors, 16-byte aligned, as ``nn.Linear``'s parameters and
    most activations are), where the vendor takes over at larger sizes;
    FixedHiddenMLP's products answer as ``False``."""
    route = torch.ops.fastlayers.uses_vendor_gemm(device, dtype, m, n, k, backward, vector_layout)
    return "vendor" if route else "fastlayers"
