"""fastlayers.fuse: Linear+ReLU pairs in Sequentials and in traced custom
modules become FusedLinearReLU over the same Parameters."""

import logging
from collections import OrderedDict

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import fastlayers
from fastlayers import FusedLinearReLU, FuseReport, fuse


def _kinds(seq: nn.Module) -> list[type]:
    return [type(m) for m in seq.children()]


def _fused(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, FusedLinearReLU)]


def _assert_same_function(eager: nn.Module, fused: nn.Module, x: torch.Tensor) -> None:
    """Equal outputs, and equal gradients for the input and every parameter
    (matched by name: fusion keeps the names)."""
    eager.zero_grad()
    fused.zero_grad()
    xe, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_e, out_f = eager(xe), fused(xf)
    assert_close(out_f, out_e)
    out_e.square().sum().backward()
    out_f.square().sum().backward()
    assert_close(xf.grad, xe.grad)
    grads_e = {n: p.grad for n, p in eager.named_parameters()}
    grads_f = {n: p.grad for n, p in fused.named_parameters()}
    assert grads_f.keys() == grads_e.keys()
    for name, grad in grads_e.items():
        assert_close(grads_f[name], grad, msg=name)


def _mlp(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)).to(dtype)


def test_flat_sequential():
    net = _mlp()
    fused, report = fuse(net, return_report=True)
    assert type(fused) is nn.Sequential
    assert _kinds(fused) == [FusedLinearReLU, nn.Identity, FusedLinearReLU, nn.Identity, nn.Linear]
    assert [tuple(f) for f in report.fused] == [("0", "1", "sequential"), ("2", "3", "sequential")]
    assert [tuple(s) for s in report.skipped] == [("4", "not followed by a ReLU")]
    _assert_same_function(net, fused, torch.randn(5, 6, dtype=torch.float64))
    # the fused layer is not an nn.Linear: LoRA-style tools must not wrap it
    assert not isinstance(fused[0], nn.Linear)


def test_float32_outputs_and_grads():
    net = _mlp(torch.float32)
    _assert_same_function(net, fuse(net), torch.randn(7, 6))


def test_same_parameter_objects_dtype_device_requires_grad_and_count():
    net = _mlp()
    net[2].bias.requires_grad_(False)
    params = {name: p for name, p in net.named_parameters()}
    count = sum(p.numel() for p in net.parameters())
    fused = fuse(net, inplace=True)
    assert fused is net
    assert fused[0].weight is params["0.weight"] and fused[0].bias is params["0.bias"]
    assert fused[2].weight is params["2.weight"] and fused[2].bias is params["2.bias"]
    assert fused[0].weight.dtype == torch.float64 and fused[0].weight.device.type == "cpu"
    assert not fused[2].bias.requires_grad and fused[2].weight.requires_grad
    assert dict(fused.named_parameters()).keys() == params.keys()
    assert sum(p.numel() for p in fused.parameters()) == count
    no_bias = fuse(nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU()))
    assert type(no_bias[0]) is FusedLinearReLU and no_bias[0].bias is None


def block1():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())


def block2():
    net = nn.Sequential()
    for i in range(4):
        net.add_module(f"block {i}", block1())
    return net


def test_nested_sequentials_rgnet():
    torch.manual_seed(0)
    rgnet = nn.Sequential(block2(), nn.Linear(4, 1)).double()
    fused, report = fuse(rgnet, return_report=True)
    assert len(_fused(fused)) == 8 and len(report.fused) == 8
    assert ("0.block 2.2", "0.block 2.3", "sequential") in report.fused
    assert _kinds(fused[0][3]) == [FusedLinearReLU, nn.Identity, FusedLinearReLU, nn.Identity]
    assert [tuple(s) for s in report.skipped] == [("1", "not followed by a ReLU")]
    assert list(fused.state_dict()) == list(rgnet.state_dict())
    _assert_same_function(rgnet, fused, torch.randn(3, 4, dtype=torch.float64))


def test_ordereddict_names():
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict([("hidden", nn.Linear(5, 7)), ("act", nn.ReLU()), ("out", nn.Linear(7, 2))])
    ).double()
    fused, report = fuse(net, return_report=True)
    assert type(fused.hidden) is FusedLinearReLU and type(fused.act) is nn.Identity
    assert type(fused.out) is nn.Linear
    assert report.fused == [("hidden", "act", "sequential")]
    _assert_same_function(net, fused, torch.randn(4, 5, dtype=torch.float64))


class MySequential(nn.Module):
    """The chapter's MySequential."""

    def __init__(self, *args):
        super().__init__()
        for idx, module in enumerate(args):
            self.add_module(str(idx), module)

    def forward(self, X):
        for module in self._modules.values():
            X = module(X)
        return X


class ChildrenSequential(MySequential):
    def forward(self, X):
        for block in self.children():
            X = block(X)
        return X


@pytest.mark.parametrize("cls", [MySequential, ChildrenSequential])
def test_sequential_like_custom_container(cls):
    torch.manual_seed(0)
    net = cls(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 10)).double()
    fused, report = fuse(net, return_report=True)
    assert type(fused) is cls  # keeps its class: no GraphModule
    assert _kinds(fused) == [FusedLinearReLU, nn.Identity, nn.Linear]
    assert report.fused == [("0", "1", "sequential")]
    _assert_same_function(net, fused, torch.randn(2, 20, dtype=torch.float64))


def test_relu_at_the_end_and_linear_at_the_end():
    fused, report = fuse(nn.Sequential(nn.ReLU(), nn.Linear(3, 4), nn.ReLU()), return_report=True)
    assert _kinds(fused) == [nn.ReLU, FusedLinearReLU, nn.Identity]
    fused, report = fuse(nn.Sequential(nn.ReLU(), nn.Linear(3, 4)), return_report=True)
    assert _kinds(fused) == [nn.ReLU, nn.Linear]
    assert report.fused == [] and report.skipped == [("1", "not followed by a ReLU")]
    # a bare Linear is followed by nothing
    assert fuse(nn.Linear(2, 2), return_report=True)[1].skipped == [("", "not followed by a ReLU")]


def test_state_dict_loads_both_ways():
    original = _mlp()
    fused = fuse(original)
    assert list(fused.state_dict()) == list(original.state_dict())
    # the fused model's values go into an unfused model...
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(1.0)
    unfused = _mlp()
    unfused.load_state_dict(fused.state_dict())
    for key, value in fused.state_dict().items():
        assert torch.equal(unfused.state_dict()[key], value)
    # ...and an unfused model's values into the fused one
    torch.manual_seed(5)
    other = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    fused.load_state_dict(other.state_dict())
    for key, value in other.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value)
    _assert_same_function(other, fused, torch.randn(3, 6, dtype=torch.float64))


def _tied_net():
    torch.manual_seed(0)
    shared = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 1)).double()


def test_shared_linear_stays_one_fused_module_and_accumulates_grads():
    net = _tied_net()
    fused, report = fuse(net, return_report=True)
    assert type(fused[2]) is FusedLinearReLU and fused[2] is fused[4]
    assert fused[2].weight is fused[4].weight
    assert ("2", "3", "sequential") in report.fused and ("4", "5", "sequential") in report.fused
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in net.parameters())
    _assert_same_function(net, fused, torch.randn(5, 4, dtype=torch.float64))
    assert_close(fused[2].weight.grad, net[2].weight.grad)  # both uses accumulated


def test_shared_linear_followed_by_relu_only_somewhere_is_not_fused():
    torch.manual_seed(0)
    shared = nn.Linear(8, 8)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.Sigmoid()).double()
    fused, report = fuse(net, return_report=True)
    assert fused[2] is fused[4] and type(fused[2]) is nn.Linear and type(fused[3]) is nn.ReLU
    assert type(fused[0]) is FusedLinearReLU
    (skipped,) = report.skipped
    assert skipped.path == "2" and "shared Linear" in skipped.reason and "'4'" in skipped.reason
    _assert_same_function(net, fused, torch.randn(5, 4, dtype=torch.float64))


class WithFunctionalReLU(nn.Module):
    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        self.fc = nn.Linear(6, 8)
        self.act = nn.ReLU()
        self.out = nn.Linear(8, 2)
        self.unused = nn.Linear(3, 3)  # not called: must survive the GraphModule
        self.register_buffer("offset", torch.full((2,), 0.5))

    def forward(self, x):
        h = self.fc(x)
        if self.variant == "F.relu":
            h = F.relu(h)
        elif self.variant == "torch.relu":
            h = torch.relu(h)
        elif self.variant == "nn.ReLU":
            h = self.act(h)
        else:
            h = h.relu()
        return self.out(h) + self.offset


def _relu_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    relus = (F.relu, torch.relu, torch.relu_)
    return [
        n
        for n in gm.graph.nodes
        if (n.op == "call_function" and n.target in relus)
        or (n.op == "call_method" and n.target in ("relu", "relu_"))
        or (n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU))
    ]


@pytest.mark.parametrize("variant", ["F.relu", "torch.relu", "nn.ReLU", "method"])
def test_custom_module_goes_through_fx(variant):
    torch.manual_seed(0)
    net = WithFunctionalReLU(variant).double()
    fused, report = fuse(net, return_report=True)
    assert isinstance(fused, fx.GraphModule)
    assert type(fused.fc) is FusedLinearReLU and fused.fc.weight is not net.fc.weight  # a copy: inplace=False
    assert [(f.linear, f.route) for f in report.fused] == [("fc", "fx")]
    assert _relu_nodes(fused) == []
    targets = [n.target for n in fused.graph.nodes if n.op == "call_module"]
    assert targets == ["fc", "out"]
    # the whole hierarchy survives: unused layer, ReLU module, buffer, attributes
    assert type(fused.unused) is nn.Linear and type(fused.act) is nn.ReLU and fused.variant == variant
    assert list(fused.state_dict()) == list(net.state_dict())
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in net.parameters())
    assert {s.path for s in report.skipped} == {"out", "unused"}
    _assert_same_function(net, fused, torch.randn(4, 6, dtype=torch.float64))
    unfused = WithFunctionalReLU(variant).double()
    unfused.load_state_dict(fused.state_dict())
    fused.load_state_dict(net.state_dict())


class WithInnerSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(F.relu(self.body(x)))


def test_custom_module_with_inner_sequential_fuses_through_its_graph():
    torch.manual_seed(0)
    net = WithInnerSequential().double()
    fused, report = fuse(net, return_report=True)
    assert isinstance(fused, fx.GraphModule)
    assert type(fused.body) is nn.Sequential and type(fused.body[0]) is FusedLinearReLU
    assert type(fused.body[2]) is FusedLinearReLU  # followed by the F.relu in the parent's forward
    assert sorted(f.linear for f in report.fused) == ["body.0", "body.2"]
    assert {f.route for f in report.fused} == {"fx"}
    assert _relu_nodes(fused) == []
    assert list(fused.state_dict()) == list(net.state_dict())
    _assert_same_function(net, fused, torch.randn(4, 5, dtype=torch.float64))


def test_custom_child_of_a_sequential_becomes_a_graph_module_in_its_slot():
    torch.manual_seed(0)
    net = nn.Sequential(WithFunctionalReLU("torch.relu"), nn.ReLU(), nn.Linear(2, 2)).double()
    fused = fuse(net)
    assert type(fused) is nn.Sequential and isinstance(fused[0], fx.GraphModule)
    assert type(fused[0].fc) is FusedLinearReLU
    _assert_same_function(net, fused, torch.randn(3, 6, dtype=torch.float64))


def test_fused_graph_module_keeps_its_hierarchy_through_deepcopy_and_pickle(tmp_path):
    import copy

    torch.manual_seed(0)
    fused = fuse(WithFunctionalReLU("F.relu").double())
    path = tmp_path / "fused.pt"
    torch.save(fused, path)
    x = torch.randn(3, 6, dtype=torch.float64)
    for clone in (copy.deepcopy(fused), torch.load(path, weights_only=False), fuse(fused)):
        assert isinstance(clone, fx.GraphModule) and type(clone).__name__ == "WithFunctionalReLU"
        assert list(clone.state_dict()) == list(fused.state_dict())  # the unused layer too
        assert type(clone.fc) is FusedLinearReLU and clone.variant == "F.relu"
        assert_close(clone(x), fused(x))


class Scaled(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return 2 * F.relu(self.linear(x))


def test_linear_shared_by_a_sequential_and_a_custom_forward():
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), Scaled(shared)).double()
    fused, report = fuse(net, return_report=True)
    assert type(fused[0]) is FusedLinearReLU and fused[2].linear is fused[0]
    assert sorted(report.fused) == [("0", "1", "sequential"), ("2.linear", "torch.nn.functional.relu", "fx")]
    _assert_same_function(net, fused, torch.randn(3, 4, dtype=torch.float64))
    # not followed by a ReLU in the Sequential: left alone in both places
    net = nn.Sequential(shared, nn.Tanh(), Scaled(shared)).double()
    fused, report = fuse(net, return_report=True)
    assert type(fused[0]) is nn.Linear and type(fused[2]) is Scaled and fused[2].linear is fused[0]
    assert report.skipped == [("0", "shared Linear is not followed by a ReLU at '0'")]


class IndexesItsSequential(nn.Module):
    def __init__(self, seq):
        super().__init__()
        self.seq = seq
        self.other = nn.Linear(4, 4)

    def forward(self, x):
        return self.seq[1](self.other(x) - 1)  # uses the Sequential's ReLU on its own


def test_sequential_that_a_custom_forward_indexes_is_left_alone():
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    net = nn.Sequential(seq, IndexesItsSequential(seq)).double()
    fused, report = fuse(net, return_report=True)
    assert _kinds(fused[0]) == [nn.Linear, nn.ReLU] and report.fused == []
    assert "also held at '1.seq'" in report.skipped[0].reason
    _assert_same_function(net, fused, torch.randn(3, 4, dtype=torch.float64))


def test_fastlayers_and_torch_nn_composites_are_left_whole():
    torch.manual_seed(0)
    net = (
        nn.Sequential(
            nn.Linear(8, 8),
            nn.ReLU(),
            fastlayers.FixedHiddenMLP(8, return_sum=False),
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
        )
        .double()
        .eval()
    )
    fused, report = fuse(net, return_report=True)
    assert _kinds(fused)[:2] == [FusedLinearReLU, nn.Identity] and type(fused[2].linear) is nn.Linear
    assert type(fused[3].linear1) is nn.Linear
    assert {s.path for s in report.skipped} == {"2.linear", "3.self_attn.out_proj", "3.linear1", "3.linear2"}
    x = torch.rand(2, 3, 8, dtype=torch.float64)
    assert_close(fused(x), net(x))


class SecondUser(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return torch.relu(h) + h


def test_linear_output_with_a_second_user_is_not_fused():
    net = SecondUser()
    fused, report = fuse(net, return_report=True)
    assert type(fused) is SecondUser and type(fused.fc) is nn.Linear  # nothing fused: no GraphModule
    assert report.fused == []
    assert report.skipped == [("fc", "its output has other users besides a ReLU")]


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x):
        h = self.seq(x)
        while h.abs().sum() > 1:
            h = h / 2
        return h


def test_untraceable_model_is_left_as_it_is():
    net = Untraceable()
    fused, report = fuse(net, return_report=True)
    assert type(fused) is Untraceable and _kinds(fused.seq) == [nn.Linear, nn.ReLU]
    (skipped,) = report.skipped
    assert skipped.path == "seq.0"
    assert "the root module does not trace with torch.fx" in skipped.reason
    assert "TraceError" in skipped.reason


def test_untraceable_child_of_a_sequential_root_does_not_stop_its_siblings():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Untraceable()).double()
    fused, report = fuse(net, return_report=True)
    assert _kinds(fused) == [FusedLinearReLU, nn.Identity, Untraceable]
    assert _kinds(fused[2].seq) == [nn.Linear, nn.ReLU]
    assert [s.path for s in report.skipped] == ["2.seq.0"]
    assert "module '2' does not trace with torch.fx" in report.skipped[0].reason
    _assert_same_function(net, fused, torch.randn(3, 4, dtype=torch.float64))


def test_inplace_false_leaves_the_original_untouched_and_inplace_true_mutates():
    net = _mlp()
    before = list(net.children())
    fused = fuse(net)
    assert fused is not net and list(net.children()) == before
    assert _kinds(net) == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert fused[0].weight is not net[0].weight
    custom = WithFunctionalReLU("F.relu")
    assert isinstance(fuse(custom), fx.GraphModule) and type(custom.fc) is nn.Linear
    assert not hasattr(custom, "_tensor_constant0")
    same = fuse(net, inplace=True)
    assert same is net and _kinds(net) == [FusedLinearReLU, nn.Identity, FusedLinearReLU, nn.Identity, nn.Linear]


def test_hooks_and_parametrizations_prevent_fusion():
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, w):
            return 2 * w

    net = nn.Sequential(*(m for _ in range(4) for m in (nn.Linear(3, 3), nn.ReLU())))
    net[0].register_forward_hook(lambda m, i, o: None)
    net[3].register_forward_pre_hook(lambda m, i: None)
    parametrize.register_parametrization(net[4], "weight", Doubled())
    fused, report = fuse(net, return_report=True)
    assert _kinds(fused)[:6] == [type(net[0]), nn.ReLU, nn.Linear, nn.ReLU, type(net[4]), nn.ReLU]
    assert _kinds(fused)[6:] == [FusedLinearReLU, nn.Identity]
    assert report.skipped == [
        ("0", "has forward hooks"),
        ("2", "the ReLU at '3' has forward-pre hooks"),
        ("4", "has parametrizations"),
    ]


def test_hooks_on_a_module_the_trace_goes_through_keep_its_parent_unfused():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Scaled(nn.Linear(3, 3))

        def forward(self, x):
            return self.inner(x) + 1

    net = Outer()
    net.inner.register_forward_hook(lambda m, i, o: None)
    fused, report = fuse(net, return_report=True)
    assert type(fused) is Outer and type(fused.inner.linear) is nn.Linear
    assert report.skipped[0].path == "inner.linear" and "hooks" in report.skipped[0].reason


def test_lazy_and_subclassed_linears():
    class LoRALike(nn.Linear):
        pass

    net = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), LoRALike(4, 4), nn.ReLU())
    _, report = fuse(net, return_report=True)
    assert [s.reason for s in report.skipped] == [
        "is an uninitialized nn.LazyLinear",
        "is a subclass of nn.Linear (test_lazy_and_subclassed_linears.<locals>.LoRALike), not nn.Linear itself",
    ]
    net(torch.randn(2, 3))  # the LazyLinear becomes an nn.Linear
    fused = fuse(net)
    assert _kinds(fused) == [FusedLinearReLU, nn.Identity, LoRALike, nn.ReLU]


def test_report_str_and_debug_log(caplog):
    with caplog.at_level(logging.DEBUG, logger="fastlayers.fusion"):
        _, report = fuse(_mlp(), return_report=True)
    assert isinstance(report, FuseReport)
    text = str(report)
    assert "fused 2" in text and "'0' + '1' (sequential)" in text and "'4': not followed by a ReLU" in text
    assert text in caplog.text
    assert fastlayers.fuse is fuse and "fuse" in fastlayers.__all__ and "FuseReport" in fastlayers.__all__


@pytest.mark.parametrize("bad", [None, torch.randn(2), nn.Linear, [nn.Linear(2, 2)]])
def test_type_error_on_non_modules(bad):
    with pytest.raises(TypeError, match="fastlayers.fuse: argument 'model' must be an nn.Module, got"):
        fuse(bad)


def test_fused_model_under_torch_compile_fullgraph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    fused = fuse(net)
    x = torch.randn(5, 8)
    compiled = torch.compile(fused, fullgraph=True)
    assert_close(compiled(x), net(x))
