"""Property-based tests (hypothesis): random shapes, layouts (transposed,
sliced, expanded operands), dtypes and value scales for every op, forward
and gradients, against the float64 references; and non-finite values
sprinkled in, against what the references give for them.

Profiles: "ci" (the default, seconds on 2 CPU cores) and "long"
(FASTLAYERS_HYPOTHESIS_PROFILE=long: many more examples, for a GPU machine
or a soak). Values come from seeded torch generators, so a failure prints a
seed and shapes that reproduce it.
"""

import os

import pytest
import torch
from torch.nn import functional as TF

from fastlayers import backends
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import FIXED_TOLERANCE, eager_bound, rel_error

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (scripts/setup.sh installs it)")
st = hypothesis.strategies

hypothesis.settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.register_profile("long", max_examples=5000, deadline=None, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("FASTLAYERS_HYPOTHESIS_PROFILE", "ci"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
LAYOUTS = ["contiguous", "transposed", "sliced", "expanded"]
SCALES = {torch.float64: [1e-6, 1e-2, 1.0, 1e2, 1e5], torch.float32: [1e-6, 1e-2, 1.0, 1e2, 1e5]}
SCALES[torch.bfloat16] = SCALES[torch.float32]
SCALES[torch.float16] = [1e-3, 1e-1, 1.0, 1e2]  # float16 ends at 65504


def matrix(rows, cols, layout, seed, scale, dtype, device):
    """A rows x cols matrix of randn * scale in `layout`: a contiguous
    tensor, the transpose of a (cols, rows) one, every other row of a taller
    one, or one row expanded to all rows."""
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed":
        t = torch.randn(cols, rows, generator=g).t()
    elif layout == "sliced":
        t = torch.randn(2 * rows, cols + 1, generator=g)[::2, 1:]
    elif layout == "expanded":
        t = torch.randn(1, cols, generator=g).expand(rows, cols)
    else:
        t = torch.randn(rows, cols, generator=g)
    t = (t * scale).to(dtype)
    if device != "cpu":
        t = t.to(device)
        if layout == "transposed":  # keep the layout across the copy
            t = t.t().contiguous().t()
    return t


def bound(dtype, eager_error):
    """The accuracy rule of fastlayers.testing, never tighter than one
    rounding of the exact result (eager may be luckier than that on a few
    elements, as random examples find)."""
    return max(FIXED_TOLERANCE.get(dtype, 0.0), eager_bound(eager_error, slack=1e-5), torch.finfo(dtype).eps)


def check_against_float64(fn, reference, leaves, grad_seed, sums_of_products=False):
    """fn's output and gradients against the float64 reference on the same
    (rounded) values, within bound(dtype, eager's error). For sums of
    products (`sums_of_products`), a result that cancels is held to the
    size of its terms instead: a few roundings of the reference run on the
    absolute values, which no summation order can beat."""
    dtype = leaves[0].dtype

    def run(f, cast, absolute=False):
        ls = [(t.detach().abs() if absolute else t.detach()).to(cast).requires_grad_() for t in leaves]
        out = f(*ls)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.device, cast)
        return out, torch.autograd.grad(out, ls, g.abs() if absolute else g, allow_unused=True)

    got, got_grads = run(fn, dtype)
    want, want_grads = run(reference, torch.float64)
    eager, eager_grads = run(reference, dtype)
    sizes = run(reference, torch.float64, absolute=True) if sums_of_products else (None, [None] * len(leaves))
    assert got.dtype == dtype and got.shape == want.shape
    for g, w, e, size in zip((got, *got_grads), (want, *want_grads), (eager, *eager_grads), (sizes[0], *sizes[1])):
        error = (g.double() - w).norm().item()
        allowed = bound(dtype, rel_error(e, w)) * w.norm().item()
        if size is not None:
            allowed = max(allowed, 32 * torch.finfo(dtype).eps * size.norm().item())
        assert error <= allowed, f"error {error:.3g} > allowed {allowed:.3g} (reference norm {w.norm().item():.3g})"


@st.composite
def linear_relu_cases(draw):
    m, k, n = draw(st.integers(0, 70)), draw(st.integers(1, 80)), draw(st.integers(1, 70))
    return {
        "m": m,
        "k": k,
        "n": n,
        "x_layout": draw(st.sampled_from(LAYOUTS)),
        "w_layout": draw(st.sampled_from(LAYOUTS[:3])),
        "bias": draw(st.booleans()),
        "dtype": (dtype := draw(st.sampled_from(DTYPES))),
        "scale": draw(st.sampled_from(SCALES[dtype])),
        "route": draw(st.sampled_from(["auto", "fastlayers", "vendor"])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@pytest.mark.parametrize("device", DEVICES)
@hypothesis.given(case=linear_relu_cases())
def test_linear_relu_matches_float64(device, case):
    c = case
    x = matrix(c["m"], c["k"], c["x_layout"], c["seed"], c["scale"], c["dtype"], device)
    w = matrix(c["n"], c["k"], c["w_layout"], c["seed"] + 1, 1 / c["k"] ** 0.5, c["dtype"], device)
    leaves = [x, w] + (
        [matrix(1, c["n"], "contiguous", c["seed"] + 2, c["scale"], c["dtype"], device)[0]] if c["bias"] else []
    )
    switch = backends.cpu_gemm if device == "cpu" else backends.cuda_gemm
    with switch(c["route"]):
        check_against_float64(FL.linear_relu, ref.linear_relu, leaves, c["seed"] + 3, sums_of_products=True)


@st.composite
def center_cases(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 40)) for _ in range(ndim))
    dims = draw(st.one_of(st.none(), st.sets(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim)))
    if dims is not None and len({d % ndim for d in dims}) != len(dims):
        dims = sorted({d % ndim for d in dims})
    return {
        "shape": shape,
        "dim": None if dims is None else (list(dims)[0] if len(dims) == 1 else tuple(dims)),
        "layout": draw(st.sampled_from(["contiguous", "permuted", "sliced", "expanded"])),
        "dtype": (dtype := draw(st.sampled_from(DTYPES))),
        "scale": draw(st.sampled_from(SCALES[dtype])),
        "offset": draw(st.sampled_from([0.0, 3.0, -1e3] if dtype != torch.float16 else [0.0, 3.0, -30.0])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def center_input(c, device):
    shape, g = c["shape"], torch.Generator().manual_seed(c["seed"])
    if c["layout"] == "permuted":
        t = torch.randn(shape[::-1], generator=g).permute(*reversed(range(len(shape))))
    elif c["layout"] == "sliced":
        t = torch.randn((*shape[:-1], 2 * shape[-1]), generator=g)[..., ::2]
    elif c["layout"] == "expanded":
        t = torch.randn((1, *shape[1:]), generator=g).expand(shape)
    else:
        t = torch.randn(shape, generator=g)
    return (t * c["scale"] + c["offset"] * c["scale"]).to(c["dtype"]).to(device)


@pytest.mark.parametrize("device", DEVICES)
@hypothesis.given(case=center_cases())
def test_center_matches_float64(device, case):
    x = center_input(case, device)
    dim = case["dim"]
    check_against_float64(lambda t: FL.center(t, dim), lambda t: ref.center(t, dim), [x], case["seed"] + 1)


@st.composite
def fixed_hidden_mlp_cases(draw):
    return {
        "batch": draw(st.integers(1, 40)),
        "features": draw(st.integers(1, 40)),
        "dtype": draw(st.sampled_from([torch.float64, torch.float32])),
        "scale": draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4])),
        "return_sum": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@pytest.mark.parametrize("device", DEVICES)
@hypothesis.given(case=fixed_hidden_mlp_cases())
def test_fixed_hidden_mlp_matches_the_chapter_loop(device, case):
    c, f = case, case["features"]
    g = torch.Generator().manual_seed(c["seed"])
    x = (torch.randn(c["batch"], f, generator=g) * c["scale"]).to(c["dtype"]).to(device)
    w = (torch.randn(f, f, generator=g) / f**0.5).to(c["dtype"]).to(device)
    b = torch.randn(f, generator=g).to(c["dtype"]).to(device)
    rand = torch.rand(f, f, generator=g).to(c["dtype"]).to(device)
    _, k_want = ref.fixed_hidden_mlp(x.double(), w.double(), b.double(), rand.double(), True, return_halvings=True)
    _, _, k_got = torch.ops.fastlayers.fixed_hidden_mlp(x, w, b, rand, True)
    if int(k_got) != k_want:
        # Only where sum|h3| sits on a power of two within rounding.
        h = ref.fixed_hidden_mlp(x.double(), w.double(), b.double(), rand.double(), False) * 2.0**k_want
        total = h.abs().sum().item()
        assert abs(int(k_got) - k_want) == 1 and abs(total / 2.0 ** max(int(k_got), k_want) - 1) < 1e-5
        return

    def chapter_with_k(x, w, b):  # the chapter's block with the loop's count held at k
        h = TF.linear(TF.relu(TF.linear(x, w, b) @ rand.to(x.dtype) + 1), w, b) / 2.0**k_want
        return h.sum() if c["return_sum"] else h

    check_against_float64(
        lambda x, w, b: FL.fixed_hidden_mlp(x, w, b, rand.to(x.dtype), c["return_sum"]),
        chapter_with_k,
        [x, w, b],
        c["seed"] + 1,
        sums_of_products=True,
    )


@st.composite
def non_finite_cases(draw):
    return {
        "op": draw(st.sampled_from(["linear_relu", "center"])),
        "rows": draw(st.integers(1, 30)),
        "cols": draw(st.integers(1, 30)),
        "dtype": draw(st.sampled_from([torch.float32, torch.bfloat16])),
        "where": draw(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["nan", "inf", "-inf"])), max_size=4)),
        "route": draw(st.sampled_from(["fastlayers", "vendor"])),
        "dim": draw(st.sampled_from([None, 0, 1])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@pytest.mark.parametrize("device", DEVICES)
@hypothesis.given(case=non_finite_cases())
def test_non_finite_values_give_what_the_reference_gives(device, case):
    """NaN and ±inf in the input: the same NaN and infinity positions as the
    float64 reference on the same values, the finite rest within the rule."""
    c = case
    x = matrix(c["rows"], c["cols"], "contiguous", c["seed"], 1.0, c["dtype"], "cpu")
    for index, value in c["where"]:
        x.view(-1)[index % x.numel()] = float(value)
    x = x.to(device)
    if c["op"] == "linear_relu":
        w = matrix(17, c["cols"], "contiguous", c["seed"] + 1, 1.0, c["dtype"], device)
        b = matrix(1, 17, "contiguous", c["seed"] + 2, 1.0, c["dtype"], device)[0]
        switch = backends.cpu_gemm if device == "cpu" else backends.cuda_gemm
        with switch(c["route"]):
            got = FL.linear_relu(x, w, b)
        want, eager = ref.linear_relu(x.double(), w.double(), b.double()), ref.linear_relu(x, w, b)
    else:
        got, want, eager = FL.center(x, c["dim"]), ref.center(x.double(), c["dim"]), ref.center(x, c["dim"])
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.isposinf(), want.isposinf()) and torch.equal(got.isneginf(), want.isneginf())
    finite = want.isfinite()
    if finite.any():
        assert rel_error(got[finite], want[finite]) <= bound(c["dtype"], rel_error(eager[finite], want[finite]))
