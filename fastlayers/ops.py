"""Per op: the fake (meta) kernel torch.compile traces with, which also runs
for meta tensors. Schemas live in csrc/<op>/schema.cpp, real kernels and
autograd beside them; the shape rules and their messages mirror
csrc/<op>/<op>.h."""

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _library  # noqa: F401  (registers the ops before we attach to them)

_lib = torch.ops.fastlayers


# dtypes as the C++ kernels' messages name them (c10::ScalarType), so that
# a bad input gets the same words from a fake kernel as from a real one.
_SCALAR_TYPE_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.bool: "Bool",
}


def _type_name(dtype: torch.dtype) -> str:
    return _SCALAR_TYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _check_float(op: str, name: str, t: Optional[Tensor]) -> None:
    torch._check(t is not None, lambda: f"{op}: argument '{name}' must be a tensor, got an undefined tensor")
    torch._check(
        t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64),
        lambda: (
            f"{op}: argument '{name}' must be a floating-point tensor "
            f"(float16, bfloat16, float32 or float64), got {_type_name(t.dtype)}"
        ),
    )


def _check_like(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    torch._check(
        t.dtype == ref.dtype,
        lambda: (
            f"{op}: argument '{name}' has dtype {_type_name(t.dtype)} but '{ref_name}' has dtype "
            f"{_type_name(ref.dtype)}"
        ),
    )
    torch._check(
        t.device == ref.device,
        lambda: f"{op}: argument '{name}' is on {t.device} but '{ref_name}' is on {ref.device}",
    )


# ---- linear_relu ---------------------------------------------------------


@torch.library.register_fake("fastlayers::linear_relu")
def _linear_relu_fake(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    op = "fastlayers::linear_relu"
    _check_float(op, "input", input)
    _check_float(op, "weight", weight)
    _check_like(op, "weight", weight, "input", input)
    torch._check(weight.dim() == 2, lambda: f"{op}: argument 'weight' must be 2-D, got shape {tuple(weight.shape)}")
    torch._check(input.dim() >= 1, lambda: f"{op}: argument 'input' must have at least 1 dimension")
    torch._check(
        input.shape[-1] == weight.shape[1],
        lambda: (
            f"{op}: input's last dimension ({input.shape[-1]}) must equal in_features = "
            f"weight.size(1) ({weight.shape[1]})"
        ),
    )
    if bias is not None:
        _check_float(op, "bias", bias)
        _check_like(op, "bias", bias, "input", input)
        torch._check(
            bias.dim() == 1 and bias.shape[0] == weight.shape[0],
            lambda: f"{op}: argument 'bias' must have shape [out_features] = [{weight.shape[0]}]",
        )
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


def _check_grad_output(op: str, grad_output: Tensor, output: Tensor) -> None:
    _check_float(op, "grad_output", grad_output)
    _check_float(op, "output", output)
    _check_like(op, "output", output, "grad_output", grad_output)
    torch._check(
        grad_output.dim() >= 1 and grad_output.shape == output.shape,
        lambda: f"{op}: grad_output shape {list(grad_output.shape)} must equal output shape {list(output.shape)}",
    )


@torch.library.register_fake("fastlayers::linear_relu_backward_input")
def _linear_relu_backward_input_fake(grad_output: Tensor, output: Tensor, weight: Tensor) -> Tensor:
    op = "fastlayers::linear_relu_backward_input"
    _check_grad_output(op, grad_output, output)
    _check_float(op, "weight", weight)
    _check_like(op, "weight", weight, "grad_output", grad_output)
    torch._check(weight.dim() == 2, lambda: f"{op}: argument 'weight' must be 2-D, got shape {tuple(weight.shape)}")
    torch._check(
        output.shape[-1] == weight.shape[0],
        lambda: (
            f"{op}: output's last dimension ({output.shape[-1]}) must equal out_features = "
            f"weight.size(0) ({weight.shape[0]})"
        ),
    )
    return output.new_empty((*output.shape[:-1], weight.shape[1]))


@torch.library.register_fake("fastlayers::linear_relu_backward_params")
def _linear_relu_backward_params_fake(
    grad_output: Tensor, output: Tensor, input: Optional[Tensor], bias_grad: bool
) -> tuple[Tensor, Tensor]:
    op = "fastlayers::linear_relu_backward_params"
    _check_grad_output(op, grad_output, output)
    if input is not None:
        _check_float(op, "input", input)
        _check_like(op, "input", input, "grad_output", grad_output)
        torch._check(
            input.dim() == output.dim() and input.shape[:-1] == output.shape[:-1],
            lambda: (
                f"{op}: input shape {list(input.shape)} must match output shape {list(output.shape)} "
                "in every dimension but the last"
            ),
        )
    n = output.shape[-1]
    grad_weight = output.new_empty((n, input.shape[-1]) if input is not None else (0,))
    grad_bias = output.new_empty((n,) if bias_grad else (0,))
    return grad_weight, grad_bias


# ---- center --------------------------------------------------------------


def center_dims(input: Tensor, dim: Optional[Sequence[int]]) -> list[int]:
    """The wrapped, sorted dims `center` reduces over (mirrors csrc/center/center.h)."""
    op = "fastlayers::center"
    _check_float(op, "input", input)
    ndim = input.dim()
    if dim is None or len(dim) == 0:
        return list(range(ndim))
    span = max(ndim, 1)
    dims = []
    for d in dim:
        torch._check(
            -span <= d < span,
            lambda: (
                f"{op}: dim {d} is out of range for a tensor of {ndim} dimensions "
                f"(expected a dim in [{-span}, {span - 1}])"
            ),
        )
        w = d + span if d < 0 else d
        torch._check(w not in dims, lambda: f"{op}: dim {w} appears more than once in dim={list(dim)}")
        dims.append(w)
    return sorted(dims) if ndim else []


@torch.library.register_fake("fastlayers::center")
def _center_fake(input: Tensor, dim: Optional[Sequence[int]] = None) -> Tensor:
    dims = center_dims(input, dim)
    if not dims or dims[-1] - dims[0] + 1 == len(dims):
        return input.new_empty(input.shape)
    # Non-adjacent dims: the kernel works on a copy with the reduced dims
    # moved last and returns the result permuted back (center_layout).
    perm = [d for d in range(input.dim()) if d not in dims] + dims
    inverse = [perm.index(d) for d in range(input.dim())]
    return input.new_empty([input.shape[d] for d in perm]).permute(inverse)


# ---- fixed_hidden_mlp ------------------------------------------------------


def _check_fixed_hidden_params(op: str, input: Tensor, weight: Tensor, rand_weight: Tensor) -> int:
    """Mirrors check_fixed_hidden_params; returns features."""
    for name, t in (("input", input), ("weight", weight), ("rand_weight", rand_weight)):
        _check_float(op, name, t)
        _check_like(op, name, t, "input", input)
    torch._check(
        weight.dim() == 2 and weight.shape[0] == weight.shape[1],
        lambda: f"{op}: argument 'weight' must be a square [features, features] matrix, got {tuple(weight.shape)}",
    )
    f = weight.shape[0]
    torch._check(
        input.dim() >= 1 and input.shape[-1] == f, lambda: f"{op}: input's last dimension must equal features = {f}"
    )
    torch._check(tuple(rand_weight.shape) == (f, f), lambda: f"{op}: argument 'rand_weight' must have shape [{f}, {f}]")
    return f


def _rows(input: Tensor):
    rows = 1
    for s in input.shape[:-1]:
        rows *= s
    return rows


@torch.library.register_fake("fastlayers::fixed_hidden_mlp")
def _fixed_hidden_mlp_fake(
    input: Tensor, weight: Tensor, bias: Tensor, rand_weight: Tensor, return_sum: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    op = "fastlayers::fixed_hidden_mlp"
    f = _check_fixed_hidden_params(op, input, weight, rand_weight)
    _check_float(op, "bias", bias)
    _check_like(op, "bias", bias, "input", input)
    torch._check(tuple(bias.shape) == (f,), lambda: f"{op}: argument 'bias' must have shape [{f}]")
    out = input.new_empty(()) if return_sum else input.new_empty(input.shape)
    return out, input.new_empty((_rows(input), f)), input.new_empty((), dtype=torch.int64)


@torch.library.register_fake("fastlayers::fixed_hidden_mlp_backward")
def _fixed_hidden_mlp_backward_fake(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    rand_weight: Tensor,
    hidden: Tensor,
    halvings: Tensor,
    return_sum: bool,
    input_grad: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    op = "fastlayers::fixed_hidden_mlp_backward"
    f = _check_fixed_hidden_params(op, input, weight, rand_weight)
    _check_float(op, "grad_output", grad_output)
    _check_like(op, "grad_output", grad_output, "input", input)
    torch._check(
        grad_output.numel() == 1 if return_sum else grad_output.shape == input.shape,
        lambda: (
            f"{op}: grad_output has shape {list(grad_output.shape)}, expected "
            + ("a single element" if return_sum else "the input's shape")
        ),
    )
    torch._check(hidden is not None, lambda: f"{op}: argument 'hidden' must be a tensor, got an undefined tensor")
    _check_like(op, "hidden", hidden, "input", input)
    rows = _rows(input)
    torch._check(
        hidden.dim() == 2 and hidden.shape[0] == rows and hidden.shape[1] == f,
        lambda: f"{op}: hidden has shape {list(hidden.shape)}, expected [{rows}, {f}]",
    )
    torch._check(halvings is not None, lambda: f"{op}: argument 'halvings' must be a tensor, got an undefined tensor")
    torch._check(
        halvings.numel() == 1 and halvings.dtype == torch.int64 and halvings.device == input.device,
        lambda: f"{op}: argument 'halvings' must be a single int64 element on the input's device ({input.device})",
    )
    grad_input = input.new_empty(input.shape) if input_grad else input.new_empty((0,))
    return grad_input, weight.new_empty(weight.shape), weight.new_empty((weight.shape[0],))
