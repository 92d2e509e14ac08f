"""The functional API: what users call on tensors."""

import torch

from . import ops  # noqa: F401  (fake kernels)

_linear_relu = torch.ops.fastlayers.linear_relu.default


def linear_relu(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(input @ weight.T + bias)`` in one fused kernel, forward and backward.

    ``input``: ``(..., in_features)``; ``weight``: ``(out_features, in_features)``
    as in ``nn.Linear``; ``bias``: ``(out_features,)`` or None. Returns
    ``(..., out_features)``. float32/float64 on CPU and CUDA, float16/bfloat16
    too. Backward keeps only the input, weight and output (the ReLU mask is
    recomputed from the output).
    """
    return _linear_relu(input, weight, bias)
