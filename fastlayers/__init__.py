"""fastlayers: fused PyTorch layers with hand-written CPU and CUDA kernels."""

from . import backends, functional, reference
from .modules import LINEAR_TYPES, Centered, FixedHiddenMLP, FusedLinearReLU, LazyFusedLinearReLU

__all__ = [
    "backends",
    "functional",
    "reference",
    "Centered",
    "FixedHiddenMLP",
    "FusedLinearReLU",
    "LazyFusedLinearReLU",
    "LINEAR_TYPES",
]
