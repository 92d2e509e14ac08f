"""The bad-input matrix: every op, forward and backward, called through
torch.ops on every device and on meta tensors (whose checks are the fake
kernels'), with each tensor argument in turn made wrong.

Each case gives either the reference's answer or an error whose type and
message are checked: the message names the op and the argument. On CUDA a
good call after every error must still succeed, so no case leaves a sticky
CUDA error behind. The per-op test files check the shape messages in detail;
this file checks that no argument of any op was forgotten."""

import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import fastlayers
from fastlayers import FixedHiddenMLP, FusedLinearReLU, LazyFusedLinearReLU
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import rel_error

from .conftest import CHECKED_DEVICES

ops = torch.ops.fastlayers


@dataclass
class OpSpec:
    name: str
    call: Callable
    good: Callable  # device -> dict of the op's arguments, in schema order
    floats: tuple  # the floating-point tensor arguments
    optional: tuple = ()  # tensor arguments that may be None
    zero_d_ok: tuple = ()  # tensor arguments a 0-d tensor is valid for


def _linear_relu_args(device):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(4, 5, generator=g), torch.randn(3, 5, generator=g), torch.randn(3, generator=g)
    return {k: v.to(device) for k, v in {"input": x, "weight": w, "bias": b}.items()}


def _linear_relu_backward_args(device, with_input):
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 5, generator=g), torch.randn(3, 5, generator=g)
    out = ref.linear_relu(x, w)
    args = {"grad_output": torch.randn(4, 3, generator=g), "output": out}
    args.update({"input": x} if with_input else {"weight": w})
    args = {k: v.to(device) for k, v in args.items()}
    if with_input:
        args["bias_grad"] = True
    return args


def _fixed_hidden_args(device):
    g = torch.Generator().manual_seed(2)
    args = {
        "input": torch.randn(4, 5, generator=g),
        "weight": torch.randn(5, 5, generator=g) / 3,
        "bias": torch.randn(5, generator=g),
        "rand_weight": torch.rand(5, 5, generator=g),
    }
    return {**{k: v.to(device) for k, v in args.items()}, "return_sum": True}


def _fixed_hidden_backward_args(device):
    fwd = _fixed_hidden_args("cpu")
    _, hidden, halvings = ops.fixed_hidden_mlp(*fwd.values())
    args = {
        "grad_output": torch.tensor(1.5),
        "input": fwd["input"],
        "weight": fwd["weight"],
        "rand_weight": fwd["rand_weight"],
        "hidden": hidden,
        "halvings": halvings,
    }
    return {**{k: v.to(device) for k, v in args.items()}, "return_sum": True, "input_grad": True}


OPS = [
    OpSpec("linear_relu", ops.linear_relu, _linear_relu_args, ("input", "weight", "bias"), optional=("bias",)),
    OpSpec(
        "linear_relu_backward_input",
        ops.linear_relu_backward_input,
        lambda d: _linear_relu_backward_args(d, with_input=False),
        ("grad_output", "output", "weight"),
    ),
    OpSpec(
        "linear_relu_backward_params",
        ops.linear_relu_backward_params,
        lambda d: _linear_relu_backward_args(d, with_input=True),
        ("grad_output", "output", "input"),
        optional=("input",),
    ),
    OpSpec(
        "center",
        ops.center,
        lambda d: {"input": torch.randn(4, 5, generator=torch.Generator().manual_seed(3)).to(d), "dim": [1]},
        ("input",),
    ),
    OpSpec(
        "fixed_hidden_mlp",
        ops.fixed_hidden_mlp,
        _fixed_hidden_args,
        ("input", "weight", "bias", "rand_weight"),
    ),
    OpSpec(
        "fixed_hidden_mlp_backward",
        ops.fixed_hidden_mlp_backward,
        _fixed_hidden_backward_args,
        ("grad_output", "input", "weight", "rand_weight", "hidden"),
        zero_d_ok=("grad_output",),  # the summed output's gradient is one element
    ),
]
OP_IDS = [spec.name for spec in OPS]
# The ops with more than one floating-point argument: dtypes and devices to mix.
MULTI = [spec for spec in OPS if len(spec.floats) > 1]
MULTI_IDS = [spec.name for spec in MULTI]


def _other_device(device):
    return "meta" if device == "cpu" else "cpu"


def _run(spec, args):
    return spec.call(*args.values())


def _assert_error(spec, args, device, exc, pattern):
    """The call raises `exc` whose message starts with the op's name and
    matches `pattern`; then a good call still works on this device."""
    with pytest.raises(exc) as info:
        _run(spec, args)
    assert re.search(rf"fastlayers::{spec.name}\b.*{pattern}", str(info.value), re.S), str(info.value)
    _assert_device_still_healthy(spec, device)


def _assert_device_still_healthy(spec, device):
    out = _run(spec, spec.good(device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # a sticky error would surface here
        want = _run(spec, spec.good("cpu"))
        got = out if isinstance(out, torch.Tensor) else out[0]
        want = want if isinstance(want, torch.Tensor) else want[0]
        assert rel_error(got.cpu(), want) <= 1e-5


def _replace(args, name, value):
    return {**args, name: value}


# ---- dtypes -------------------------------------------------------------------


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("spec", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_non_floating_argument_is_named(spec, dtype, device):
    for name in spec.floats:
        args = spec.good(device)
        bad = args[name].to(dtype)
        # An argument checked only against another's dtype says "has dtype".
        pattern = rf"argument '{name}' (must be a floating-point tensor .*got \w+|has dtype)"
        _assert_error(spec, _replace(args, name, bad), device, RuntimeError, pattern)


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("spec", MULTI, ids=MULTI_IDS)
def test_mixed_dtypes_are_named(spec, device):
    for name in spec.floats:
        args = spec.good(device)
        _assert_error(
            spec,
            _replace(args, name, args[name].double()),
            device,
            RuntimeError,
            r"argument '\w+' has dtype (Double|Float) but '\w+' has dtype",
        )


def test_half_precision_arguments_mixed_with_float32():
    for spec in MULTI:
        args = spec.good("cpu")
        for name in spec.floats:
            _assert_error(
                spec,
                _replace(args, name, args[name].to(torch.bfloat16)),
                "cpu",
                RuntimeError,
                rf"'{name}' has dtype BFloat16",
            )


# ---- missing tensors --------------------------------------------------------


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("spec", OPS, ids=OP_IDS)
def test_none_for_a_required_tensor_is_named(spec, device):
    names = [n for n, v in spec.good(device).items() if isinstance(v, torch.Tensor) and n not in spec.optional]
    for name in names:
        args = spec.good(device)
        if len([v for v in args.values() if isinstance(v, torch.Tensor)]) == 1:
            continue  # nothing left to dispatch on; the functional API checks it (below)
        _assert_error(
            spec,
            _replace(args, name, None),
            device,
            RuntimeError,
            rf"argument '{name}' must be a tensor, got an undefined",
        )


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("spec", [s for s in OPS if s.optional], ids=[s.name for s in OPS if s.optional])
def test_none_for_an_optional_tensor_is_accepted(spec, device):
    for name in spec.optional:
        _run(spec, _replace(spec.good(device), name, None))


def test_functional_api_names_a_missing_or_wrong_input():
    w, b = torch.randn(3, 5), torch.randn(3)
    with pytest.raises(TypeError, match=r"fastlayers.center: input must be a tensor, got NoneType"):
        FL.center(None)
    with pytest.raises(RuntimeError, match=r"fastlayers::linear_relu: argument 'input' must be a tensor"):
        FL.linear_relu(None, w, b)
    with pytest.raises(RuntimeError, match=r"fastlayers::linear_relu\(\) Expected a value of type 'Tensor'.*'input'"):
        FL.linear_relu([[1.0] * 5], w, b)
    with pytest.raises(RuntimeError, match=r"fastlayers::fixed_hidden_mlp\(\) Expected a value of type 'bool'"):
        FL.fixed_hidden_mlp(torch.randn(2, 5), torch.randn(5, 5), torch.randn(5), torch.rand(5, 5), "yes")


# ---- devices ------------------------------------------------------------------


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("spec", MULTI, ids=MULTI_IDS)
def test_an_argument_on_another_device_is_named(spec, device):
    other = _other_device(device)
    for name, value in spec.good(device).items():
        if not isinstance(value, torch.Tensor):
            continue
        args = spec.good(device)
        pattern = (
            r"argument 'halvings' must be a single int64 element on the input's device"
            if name == "halvings"
            else r"argument '\w+' is on \S+ but '\w+' is on"
        )
        moved = torch.zeros_like(value, device=other) if device == "meta" else value.to(other)
        _assert_error(spec, _replace(args, name, moved), device, RuntimeError, pattern)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("spec", OPS, ids=OP_IDS)
def test_two_cuda_devices_are_an_error(spec):
    for name, value in spec.good("cuda:0").items():
        if isinstance(value, torch.Tensor):
            args = _replace(spec.good("cuda:0"), name, value.to("cuda:1"))
            pattern = "halvings" if name == "halvings" else r"is on cuda:\d but '\w+' is on cuda:\d"
            _assert_error(spec, args, "cuda:0", RuntimeError, pattern)


# ---- 0-d, layouts and empty tensors -------------------------------------------


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("spec", OPS, ids=OP_IDS)
def test_a_0d_tensor_where_a_matrix_belongs_is_named(spec, device):
    for name in spec.floats:
        if name in spec.zero_d_ok:
            continue
        args = spec.good(device)
        # The message names either the argument or the shape rule it breaks.
        pattern = rf"({name}|shape|dimension)"
        _assert_error(spec, _replace(args, name, args[name].reshape(-1)[0]), device, RuntimeError, pattern)


def _layouts(t):
    """The same values as `t` in other layouts: transposed storage, a slice of
    a larger tensor, and (for a leading size-1 row repeated) stride 0."""
    yield "transposed", t.mT.contiguous().mT if t.dim() >= 2 else t
    yield "sliced", torch.stack([t, torch.full_like(t, float("nan"))], -1)[..., 0]
    if t.dim() >= 1 and t.numel() > 0:
        yield "expanded", t.narrow(0, 0, 1).expand(t.shape)


@pytest.mark.parametrize("device", [d for d in CHECKED_DEVICES if d != "meta"])
@pytest.mark.parametrize("spec", OPS, ids=OP_IDS)
def test_every_layout_of_every_argument_gives_the_contiguous_answer(spec, device):
    for name in spec.floats:
        for layout, value in _layouts(spec.good(device)[name]):
            args = spec.good(device)
            got = _run(spec, _replace(args, name, value))
            want = _run(spec, _replace(args, name, value.contiguous()))
            got, want = (
                (got,) if isinstance(got, torch.Tensor) else got,
                (want,) if isinstance(want, torch.Tensor) else want,
            )
            for g, w in zip(got, want):
                assert g.shape == w.shape, (name, layout)
                assert rel_error(g, w) <= 1e-5, (name, layout)


# (input shape, out_features): no rows, no in_features, no out_features.
EMPTY_LINEAR = [((0, 5), 3), ((4, 0), 3), ((4, 5), 0), ((2, 0, 5), 3), ((0,), 3)]


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("shape,n", EMPTY_LINEAR)
def test_empty_linear_relu_matches_the_reference_forward_and_backward(shape, n, device):
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(n, shape[-1], device=device, requires_grad=True)
    b = torch.randn(n, device=device, requires_grad=True)
    out = FL.linear_relu(x, w, b)
    assert out.shape == (*shape[:-1], n)
    out.sum().backward()
    if device == "meta":
        return
    x2, w2, b2 = (t.detach().double().requires_grad_() for t in (x, w, b))
    want = ref.linear_relu(x2, w2, b2)
    want.sum().backward()
    assert torch.allclose(out.double(), want)
    for got, exact in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        assert got.shape == exact.shape and torch.allclose(got.double(), exact)


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize(
    "shape,dim", [((0,), None), ((0, 3), None), ((0, 3), 0), ((0, 3), 1), ((3, 0, 2), (1, 2)), ((), None), ((), 0)]
)
def test_empty_and_0d_centering_matches_the_reference(shape, dim, device):
    x = torch.randn(shape, device=device, requires_grad=True)
    out = FL.center(x, dim)
    assert out.shape == x.shape
    out.sum().backward()
    if device != "meta":
        assert torch.equal(out.double(), ref.center(x.detach().double(), dim))
        assert x.grad.shape == x.shape and not x.grad.isnan().any()


@pytest.mark.parametrize("device", CHECKED_DEVICES)
@pytest.mark.parametrize("rows,features", [(0, 5), (3, 0), (0, 0)])
@pytest.mark.parametrize("return_sum", [True, False])
def test_empty_fixed_hidden_mlp_matches_the_chapter_block(rows, features, return_sum, device):
    layer = FixedHiddenMLP(features, return_sum=return_sum, device=device)
    x = torch.randn(rows, features, device=device, requires_grad=True)
    out = layer(x)
    (out if return_sum else out.sum()).backward()
    if device == "meta":
        return
    want = ref.fixed_hidden_mlp(x.detach(), layer.linear.weight, layer.linear.bias, layer.rand_weight, return_sum)
    assert out.shape == want.shape and torch.equal(out, want)
    assert x.grad.shape == x.shape
    assert layer.linear.weight.grad.shape == (features, features) and not layer.linear.weight.grad.isnan().any()


def test_halvings_of_the_wrong_kind_are_named():
    args = _fixed_hidden_backward_args("cpu")
    spec = OPS[-1]
    for bad in (args["halvings"].float(), args["halvings"].int(), args["halvings"].expand(3)):
        _assert_error(
            spec, _replace(args, "halvings", bad), "cpu", RuntimeError, r"argument 'halvings' must be a single int64"
        )


# ---- constructors ------------------------------------------------------------

CONSTRUCTOR_CASES = [
    (lambda: FusedLinearReLU(-1, 3), ValueError, r"fastlayers.FusedLinearReLU: in_features must be >= 0, got -1"),
    (lambda: FusedLinearReLU(3, -2), ValueError, r"fastlayers.FusedLinearReLU: out_features must be >= 0, got -2"),
    (lambda: FusedLinearReLU(2.5, 3), TypeError, r"fastlayers.FusedLinearReLU: in_features must be an int, got float"),
    (lambda: FusedLinearReLU("4", 3), TypeError, r"in_features must be an int, got str"),
    (lambda: FusedLinearReLU(True, 3), TypeError, r"in_features must be an int, got bool"),
    (
        lambda: FusedLinearReLU(3, 3, dtype=torch.int32),
        TypeError,
        r"FusedLinearReLU: dtype must be float16, .* torch.int32",
    ),
    (lambda: FusedLinearReLU(3, 3, dtype=torch.complex64), TypeError, r"dtype must be .*complex64"),
    (lambda: LazyFusedLinearReLU(-2), ValueError, r"fastlayers.LazyFusedLinearReLU: out_features must be >= 0"),
    (lambda: LazyFusedLinearReLU(4, dtype=torch.int64), TypeError, r"LazyFusedLinearReLU: dtype must be"),
    (lambda: fastlayers.Centered("0"), TypeError, r"fastlayers.Centered: dim must be None, an int or a tuple of ints"),
    (lambda: fastlayers.Centered((0, 1.0)), TypeError, r"fastlayers.Centered: dim must be"),
    (lambda: FixedHiddenMLP(-1), ValueError, r"fastlayers.FixedHiddenMLP: features must be >= 0, got -1"),
    (lambda: FixedHiddenMLP(2.0), TypeError, r"fastlayers.FixedHiddenMLP: features must be an int, got float"),
    (lambda: FixedHiddenMLP(3, return_sum="no"), TypeError, r"FixedHiddenMLP: return_sum must be a bool, got str"),
    (lambda: FixedHiddenMLP(3, dtype=torch.int32), TypeError, r"FixedHiddenMLP: dtype must be"),
]


@pytest.mark.parametrize("make,exc,message", CONSTRUCTOR_CASES)
def test_invalid_constructor_arguments_fail_at_construction(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_index_like_sizes_are_accepted():
    import numpy as np

    layer = FusedLinearReLU(np.int64(4), torch.tensor(3).item())
    assert type(layer.in_features) is int and layer.weight.shape == (3, 4)
    assert FixedHiddenMLP(np.int32(3)).rand_weight.shape == (3, 3)


def test_a_bad_dim_at_call_time_is_still_named():
    with pytest.raises(RuntimeError, match=r"fastlayers::center: dim 5 is out of range for a tensor of 2 dimensions"):
        fastlayers.Centered(5)(torch.randn(2, 3))
