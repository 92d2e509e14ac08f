"""fastlayers.functional.center / Centered against the plain-PyTorch
reference: every dim form, dtypes, gradcheck (and gradgradcheck: centering
is linear), opcheck, accuracy with a large offset, bad inputs."""

import pytest
import torch
from torch import nn

from fastlayers import Centered
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import eager_bound, rel_error

from .checks import check_non_finite_first_element
from .conftest import CHECKED_DEVICES

OPS = torch.ops.fastlayers

# (shape, dim): whole tensor, rows, columns, middle dims, non-adjacent dims,
# negative dims, 0-d, empty, long rows that take the multi-chunk paths.
CASES = [
    ((7, 9), None),
    ((7, 9), -1),
    ((7, 9), 0),
    ((3, 4, 5), 1),
    ((3, 4, 5), (1, 2)),
    ((3, 4, 5), (0, 2)),
    ((3, 4, 5), (-1, 0)),
    ((2, 3, 4, 5), (0, 1, 3)),
    ((), None),
    ((), 0),
    ((0, 4), 1),
    ((4, 0), None),
    ((5, 1500), -1),
    ((3, 70000), 1),
    ((200000,), None),
    ((1,), 0),
]


def randn(shape, dtype, device, offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) + offset).to(device, dtype)


def as_dim(dim):
    return list(dim) if isinstance(dim, tuple) else dim


@pytest.mark.parametrize("shape,dim", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_forward_matches_float64_reference(shape, dim, dtype, device):
    x = randn(shape, dtype, device, offset=3.0)
    out = FL.center(x, dim)
    expected = ref.center(x.double(), as_dim(dim))
    assert out.shape == x.shape and out.dtype == dtype
    if expected.numel() == 0 or expected.norm() == 0:
        assert torch.equal(out.double(), expected)
        return
    if dtype in (torch.float32, torch.float64):
        tol = 1e-6 if dtype == torch.float32 else 1e-13
    else:
        tol = eager_bound(rel_error(ref.center(x, as_dim(dim)), expected))
    assert rel_error(out, expected) <= tol


def test_large_common_offset_stays_accurate(device):
    """2^22 elements of 100 + noise: the mean must be right to float32 rounding."""
    x = randn((1 << 22,), torch.float32, device, offset=100.0)
    expected = ref.center(x.double())
    assert rel_error(FL.center(x), expected) <= 1e-5
    rows = x.view(64, -1)
    assert rel_error(FL.center(rows, 1), ref.center(rows.double(), 1)) <= 1e-5


def test_non_contiguous_and_expanded_inputs(device):
    base = randn((6, 10), torch.float32, device)
    for x in (base.t(), base[:, ::2], randn((1, 10), torch.float32, device).expand(6, 10)):
        for dim in (None, 0, 1):
            expected = ref.center(x.double(), dim)
            out = FL.center(x, dim)
            assert (out.double() - expected).abs().max() <= 1e-6


def test_a_non_finite_first_element_gives_what_the_reference_gives(device):
    check_non_finite_first_element(FL.center, device)


def test_deterministic(device):
    x = randn((3, 300001), torch.float32, device, offset=5.0)
    for dim in (None, 1, 0):
        assert torch.equal(FL.center(x, dim), FL.center(x, dim))


@pytest.mark.parametrize(
    "shape,dim", [((4, 5), None), ((4, 5), 1), ((3, 4, 2), (0, 2)), ((3, 1), 0), ((0, 3), 1), ((), None)]
)
def test_gradcheck_and_gradgradcheck(shape, dim, device):
    x = randn(shape, torch.float64, device).requires_grad_()
    fn = lambda t: FL.center(t, dim)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradient_is_the_centered_gradient(device):
    x = randn((5, 8), torch.float32, device).requires_grad_()
    g = randn((5, 8), torch.float32, device, seed=1)
    (grad,) = torch.autograd.grad(FL.center(x, 1), x, g)
    assert rel_error(grad, ref.center(g.double(), 1)) <= 1e-6


def test_opcheck(device):
    for shape, dim in [((4, 5), None), ((4, 5), [1]), ((3, 4, 5), [0, 2]), ((2, 3), [-1])]:
        x = randn(shape, torch.float32, device).requires_grad_()
        torch.library.opcheck(OPS.center.default, (x, dim))


def test_chapter_example_centered_layer(device):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 128), Centered()).to(device)
    y = net(torch.rand(4, 8, device=device))
    assert abs(y.mean().item()) < 1e-6
    assert list(Centered().parameters()) == []
    assert repr(Centered(dim=(1, 2))) == "Centered(dim=(1, 2))"


@pytest.mark.parametrize("device", CHECKED_DEVICES)
def test_bad_inputs_name_the_op_and_the_problem(device):
    x = torch.randn(3, 4, device=device)
    with pytest.raises(RuntimeError, match=r"fastlayers::center: dim 2 is out of range .* 2 dimensions"):
        FL.center(x, 2)
    with pytest.raises(RuntimeError, match=r"fastlayers::center: dim 1 appears more than once"):
        FL.center(x, (1, -1))
    for bad in (x.int(), x.bool(), x.to(torch.complex64)):
        with pytest.raises(RuntimeError, match=r"fastlayers::center: argument 'input' must be a floating-point"):
            FL.center(bad)
    for dim in (1.5, "0", (0, 1.0), True):
        with pytest.raises(TypeError, match=r"fastlayers.center: dim must be None, an int or a tuple of ints"):
            FL.center(x, dim)


def test_meta_tensors_get_shapes_through_the_fake_kernel():
    assert FL.center(torch.empty(2, 3, 4, device="meta"), (0, 2)).shape == (2, 3, 4)


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    x = randn((6, 9), torch.float32, device).requires_grad_()
    fn = torch.compile(lambda t: FL.center(t, 1).square().sum(), fullgraph=True)
    fn(x).backward()
    eager = x.detach().clone().requires_grad_()
    ref.center(eager, 1).square().sum().backward()
    assert rel_error(x.grad, eager.grad) <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_graph_capture_of_whole_tensor_centering():
    x = randn((1 << 20,), torch.float32, "cuda")
    FL.center(x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = FL.center(x)
    x.copy_(randn((1 << 20,), torch.float32, "cuda", offset=2.0, seed=3))
    graph.replay()
    assert rel_error(out, ref.center(x.double())) <= 1e-5


def test_cpu_results_do_not_depend_on_the_thread_count():
    x = randn((3, 300001), torch.float32, "cpu", offset=5.0)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append([FL.center(x, dim) for dim in (None, 0, 1)])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(results[0], other))


# Strided groups whose column sums take several waves of the CPU kernel's
# bounded workspace (csrc/center/cpu.cpp, kWaveElements): wide rows cut into
# column tiles, a unit's row blocks split across waves, many units per wave.
WAVE_CASES = [((1, 100, 2**15 + 3), 1), ((50, 3, 2**16), 1), ((3, 2**16 + 1), 0), ((2, 5, 2**17 + 9), (0, 1))]


@pytest.mark.parametrize("shape,dim", WAVE_CASES)
def test_cpu_columns_in_several_waves_match_float64_for_any_thread_count(shape, dim):
    x = randn(shape, torch.float32, "cpu", offset=3.0)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(FL.center(x, dim))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], other) for other in results[1:])
    assert rel_error(results[0], ref.center(x.double(), dim)) <= 1e-6
