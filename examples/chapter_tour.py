"""The "deep-learning computation" chapter, walked with fastlayers.

Each section does what the chapter does, with the fused modules dropped in,
and checks what it claims (the script fails loudly otherwise):

    python examples/chapter_tour.py

1. layers and blocks: a custom block, MySequential, NestMLP chained with
   FixedHiddenMLP; 2. parameter access; 3. initialisation, built-in and
   custom, and tied parameters; 4. lazy initialisation; 5. custom layers;
   6. file I/O; 7. the GPU, when there is one; 8. fuse() on the chapter's
   nested rgnet.
"""

import os
import tempfile

import torch
from torch import nn
from torch.nn import functional as F

import fastlayers
from fastlayers import Centered, FixedHiddenMLP, FusedLinearReLU, LazyFusedLinearReLU


def section(title):
    print(f"\n== {title}")


# ---- 1. layers and blocks -----------------------------------------------------


class MLP(nn.Module):
    """The chapter's first custom block: hidden layer + ReLU fused in one."""

    def __init__(self):
        super().__init__()
        self.hidden = LazyFusedLinearReLU(256)
        self.out = nn.LazyLinear(10)

    def forward(self, X):
        return self.out(self.hidden(X))


class MySequential(nn.Module):
    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self.add_module(str(idx), module)

    def forward(self, X):
        for module in self.children():
            X = module(X)
        return X


class NestMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(LazyFusedLinearReLU(64), LazyFusedLinearReLU(32))
        self.linear = nn.LazyLinear(16)

    def forward(self, X):
        return self.linear(self.net(X))


def layers_and_blocks(X):
    section("1. layers and blocks")
    net = MLP()
    assert net(X).shape == (2, 10)
    seq = MySequential(LazyFusedLinearReLU(256), nn.LazyLinear(10))
    assert seq(X).shape == (2, 10)
    # FixedHiddenMLP returns a scalar (the chapter's h.sum()); the halving
    # loop runs on the device, with no host synchronisation.
    chimera = nn.Sequential(NestMLP(), nn.LazyLinear(20), FixedHiddenMLP(20))
    out = chimera(X)
    assert out.dim() == 0 and out.abs() <= 20
    print("MLP", tuple(net(X).shape), "| MySequential", tuple(seq(X).shape), f"| chimera {out.item():.4f}")


# ---- 2. parameter access --------------------------------------------------------


def parameter_access(X):
    section("2. parameter access")
    net = nn.Sequential(LazyFusedLinearReLU(8), nn.LazyLinear(1))
    net(X)
    state = net[1].state_dict()
    assert list(state) == ["weight", "bias"]
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert net[0].weight.grad is None
    net(X).sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.shape == (8, 20)
    print("parameters:", [(name, tuple(p.shape)) for name, p in net.named_parameters()])


# ---- 3. initialisation and tying --------------------------------------------------


def initialisation(X):
    section("3. initialisation and tied parameters")
    net = nn.Sequential(FusedLinearReLU(20, 8), nn.Linear(8, 1))

    def init_normal(module):  # fastlayers.LINEAR_TYPES: nn.Linear and the fused layer
        if isinstance(module, fastlayers.LINEAR_TYPES):
            nn.init.normal_(module.weight, mean=0, std=0.01)
            nn.init.zeros_(module.bias)

    net.apply(init_normal)
    assert net[0].bias.abs().sum() == 0 and net[1].bias.abs().sum() == 0

    def init_constant(module):
        if isinstance(module, fastlayers.LINEAR_TYPES):
            nn.init.constant_(module.weight, 1)
            nn.init.zeros_(module.bias)

    net.apply(init_constant)
    assert torch.all(net[0].weight == 1)
    net[0].apply(lambda m: nn.init.xavier_uniform_(m.weight) if isinstance(m, fastlayers.LINEAR_TYPES) else None)
    net[1].apply(lambda m: nn.init.constant_(m.weight, 42) if isinstance(m, fastlayers.LINEAR_TYPES) else None)
    assert torch.all(net[1].weight == 42) and not torch.all(net[0].weight == 1)

    def my_init(module):  # the chapter's custom init: U(-10, 10), zero where |w| < 5
        if isinstance(module, fastlayers.LINEAR_TYPES):
            nn.init.uniform_(module.weight, -10, 10)
            module.weight.data *= module.weight.data.abs() >= 5

    net.apply(my_init)
    w = net[0].weight
    assert torch.all((w == 0) | (w.abs() >= 5))

    # Tied parameters: the same layer twice; gradients of both uses add up.
    shared = FusedLinearReLU(8, 8)
    tied = nn.Sequential(FusedLinearReLU(20, 8), shared, shared, nn.Linear(8, 1))
    assert tied[1].weight is tied[2].weight
    tied[1].weight.data[0, 0] = 100
    assert tied[2].weight.data[0, 0] == 100
    tied(X).sum().backward()
    eager_grad = _tied_eager_gradient(tied, X)
    assert torch.allclose(shared.weight.grad, eager_grad, rtol=1e-4, atol=1e-5)
    print("init: normal, constant, xavier, 42, custom | tied weight grad sums both uses")


def _tied_eager_gradient(tied, X):
    w = tied[1].weight.detach().clone().requires_grad_()
    b = tied[1].bias.detach()
    h = F.relu(F.linear(X, tied[0].weight.detach(), tied[0].bias.detach()))
    h = F.relu(F.linear(F.relu(F.linear(h, w, b)), w, b))
    F.linear(h, tied[3].weight.detach(), tied[3].bias.detach()).sum().backward()
    return w.grad


# ---- 4. lazy initialisation ---------------------------------------------------------


def lazy_initialisation(X):
    section("4. lazy initialisation")
    net = nn.Sequential(LazyFusedLinearReLU(256), nn.LazyLinear(10))
    assert isinstance(net[0].weight, nn.parameter.UninitializedParameter)
    net(X)
    assert type(net[0]) is FusedLinearReLU and net[0].weight.shape == (256, 20)
    print("after the first call:", net[0])


# ---- 5. custom layers -----------------------------------------------------------------


def custom_layers():
    section("5. custom layers")
    layer = Centered()  # the chapter's CenteredLayer
    out = layer(torch.tensor([1.0, 2, 3, 4, 5]))
    assert torch.equal(out, torch.tensor([-2.0, -1, 0, 1, 2]))
    net = nn.Sequential(nn.LazyLinear(128), Centered())
    y = net(torch.rand(4, 8))
    assert y.mean().abs() < 1e-5
    # The chapter's MyLinear with ReLU is exactly FusedLinearReLU.
    dense = FusedLinearReLU(5, 3)
    x = torch.rand(2, 5)
    assert torch.allclose(dense(x), F.relu(x @ dense.weight.T + dense.bias), atol=1e-6)
    print("Centered:", out.tolist(), f"| mean after Centered {y.mean().item():.1e}")


# ---- 6. file I/O ------------------------------------------------------------------------


def file_io(X):
    section("6. file I/O")
    with tempfile.TemporaryDirectory() as tmp:
        x = torch.arange(4)
        torch.save(x, os.path.join(tmp, "x-file"))
        assert torch.equal(torch.load(os.path.join(tmp, "x-file")), x)
        y = torch.zeros(4)
        torch.save([x, y], os.path.join(tmp, "x-files"))
        x2, y2 = torch.load(os.path.join(tmp, "x-files"))
        assert torch.equal(x2, x) and torch.equal(y2, y)
        torch.save({"x": x, "y": y}, os.path.join(tmp, "mydict"))
        assert torch.equal(torch.load(os.path.join(tmp, "mydict"))["y"], y)

        net = MLP()
        Y = net(X)
        torch.save(net.state_dict(), os.path.join(tmp, "mlp.params"))
        clone = MLP()
        clone(X)  # materialise the lazy layers, then load (weights_only: no code runs)
        clone.load_state_dict(torch.load(os.path.join(tmp, "mlp.params"), weights_only=True))
        assert torch.equal(clone(X), Y)
        # A single fused layer saved and loaded into the chapter's nn.Linear.
        linear = nn.Linear(20, 256)
        linear.load_state_dict(net.hidden.state_dict())
        assert torch.allclose(F.relu(linear(X)), net.hidden(X), atol=1e-6)
    print("tensors, lists, dicts, state_dicts: saved and loaded equal")


# ---- 7. the GPU -------------------------------------------------------------------------


def gpu(X):
    section("7. GPU")
    if not torch.cuda.is_available():
        print("no GPU here: skipped (the same code runs on torch.device('cuda'))")
        return
    device = torch.device("cuda")
    net = nn.Sequential(FusedLinearReLU(20, 64), Centered(-1), nn.Linear(64, 20), FixedHiddenMLP(20))
    expected = net(X)
    net.to(device)
    assert net[0].weight.device.type == "cuda" and net[3].rand_weight.device.type == "cuda"
    out = net(X.to(device))
    assert torch.allclose(out.cpu(), expected, rtol=1e-4, atol=1e-5)
    print("on", torch.cuda.get_device_name(), f"| {out.item():.4f}")


# ---- 8. fuse() on rgnet ------------------------------------------------------------------


def fuse_rgnet():
    section("8. fastlayers.fuse on the chapter's rgnet")

    def block1():
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())

    def block2():
        net = nn.Sequential()
        for i in range(4):
            net.add_module(f"block {i}", block1())
        return net

    rgnet = nn.Sequential(block2(), nn.Linear(4, 1))
    X = torch.rand(2, 4)
    fused, report = fastlayers.fuse(rgnet, return_report=True)
    assert torch.allclose(fused(X), rgnet(X), rtol=1e-5, atol=1e-6)
    assert sum(isinstance(m, FusedLinearReLU) for m in fused.modules()) == 8
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in rgnet.parameters())
    assert fused.state_dict().keys() == rgnet.state_dict().keys()
    print(report)


def main():
    torch.manual_seed(0)
    X = torch.rand(2, 20)
    layers_and_blocks(X)
    parameter_access(X)
    initialisation(X)
    lazy_initialisation(X)
    custom_layers()
    file_io(X)
    gpu(X)
    fuse_rgnet()
    print("\nthe chapter tour ran to the end")


if __name__ == "__main__":
    main()
