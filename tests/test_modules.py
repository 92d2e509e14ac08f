"""FusedLinearReLU as a first-class nn.Module: nn.Linear interop, init,
tying, save/load, hooks, nesting, torch.compile."""

import io

import pytest
import torch
from torch import nn

import fastlayers
from fastlayers import FusedLinearReLU
from fastlayers.testing import rel_error


def test_same_parameters_and_default_init_as_nn_linear():
    torch.manual_seed(0)
    fused = FusedLinearReLU(20, 256)
    torch.manual_seed(0)
    linear = nn.Linear(20, 256)
    assert [n for n, _ in fused.named_parameters()] == ["weight", "bias"]
    assert torch.equal(fused.weight, linear.weight) and torch.equal(fused.bias, linear.bias)
    assert FusedLinearReLU(3, 4, bias=False).bias is None
    assert repr(FusedLinearReLU(3, 4, bias=False)) == "FusedLinearReLU(in_features=3, out_features=4, bias=False)"


def test_state_dict_loads_both_ways_with_nn_linear():
    linear, fused = nn.Linear(8, 5), FusedLinearReLU(8, 5)
    fused.load_state_dict(linear.state_dict())
    x = torch.randn(3, 8)
    assert torch.allclose(fused(x), torch.relu(linear(x)), atol=1e-6)
    source, other = FusedLinearReLU(8, 5), nn.Linear(8, 5)
    other.load_state_dict(source.state_dict())
    assert torch.equal(other.weight, source.weight) and torch.equal(other.bias, source.bias)
    assert torch.allclose(torch.relu(other(x)), source(x), atol=1e-6)


def test_replaces_linear_relu_inside_sequential():
    torch.manual_seed(1)
    eager = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 10))
    fused = nn.Sequential(FusedLinearReLU(20, 256), nn.Linear(256, 10))
    fused[0].load_state_dict(eager[0].state_dict())
    fused[1].load_state_dict(eager[2].state_dict())
    x = torch.rand(2, 20)
    assert rel_error(fused(x), eager(x)) <= 1e-5


def test_net_apply_and_nn_init():
    net = nn.Sequential(FusedLinearReLU(4, 8), FusedLinearReLU(8, 8))

    def init(m):
        if isinstance(m, FusedLinearReLU):
            nn.init.constant_(m.weight, 1.0)
            nn.init.zeros_(m.bias)

    net.apply(init)
    assert torch.equal(net(torch.ones(1, 4)), torch.full((1, 8), 32.0))
    net[0].reset_parameters()
    assert not torch.equal(net[0].weight, torch.ones(8, 4))


def test_tied_layer_accumulates_gradients():
    shared = FusedLinearReLU(8, 8)
    net = nn.Sequential(FusedLinearReLU(4, 8), shared, shared, nn.Linear(8, 1))
    net(torch.randn(5, 4)).sum().backward()
    assert net[1].weight is net[2].weight
    # the same gradient as an eager network with the weights tied the same way
    eager = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    eager[0].load_state_dict(net[0].state_dict())
    eager[2].load_state_dict(shared.state_dict())
    head = nn.Linear(8, 1)
    head.load_state_dict(net[3].state_dict())
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    net.zero_grad()
    net(x).sum().backward()
    h = eager[1](eager[0](x))
    h = torch.relu(eager[2](torch.relu(eager[2](h))))
    head(h).sum().backward()
    assert rel_error(shared.weight.grad, eager[2].weight.grad) <= 1e-5
    assert rel_error(shared.bias.grad, eager[2].bias.grad) <= 1e-5


def test_save_and_load(tmp_path):
    net = nn.Sequential(FusedLinearReLU(6, 7), nn.Linear(7, 2))
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    clone = nn.Sequential(FusedLinearReLU(6, 7), nn.Linear(7, 2))
    clone.load_state_dict(torch.load(path))
    x = torch.randn(3, 6)
    assert torch.equal(net(x), clone(x))
    buffer = io.BytesIO()
    torch.save(net, buffer)  # the whole module pickles too
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), net(x))


def test_forward_hooks_and_dtype_conversion():
    layer = FusedLinearReLU(4, 3)
    seen = []
    layer.register_forward_hook(lambda m, inp, out: seen.append(out.shape))
    layer(torch.randn(2, 4))
    assert seen == [torch.Size([2, 3])]
    layer.to(torch.float64)
    assert layer(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64


def test_module_on_device(device):
    layer = FusedLinearReLU(5, 6).to(device)
    x = torch.randn(3, 5, device=device)
    assert rel_error(layer(x), torch.relu(nn.functional.linear(x, layer.weight, layer.bias))) <= 1e-5


def test_torch_compile_fullgraph_training_step(device):
    torch._dynamo.reset()
    net = nn.Sequential(FusedLinearReLU(16, 32), nn.Linear(32, 4)).to(device)
    x = torch.randn(8, 16, device=device)

    def step(x):
        loss = net(x).square().sum()
        return loss

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x)
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    step(x).backward()
    for g, e in zip(grads, (p.grad for p in net.parameters())):
        assert rel_error(g, e) <= 1e-5


def test_build_info_matches_installed_torch():
    from fastlayers import _build_info

    assert _build_info.TORCH_VERSION == torch.__version__
    has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key("fastlayers::linear_relu", "CUDA")
    assert has_cuda_kernel == _build_info.WITH_CUDA


def test_public_names_are_importable_and_documented():
    for name in fastlayers.__all__:
        obj = getattr(fastlayers, name)
        assert obj.__doc__, f"fastlayers.{name} has no docstring"
    assert {"FusedLinearReLU", "LazyFusedLinearReLU", "Centered", "FixedHiddenMLP", "fuse"} <= set(fastlayers.__all__)


def test_inside_distributed_data_parallel(tmp_path):
    """One gloo process: DDP's hooks and gradient all-reduce see ordinary parameters."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not built")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(FusedLinearReLU(6, 8), fastlayers.Centered(-1), nn.Linear(8, 2))
        ddp = nn.parallel.DistributedDataParallel(net)
        x = torch.randn(4, 6)
        ddp(x).square().sum().backward()
        grads = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        net(x).square().sum().backward()
        for g, e in zip(grads, (p.grad for p in net.parameters())):
            assert torch.allclose(g, e)
    finally:
        dist.destroy_process_group()


def test_compiled_autograd():
    torch._dynamo.reset()
    net = nn.Sequential(FusedLinearReLU(5, 7), fastlayers.Centered(), nn.Linear(7, 1))
    x = torch.randn(3, 5)
    net(x).sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    from torch._dynamo import compiled_autograd
    from torch._dynamo.utils import counters

    enable = getattr(compiled_autograd, "_enable", None) or compiled_autograd.enable
    counters.clear()
    with enable(torch.compile(backend="eager")):
        net(x).sum().backward()
    assert counters["compiled_autograd"]["captures"] == 1  # the backward really went through compiled autograd
    for g, e in zip((p.grad for p in net.parameters()), expected):
        assert rel_error(g, e) <= 1e-6


def test_parametrizations_and_functional_call_see_the_right_weights():
    """The modules read parameters straight from _parameters for speed; a
    parametrization or torch.func.functional_call must still take effect."""
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, w):
            return 2 * w

    layer = FusedLinearReLU(4, 3)
    x = torch.randn(5, 4)
    plain = layer(x)
    parametrize.register_parametrization(layer, "weight", Doubled())
    assert rel_error(layer(x), torch.relu(x @ (2 * layer.parametrizations.weight.original).T + layer.bias)) <= 1e-6
    assert not torch.allclose(layer(x), plain)

    mlp = fastlayers.FixedHiddenMLP(6)
    inp = torch.rand(2, 6)
    zeros = {"linear.weight": torch.zeros(6, 6), "linear.bias": torch.zeros(6)}
    assert torch.func.functional_call(mlp, zeros, (inp,)) == 0
    assert mlp(inp) != 0
