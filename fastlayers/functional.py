"""The functional API: what users call on tensors."""

import torch

from . import ops  # noqa: F401  (fake kernels)
from .transforms import FixedHiddenMLPFunction, LinearReLUFunction, transforms_active
from .transforms import center as _route_center  # the op, or the torch.func route

_linear_relu = torch.ops.fastlayers.linear_relu.default
_fixed_hidden_mlp = torch.ops.fastlayers.fixed_hidden_mlp.default


def linear_relu(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(input @ weight.T + bias)`` in one fused kernel, forward and backward.

    ``input``: ``(..., in_features)``; ``weight``: ``(out_features, in_features)``
    as in ``nn.Linear``; ``bias``: ``(out_features,)`` or None. Returns
    ``(..., out_features)``. float32/float64 on CPU and CUDA, float16/bfloat16
    too. Backward keeps only the input, weight and output (the ReLU mask is
    recomputed from the output).
    """
    if transforms_active():  # torch.func: see fastlayers/transforms.py
        return LinearReLUFunction.apply(input, weight, bias)
    return _linear_relu(input, weight, bias)


def center_dims_argument(dim, caller: str = "fastlayers.center") -> list[int] | None:
    """``dim`` as the op takes it (None or a list of ints), or a TypeError."""
    if dim is None:
        return None
    if isinstance(dim, int) and not isinstance(dim, bool):
        return [dim]
    if isinstance(dim, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) for d in dim):
        return list(dim)
    raise TypeError(f"{caller}: dim must be None, an int or a tuple of ints, got {dim!r}")


def center(input: torch.Tensor, dim: int | tuple[int, ...] | list[int] | None = None) -> torch.Tensor:
    """``input - input.mean(dim, keepdim=True)`` in one fused kernel.

    ``dim=None`` centers over every element (the chapter's ``CenteredLayer``);
    an int or a tuple of ints centers each slice along those dims (negative
    dims allowed). Backward is the centering of the gradient; nothing is
    saved. float16/bfloat16/float32/float64, any rank.
    """
    if not isinstance(input, torch.Tensor):  # the dispatcher's words for None name no argument
        raise TypeError(f"fastlayers.center: input must be a tensor, got {type(input).__name__}")
    return _route_center(input, center_dims_argument(dim))


def fixed_hidden_mlp(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    rand_weight: torch.Tensor,
    return_sum: bool = True,
    return_halvings: bool = False,
):
    """The chapter's FixedHiddenMLP block as one op, with no host synchronisation::

        h = linear(input)                  # weight [F, F], bias [F]
        h = relu(h @ rand_weight + 1)      # rand_weight: constant, no gradient
        h = linear(h)                      # the same weight and bias again
        while h.abs().sum() > 1: h /= 2    # k halvings, found on the device
        return h.sum() if return_sum else h

    The halving count k is applied as one exact power of two and held
    constant in backward. If h holds a NaN or an infinity, k = 0 and the
    result carries it unchanged (the chapter's loop stops at once on a NaN
    sum and never stops on an infinite one). With ``return_halvings=True``
    returns ``(result, k)``, k an int64 0-d tensor on the input's device.
    """
    if transforms_active():
        out, _, halvings = FixedHiddenMLPFunction.apply(input, weight, bias, rand_weight, return_sum)
    else:
        out, _, halvings = _fixed_hidden_mlp(input, weight, bias, rand_weight, return_sum)
    return (out, halvings) if return_halvings else out
