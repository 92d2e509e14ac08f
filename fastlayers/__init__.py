"""fastlayers: fused PyTorch layers with hand-written CPU and CUDA kernels."""

from . import (
    backends,
    functional,
    reference,
    sharding,  # noqa: F401  (DTensor sharding rules)
    testing,
)
from .fusion import FuseReport, fuse
from .modules import LINEAR_TYPES, Centered, FixedHiddenMLP, FusedLinearReLU, LazyFusedLinearReLU

__all__ = [
    "backends",
    "functional",
    "reference",
    "testing",
    "Centered",
    "FixedHiddenMLP",
    "FusedLinearReLU",
    "LazyFusedLinearReLU",
    "LINEAR_TYPES",
    "fuse",
    "FuseReport",
]
