"""fastlayers: fused PyTorch layers with hand-written CPU and CUDA kernels."""

from . import backends, functional, reference
from .modules import Centered, FixedHiddenMLP, FusedLinearReLU

__all__ = ["backends", "functional", "reference", "Centered", "FixedHiddenMLP", "FusedLinearReLU"]
