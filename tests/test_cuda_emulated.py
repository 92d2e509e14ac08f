"""The CUDA kernels, run on the CPU under tests/cuda_emulation (no GPU needed):
every launch path of every op against the float64 reference.

These check the kernels' logic (indexing, tiling edges, reductions, barriers,
launch configurations, the halving count); they do not replace the CUDA
tests in the other files, which run the same ops on a real GPU. Outputs are
allocated NaN-filled (deterministic mode), so an element a kernel forgets to
write fails the comparison.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as TF

from fastlayers import reference as ref
from fastlayers.testing import FIXED_TOLERANCE, eager_bound, rel_error, tolerance

from .checks import check_half_precision, check_non_finite_first_element
from .cuda_emulation import build

LOW = (torch.float16, torch.bfloat16)
ALL = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


UNDER_ASAN = os.environ.get("FASTLAYERS_EMULATION_ASAN") == "1"


@pytest.fixture(scope="module")
def cuda_ops():
    """The emulated extension with the switched kernels off: the tests of
    fastlayers' first kernels see those; each switched kernel's tests set
    their own bits (the `experimental` fixture). Restored after the module:
    the switch is an inline function's static, one object for both
    libraries in the process (the real extension's tests see it too)."""
    ops = build.load(sanitize=UNDER_ASAN)
    previous = ops.set_cuda_experimental_kernels(0)
    yield ops
    ops.set_cuda_experimental_kernels(previous)


@pytest.mark.skipif(UNDER_ASAN, reason="this is the sanitized run itself")
def test_no_kernel_reads_or_writes_out_of_bounds_in_either_thread_order():
    """Every test below again (the wgmma ones in bfloat16 only: the slowest
    under the sanitizer), with the kernels built with AddressSanitizer
    (tensors live in CPU memory here, so a read or write past any input,
    output or scratch buffer stops the run with a report) and the emulator's
    threads scheduled highest-first instead of lowest-first (a missing
    barrier that one order hides, the other may show)."""
    env = build.asan_environment()
    if env is None:
        pytest.skip("the C++ compiler has no AddressSanitizer runtime")
    env["FASTLAYERS_EMULATION_ORDER"] = "reverse"
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        # --capture=no: a sanitizer stops the process, and its report must reach our stderr
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "--capture=no",
            "-p",
            "no:cacheprovider",
            os.path.abspath(__file__),
            "-k",
            "not out_of_bounds_in_either and not (wgmma and dtype0)",
        ],
        cwd=os.path.dirname(here),
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    report = result.stderr[-6000:] + result.stdout[-2000:]
    assert result.returncode == 0 and "Sanitizer" not in report and "runtime error" not in report, report


# The emulated GPUs: an H100/H200 (sm_90, 132 SMs: tensor cores, cp.async)
# and a T4-like sm_75 with 40 SMs (no bfloat16/float16 mma.sync path, so the
# SIMT kernels take half precision; other SM-count branches).
PROFILES = {"sm90": (9, 0, 132), "sm75": (7, 5, 40)}


@pytest.fixture(params=list(PROFILES))
def gpu(request, cuda_ops):
    """Runs the test on each emulated GPU in turn."""
    previous = cuda_ops.emulator_set_device(*PROFILES[request.param])
    yield request.param
    cuda_ops.emulator_set_device(*previous)


def counters(cuda_ops):
    launches, blocks, mma, ldmatrix_trans, wgmma = cuda_ops.emulator_counters()
    return {"launches": launches, "blocks": blocks, "mma": mma, "ldmatrix_trans": ldmatrix_trans, "wgmma": wgmma}


@pytest.fixture(autouse=True)
def _nan_filled_empty():
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(old)


@pytest.mark.parametrize(
    "case,error",
    [
        ("barrier_after_exit", "__syncthreads\\(\\) in block .* after some of its threads exited"),
        ("barrier_in_half_the_block", "__syncthreads\\(\\) in block .* after some of its threads exited"),
        ("shuffle_in_half_a_warp", "warp collective in warp 0 .* after some of its lanes exited"),
        ("shuffle_after_lane_exit", "warp collective in warp 0 .* after some of its lanes exited"),
        ("block_too_large", "invalid launch .* too many threads per block"),
        ("grid_too_large", "invalid launch .* grid too large"),
        ("too_much_dynamic_shared_memory", "invalid launch .* above 48 KB"),
        ("shared_above_opt_in", "invalid launch .* above the kernel's opt-in"),
        ("wgmma_without_fence", "wgmma without a wgmma.fence"),
        ("mbarrier_never_completes", "cannot make progress: .* 64 on an mbarrier phase that cannot complete"),
    ],
)
def test_emulator_rejects_what_the_hardware_leaves_undefined_or_refuses(cuda_ops, case, error):
    assert cuda_ops.emulator_self_test("block_sum") == sum(range(64))  # rule-abiding kernels still run
    assert cuda_ops.emulator_self_test("warp_sum") == sum(range(32))
    assert cuda_ops.emulator_self_test("shared_read_before_write") == -1  # shared memory starts as garbage
    assert cuda_ops.emulator_self_test("shared_within_opt_in") == 31  # above 48 KB after cudaFuncSetAttribute
    assert cuda_ops.emulator_self_test("mbarrier_handoff") == 42  # a waiter blocks until the phase completes
    with pytest.raises(RuntimeError, match=error):
        cuda_ops.emulator_self_test(case)


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def bound(dtype, eager, exact):
    """fastlayers.testing's rule, given eager's result in `dtype`."""
    return tolerance(dtype, rel_error(eager, exact))


# ---------------------------------------------------------------- linear_relu
# (rows, in_features, out_features): the small-row kernel (<= 8 rows), the
# tiled kernel across tile edges, several column tiles, empty reductions.
LINEAR_SHAPES = [
    (2, 20, 256),
    (1, 7, 5),
    (8, 33, 9),
    (9, 20, 70),
    (67, 130, 70),
    (130, 17, 129),
    (5, 0, 6),
    (64, 64, 0),
]


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES)
@pytest.mark.parametrize("dtype", ALL)
def test_linear_relu_forward(cuda_ops, gpu, m, k, n, dtype):
    x, w, b = (
        randn(m, k, dtype=dtype),
        randn(n, k, dtype=dtype, seed=1, scale=k**-0.5 if k else 1),
        randn(n, dtype=dtype, seed=2),
    )
    for bias in (b, None):
        out = cuda_ops.linear_relu(x, w, bias)
        exact = ref.linear_relu(x.double(), w.double(), None if bias is None else bias.double())
        assert out.shape == (m, n) and out.dtype == dtype
        if out.numel():
            assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(x, w, bias), exact)


@pytest.mark.parametrize("dtype", LOW)
def test_the_device_profile_picks_the_kernels(cuda_ops, gpu, dtype):
    """The emulated device reaches the kernels' branches: half precision uses
    mma.sync only from sm_80 on, and whether a float32 product takes the
    128x128 tiles depends on the SM count (64 such tiles here)."""
    previous = cuda_ops.set_cuda_gemm_policy(1)  # fastlayers' kernels at every size
    try:
        x, w, b = randn(130, 40, dtype=dtype), randn(129, 40, dtype=dtype, seed=1, scale=0.2), randn(129, dtype=dtype)
        before = counters(cuda_ops)
        out = cuda_ops.linear_relu(x, w, b)
        mma = counters(cuda_ops)["mma"] - before["mma"]
        x32, w32, b32 = randn(1024, 8), randn(1024, 8, seed=1), randn(1024, seed=2)
        before = counters(cuda_ops)
        out32 = cuda_ops.linear_relu(x32, w32, b32)
        blocks = counters(cuda_ops)["blocks"] - before["blocks"]
    finally:
        cuda_ops.set_cuda_gemm_policy(previous)
    assert (mma > 0) == (gpu == "sm90"), mma
    exact = ref.linear_relu(x.double(), w.double(), b.double())
    assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(x, w, b), exact)
    assert blocks == (64 if gpu == "sm75" else 256), blocks  # 128x128 tiles below 64 SMs, else 64x64
    assert rel_error(out32, ref.linear_relu(x32.double(), w32.double(), b32.double())) <= 1e-5


def test_linear_relu_forward_strided_and_expanded(cuda_ops):
    w, b = randn(30, 24, seed=1), randn(60, seed=2)[::2]
    for x in (randn(24, 40).t(), randn(40, 48)[:, ::2], randn(1, 24).expand(40, 24)):
        for wi in (w, w.t().contiguous().t()):
            out = cuda_ops.linear_relu(x, wi, b)
            assert rel_error(out, ref.linear_relu(x.double(), wi.double(), b.double())) <= 1e-5


@pytest.mark.parametrize("copies_land", ["late", "early"])
@pytest.mark.parametrize("dtype", LOW)
def test_linear_relu_tensor_core_async_copies(cuda_ops, dtype, copies_land, monkeypatch):
    """Half types with k-contiguous, 16-byte aligned operands take the
    cp.async-pipelined tensor-core kernel: reduction tails, tile edges, and
    rows shorter than their stride (partial, zero-filled copies). Copies
    landing as late or as early as the hardware allows must not matter."""
    monkeypatch.setenv("FASTLAYERS_EMULATION_CP_ASYNC", copies_land)
    cases = [
        (randn(67, 136, dtype=dtype), randn(70, 136, dtype=dtype, seed=1, scale=0.1)),
        (randn(130, 40, dtype=dtype), randn(129, 40, dtype=dtype, seed=1, scale=0.2)),
        (randn(50, 24, dtype=dtype)[:, :13], randn(5, 24, dtype=dtype, seed=1)[:, :13]),
        (randn(50, 16, dtype=dtype)[:, :13], randn(1, 13, dtype=dtype, seed=1)),
    ]
    for x, w in cases:
        b = randn(w.shape[0], dtype=dtype, seed=2)
        out = cuda_ops.linear_relu(x, w, b)
        exact = ref.linear_relu(x.double(), w.double(), b.double())
        assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(x, w, b), exact), (x.shape, w.shape)


def test_linear_relu_large_float_tiles(cuda_ops, gpu):
    """Products with enough 128x128 tiles for every SM take the double-buffered
    float32 kernel: forward, the masked backward-input product, and the
    weight gradient with its row sums (the bias gradient)."""
    # forward: 1500 x 1500 outputs, a 13-deep reduction
    x, w, b = randn(1500, 13), randn(1500, 13, seed=1), randn(1500, seed=2)
    assert rel_error(cuda_ops.linear_relu(x, w, b), ref.linear_relu(x.double(), w.double(), b.double())) <= 1e-5
    # backward input: (grad * mask)[1500, 13] @ weight[13, 1500]
    x, w, b = randn(1500, 1500, scale=0.03), randn(13, 1500, seed=1), randn(13, seed=2)
    out = cuda_ops.linear_relu(x, w, b)
    grad = randn(1500, 13, seed=3)
    masked = grad.double() * (out.double() > 0)
    assert rel_error(cuda_ops.linear_relu_backward_input(grad, out, w), masked @ w.double()) <= 1e-5
    # weight and bias gradients: (grad * mask).T[1500, 7] @ x[7, 1500]
    x, w, b = randn(7, 1500), randn(1500, 1500, seed=1, scale=1500**-0.5), randn(1500, seed=2)
    out = cuda_ops.linear_relu(x, w, b)
    grad = randn(7, 1500, seed=3)
    masked = grad.double() * (out.double() > 0)
    grad_weight, grad_bias = cuda_ops.linear_relu_backward_params(grad, out, x, True)
    assert rel_error(grad_weight, masked.t() @ x.double()) <= 1e-5
    assert rel_error(grad_bias, masked.sum(0)) <= 1e-5


# ------------------------------------------- switched kernels (backends.cuda_experimental)
SPLIT_K, TENSOR_CORE_BACKWARD, FLOAT_WARP_TILED, WGMMA, WGMMA_WIDE = 1, 2, 4, 8, 16  # backends.CUDA_EXPERIMENTAL's bits
FLOAT_WARP_PIPELINED = 64


@pytest.fixture
def experimental(cuda_ops):
    """Sets the experimental-kernel bits for the test's calls (restored after),
    with fastlayers' kernels at every size."""
    previous_policy = cuda_ops.set_cuda_gemm_policy(1)
    previous = cuda_ops.set_cuda_experimental_kernels(0)
    yield cuda_ops.set_cuda_experimental_kernels
    cuda_ops.set_cuda_experimental_kernels(previous)
    cuda_ops.set_cuda_gemm_policy(previous_policy)


def aligned(rows, cols, dtype, seed=0, scale=1.0, pad=0):
    """A [rows, cols] view whose rows are 16-byte aligned and `pad` elements
    longer than `cols` rounded up to 8 (a slice, as of a larger tensor)."""
    stride = -(-cols // 8) * 8 + pad
    return randn(rows, stride, dtype=dtype, seed=seed, scale=scale)[:, :cols]


def linear_relu_products(cuda_ops, x, w, b, grad):
    """The forward and both backward products, and their float64 references
    (with the kernel's own mask) and eager counterparts in x's dtype."""
    out = cuda_ops.linear_relu(x, w, b)
    grad_input = cuda_ops.linear_relu_backward_input(grad, out, w)
    grad_weight, grad_bias = cuda_ops.linear_relu_backward_params(grad, out, x, True)
    mask = out.double() > 0
    masked = grad.double() * mask
    exact = (
        ref.linear_relu(x.double(), w.double(), b.double()),
        masked @ w.double(),
        masked.t() @ x.double(),
        masked.sum(0),
    )
    masked_low = grad * mask.to(grad.dtype)
    eager = (ref.linear_relu(x, w, b), masked_low @ w, masked_low.t() @ x, masked_low.sum(0))
    return (out, grad_input, grad_weight, grad_bias), exact, eager


def check_products(got, exact, eager, dtype, what):
    for name, g, e, low in zip(("forward", "grad_input", "grad_weight", "grad_bias"), got, exact, eager):
        assert g.dtype == dtype and g.shape == e.shape, (what, name)
        if g.numel():
            assert rel_error(g, e) <= tolerance(dtype, rel_error(low, e)), (what, name, rel_error(g, e))


# (rows, in_features, out_features): reductions deep enough to split, with
# few output tiles; the last splits into slices of unequal depth.
SPLIT_SHAPES = [(67, 300, 70), (130, 257, 20), (40, 96, 300), (64, 512, 64)]


@pytest.mark.parametrize("m,k,n", SPLIT_SHAPES)
@pytest.mark.parametrize("dtype", ALL)
def test_split_k_matches_float64_and_takes_its_two_launches(cuda_ops, experimental, m, k, n, dtype):
    """Split-K (experimental): every product with few output tiles and a deep
    reduction (the forward's over in_features, the backward's over both
    feature counts and the batch, with the bias gradient's row sums) splits,
    costs exactly one extra launch (the in-order sum), stays within the
    float64 rule and is bitwise repeatable."""
    x, w, b = randn(m, k, dtype=dtype), randn(n, k, dtype=dtype, seed=1, scale=k**-0.5), randn(n, dtype=dtype, seed=2)
    grad = randn(m, n, dtype=dtype, seed=3)
    experimental(0)
    launches = counters(cuda_ops)["launches"]
    unsplit, _, _ = linear_relu_products(cuda_ops, x, w, b, grad)
    plain_launches = counters(cuda_ops)["launches"] - launches
    experimental(SPLIT_K)
    launches = counters(cuda_ops)["launches"]
    got, exact, eager = linear_relu_products(cuda_ops, x, w, b, grad)
    split_launches = counters(cuda_ops)["launches"] - launches
    check_products(got, exact, eager, dtype, "split")
    # A reduction splits from two slices of 64 on: the forward's over k, the
    # input gradient's over n, the weight gradient's over m.
    splits = (k >= 128) + (n >= 128) + (m >= 128)
    assert split_launches - plain_launches == splits, (split_launches, plain_launches)
    again, _, _ = linear_relu_products(cuda_ops, x, w, b, grad)
    assert all(torch.equal(a, c) for a, c in zip(got, again)), "split-K not deterministic"
    if dtype in (torch.float32, torch.float64):  # the split changes only the order of the sums
        for a, c in zip(got, unsplit):
            assert rel_error(a, c) <= FIXED_TOLERANCE[dtype]


# (rows, in_features, out_features) across tile edges: 128x128 output tiles,
# 32-deep steps, 8-element vectors (odd sizes end in partial vectors). The
# output gradient and the output (the mask) are contiguous, as autograd
# gives them, so their rows need out_features a multiple of 8 to be read in
# vectors; x and the weight are padded views where their sizes are odd.
STAGED_SHAPES = [(67, 136, 72), (130, 40, 136), (9, 13, 24), (200, 72, 256)]


@pytest.mark.parametrize("m,k,n", STAGED_SHAPES)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("split", [False, True])
def test_tensor_core_backward_in_all_four_operand_layouts(cuda_ops, experimental, m, k, n, dtype, split):
    """The experimental tensor-core kernel for masked and transposed operands.
    Row-major x and weight give the backward's two layouts (grad_input: A
    k-contiguous with the mask, B n-contiguous; grad_weight: both m/n-
    contiguous, with the row sums), and a column-major x or weight the other
    two (forward: A m-contiguous; grad_input: B k-contiguous). Each is within
    the half-precision rule, uses ldmatrix.trans exactly where an operand is
    m/n-contiguous, and is the same with split-K on (which must not matter)."""
    experimental(TENSOR_CORE_BACKWARD | (SPLIT_K if split else 0))
    w = aligned(n, k, dtype, seed=1, scale=k**-0.5, pad=8)
    b = randn(n, dtype=dtype, seed=2)
    grad = randn(m, n, dtype=dtype, seed=3)
    layouts = {
        "row-major x and weight": (aligned(m, k, dtype), w),
        "column-major x": (aligned(k, m, dtype).t(), w),
        "column-major weight": (aligned(m, k, dtype), aligned(k, n, dtype, seed=1, scale=k**-0.5).t()),
    }
    for what, (x, wi) in layouts.items():
        before = counters(cuda_ops)
        got, exact, eager = linear_relu_products(cuda_ops, x, wi, b, grad)
        trans = counters(cuda_ops)["ldmatrix_trans"] - before["ldmatrix_trans"]
        check_products(got, exact, eager, dtype, what)
        assert trans > 0, what  # grad_weight reads grad transposed in every layout
    # The same products on the kernel they replace (elementwise staging).
    experimental(0)
    x, wi = layouts["column-major weight"]
    reference, _, _ = linear_relu_products(cuda_ops, x, wi, b, grad)
    experimental(TENSOR_CORE_BACKWARD)
    staged, _, _ = linear_relu_products(cuda_ops, x, wi, b, grad)
    for a, c in zip(staged, reference):  # same sums in the same order
        assert torch.equal(a, c)


@pytest.mark.parametrize("dtype", LOW)
def test_tensor_core_backward_takes_the_transposing_loads_only_where_needed(cuda_ops, experimental, dtype):
    """grad_input with a column-major weight has both operands k-contiguous:
    no ldmatrix.trans; with a row-major one, B is n-contiguous: one per warp
    per 16-wide column pair per 16-deep step. A misaligned operand or a mask
    laid out unlike the gradient, or rows of a length that is no multiple of
    8 elements, fall back to the elementwise kernel."""
    experimental(TENSOR_CORE_BACKWARD)
    m, k, n = 40, 48, 64
    grad, out = aligned(m, n, dtype, seed=3), aligned(m, n, dtype, seed=4)
    weights = {"k-contiguous": aligned(k, n, dtype, seed=1).t(), "n-contiguous": aligned(n, k, dtype, seed=1)}
    trans = {}
    for what, w in weights.items():
        before = counters(cuda_ops)["ldmatrix_trans"]
        got = cuda_ops.linear_relu_backward_input(grad, out, w)
        trans[what] = counters(cuda_ops)["ldmatrix_trans"] - before
        masked = grad.double() * (out.double() > 0)
        low = grad * (out > 0).to(dtype)
        assert rel_error(got, masked @ w.double()) <= tolerance(dtype, rel_error(low @ w, masked @ w.double()))
    # one 128x128 tile, 8 warps, 2 B pairs, 2 k-halves per 32-deep step, 2 steps (n = 64)
    assert trans == {"k-contiguous": 0, "n-contiguous": 8 * 2 * 2 * 2}, trans
    misaligned = randn(m * n + 1, dtype=dtype, seed=3)[1:].view(m, n)
    w = weights["n-contiguous"]
    out_t = aligned(n, m, dtype, seed=4).t()  # the mask column-major, the gradient row-major
    odd = randn(m, n - 2, dtype=dtype, seed=3), randn(m, n - 2, dtype=dtype, seed=4)
    for g, o, w in ((misaligned, out, w), (grad, out_t, w), (*odd, aligned(n - 2, k, dtype, seed=1))):
        before = counters(cuda_ops)["ldmatrix_trans"]
        got = cuda_ops.linear_relu_backward_input(g, o, w)
        assert counters(cuda_ops)["ldmatrix_trans"] == before
        masked = g.double() * (o.double() > 0)
        assert rel_error(got, masked @ w.double()) <= 2e-2


@pytest.fixture
def one_sm(cuda_ops):
    """An sm_90 with a single SM: every product fills it with 128x128 tiles,
    so small products reach the large-tile float32 kernels."""
    previous = cuda_ops.emulator_set_device(9, 0, 1)
    yield
    cuda_ops.emulator_set_device(*previous)


def launched(cuda_ops, kernel=None):
    """The template arguments of each launch of `kernel` since the last call
    (no kernel: every launch, by name), leaving out the wgmma probe (one
    launch per process, at the first call that may take wgmma)."""
    names = [n for n in cuda_ops.emulator_launched_kernels() if n != "wgmma_probe_kernel"]
    if kernel is None:
        return names
    return [n[len(kernel) :] for n in names if n.startswith(kernel + "<") or n == kernel]


# (rows, in_features, out_features) across the warp-tiled kernel's edges:
# 128x128 tiles, 16-deep steps, 4-float vectors (odd sizes end in partial
# vectors), several row and column tiles; out_features a multiple of 4 so
# that the contiguous output gradient and mask are read in vectors.
WARP_TILED_SHAPES = [(67, 37, 72), (130, 16, 136), (9, 13, 4), (257, 50, 260)]


@pytest.mark.parametrize("m,k,n", WARP_TILED_SHAPES)
def test_float_warp_tiled_kernel_in_all_four_operand_layouts(cuda_ops, experimental, one_sm, m, k, n):
    """The experimental warp-tiled float32 kernel on each product of the
    forward and backward, in the four operand layouts (row-major x and
    weight: forward k/k, grad_input k/n with the mask, grad_weight m/n with
    the row sums; a column-major x or weight the rest), plain and pipelined,
    against float64, and bitwise the same as the kernel it replaces: each
    output is the same sum in the same order, only the loads, the thread
    layout and when the operands reach registers differ."""
    w = aligned(n, k, torch.float32, seed=1, scale=k**-0.5, pad=4)
    b = randn(n, seed=2)
    grad = randn(m, n, seed=3)
    layouts = {
        "row-major x and weight": (
            aligned(m, k, torch.float32),
            w,
            ["true, true", "true, false", "false, false"],
        ),
        "column-major x": (aligned(k, m, torch.float32).t(), w, ["false, true", "true, false", "false, true"]),
        "column-major weight": (
            aligned(m, k, torch.float32),
            aligned(k, n, torch.float32, seed=1, scale=k**-0.5).t(),
            ["true, false", "true, true", "false, false"],
        ),
    }
    for what, (x, wi, kernels) in layouts.items():
        experimental(0)
        launched(cuda_ops)
        before, _, _ = linear_relu_products(cuda_ops, x, wi, b, grad)
        assert launched(cuda_ops, "gemm_float_large_kernel") == ["<T>"] * 3, what
        for flags, pipelined in ((FLOAT_WARP_TILED, "false"), (FLOAT_WARP_TILED | FLOAT_WARP_PIPELINED, "true")):
            experimental(flags)
            got, exact, eager = linear_relu_products(cuda_ops, x, wi, b, grad)
            want = [f"<{layout}, {pipelined}>" for layout in kernels]
            assert launched(cuda_ops, "gemm_float_warp_tiled_kernel") == want, what
            check_products(got, exact, eager, torch.float32, what)
            for name, a, c in zip(("forward", "grad_input", "grad_weight", "grad_bias"), got, before):
                assert torch.equal(a, c), (what, pipelined, name)


def test_float_warp_tiled_kernel_falls_back_where_vectors_do_not_fit(cuda_ops, experimental, one_sm):
    """A misaligned operand, a mask laid out unlike the gradient, rows of a
    length that is no multiple of 4, or no unit stride leave the product to
    the elementwise float32 kernel; a C whose rows are not 16-byte aligned
    is still written (one element at a time)."""
    experimental(FLOAT_WARP_TILED)
    m, k, n = 40, 24, 64
    grad, out = aligned(m, n, torch.float32, seed=3), aligned(m, n, torch.float32, seed=4)
    w = aligned(n, k, torch.float32, seed=1)
    misaligned = randn(m * n + 1, seed=3)[1:].view(m, n)
    out_t = aligned(n, m, torch.float32, seed=4).t()
    odd = randn(m, n - 2, seed=3), randn(m, n - 2, seed=4), aligned(n - 2, k, torch.float32, seed=1)
    strided = randn(m, 2 * n, seed=3)[:, ::2], out, w
    launched(cuda_ops)
    for g, o, wi in ((misaligned, out, w), (grad, out_t, w), odd, strided):
        got = cuda_ops.linear_relu_backward_input(g, o, wi)
        assert launched(cuda_ops, "gemm_float_large_kernel") == ["<T>"]
        masked = g.double() * (o.double() > 0)
        assert rel_error(got, masked @ wi.double()) <= FIXED_TOLERANCE[torch.float32]
    # C's rows 3 floats long: vector operands, scalar stores
    x, w3, b3 = aligned(m, k, torch.float32), aligned(3, k, torch.float32, seed=1), randn(3, seed=2)
    got = cuda_ops.linear_relu(x, w3, b3)
    assert launched(cuda_ops, "gemm_float_warp_tiled_kernel") == ["<true, true, false>"]
    assert rel_error(got, ref.linear_relu(x.double(), w3.double(), b3.double())) <= FIXED_TOLERANCE[torch.float32]


# (rows, in_features, out_features) for the wgmma kernel: 128x128 tiles,
# 64-deep stages of 8-element chunks (odd depths end in partial chunks,
# read from padded views), more stages than the ring holds (448: 7 tiles
# through 5 stages), several row and column tiles.
WGMMA_SHAPES = [(130, 200, 136), (9, 13, 24), (200, 448, 260), (64, 64, 128)]


@pytest.mark.parametrize("m,k,n", WGMMA_SHAPES)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("sms,copies_land", [(132, "late"), (2, "late"), (1, "early")])
def test_wgmma_forward_matches_float64(cuda_ops, experimental, m, k, n, dtype, sms, copies_land, monkeypatch):
    """The experimental wgmma kernels (sm_90a, emulated: the descriptors'
    bits decoded, the 128-byte swizzle applied to the addresses, products
    completed only at wgmma_wait; TMA boxes landing on mbarriers as late or
    as early as the hardware may) on the forward: the TMA-fed persistent
    kernel, with one tile per block or several (fewer SMs: the stage ring
    and its phases carry over from tile to tile), within the half-precision
    rule, one wgmma per warpgroup per 16-deep slice of each 64-deep stage."""
    monkeypatch.setenv("FASTLAYERS_EMULATION_CP_ASYNC", copies_land)
    previous = cuda_ops.emulator_set_device(9, 0, sms)
    experimental(WGMMA)
    x = aligned(m, k, dtype)
    w = aligned(n, k, dtype, seed=1, scale=k**-0.5)
    b = randn(n, dtype=dtype, seed=2)
    launched(cuda_ops)
    before, blocks, launches = (counters(cuda_ops)[c] for c in ("wgmma", "blocks", "launches"))
    for bias in (b, None):
        out = cuda_ops.linear_relu(x, w, bias)
        exact = ref.linear_relu(x.double(), w.double(), None if bias is None else bias.double())
        assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(x, w, bias), exact)
    cuda_ops.emulator_set_device(*previous)
    tiles = -(-m // 128) * -(-n // 128)
    assert launched(cuda_ops) == ["gemm_wgmma_tma_kernel<T, true, true, kBN>"] * 2
    probes = counters(cuda_ops)["launches"] - launches - 2  # the probe's one block, if this call was the first
    assert counters(cuda_ops)["blocks"] - blocks - probes == 2 * min(tiles, sms)  # persistent
    assert counters(cuda_ops)["wgmma"] - before == 2 * tiles * 2 * -(-k // 64) * 4


@pytest.mark.parametrize("dtype", LOW)
def test_wgmma_forward_splits_and_falls_back(cuda_ops, experimental, dtype):
    """With split-K on, a deep forward with one output tile runs as work
    items of (tile, slice of whole stages) on the wgmma kernel, then the
    in-order sum; without sm_90 (an sm_80 profile here), or for a misaligned
    operand, the forward stays on the mma.sync kernels."""
    x, w, b = aligned(64, 512, dtype), aligned(64, 512, dtype, seed=1, scale=512**-0.5), randn(64, dtype=dtype, seed=2)
    exact = ref.linear_relu(x.double(), w.double(), b.double())
    experimental(WGMMA | SPLIT_K)
    launched(cuda_ops)
    before, blocks = counters(cuda_ops)["wgmma"], counters(cuda_ops)["blocks"]
    out = cuda_ops.linear_relu(x, w, b)
    assert launched(cuda_ops) == ["gemm_wgmma_tma_kernel<T, true, true, kBN>", "split_k_sum_kernel<T, Acc>"]
    assert counters(cuda_ops)["wgmma"] - before == 8 * 4 * 2  # 8 stages (one per slice), 4 slices, 2 warpgroups
    sum_blocks = counters(cuda_ops)["blocks"] - blocks - 8  # 8 persistent blocks: one per (tile, slice)
    assert 0 < sum_blocks <= 4096
    assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(x, w, b), exact)
    experimental(WGMMA)
    previous = cuda_ops.emulator_set_device(8, 0, 108)
    try:
        cuda_ops.linear_relu(x, w, b)
    finally:
        cuda_ops.emulator_set_device(*previous)
    assert launched(cuda_ops) == ["gemm_tensor_core_async_kernel<T>"]
    misaligned = randn(64 * 512 + 1, dtype=dtype)[1:].view(64, 512)
    out = cuda_ops.linear_relu(misaligned, w, b)
    assert launched(cuda_ops) == ["gemm_tensor_core_kernel<T>"]
    exact = ref.linear_relu(misaligned.double(), w.double(), b.double())
    assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(misaligned, w, b), exact)
    # one output feature: W's one row may have any stride (13 here), which the TMA's map must not take as is
    x13, w13, b13 = aligned(130, 13, dtype), randn(1, 13, dtype=dtype, seed=1), randn(1, dtype=dtype, seed=2)
    assert w13.data_ptr() % 16 == 0
    out = cuda_ops.linear_relu(x13, w13, b13)
    assert launched(cuda_ops) == ["gemm_wgmma_tma_kernel<T, true, true, kBN>"]
    exact = ref.linear_relu(x13.double(), w13.double(), b13.double())
    assert rel_error(out, exact) <= bound(dtype, ref.linear_relu(x13, w13, b13), exact)
    # an empty reduction (no tensor map of zero columns): bias and ReLU alone, on the mma.sync kernel
    x0, w0 = randn(130, 0, dtype=dtype), randn(24, 0, dtype=dtype, seed=1)
    b0 = randn(24, dtype=dtype, seed=2)
    out = cuda_ops.linear_relu(x0, w0, b0)
    assert not [name for name in launched(cuda_ops) if "wgmma" in name]
    assert torch.equal(out, torch.relu(b0).expand(130, 24))


# (rows, in_features, out_features) for the wgmma backward: out_features a
# multiple of 8 (the contiguous output gradient and mask read in vectors);
# a weight gradient reducing over more stages than the ring holds (390 rows:
# 7 through 5); one row (the weight gradient's reduction one k deep).
WGMMA_BACKWARD_SHAPES = [(130, 200, 136), (9, 13, 24), (390, 24, 136), (1, 16, 24)]


@pytest.mark.parametrize("m,k,n", WGMMA_BACKWARD_SHAPES)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("sms,copies_land,wide", [(132, "late", False), (1, "early", False), (1, "late", True)])
def test_wgmma_in_all_four_operand_layouts(cuda_ops, experimental, m, k, n, dtype, sms, copies_land, wide, monkeypatch):
    """The TMA-fed wgmma kernel on every product of the forward and backward
    (emulated, as above): row-major x and weight give grad_input A k-major
    with the mask, B n-major, and grad_weight both m/n-major with the row
    sums (the bias gradient); a column-major x or weight the other layouts.
    The TMA writes m/n-major tiles as they are and wgmma reads them with its
    transpose bit; a mask is applied in one copy of the gradient first. Each
    product is within the half-precision rule and bitwise repeatable, with
    128x128 tiles or (wgmma_wide, one SM: every product fills it) 128x256
    ones: one wgmma m64nNk16 per warpgroup per 16-deep slice of each tile."""
    monkeypatch.setenv("FASTLAYERS_EMULATION_CP_ASYNC", copies_land)
    previous = cuda_ops.emulator_set_device(9, 0, sms)
    experimental(WGMMA_WIDE if wide else WGMMA)
    width = 256 if wide else 128

    def wgmmas(rows, cols, depth):  # tiles x 64-deep stages x 4 slices x 2 warpgroups
        return -(-rows // 128) * -(-cols // width) * -(-depth // 64) * 4 * 2

    products = wgmmas(m, k, n) + wgmmas(n, k, m) + (wgmmas(m, n, k) if m > 1 else 0)
    w = aligned(n, k, dtype, seed=1, scale=k**-0.5)
    b = randn(n, dtype=dtype, seed=2)
    grad = randn(m, n, dtype=dtype, seed=3)
    masked = "masked_copy_kernel<T>"
    layouts = {  # x, weight, the launches of forward, grad_input, grad_weight
        "row-major x and weight": (
            aligned(m, k, dtype),
            w,
            ["true, true", "true, false", "false, false"],
        ),
        "column-major x": (aligned(k, m, dtype).t(), w, ["false, true", "true, false", "false, true"]),
        "column-major weight": (
            aligned(m, k, dtype),
            aligned(k, n, dtype, seed=1, scale=k**-0.5).t(),
            ["true, false", "true, true", "false, false"],
        ),
    }
    try:
        for what, (x, wi, kernels) in layouts.items():
            launched(cuda_ops)
            before = counters(cuda_ops)["wgmma"]
            got, exact, eager = linear_relu_products(cuda_ops, x, wi, b, grad)
            assert counters(cuda_ops)["wgmma"] - before == products, what
            names = launched(cuda_ops)
            tma = [f"gemm_wgmma_tma_kernel<T, {kernel}, kBN>" for kernel in kernels]
            forward = "gemm_small_m_kernel<T, Acc>" if m == 1 else tma[0]  # one row: the small-rows kernel
            expected = [forward, masked, tma[1], masked, tma[2]]
            assert names == expected, (what, names)
            check_products(got, exact, eager, dtype, what)
        again, _, _ = linear_relu_products(cuda_ops, x, wi, b, grad)
        assert all(torch.equal(a, c) for a, c in zip(got, again)), "not repeatable"
    finally:
        cuda_ops.emulator_set_device(*previous)


@pytest.mark.parametrize("dtype", LOW)
def test_wgmma_backward_splits_and_leaves_unaligned_products_to_the_mma_sync_kernels(cuda_ops, experimental, dtype):
    """With split-K on, a backward product that splits (the weight gradient's
    one tile, 512 deep: eight slices of one stage) runs its slices on the
    wgmma kernel too, with the bias gradient's row sums per slice added up
    in order; a gradient whose rows are not 16-byte aligned (out_features
    30) never reaches wgmma."""
    m, k, n = 512, 64, 64
    x, w, b = aligned(m, k, dtype), aligned(n, k, dtype, seed=1, scale=k**-0.5), randn(n, dtype=dtype, seed=2)
    grad = randn(m, n, dtype=dtype, seed=3)
    experimental(WGMMA | SPLIT_K)
    launched(cuda_ops)
    got, exact, eager = linear_relu_products(cuda_ops, x, w, b, grad)
    assert launched(cuda_ops) == [
        "gemm_wgmma_tma_kernel<T, true, true, kBN>",
        "masked_copy_kernel<T>",
        "gemm_wgmma_tma_kernel<T, true, false, kBN>",
        "masked_copy_kernel<T>",
        "gemm_wgmma_tma_kernel<T, false, false, kBN>",
        "split_k_sum_kernel<T, Acc>",
    ]
    check_products(got, exact, eager, dtype, "split")
    again, _, _ = linear_relu_products(cuda_ops, x, w, b, grad)
    assert all(torch.equal(a, c) for a, c in zip(got, again)), "not repeatable"
    experimental(WGMMA)
    launched(cuda_ops)
    w30, b30, grad30 = aligned(30, k, dtype, seed=1), randn(30, dtype=dtype, seed=2), randn(m, 30, dtype=dtype, seed=3)
    got, exact, eager = linear_relu_products(cuda_ops, x, w30, b30, grad30)
    assert launched(cuda_ops) == ["gemm_wgmma_tma_kernel<T, true, true, kBN>"] + ["gemm_tensor_core_kernel<T>"] * 2
    check_products(got, exact, eager, dtype, "unaligned gradient")
    # no input features: the weight gradient is empty, its row sums (the bias gradient) are still due
    x0, w0, b0, grad0 = (
        randn(1, 0, dtype=dtype),
        randn(n, 0, dtype=dtype),
        randn(n, dtype=dtype),
        randn(1, n, dtype=dtype),
    )
    got, exact, eager = linear_relu_products(cuda_ops, x0, w0, b0, grad0)
    assert not [name for name in launched(cuda_ops) if "wgmma" in name]
    check_products(got, exact, eager, dtype, "no input features")


def linear_relu_grads(x, w, b, grad):
    x, w, b = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = ref.linear_relu(x, w, b)
    y.backward(grad.double())
    return y.detach(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("m,k,n", [(2, 20, 256), (9, 20, 70), (67, 130, 70), (130, 17, 129), (3, 0, 5), (6, 4, 7)])
@pytest.mark.parametrize("dtype", ALL)
def test_linear_relu_backward(cuda_ops, gpu, m, k, n, dtype):
    x, w, b = randn(m, k, dtype=dtype), randn(n, k, dtype=dtype, seed=1), randn(n, dtype=dtype, seed=2)
    grad = randn(m, n, dtype=dtype, seed=3)
    out = cuda_ops.linear_relu(x, w, b)
    _, gx, gw, gb = linear_relu_grads(x, w, b, grad)
    # The masks must agree: compare with the output the kernel saw.
    y64 = out.double()
    mask = y64 > 0
    gx = (grad.double() * mask) @ w.double()
    gw = (grad.double() * mask).t() @ x.double()
    gb = (grad.double() * mask).sum(0)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}.get(dtype, 2e-2)
    grad_input = cuda_ops.linear_relu_backward_input(grad, out, w)
    if grad_input.numel():
        assert rel_error(grad_input, gx) <= tol
    grad_weight, grad_bias = cuda_ops.linear_relu_backward_params(grad, out, x, True)
    if grad_weight.numel():
        assert rel_error(grad_weight, gw) <= tol
    assert rel_error(grad_bias, gb) <= tol
    only_weight, empty_bias = cuda_ops.linear_relu_backward_params(grad, out, x, False)
    assert empty_bias.numel() == 0 and torch.equal(only_weight, grad_weight)
    empty_weight, only_bias = cuda_ops.linear_relu_backward_params(grad, out, None, True)
    assert empty_weight.numel() == 0 and rel_error(only_bias, gb) <= tol


def test_linear_relu_backward_strided_gradients(cuda_ops):
    x, w, b = randn(40, 24), randn(30, 24, seed=1), randn(30, seed=2)
    out = cuda_ops.linear_relu(x, w, b)
    grad = randn(30, 40, seed=3).t()  # transposed, as from a permuted consumer
    _, gx, gw, gb = linear_relu_grads(x, w, b, grad)
    assert rel_error(cuda_ops.linear_relu_backward_input(grad, out, w), gx) <= 1e-5
    grad_weight, grad_bias = cuda_ops.linear_relu_backward_params(grad, out, x.t().contiguous().t(), True)
    assert rel_error(grad_weight, gw) <= 1e-5 and rel_error(grad_bias, gb) <= 1e-5
    expanded = randn(1, 30, seed=4).expand(40, 30)
    _, gx, _, gb = linear_relu_grads(x, w, b, expanded)
    assert rel_error(cuda_ops.linear_relu_backward_input(expanded, out, w), gx) <= 1e-5
    assert rel_error(cuda_ops.linear_relu_backward_params(expanded, out, None, True)[1], gb) <= 1e-5


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_relu_vendor_route(cuda_ops, bias, dtype):
    """The policy that sends products to the vendor GEMM (ATen's CPU kernels
    stand in for cuBLASLt here): same results, same output layout."""
    x, w = randn(3, 5, 40, dtype=dtype), randn(30, 40, dtype=dtype, seed=1, scale=40**-0.5)
    b = randn(30, dtype=dtype, seed=2) if bias else None
    grad = randn(3, 5, 30, dtype=dtype, seed=3)
    previous = cuda_ops.set_cuda_gemm_policy(2)
    try:
        out = cuda_ops.linear_relu(x, w, b)
        grad_input = cuda_ops.linear_relu_backward_input(grad, out, w)
        grad_weight, grad_bias = cuda_ops.linear_relu_backward_params(grad, out, x, bias)
    finally:
        assert cuda_ops.set_cuda_gemm_policy(previous) == 2
    exact = ref.linear_relu(x.double(), w.double(), None if b is None else b.double())
    assert out.shape == (3, 5, 30) and rel_error(out, exact) <= bound(dtype, ref.linear_relu(x, w, b), exact)
    if bias:  # an empty reduction: relu(bias) on every row (ATen's addmm would skip the ReLU)
        previous = cuda_ops.set_cuda_gemm_policy(2)
        try:
            empty = cuda_ops.linear_relu(x[..., :0], w[:, :0], b)
        finally:
            cuda_ops.set_cuda_gemm_policy(previous)
        assert torch.equal(empty, torch.relu(b).expand(3, 5, 30))
    masked = grad.double() * (out.double() > 0)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert grad_input.shape == x.shape and rel_error(grad_input, masked @ w.double()) <= tol
    assert rel_error(grad_weight, masked.reshape(-1, 30).t() @ x.double().reshape(-1, 40)) <= tol
    assert grad_bias.numel() == (30 if bias else 0)
    if bias:
        assert rel_error(grad_bias, masked.sum((0, 1))) <= tol


def test_auto_policy_keeps_half_products_in_vector_layouts_on_the_fast_kernels(cuda_ops, experimental):
    """The auto policy's half-precision crossovers follow the operands'
    layout (common/gemm_policy.h): in the vector kernels' layouts the vendor
    takes the forward from 2^28 multiply-adds and the backward (with the
    tensor-core backward on) from 2^26; in others, where the elementwise
    kernels run, from 2^25 and 2^20. The ops ask with their own operands."""
    experimental(TENSOR_CORE_BACKWARD)
    cuda_ops.set_cuda_gemm_policy(0)  # auto (the fixture restores the policy)

    def route(e, backward, vector):
        return cuda_ops.uses_vendor_gemm(
            "cuda", torch.bfloat16, 2 ** (e // 3), 2 ** (e - 2 * (e // 3)), 2 ** (e // 3), backward, vector
        )

    assert [route(e, False, True) for e in (25, 27, 28)] == [False, False, True]
    assert [route(e, True, True) for e in (21, 25, 26)] == [False, False, True]
    assert [route(e, False, False) for e in (24, 25)] == [False, True]
    assert [route(e, True, False) for e in (19, 20)] == [False, True]
    experimental(0)  # without the tensor-core backward, the backward's layouts do not matter
    cuda_ops.set_cuda_gemm_policy(0)
    assert route(21, True, True) and not route(27, False, True)
    experimental(TENSOR_CORE_BACKWARD)
    cuda_ops.set_cuda_gemm_policy(0)

    m, k, n = 64, 128, 256  # 2^21 multiply-adds: past the elementwise backward's crossover
    for what, (x, w, grad), kernels in (
        (
            "vector rows",
            (
                aligned(m, k, torch.bfloat16),
                aligned(n, k, torch.bfloat16, seed=1, scale=k**-0.5),
                aligned(m, n, torch.bfloat16, seed=3),
            ),
            2,
        ),
        (
            "odd rows",
            (
                randn(m, k + 1, dtype=torch.bfloat16)[:, :k],
                randn(n, k + 1, dtype=torch.bfloat16, seed=1, scale=k**-0.5)[:, :k],
                randn(m, n, dtype=torch.bfloat16, seed=3),
            ),
            0,
        ),
    ):
        b = randn(n, dtype=torch.bfloat16, seed=2)
        out = cuda_ops.linear_relu(x, w, b)
        launched(cuda_ops)
        grad_input = cuda_ops.linear_relu_backward_input(grad, out, w)
        grad_weight, _ = cuda_ops.linear_relu_backward_params(grad, out, x, True)
        assert len(launched(cuda_ops, "gemm_tensor_core_staged_kernel")) == kernels, what
        masked = grad.double() * (out.double() > 0)
        assert rel_error(grad_input, masked @ w.double()) <= 2e-2, what
        assert rel_error(grad_weight, masked.t() @ x.double()) <= 2e-2, what


# --------------------------------------------------------------------- center
# Each case reaches one kernel path: (shape, dim). Group lengths that are
# multiples of 8 take the 16-byte accesses; the odd ones read one element at
# a time (or, for a single group, end in a tail shorter than 16 bytes).
CENTER_CASES = [
    ((5, 296), 1),  # warp per row
    ((4, 301), 1),  # warp per row, unpacked
    ((3, 1000), -1),  # warp per row, 32 elements per lane
    ((3, 2000), 1),  # block per row (small total)
    ((3, 2001), 1),  # block per row, unpacked
    ((600, 1504), 1),  # block per row (many rows)
    ((100_000,), None),  # whole tensor: partial sums, finalize, subtract
    ((100_003,), None),  # whole tensor with a short tail
    ((2, 70_000), 1),  # two long rows through the partial path
    ((2, 70_001), 1),  # the same, unpacked
    ((1000,), None),  # whole tensor, one warp
    ((7, 33, 5), 1),  # a middle dim: one block of column tiles per outer index
    ((17_000, 2, 4), 1),  # many narrow columns: a thread per column
    ((5000, 40), 0),  # few long columns: rows split into chunks (partial, finalize, subtract)
    ((300, 70), 0),  # chunks, the last tile of columns partial
    ((4, 6, 10), (0, 2)),  # non-adjacent dims (permuted copy)
    ((), None),
    ((0, 5), 1),
]


@pytest.mark.parametrize("shape,dim", CENTER_CASES)
@pytest.mark.parametrize("dtype", ALL)
def test_center_forward(cuda_ops, gpu, shape, dim, dtype):
    x = randn(*shape, dtype=dtype, scale=3.0) + 1
    dims = None if dim is None else [dim] if isinstance(dim, int) else list(dim)
    out = cuda_ops.center(x, dims)
    exact = ref.center(x.double(), None if dims is None else tuple(dims))
    assert out.shape == x.shape and out.dtype == dtype
    if out.numel():
        tol = 1e-6 if dtype == torch.float32 else 1e-13 if dtype == torch.float64 else None
        if tol is None:
            tol = eager_bound(rel_error(ref.center(x, None if dims is None else tuple(dims)), exact))
        assert rel_error(out, exact) <= tol
        assert torch.equal(out, cuda_ops.center(x, dims)), "not deterministic"


def test_center_non_finite_first_element(cuda_ops):
    check_non_finite_first_element(lambda x, dim: cuda_ops.center(x, None if dim is None else [dim]))


def test_center_large_common_offset(cuda_ops):
    x = randn(200_000, scale=1e-2) + 100
    exact = x.double() - x.double().mean()
    assert rel_error(cuda_ops.center(x), exact) <= 1e-5


def test_center_misaligned_start_reads_one_element_at_a_time(cuda_ops):
    for n in (1000, 5000, 100_000):
        x = randn(n + 1)[1:]  # 4 bytes past a 16-byte boundary
        assert rel_error(cuda_ops.center(x), x.double() - x.double().mean()) <= 1e-6
        rows = randn(4 * n // 8 * 8 + 1)[1:].view(4, -1)
        assert rel_error(cuda_ops.center(rows, [1]), ref.center(rows.double(), 1)) <= 1e-6


def test_center_strided_input(cuda_ops):
    x = randn(40, 64)[:, ::2]
    assert rel_error(cuda_ops.center(x, [1]), ref.center(x.double(), 1)) <= 1e-6
    x = randn(1, 64).expand(40, 64)
    assert rel_error(cuda_ops.center(x, [0]) + 1, torch.ones(40, 64, dtype=torch.float64)) <= 1e-7


# ------------------------------------------------------------ FixedHiddenMLP
def fixed_hidden_params(f, dtype, seed=0, scale=1.0):
    return (
        randn(f, f, dtype=dtype, seed=seed, scale=scale / f**0.5),
        randn(f, dtype=dtype, seed=seed + 1, scale=scale),
        torch.rand(f, f, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64).to(dtype),
    )


# (rows, features, scale): the single-block kernel (2x20, 64x20) and the
# multi-kernel path (shared memory too small), k from 0 to about 60.
FIXED_CASES = [(2, 20, 1.0), (64, 20, 1e3), (1, 3, 1e-4), (130, 70, 1e6), (40, 64, 1e12), (3, 9, 1e-9), (5, 100, 1.0)]


@pytest.mark.parametrize("m,f,scale", FIXED_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("return_sum", [True, False])
def test_fixed_hidden_mlp_forward_and_halvings(cuda_ops, m, f, scale, dtype, return_sum):
    w, b, c = fixed_hidden_params(f, dtype, scale=scale**0.5)
    x = randn(m, f, dtype=dtype, seed=5, scale=scale**0.5)
    out, hidden, k = cuda_ops.fixed_hidden_mlp(x, w, b, c, return_sum)
    expected, expected_k = ref.fixed_hidden_mlp(x, w, b, c, return_sum, return_halvings=True)
    assert int(k) == expected_k and out.shape == expected.shape
    exact = ref.fixed_hidden_mlp(x.double(), w.double(), b.double(), c.double(), return_sum)
    tol = 1e-12 if dtype == torch.float64 else eager_bound(rel_error(expected, exact), slack=1e-5)
    assert rel_error(out, exact) <= tol
    h2 = torch.relu(torch.nn.functional.linear(x.double(), w.double(), b.double()) @ c.double() + 1)
    assert rel_error(hidden, h2) <= (1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("m,f", [(2, 20), (64, 20), (40, 64), (130, 70)])
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("return_sum", [True, False])
def test_fixed_hidden_mlp_half_precision(cuda_ops, gpu, m, f, dtype, return_sum):
    w, b, c = fixed_hidden_params(f, dtype, scale=3.0)
    x = randn(m, f, dtype=dtype, seed=5, scale=3.0)
    check_half_precision(cuda_ops.fixed_hidden_mlp, x, w, b, c, return_sum)


@pytest.mark.parametrize("m,f", [(2, 20), (40, 64)])
def test_fixed_hidden_mlp_non_finite(cuda_ops, m, f):
    w, b, c = fixed_hidden_params(f, torch.float32)
    for bad in (float("nan"), float("inf")):
        x = randn(m, f, seed=5)
        x[0, 0] = bad
        out, _, k = cuda_ops.fixed_hidden_mlp(x, w, b, c, True)
        assert int(k) == 0 and not torch.isfinite(out)
    # Elements near 2e37: the float32 sum overflows, every element is finite,
    # and the chapter's loop ends after enough halvings.
    w, b, c = torch.eye(f) * 1e12, torch.zeros(f), torch.eye(f)
    x = torch.full((m, f), 2e13)
    for return_sum in (True, False):
        out, _, k = cuda_ops.fixed_hidden_mlp(x, w, b, c, return_sum)
        expected, expected_k = ref.fixed_hidden_mlp(x, w, b, c, return_sum, return_halvings=True)
        assert int(k) == expected_k > 120 and torch.isfinite(out).all()
        assert rel_error(out, expected) <= 1e-6


# The single-block backward: 2x20 (float64 and below), 64x20 (float32 and
# below); the multi-kernel one: the rest.
@pytest.mark.parametrize("m,f", [(2, 20), (64, 20), (40, 64), (3, 100)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("return_sum", [True, False])
def test_fixed_hidden_mlp_backward(cuda_ops, gpu, m, f, dtype, return_sum):
    check_fixed_hidden_backward(cuda_ops, m, f, dtype, return_sum)


@pytest.mark.parametrize("m,f", [(40, 64), (130, 70)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("return_sum", [True, False])
def test_fixed_hidden_mlp_vendor_route(cuda_ops, m, f, dtype, return_sum):
    """The multi-kernel path with its products on the vendor route (ATen's
    CPU kernels stand in for cuBLAS here), forward and backward."""
    previous = cuda_ops.set_cuda_gemm_policy(2)
    try:
        w, b, c = fixed_hidden_params(f, dtype, scale=3.0)
        x = randn(m, f, dtype=dtype, seed=5, scale=3.0)
        if dtype == torch.bfloat16:
            check_half_precision(cuda_ops.fixed_hidden_mlp, x, w, b, c, return_sum)
        else:
            out, _, k = cuda_ops.fixed_hidden_mlp(x, w, b, c, return_sum)
            exact, exact_k = ref.fixed_hidden_mlp(
                x.double(), w.double(), b.double(), c.double(), return_sum, return_halvings=True
            )
            assert int(k) == exact_k and rel_error(out, exact) <= (1e-12 if dtype == torch.float64 else 1e-5)
        check_fixed_hidden_backward(cuda_ops, m, f, dtype, return_sum)
    finally:
        assert cuda_ops.set_cuda_gemm_policy(previous) == 2


def check_fixed_hidden_backward(cuda_ops, m, f, dtype, return_sum):
    w, b, c = fixed_hidden_params(f, dtype, scale=3.0)
    x = randn(m, f, dtype=dtype, seed=5, scale=3.0)
    out, hidden, k = cuda_ops.fixed_hidden_mlp(x, w, b, c, return_sum)
    grad = randn(*out.shape, dtype=dtype, seed=6)
    gi, gw, gb = cuda_ops.fixed_hidden_mlp_backward(grad, x, w, c, hidden, k, return_sum)

    def autograd_grads(dtype):  # the chapter's block, with k and the ReLU mask of the kernel's forward
        xd, wd, bd, cd = (t.detach().to(dtype, copy=True).requires_grad_() for t in (x, w, b, c))
        h2 = TF.relu(TF.linear(xd, wd, bd) @ cd + 1) * (hidden > 0)
        h3 = TF.linear(h2, wd, bd) / 2 ** int(k)
        (h3.sum() if return_sum else h3).backward(grad.to(dtype))
        return xd.grad, wd.grad, bd.grad

    exact = autograd_grads(torch.float64)
    eager = autograd_grads(dtype)
    for got, same_dtype, want in zip((gi, gw, gb), eager, exact):
        tol = tolerance(dtype, rel_error(same_dtype, want))
        assert got.dtype == dtype and rel_error(got, want) <= tol
    # Without the input's gradient: the same parameter gradients, no grad_input.
    no_gi, same_gw, same_gb = cuda_ops.fixed_hidden_mlp_backward(grad, x, w, c, hidden, k, return_sum, False)
    assert no_gi.shape == (0,) and torch.equal(same_gw, gw) and torch.equal(same_gb, gb)
