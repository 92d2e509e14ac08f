"""fastlayers.FixedHiddenMLP and fixed_hidden_mlp against the chapter's
loop: output and number of halvings across shapes and scales, gradcheck,
opcheck, non-finite values, module behaviour, bad inputs."""

import pytest
import torch
from torch.nn import functional as TF

from fastlayers import FixedHiddenMLP, backends
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import eager_bound, rel_error

from .chapter import ChapterFixedHiddenMLP
from .checks import check_half_precision
from .conftest import CHECKED_DEVICES

OPS = torch.ops.fastlayers


def params(f, dtype, device, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(f, f, generator=g, dtype=torch.float64) * scale / f**0.5).to(device, dtype)
    b = (torch.randn(f, generator=g, dtype=torch.float64) * scale).to(device, dtype)
    c = torch.rand(f, f, generator=g, dtype=torch.float64).to(device, dtype)
    return w, b, c


def inputs(shape, dtype, device, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)


# (input shape, features, scale): k from 0 to about 60.
SCALES = [
    ((2, 20), 20, 1.0),
    ((64, 20), 20, 1.0),
    ((1, 3), 3, 1e-4),
    ((7, 33), 33, 1e3),
    ((3, 9), 9, 1e8),
    ((5, 2, 16), 16, 1e-2),
    ((130, 70), 70, 1e6),
    ((4, 12), 12, 1e-9),
]


@pytest.mark.parametrize("shape,f,scale", SCALES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("return_sum", [True, False])
def test_matches_the_chapter_loop_output_and_halvings(shape, f, scale, dtype, return_sum, device):
    w, b, c = params(f, dtype, device, scale=scale**0.5)
    x = inputs(shape, dtype, device, scale=scale**0.5)
    out, k = FL.fixed_hidden_mlp(x, w, b, c, return_sum, return_halvings=True)
    expected, expected_k = ref.fixed_hidden_mlp(x, w, b, c, return_sum, return_halvings=True)
    assert k.dtype == torch.int64 and k.device == x.device
    assert int(k) == expected_k
    assert out.shape == expected.shape and out.dtype == dtype
    exact = ref.fixed_hidden_mlp(x.double(), w.double(), b.double(), c.double(), return_sum)
    tol = 1e-12 if dtype == torch.float64 else eager_bound(rel_error(expected, exact), slack=1e-5)
    assert rel_error(out, exact) <= tol


@pytest.mark.parametrize("shape,f", [((2, 20), 20), ((64, 20), 20), ((40, 64), 64)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("return_sum", [True, False])
def test_half_precision_matches_float64(shape, f, dtype, return_sum, device):
    w, b, c = params(f, dtype, device, scale=3.0)
    x = inputs(shape, dtype, device, scale=3.0)
    check_half_precision(OPS.fixed_hidden_mlp, x, w, b, c, return_sum)


def test_halvings_span_zero_to_sixty(device):
    seen = set()
    for i, scale in enumerate([1e-6, 1e-3, 1, 1e3, 1e6, 1e9, 1e12, 1e15, 1e17]):
        w, b, c = params(20, torch.float64, device, seed=i, scale=scale**0.5)
        x = inputs((2, 20), torch.float64, device, seed=i, scale=scale**0.5)
        _, k = FL.fixed_hidden_mlp(x, w, b, c, return_halvings=True)
        assert int(k) == ref.fixed_hidden_mlp(x, w, b, c, return_halvings=True)[1]
        seen.add(int(k))
    assert min(seen) == 0 and max(seen) >= 55


def test_float32_sum_that_overflows_with_finite_elements(device):
    """Elements near 1e37: the float32 sum overflows, the chapter's loop still
    ends after enough halvings, and fastlayers agrees."""
    f = 4
    w = torch.eye(f, device=device) * 1e12  # h3 = 1e24 * x: 2e37 per element, 64 of them
    b = torch.zeros(f, device=device)
    c = torch.eye(f, device=device)
    x = torch.full((16, f), 2e13, device=device)
    h3 = TF.linear(TF.relu(TF.linear(x, w, b) @ c + 1), w, b)
    assert torch.isfinite(h3).all() and torch.isinf(h3.abs().sum())
    h = ref.fixed_hidden_mlp(x, w, b, c, return_sum=False, return_halvings=True)
    out, k = FL.fixed_hidden_mlp(x, w, b, c, return_sum=False, return_halvings=True)
    assert torch.isfinite(out).all() and int(k) == h[1] and h[1] > 120
    assert torch.isfinite(FL.fixed_hidden_mlp(x, w, b, c)) and torch.isfinite(ref.fixed_hidden_mlp(x, w, b, c))
    assert rel_error(out, h[0]) <= 1e-6


def test_non_finite_values_never_hang_and_pass_through(device):
    w, b, c = params(6, torch.float32, device)
    x = inputs((3, 6), torch.float32, device)
    x[1, 2] = float("nan")
    out, k = FL.fixed_hidden_mlp(x, w, b, c, return_halvings=True)
    assert torch.isnan(out) and int(k) == 0
    assert ref.fixed_hidden_mlp(x, w, b, c, return_halvings=True)[1] == 0  # the loop stops at once too
    # Positive everything and huge weights: h overflows to +inf, no NaN.
    x = torch.rand(3, 6, device=device) + 0.5
    big = torch.full((6, 6), 3e38, device=device)
    zero = torch.zeros(6, device=device)
    h, k = FL.fixed_hidden_mlp(x, big, zero, c, return_sum=False, return_halvings=True)
    assert int(k) == 0 and torch.isinf(h).all() and (h > 0).all()  # the chapter's loop would never end here
    assert FL.fixed_hidden_mlp(x, big, zero, c) == float("inf")
    with pytest.raises(RuntimeError, match="does not end"):
        ref.fixed_hidden_mlp(x, big, zero, c, max_halvings=300)


@pytest.mark.parametrize("return_sum", [True, False])
@pytest.mark.parametrize("shape", [(3, 5), (1, 4), (2, 2, 3)])
def test_gradcheck(return_sum, shape, device):
    f = shape[-1]
    w, b, c = params(f, torch.float64, device)
    x = inputs(shape, torch.float64, device)
    for t in (x, w, b):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: FL.fixed_hidden_mlp(x, w, b, c, return_sum), (x, w, b))


def test_gradients_match_the_chapter_block(device):
    torch.manual_seed(0)
    chapter = ChapterFixedHiddenMLP().to(device)
    fused = FixedHiddenMLP().to(device)
    fused.load_state_dict(chapter.state_dict())
    x = torch.rand(2, 20, device=device, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    chapter(x).backward()
    fused(x2).backward()
    assert rel_error(x2.grad, x.grad) <= 1e-5
    assert rel_error(fused.linear.weight.grad, chapter.linear.weight.grad) <= 1e-5
    assert rel_error(fused.linear.bias.grad, chapter.linear.bias.grad) <= 1e-5
    assert fused.rand_weight.grad is None


@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
@pytest.mark.parametrize("return_sum", [False, True])
def test_an_input_without_grad_skips_its_product(policy, return_sum, device):
    # Parameter gradients equal those of a backward that computes every
    # gradient; the op returns an empty grad_input when asked not to compute it.
    w, b, c = params(6, torch.float32, device)
    x = inputs((40, 6), torch.float32, device)
    switch = backends.cpu_gemm if device == "cpu" else backends.cuda_gemm
    with switch(policy):
        full = [t.clone().requires_grad_() for t in (x, w, b)]
        FL.fixed_hidden_mlp(*full, c, return_sum).square().sum().backward()
        params_only = [x] + [t.clone().requires_grad_() for t in (w, b)]
        FL.fixed_hidden_mlp(*params_only, c, return_sum).square().sum().backward()
        assert x.grad is None
        for got, want in zip(params_only[1:], full[1:]):
            assert torch.equal(got.grad, want.grad)
        out, hidden, k = OPS.fixed_hidden_mlp(x, w, b, c, return_sum)
        g = torch.randn(out.shape, device=device)
        skipped = OPS.fixed_hidden_mlp_backward(g, x, w, c, hidden, k, return_sum, False)
        every = OPS.fixed_hidden_mlp_backward(g, x, w, c, hidden, k, return_sum)
    assert skipped[0].shape == (0,) and every[0].shape == x.shape
    assert torch.equal(skipped[1], every[1]) and torch.equal(skipped[2], every[2])
    for input_grad in (True, False):
        torch.library.opcheck(OPS.fixed_hidden_mlp_backward.default, (g, x, w, c, hidden, k, return_sum, input_grad))


@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_in_an_input_row_gives_what_the_reference_gives(policy, dtype, device):
    """A NaN in one input row makes that row NaN through all three layers; the
    halving loop then stops at once (NaN > 1 is false), so the other rows are
    not halved. 96 features: past the one-block CUDA kernel, onto the GEMM
    routes, whose ReLU must keep NaN as torch.relu does."""
    w, b, c = params(96, dtype, device)
    x = inputs((40, 96), dtype, device)
    x[3, 5] = float("nan")
    switch = backends.cpu_gemm if device == "cpu" else backends.cuda_gemm
    with switch(policy):
        out, total = FL.fixed_hidden_mlp(x, w, b, c, False), FL.fixed_hidden_mlp(x, w, b, c, True)
    want = ref.fixed_hidden_mlp(*(t.double() for t in (x, w, b, c)), return_sum=False)
    assert torch.equal(out.isnan(), want.isnan()) and want.isnan()[3].all()
    assert total.isnan()
    finite = ~want.isnan()
    bound = (
        1e-5
        if dtype == torch.float32
        else eager_bound(rel_error(ref.fixed_hidden_mlp(x, w, b, c, return_sum=False)[finite], want[finite]))
    )
    assert rel_error(out[finite], want[finite]) <= bound


def test_double_backward_raises_a_clear_error(device):
    w, b, c = params(4, torch.float64, device)
    x = inputs((2, 4), torch.float64, device).requires_grad_()
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        torch.autograd.gradgradcheck(lambda x: FL.fixed_hidden_mlp(x, w, b, c), (x,))


def test_opcheck(device):
    w, b, c = params(5, torch.float32, device)
    x = inputs((3, 5), torch.float32, device)
    for t in (x, w, b):
        t.requires_grad_()
    for return_sum in (True, False):
        torch.library.opcheck(OPS.fixed_hidden_mlp.default, (x, w, b, c, return_sum))


def test_module_state_dict_buffer_and_generator(tmp_path):
    m = FixedHiddenMLP(generator=torch.Generator().manual_seed(3))
    assert [n for n, _ in m.named_parameters()] == ["linear.weight", "linear.bias"]
    assert [n for n, _ in m.named_buffers()] == ["rand_weight"]
    assert torch.equal(m.rand_weight, torch.rand((20, 20), generator=torch.Generator().manual_seed(3)))
    chapter = ChapterFixedHiddenMLP()
    m.load_state_dict(chapter.state_dict())
    x = torch.rand(2, 20)
    assert rel_error(m(x), chapter(x)) <= 1e-5
    torch.save(m.state_dict(), tmp_path / "m.pt")
    clone = FixedHiddenMLP()
    clone.load_state_dict(torch.load(tmp_path / "m.pt"))
    assert torch.equal(clone(x), m(x))
    assert m.to(torch.float64).rand_weight.dtype == torch.float64
    assert repr(FixedHiddenMLP(5, return_sum=False)).startswith("FixedHiddenMLP(\n  features=5, return_sum=False")


@pytest.mark.parametrize("device", CHECKED_DEVICES)
def test_bad_inputs_name_the_op_and_the_problem(device):
    w, b, c = params(5, torch.float32, device)
    x = inputs((2, 5), torch.float32, device)
    cases = [
        ((inputs((2, 4), torch.float32, device), w, b, c), r"input's last dimension must equal features = 5"),
        ((x, torch.randn(5, 4, device=device), b, c), r"'weight' must be a square"),
        ((x, w, b, torch.rand(5, 4, device=device)), r"'rand_weight' must have shape \[5, 5\]"),
        ((x, w, torch.randn(4, device=device), c), r"'bias' must have shape \[5\]"),
        ((x.int(), w, b, c), r"'input' must be a floating-point tensor"),
        ((x, w.double(), b, c), r"'weight' has dtype Double"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=r"fastlayers::fixed_hidden_mlp.*" + message):
            FL.fixed_hidden_mlp(*args)


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    m = FixedHiddenMLP().to(device)
    x = torch.rand(2, 20, device=device)
    compiled = torch.compile(m, fullgraph=True)
    assert rel_error(compiled(x), m(x)) <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("return_sum", [True, False])
def test_cuda_multi_kernel_path_on_both_gemm_routes(policy, dtype, return_sum):
    """(300, 128) is past the single-launch kernels: its products are
    fastlayers' or the vendor's (common/gemm_policy.h); both against float64,
    forward and backward."""
    w, b, c = params(128, dtype, "cuda", scale=3.0)
    x = inputs((300, 128), dtype, "cuda", scale=3.0)
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    with backends.cuda_gemm(policy):
        if dtype == torch.bfloat16:
            check_half_precision(OPS.fixed_hidden_mlp, x, w, b, c, return_sum)
        out, k = FL.fixed_hidden_mlp(*leaves, c, return_sum, return_halvings=True)
        grad = torch.randn_like(out)
        out.backward(grad)
    exact_leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    exact, exact_k = ref.fixed_hidden_mlp(*exact_leaves, c.double(), return_sum, return_halvings=True)
    assert int(k) == exact_k
    exact.backward(grad.double())
    if dtype == torch.float32:
        assert rel_error(out, exact) <= 1e-5
    tol = 1e-4 if dtype == torch.float32 else 8e-2  # bfloat16 through three products of 128 to 300 terms
    for got, want in zip(leaves, exact_leaves):
        assert rel_error(got.grad, want.grad) <= tol


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("rows,features", [(64, 20), (300, 128)])  # the single-block and the multi-kernel path
def test_cuda_graph_capture_and_replay(rows, features):
    m = FixedHiddenMLP(features).cuda()
    x = torch.rand(rows, features, device="cuda")
    m(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = m(x)
    x.copy_(torch.rand(rows, features, device="cuda") * 10)
    graph.replay()
    expected = ref.fixed_hidden_mlp(x, m.linear.weight, m.linear.bias, m.rand_weight)
    assert rel_error(out, expected) <= 1e-5
