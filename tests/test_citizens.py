"""The modules as drop-in citizens: autocast like their chapter counterparts,
the lazy module, initialisation, persistence across processes, dtype and
device moves, torch.compile, torch.export, CUDA streams and graphs."""

import copy
import io
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fastlayers
from fastlayers import Centered, FixedHiddenMLP, FusedLinearReLU, LazyFusedLinearReLU
from fastlayers.testing import eager_bound, rel_error

from .chapter import ChapterCentered, ChapterFixedHiddenMLP

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

AUTOCAST = [
    ("cpu", torch.bfloat16),
    pytest.param("cuda", torch.float16, marks=cuda_only),
    pytest.param("cuda", torch.bfloat16, marks=cuda_only),
]


def pair(kind, device):
    """(fastlayers module, its chapter counterpart with the same values)."""
    torch.manual_seed(0)
    if kind == "linear_relu":
        fused = FusedLinearReLU(64, 48)
        chapter = nn.Sequential(nn.Linear(64, 48), nn.ReLU())
        chapter[0].load_state_dict(fused.state_dict())
    elif kind == "fixed_hidden_mlp":
        fused = FixedHiddenMLP(64)
        chapter = ChapterFixedHiddenMLP(64)
        chapter.load_state_dict(fused.state_dict())
    else:
        fused, chapter = Centered(), ChapterCentered()
    return fused.to(device), chapter.to(device)


def _deepcopy_double(module):
    return copy.deepcopy(module).double()


@pytest.mark.parametrize("kind", ["linear_relu", "fixed_hidden_mlp", "center"])
@pytest.mark.parametrize("device_type,dtype", AUTOCAST)
def test_autocast_matches_the_chapter_block(kind, device_type, dtype):
    fused, chapter = pair(kind, device_type)
    x = torch.randn(32, 64, device=device_type)
    exact_module = _deepcopy_double(chapter)
    exact = exact_module(x.double())
    outs, grads = [], []
    for module in (fused, chapter):
        with torch.autocast(device_type, dtype=dtype):
            out = module(x)
        outs.append(out)
        if kind != "center":
            out.float().sum().backward()
            grads.append([p.grad for p in module.parameters()])
    got, want = outs
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    assert rel_error(got, exact) <= eager_bound(rel_error(want, exact))
    if kind != "center":
        exact.sum().backward()
        exact_grads = [p.grad for p in exact_module.parameters()]
        for g, w, e in zip(*grads, exact_grads):
            assert g.dtype == torch.float32  # gradients reach the float32 parameters
            assert rel_error(g, e) <= eager_bound(rel_error(w, e), slack=1e-5)


def test_autocast_off_for_float64_and_inside_disabled_regions():
    fused, _ = pair("fixed_hidden_mlp", "cpu")
    x = torch.randn(4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            assert fused(x).dtype == torch.float32


# ---- the lazy module ------------------------------------------------------


def test_lazy_module_infers_in_features_and_becomes_fused():
    x = torch.randn(3, 5)
    torch.manual_seed(0)
    lazy = LazyFusedLinearReLU(8)
    assert lazy.has_uninitialized_params()
    out = lazy(x)
    assert type(lazy) is FusedLinearReLU and lazy.in_features == 5
    assert lazy.weight.shape == (8, 5) and lazy.bias.shape == (8,)
    assert rel_error(out, torch.relu(nn.functional.linear(x, lazy.weight, lazy.bias))) <= 1e-6
    # the default init of nn.LazyLinear, draw for draw
    torch.manual_seed(0)
    linear = nn.LazyLinear(8)
    linear(x)
    assert torch.equal(linear.weight, lazy.weight) and torch.equal(linear.bias, lazy.bias)


def test_lazy_module_without_bias_and_with_dtype():
    lazy = LazyFusedLinearReLU(4, bias=False, dtype=torch.float64)
    lazy(torch.randn(2, 3, dtype=torch.float64))
    assert lazy.bias is None and lazy.weight.dtype == torch.float64


def test_lazy_module_loads_a_state_dict_before_its_first_call():
    source = nn.Linear(6, 4)
    lazy = LazyFusedLinearReLU(4)
    lazy.load_state_dict(source.state_dict())
    x = torch.randn(2, 6)
    assert torch.allclose(lazy(x), torch.relu(source(x)), atol=1e-6)
    assert type(lazy) is FusedLinearReLU and lazy.in_features == 6
    assert torch.equal(lazy.weight, source.weight)


def test_lazy_modules_in_a_sequential_and_net_apply_after_init():
    net = nn.Sequential(LazyFusedLinearReLU(16), LazyFusedLinearReLU(8), nn.LazyLinear(2))
    net(torch.randn(3, 11))
    assert [type(m) for m in net] == [FusedLinearReLU, FusedLinearReLU, nn.Linear]
    assert net[0].weight.shape == (16, 11) and net[1].weight.shape == (8, 16)


# ---- initialisation ----------------------------------------------------------


def test_linear_types_reach_every_linear_layer_in_net_apply():
    net = nn.Sequential(FusedLinearReLU(4, 8), nn.Linear(8, 8), nn.ReLU(), FusedLinearReLU(8, 2))

    def init_constant(m):  # the chapter's init function, with the fused layer reached too
        if isinstance(m, fastlayers.LINEAR_TYPES):
            nn.init.constant_(m.weight, 1)
            nn.init.zeros_(m.bias)

    net.apply(init_constant)
    for m in (net[0], net[1], net[3]):
        assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert not isinstance(net[0], nn.Linear)  # no wrapper of nn.Linear mistakes it for one


# ---- persistence ---------------------------------------------------------------


def model():
    torch.manual_seed(3)
    return nn.Sequential(FusedLinearReLU(10, 12), Centered(-1), nn.Linear(12, 10), FixedHiddenMLP(10, return_sum=False))


def test_state_dict_with_weights_only_and_the_whole_module():
    net = model()
    x = torch.randn(4, 10)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    clone = nn.Sequential(
        FusedLinearReLU(10, 12), Centered(-1), nn.Linear(12, 10), FixedHiddenMLP(10, return_sum=False)
    )
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(clone(x), net(x))
    whole = io.BytesIO()
    torch.save(net, whole)
    whole.seek(0)
    with pytest.raises(pickle.UnpicklingError):  # a whole module unpickles code: refused with weights_only=True
        torch.load(whole, weights_only=True)
    whole.seek(0)
    assert torch.equal(torch.load(whole, weights_only=False)(x), net(x))


def test_single_layer_state_dict_into_the_unfused_chapter_layers():
    net = model()
    chapter = nn.Sequential(nn.Linear(10, 12), nn.ReLU())
    chapter[0].load_state_dict(net[0].state_dict())
    assert torch.equal(chapter[0].weight, net[0].weight)
    block = ChapterFixedHiddenMLP(10)
    block.load_state_dict(net[3].state_dict())
    assert torch.equal(block.rand_weight, net[3].rand_weight)


def test_saved_in_one_process_bit_identical_in_a_fresh_one(tmp_path):
    net = model()
    x = torch.randn(5, 10)
    torch.save({"state": net.state_dict(), "x": x}, tmp_path / "sd.pt")
    torch.save(net, tmp_path / "whole.pt")
    torch.save(net(x), tmp_path / "out.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from torch import nn
        import fastlayers
        from fastlayers import Centered, FixedHiddenMLP, FusedLinearReLU
        saved = torch.load({str(tmp_path / "sd.pt")!r}, weights_only=True)
        net = nn.Sequential(
            FusedLinearReLU(10, 12), Centered(-1), nn.Linear(12, 10), FixedHiddenMLP(10, return_sum=False)
        )
        net.load_state_dict(saved["state"])
        whole = torch.load({str(tmp_path / "whole.pt")!r}, weights_only=False)
        torch.save((net(saved["x"]), whole(saved["x"])), {str(tmp_path / "fresh.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    from_state, from_whole = torch.load(tmp_path / "fresh.pt")
    expected = torch.load(tmp_path / "out.pt")
    assert torch.equal(from_state, expected) and torch.equal(from_whole, expected)


# ---- dtypes, devices, compilers ----------------------------------------------


@pytest.mark.parametrize("convert", ["double", "half", "bfloat16", "to"])
def test_dtype_conversions(convert, device):
    net = model().to(device)
    x = torch.randn(4, 10, device=device)
    exact = _deepcopy_double(net)(x.double())
    if convert == "to":
        net.to(device=device, dtype=torch.float64)
        dtype = torch.float64
    else:
        getattr(net, convert)()
        dtype = {"double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16}[convert]
    assert all(t.dtype == dtype for t in net.state_dict().values())  # rand_weight follows
    out = net(x.to(dtype))
    assert out.dtype == dtype
    assert rel_error(out, exact) <= (1e-12 if dtype == torch.float64 else 0.05)


@cuda_only
def test_cuda_move_and_non_default_stream():
    net = model()
    x = torch.randn(64, 10)
    expected = net(x)
    net.cuda()
    stream = torch.cuda.Stream()
    xc = x.cuda()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # a kernel on the wrong stream would finish first and read stale data
        out = net(xc)
    stream.synchronize()
    assert rel_error(out.cpu(), expected) <= 1e-5


def test_compile_fullgraph_inference_and_training(device):
    torch._dynamo.reset()
    net = model().to(device)
    x = torch.randn(6, 10, device=device)
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad():
        assert rel_error(compiled(x), net(x)) <= 1e-6
    compiled(x).square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net(x).square().sum().backward()
    for g, p in zip(grads, net.parameters()):
        assert rel_error(g, p.grad) <= 1e-5


def test_export_with_a_dynamic_batch_dimension():
    net = model()
    batch = torch.export.Dim("batch", min=2, max=1024)
    exported = torch.export.export(net, (torch.randn(4, 10),), dynamic_shapes=({0: batch},))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {
        "fastlayers.linear_relu.default",
        "fastlayers.center.default",
        "fastlayers.fixed_hidden_mlp.default",
    } <= targets
    for rows in (2, 7, 33):
        x = torch.randn(rows, 10)
        assert torch.equal(exported.module()(x), net(x))


@cuda_only
def test_compile_reduce_overhead_on_the_gpu():
    torch._dynamo.reset()
    net = nn.Sequential(FusedLinearReLU(10, 12), Centered(-1), nn.Linear(12, 10), FixedHiddenMLP(10)).cuda()
    compiled = torch.compile(net, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # the CUDA graph is recorded on a later call and replayed after
        x = torch.randn(8, 10, device="cuda")
        with torch.no_grad():
            out = compiled(x).clone()
            assert rel_error(out, net(x)) <= 1e-5
