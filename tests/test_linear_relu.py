"""fastlayers.functional.linear_relu and its ops against the plain-PyTorch
reference: forward per dtype, gradcheck, opcheck, bad inputs, memory."""

import os
import subprocess
import sys

import pytest
import torch

from fastlayers import backends
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import eager_bound, rel_error, tolerance

from .conftest import CHECKED_DEVICES

OPS = torch.ops.fastlayers

# (input shape, out_features): odd sizes, batch 0 and 1, 1-D and 3-D input,
# and sizes that cross the kernels' block edges.
SHAPES = [
    ((2, 20), 256),
    ((1, 7), 5),
    ((0, 9), 4),
    ((13,), 11),
    ((3, 5, 17), 9),
    ((67, 130), 70),
    ((5, 0), 6),
    ((300, 513), 33),
]


def make(shape, n, dtype, device, bias=True, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = shape[-1]
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    w = (torch.randn(n, k, generator=g, dtype=torch.float64) / max(k, 1) ** 0.5).to(device, dtype)
    b = torch.randn(n, generator=g, dtype=torch.float64).to(device, dtype) if bias else None
    for t in (x, w, b):
        if t is not None:
            t.requires_grad_(requires_grad)
    return x, w, b


def low_precision_bound(x, w, b, expected):
    """At most 2x eager's own error in the same dtype (fastlayers.testing)."""
    return eager_bound(rel_error(ref.linear_relu(x, w, b), expected))


@pytest.mark.parametrize("shape,n", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_forward_matches_float64_reference(shape, n, bias, dtype, device):
    x, w, b = make(shape, n, dtype, device, bias)
    out = FL.linear_relu(x, w, b)
    expected = ref.linear_relu(x.double(), w.double(), None if b is None else b.double())
    assert out.shape == expected.shape and out.dtype == dtype and out.device == x.device
    if expected.numel() == 0:
        return
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype) or low_precision_bound(x, w, b, expected)
    assert rel_error(out, expected) <= tol


def test_non_contiguous_and_expanded_inputs(device):
    x, w, b = make((40, 24), 30, torch.float32, device)
    cases = {
        "transposed input": (x.t().contiguous().t(), w, b),
        "sliced input": (torch.randn(40, 48, device=device)[:, ::2], w, b),
        "expanded input": (torch.randn(1, 24, device=device).expand(40, 24), w, b),
        "transposed weight": (x, w.t().contiguous().t(), b),
        "strided bias": (x, w, torch.randn(60, device=device)[::2]),
        "3-D permuted input": (torch.randn(24, 5, 8, device=device).permute(1, 2, 0), w, b),
    }
    for name, (xi, wi, bi) in cases.items():
        out = FL.linear_relu(xi, wi, bi)
        assert rel_error(out, ref.linear_relu(xi.double(), wi.double(), bi.double())) <= 1e-5, name


@pytest.mark.parametrize("policy", ["auto", "fastlayers", "vendor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_propagates_like_torch_relu(policy, dtype, device):
    """On every route: the vendor's fused bias+ReLU epilogue (cuBLASLt's)
    turns NaN into 0, which torch.relu does not (seen on the H200)."""
    x, w, b = make((4, 8), 6, dtype, device)
    x[1, 3] = float("nan")
    switch = backends.cpu_gemm if device == "cpu" else backends.cuda_gemm
    with switch(policy):
        out = FL.linear_relu(x, w, b)
    assert torch.isnan(out[1]).all() and not torch.isnan(out[[0, 2, 3]]).any()


# ---- gradients ----------------------------------------------------------

GRAD_CASES = [
    ((6, 10), 7, True),
    ((6, 10), 7, False),
    ((1, 3), 5, True),
    ((0, 4), 3, True),
    ((2, 3, 9), 4, True),
    ((70, 19), 66, True),
    ((5, 0), 3, True),  # no input features: the bias gradient comes without a product
]


@pytest.mark.parametrize("shape,n,bias", GRAD_CASES)
def test_gradcheck(shape, n, bias, device):
    x, w, b = make(shape, n, torch.float64, device, bias, requires_grad=True)
    args = (x, w) if b is None else (x, w, b)
    assert torch.autograd.gradcheck(FL.linear_relu, args)


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True), (True, False, True)]
)
def test_gradcheck_partial_requires_grad(needs, device):
    x, w, b = make((9, 12), 8, torch.float64, device)
    for t, flag in zip((x, w, b), needs):
        t.requires_grad_(flag)
    assert torch.autograd.gradcheck(FL.linear_relu, (x, w, b))


def test_gradcheck_non_contiguous(device):
    x = torch.randn(12, 9, dtype=torch.float64, device=device).t().requires_grad_()  # 9 x 12, transposed
    w = torch.randn(8, 24, dtype=torch.float64, device=device)[:, ::2].requires_grad_()
    b = torch.randn(8, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(FL.linear_relu, (x, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,k,n", [(33, 40, 27), (300, 520, 270)])  # the second crosses every block edge
def test_gradients_match_reference(m, k, n, dtype, device):
    x, w, b = make((m, k), n, dtype, device, requires_grad=True)
    grad = torch.randn(m, n, dtype=torch.float64).to(device, dtype)
    got = torch.autograd.grad(FL.linear_relu(x, w, b), (x, w, b), grad)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    want = torch.autograd.grad(ref.linear_relu(xd, wd, bd), (xd, wd, bd), grad.double())
    eager = torch.autograd.grad(ref.linear_relu(x, w, b), (x, w, b), grad)
    for name, g, e, r in zip("xwb", got, eager, want):
        tol = tolerance(dtype, rel_error(e, r))
        assert rel_error(g, r) <= tol, name


def test_double_backward_raises_a_clear_error(device):
    x, w, b = make((4, 5), 3, torch.float64, device, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward .* not supported"):
        torch.autograd.gradgradcheck(FL.linear_relu, (x, w, b))


def test_saves_only_input_and_output_for_weight_grads(device):
    """Memory: a first layer (input without grad) keeps input and output only."""
    x, w, b = make((16, 32), 64, torch.float32, device)
    w.requires_grad_()
    b.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = FL.linear_relu(x, w, b)
    assert len(saved) == 2
    assert {t.data_ptr() for t in saved} == {x.data_ptr(), out.data_ptr()}


# ---- opcheck ------------------------------------------------------------


def op_samples(device):
    x, w, b = make((5, 7), 6, torch.float32, device, requires_grad=True)
    o = FL.linear_relu(x, w, b).detach()
    g = torch.randn_like(o)
    yield OPS.linear_relu.default, (x, w, b)
    yield OPS.linear_relu.default, (x.detach(), w, None)
    yield OPS.linear_relu.default, (torch.randn(2, 3, 7, device=device), w.detach(), b.detach())
    yield OPS.linear_relu_backward_input.default, (g, o, w.detach())
    yield OPS.linear_relu_backward_params.default, (g, o, x.detach(), True)
    yield OPS.linear_relu_backward_params.default, (g, o, None, True)
    yield OPS.linear_relu_backward_params.default, (g, o, x.detach(), False)


def test_opcheck(device):
    for op, args in op_samples(device):
        torch.library.opcheck(op, args)


# ---- bad inputs ---------------------------------------------------------


@pytest.mark.parametrize("device", CHECKED_DEVICES)
def test_bad_inputs_name_the_op_and_the_problem(device):
    x, w, b = make((4, 5), 3, torch.float32, device)
    cases = [
        ((x, torch.randn(3, 5, 1, device=device), b), r"'weight' must be 2-D"),
        ((x, torch.randn(3, 6, device=device), b), r"last dimension \(5\) must equal in_features"),
        ((torch.tensor(1.0, device=device), w, b), r"at least 1 dimension"),
        ((x, w, torch.randn(4, device=device)), r"'bias' must have shape \[out_features\] = \[3\]"),
        ((x.double(), w, b), r"'weight' has dtype Float but 'input' has dtype Double"),
        ((x, w, b.half()), r"'bias' has dtype Half"),
        ((x.int(), w.int(), None), r"'input' must be a floating-point tensor .* got Int"),
        ((x.bool(), w, b), r"'input' must be a floating-point tensor .* got Bool"),
        ((x.to(torch.complex64), w.to(torch.complex64), None), r"floating-point tensor .* got ComplexFloat"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=r"fastlayers::linear_relu.*" + message):
            FL.linear_relu(*args)
    with pytest.raises(
        RuntimeError, match=r"fastlayers::linear_relu: argument 'weight' must be a tensor, got an undefined"
    ):
        FL.linear_relu(x, None, b)


def test_device_mismatch_is_an_error():
    x, w, b = make((4, 5), 3, torch.float32, "cpu")
    other = "cuda" if torch.cuda.is_available() else "meta"
    with pytest.raises(RuntimeError, match=r"fastlayers::linear_relu.*'weight' is on"):
        FL.linear_relu(x, w.to(other), None)


def test_meta_tensors_get_shapes_through_the_fake_kernel():
    x, w, b = (torch.empty(s, device="meta") for s in [(2, 3, 4), (5, 4), (5,)])
    assert FL.linear_relu(x, w, b).shape == (2, 3, 5)


# ---- CUDA specifics -----------------------------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda_only
def test_cuda_runs_on_the_current_stream():
    x, w, b = make((64, 128), 96, torch.float32, "cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # keep the stream busy: a kernel on another stream would finish first
        out = FL.linear_relu(x, w, b)
        expected = ref.linear_relu(x, w, b)
    stream.synchronize()
    assert rel_error(out, expected) <= 1e-5


@cuda_only
def test_cuda_graph_capture_and_replay():
    x, w, b = make((8, 32), 16, torch.float32, "cuda")
    FL.linear_relu(x, w, b)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = FL.linear_relu(x, w, b)
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert rel_error(out, ref.linear_relu(x, w, b)) <= 1e-5


def test_cuda_gemm_policy_is_scoped_and_checked():
    before = OPS.set_cuda_gemm_policy(0)
    assert before == 0
    with backends.cuda_gemm("vendor"):
        assert OPS.set_cuda_gemm_policy(2) == 2
        with backends.cuda_gemm("fastlayers"):
            assert OPS.set_cuda_gemm_policy(1) == 1
        assert OPS.set_cuda_gemm_policy(2) == 2
    assert OPS.set_cuda_gemm_policy(0) == 0
    with pytest.raises(ValueError, match="policy must be one of"):
        with backends.cuda_gemm("cublas"):
            pass
    with pytest.raises(RuntimeError, match="set_cuda_gemm_policy: argument 'policy' must be 0"):
        OPS.set_cuda_gemm_policy(7)


def test_cuda_experimental_switch_is_scoped_checked_and_read_from_the_environment():
    default = OPS.set_cuda_experimental_kernels(0)
    assert default == 54  # tensor_core_backward, float_warp_tiled, wgmma_wide, split_k_float32: the H200's
    OPS.set_cuda_experimental_kernels(default)
    assert backends._experimental_flags(backends.CUDA_DEFAULT_KERNELS) == default
    with backends.cuda_experimental("split_k"):
        assert OPS.set_cuda_experimental_kernels(1) == 1
        with backends.cuda_experimental("all"):
            assert OPS.set_cuda_experimental_kernels(127) == 127
        with backends.cuda_experimental():
            assert OPS.set_cuda_experimental_kernels(0) == 0
        with backends.cuda_experimental("none"):
            assert OPS.set_cuda_experimental_kernels(0) == 0
        assert OPS.set_cuda_experimental_kernels(1) == 1
    assert OPS.set_cuda_experimental_kernels(default) == default
    with pytest.raises(ValueError, match="kernels must be 'all', 'none' or among"):
        with backends.cuda_experimental("tcgen05"):
            pass
    with backends.cuda_experimental("float_warp_tiled", "split_k"):
        assert OPS.set_cuda_experimental_kernels(5) == 5
    with pytest.raises(RuntimeError, match="argument 'flags' must be a bit set within 127"):
        OPS.set_cuda_experimental_kernels(128)
    script = "import torch, fastlayers; print(torch.ops.fastlayers.set_cuda_experimental_kernels(0))"
    for value, expected in (
        ("tensor_core_backward", "2"),
        ("split_k,float_warp_tiled", "5"),
        ("wgmma", "8"),
        ("wgmma_wide", "16"),
        ("split_k_float32", "32"),
        ("float_warp_pipelined", "64"),
        ("all", "127"),
        ("none", "0"),
        (None, "54"),
    ):
        env = {k: v for k, v in os.environ.items() if k != "FASTLAYERS_CUDA_EXPERIMENTAL"}
        if value is not None:
            env["FASTLAYERS_CUDA_EXPERIMENTAL"] = value
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected, (value, result.stdout)
    env = dict(os.environ, FASTLAYERS_CUDA_EXPERIMENTAL="split_k,tcgen05")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "FASTLAYERS_CUDA_EXPERIMENTAL names an unknown kernel 'tcgen05'" in result.stderr


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape", [(64, 512, 512), (67, 300, 72), (300, 136, 200), (4096, 256, 256), (1536, 1536, 1536), (1540, 1500, 1532)]
)
def test_cuda_experimental_kernels_match_the_reference(dtype, shape):
    """Every switched kernel at once ("all": split-K, the tensor-core
    backward, the pipelined warp-tiled float32 kernel and, where built for
    sm_90a, wgmma) on the GPU: few output tiles with deep
    reductions, odd sizes, a batch deep enough to split the weight gradient,
    and products with enough 128x128 tiles for every SM (the last with edges
    in every tile dimension); forward and backward against float64, and
    bitwise repeatable."""
    rows, k, n = shape
    x, w, b = make((rows, k), n, dtype, "cuda", requires_grad=True)
    grad = torch.randn(rows, n, device="cuda", dtype=dtype)
    results = []
    with backends.cuda_gemm("fastlayers"), backends.cuda_experimental("all"):
        for _ in range(2):
            out = FL.linear_relu(x, w, b)
            results.append((out, *torch.autograd.grad(out, (x, w, b), grad)))
    for first, second in zip(*results):
        assert torch.equal(first, second)
    out, gx, gw, gb = results[0]
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    expected = ref.linear_relu(x64, w64, b64)
    expected.backward(grad.double() * (out.double() > 0))  # the kernel's own mask
    assert rel_error(out, expected) <= (1e-5 if dtype == torch.float32 else low_precision_bound(x, w, b, expected))
    masked = grad * (out > 0).to(dtype)  # eager's gradients in dtype, for the half-precision rule
    eager = (masked @ w, masked.t() @ x, masked.sum(0))
    for got, want, low in zip((gx, gw, gb), (x64.grad, w64.grad, b64.grad), eager):
        assert rel_error(got, want) <= tolerance(dtype, rel_error(low, want))


@cuda_only
def test_cuda_experimental_kernels_pipelined_float32_runs_in_every_layout():
    """float_warp_pipelined on the GPU: with enough 128x128 tiles for every
    SM (edges in every tile dimension), the forward and both backward
    products run the pipelined warp-tiled kernel in their operand layouts
    (the profiler names them), bitwise equal to the plain warp-tiled kernel
    (the same sums in the same order) and within float32's bound."""
    x, w, b = make((1540, 1500), 1532, torch.float32, "cuda", requires_grad=True)
    grad = torch.randn(1540, 1532, device="cuda")
    runs = {}
    for kernels in (("float_warp_tiled",), ("float_warp_tiled", "float_warp_pipelined")):
        with backends.cuda_gemm("fastlayers"), backends.cuda_experimental(*kernels):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                out = FL.linear_relu(x, w, b)
                runs[kernels] = (out, *torch.autograd.grad(out, (x, w, b), grad))
                torch.cuda.synchronize()
        names = {e.name for e in prof.events()}
        pipelined = "true" if len(kernels) == 2 else "false"
        for layouts in ("true, true", "true, false", "false, false"):  # forward, grad_input, grad_weight
            kernel = f"gemm_float_warp_tiled_kernel<{layouts}, {pipelined}>"
            assert any(kernel in name for name in names), (kernel, sorted(names))
    plain, pipelined = runs.values()
    for a, c in zip(plain, pipelined):
        assert torch.equal(a, c)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    expected = ref.linear_relu(x64, w64, b64)
    assert rel_error(pipelined[0], expected) <= 1e-5


@cuda_only
@pytest.mark.parametrize("kernels", [("all",), ("wgmma",)])
def test_cuda_experimental_kernels_capture_in_a_cuda_graph(kernels):
    """The experimental kernels in a CUDA-graph capture of a bfloat16 forward
    and backward (split-K's scratch, the staged kernels; or the wgmma path's
    masked copy of the gradient and its tensor maps, fixed at capture):
    replayed on new inputs, the graph gives exactly what an uncaptured call
    gives."""
    x, w, b = make((512, 264), 520, torch.bfloat16, "cuda", requires_grad=True)
    grad = torch.randn(512, 520, device="cuda", dtype=torch.bfloat16)

    def step():
        out = FL.linear_relu(x, w, b)
        return (out, *torch.autograd.grad(out, (x, w, b), grad))

    with backends.cuda_gemm("fastlayers"), backends.cuda_experimental(*kernels):
        step()  # warm up outside the capture (and the wgmma probe, which cannot run inside one)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = step()
        with torch.no_grad():
            x.copy_(torch.randn_like(x))
            grad.copy_(torch.randn_like(grad))
        graph.replay()
        expected = step()
    for got, want in zip(captured, expected):
        assert torch.equal(got, want)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "switch,shape,width", [("wgmma", (1000, 520, 1032), 128), ("wgmma_wide", (4000, 2520, 2312), 256)]
)
def test_cuda_wgmma_kernel_runs_where_built_for_sm90a(dtype, switch, shape, width):
    """Built with 9.0a in TORCH_CUDA_ARCH_LIST and run on compute capability
    9.0, the wgmma switches put the half-precision forward and both backward
    products on the TMA-fed wgmma kernel, in their three operand layouts, with
    128x128 tiles, or 128x256 where those fill the GPU (every product of the
    second shape, with partial tiles at every edge); the profiler names the
    kernels that ran; results within the rule."""
    from fastlayers import _library

    if torch.cuda.get_device_capability() != (9, 0) or "9.0a" not in _library.CUDA_ARCH_LIST.split(";"):
        pytest.skip(f"needs an sm_90a build (this one: {_library.CUDA_ARCH_LIST!r}) on compute capability 9.0")
    rows, k, n = shape
    x, w, b = make((rows, k), n, dtype, "cuda", requires_grad=True)
    grad = torch.randn(rows, n, device="cuda", dtype=dtype)
    with backends.cuda_gemm("fastlayers"), backends.cuda_experimental(switch):
        with torch.no_grad():
            FL.linear_relu(x, w, b)  # the one-time probe
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            out = FL.linear_relu(x, w, b)
            gx, gw, gb = torch.autograd.grad(out, (x, w, b), grad)
            torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events()})
    type_name = "c10::BFloat16" if dtype == torch.bfloat16 else "c10::Half"
    for layouts in ("true, true", "true, false", "false, false"):  # forward, grad_input, grad_weight
        kernel = f"gemm_wgmma_tma_kernel<{type_name}, {layouts}, {width}>"
        assert any(kernel in name for name in names), (kernel, names)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    expected = ref.linear_relu(x64, w64, b64)
    assert rel_error(out, expected) <= low_precision_bound(x, w, b, expected)
    expected.backward(grad.double() * (out.double() > 0))  # the kernel's own mask
    masked = grad * (out > 0).to(dtype)
    for got, want, low in zip(
        (gx, gw, gb), (x64.grad, w64.grad, b64.grad), (masked @ w, masked.t() @ x, masked.sum(0))
    ):
        assert rel_error(got, want) <= tolerance(dtype, rel_error(low, want))


@cuda_only
@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_both_gemm_routes_match_the_reference(policy, dtype):
    x, w, b = make((3, 70, 96), 130, dtype, "cuda", requires_grad=True)
    grad = torch.randn(3, 70, 130, device="cuda", dtype=dtype)
    with backends.cuda_gemm(policy):
        out = FL.linear_relu(x, w, b)
        out.backward(grad)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    expected = ref.linear_relu(x64, w64, b64)
    expected.backward(grad.double() * (out.double() > 0))  # the same mask as the kernel's output
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel_error(out, expected) <= (1e-5 if dtype == torch.float32 else low_precision_bound(x, w, b, expected))
    for got, want in ((x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        assert rel_error(got, want) <= tol


# ---- autocast -----------------------------------------------------------


def test_autocast_runs_in_the_autocast_dtype_like_nn_linear(device):
    x, w, b = make((6, 24), 10, torch.float32, device, requires_grad=True)
    dtype = torch.bfloat16
    with torch.autocast(device_type=device, dtype=dtype):
        out = FL.linear_relu(x, w, b)
        eager = ref.linear_relu(x, w, b)
    assert out.dtype == eager.dtype == dtype
    expected = ref.linear_relu(x.double(), w.double(), b.double())
    assert rel_error(out, expected) <= eager_bound(rel_error(eager, expected))
    out.float().sum().backward()
    assert w.grad.dtype == torch.float32 and x.grad.dtype == torch.float32


def test_cpu_results_do_not_depend_on_the_thread_count():
    x, w, b = make((300, 520), 270, torch.float32, "cpu", requires_grad=True)
    g = torch.randn(300, 270)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with backends.cpu_gemm("fastlayers"):  # the vendor's blocking may follow the thread count
                out = FL.linear_relu(x, w, b)
                results.append((out, *torch.autograd.grad(out, (x, w, b), g)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(results[0], other))
