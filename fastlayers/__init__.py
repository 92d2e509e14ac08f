"""fastlayers: fused PyTorch layers with hand-written CPU and CUDA kernels."""

from . import functional, reference
from .modules import FusedLinearReLU

__all__ = ["functional", "reference", "FusedLinearReLU"]
