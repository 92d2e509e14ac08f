"""nn.Modules over the fused ops."""

import math
import operator

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from . import functional as F
from .transforms import FixedHiddenMLPFunction, transforms_active

# Called directly by FixedHiddenMLP.forward: a Python wrapper costs ~0.3 µs of a ~5 µs call.
_fixed_hidden_mlp = torch.ops.fastlayers.fixed_hidden_mlp.default


def _tensor(module: nn.Module, name: str):
    """``module.<name>`` without nn.Module.__getattr__, which costs ~0.4 µs a
    lookup (a tenth of a small layer's call): straight from _parameters or
    _buffers, and through getattr for anything else (a parametrization's
    property, a plain attribute, a None bias)."""
    t = module._parameters.get(name)
    if t is None:
        t = module._buffers.get(name)
    return getattr(module, name) if t is None else t


def _size(layer: str, name: str, value) -> int:
    """A constructor's size argument as an int >= 0, or a clear error now
    (rather than torch.empty's words, or a failure at the first call)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        size = operator.index(value)
    except TypeError:
        raise TypeError(f"fastlayers.{layer}: {name} must be an int, got {type(value).__name__} {value!r}") from None
    if size < 0:
        raise ValueError(f"fastlayers.{layer}: {name} must be >= 0, got {size}")
    return size


def _check_dtype(layer: str, dtype) -> None:
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"fastlayers.{layer}: dtype must be float16, bfloat16, float32 or float64, got {dtype}")


class FusedLinearReLU(nn.Module):
    """``nn.Sequential(nn.Linear(in, out), nn.ReLU())`` as one fused op.

    Same parameter names, shapes and default initialisation as ``nn.Linear``,
    so state_dicts load both ways and ``nn.init`` / ``net.apply(...)`` work
    on ``weight`` and ``bias`` as usual.
    """

    __constants__ = ["in_features", "out_features"]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        in_features = _size(type(self).__name__, "in_features", in_features)
        out_features = _size(type(self).__name__, "out_features", out_features)
        _check_dtype(type(self).__name__, dtype)
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: kaiming_uniform(a=sqrt(5)) for the weight,
        # uniform(+-1/sqrt(fan_in)) for the bias.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear_relu(input, _tensor(self, "weight"), _tensor(self, "bias"))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LazyFusedLinearReLU(LazyModuleMixin, FusedLinearReLU):
    """``FusedLinearReLU`` whose ``in_features`` is inferred at the first
    call, as ``nn.LazyLinear`` does; it then becomes a ``FusedLinearReLU``.
    It can load a state_dict before its first call (the parameters take the
    saved shapes)."""

    cls_to_become = FusedLinearReLU
    weight: UninitializedParameter
    bias: UninitializedParameter

    def __init__(self, out_features: int, bias: bool = True, device=None, dtype=None):
        out_features = _size("LazyFusedLinearReLU", "out_features", out_features)
        _check_dtype("LazyFusedLinearReLU", dtype)
        factory = {"device": device, "dtype": dtype}
        # Zero-sized placeholders, replaced at once: nn.LazyLinear's way.
        super().__init__(0, 0, False)
        self.weight = UninitializedParameter(**factory)
        self.out_features = out_features
        if bias:
            self.bias = UninitializedParameter(**factory)

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.in_features = input.shape[-1]
                self.weight.materialize((self.out_features, self.in_features))
                if self.bias is not None:
                    self.bias.materialize((self.out_features,))
                self.reset_parameters()
        else:  # loaded from a state_dict before the first call
            self.in_features = self.weight.shape[1]


# What an init function should test for to reach every linear layer, fused
# or not: ``if isinstance(m, fastlayers.LINEAR_TYPES): nn.init.normal_(m.weight)``.
# The chapter's ``type(m) == nn.Linear`` misses FusedLinearReLU on purpose:
# a fused layer is not an nn.Linear (tools that wrap nn.Linear, LoRA for
# one, assume no ReLU follows inside).
LINEAR_TYPES = (nn.Linear, FusedLinearReLU)


class Centered(nn.Module):
    """The chapter's ``CenteredLayer``: ``x - x.mean()`` (``dim=None``), or
    centering along ``dim`` (an int or a tuple of ints). No parameters."""

    def __init__(self, dim: int | tuple[int, ...] | None = None):
        super().__init__()
        F.center_dims_argument(dim, "fastlayers.Centered")  # a bad dim fails here, not at the first call
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.center(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class FixedHiddenMLP(nn.Module):
    """The chapter's FixedHiddenMLP: a shared linear layer used twice around a
    constant random matrix, then halved until sum|h| <= 1, as one fused op.

    ``rand_weight`` is a non-trainable buffer (drawn with ``torch.rand``,
    reproducible through ``generator``): it follows ``.to()``, is saved in
    the state_dict, and the chapter block's state_dict (with rand_weight made
    a buffer) loads into this module. ``linear`` is an ``nn.Linear``.
    ``return_sum=False`` returns the halved ``h`` instead of its sum.
    """

    def __init__(self, features: int = 20, *, return_sum: bool = True, generator=None, device=None, dtype=None):
        super().__init__()
        features = _size("FixedHiddenMLP", "features", features)
        if not isinstance(return_sum, bool):
            raise TypeError(f"fastlayers.FixedHiddenMLP: return_sum must be a bool, got {type(return_sum).__name__}")
        _check_dtype("FixedHiddenMLP", dtype)
        self.return_sum = return_sum
        rand = torch.rand((features, features), generator=generator, dtype=dtype)
        self.register_buffer("rand_weight", rand.to(device) if device is not None else rand)
        self.linear = nn.Linear(features, features, device=device, dtype=dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        linear = self._modules["linear"]
        weight, bias, rand_weight = _tensor(linear, "weight"), _tensor(linear, "bias"), _tensor(self, "rand_weight")
        if transforms_active():  # torch.func: see fastlayers/transforms.py
            return FixedHiddenMLPFunction.apply(input, weight, bias, rand_weight, self.return_sum)[0]
        return _fixed_hidden_mlp(input, weight, bias, rand_weight, self.return_sum)[0]

    def extra_repr(self) -> str:
        return f"features={self.linear.in_features}, return_sum={self.return_sum}"
