"""fastlayers: fused PyTorch layers with hand-written CPU and CUDA kernels."""

from . import functional, reference
from .modules import Centered, FixedHiddenMLP, FusedLinearReLU

__all__ = ["functional", "reference", "Centered", "FixedHiddenMLP", "FusedLinearReLU"]
