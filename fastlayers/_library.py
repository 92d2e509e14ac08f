"""Loads the compiled extension, whose import registers the torch.ops.fastlayers
ops. If it is missing or was built for another torch, say how to build it."""

import torch

_BUILD_HINT = (
    "Build it from the repository root with `pip install --no-build-isolation -e .` "
    "(or run `bash scripts/test.sh`, which sets everything up)."
)

try:
    from . import _build_info
except ImportError:
    raise ImportError("fastlayers: the compiled extension fastlayers._C has not been built. " + _BUILD_HINT) from None

if _build_info.TORCH_VERSION != torch.__version__:
    raise ImportError(
        f"fastlayers: the compiled extension was built for torch {_build_info.TORCH_VERSION}, "
        f"but torch {torch.__version__} is installed. Rebuild it. " + _BUILD_HINT
    )

try:
    from . import _C  # noqa: F401  (registers the ops)
except ImportError as e:
    raise ImportError(f"fastlayers: the compiled extension fastlayers._C failed to load ({e}). " + _BUILD_HINT) from e

WITH_CUDA = _build_info.WITH_CUDA
CUDA_ARCH_LIST = getattr(_build_info, "CUDA_ARCH_LIST", "")  # TORCH_CUDA_ARCH_LIST at build time
