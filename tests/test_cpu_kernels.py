"""The CPU GEMM's instruction-set paths, each forced in turn, and the CPU
vendor route: forward and both gradients against float64 (float32 within
1e-5, half precision within 2x eager's error), shapes across every block
edge, thread-count independence, the AMX fallback, and the switches."""

import os
import subprocess
import sys

import pytest
import torch

from fastlayers import backends
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import eager_bound, rel_error, tolerance

INFO = backends.cpu_info()
print(f"\nfastlayers CPU kernels: {INFO}")


def isa_param(name):
    reason = f"this CPU cannot run the {name} kernels (best: {INFO['best']}; AMX: {INFO['amx']})"
    return pytest.param(name, marks=pytest.mark.skipif(name not in INFO["supported"], reason=reason), id=name)


ISAS = [isa_param(name) for name in backends.CPU_ISAS]

# (rows, in_features, out_features): a few rows (unpacked paths), one panel,
# partial panels in both directions, an odd reduction (a bfloat16 k pair
# half padding), and reductions longer than every KC (512 to 1024 on the
# machines seen).
SHAPES = [(3, 20, 256), (13, 40, 33), (29, 75, 41), (67, 130, 70), (97, 1030, 45)]


def check_against_float64(m, k, n, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g, dtype=torch.float64)
    w = torch.randn(n, k, generator=g, dtype=torch.float64) / k**0.5
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    go = torch.randn(m, n, generator=g, dtype=torch.float64)
    leaves64 = [t.clone().requires_grad_() for t in (x, w, b) if t is not None]
    expected = ref.linear_relu(*leaves64, *([None] if not bias else []))
    expected_grads = torch.autograd.grad(expected, leaves64, go)

    def run(fn):
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, b) if t is not None]
        out = fn(*leaves, *([None] if not bias else []))
        return out, torch.autograd.grad(out, leaves, go.to(dtype))

    out, grads = run(FL.linear_relu)
    eager_out, eager_grads = run(ref.linear_relu)
    assert out.dtype == dtype
    assert rel_error(out, expected) <= tolerance(dtype, rel_error(eager_out, expected))
    for got, eager, want in zip(grads, eager_grads, expected_grads):
        assert rel_error(got, want) <= tolerance(dtype, rel_error(eager, want))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_each_isa_matches_float64(isa, dtype, m, k, n):
    with backends.cpu_gemm("fastlayers"), backends.cpu_isa(isa):
        assert backends.cpu_info()["active"] == isa
        check_against_float64(m, k, n, dtype)


@pytest.mark.parametrize("isa", ISAS)
def test_each_isa_without_bias_and_with_strided_operands(isa):
    with backends.cpu_gemm("fastlayers"), backends.cpu_isa(isa):
        check_against_float64(40, 70, 50, torch.bfloat16, bias=False)
        b = torch.randn(45)
        for dtype in (torch.float32, torch.bfloat16):
            operands = [
                (torch.randn(70, 40).t(), torch.randn(90, 70)[::2]),  # column-major input, every other weight row
                # rows an odd number of elements apart, one element in: a
                # bfloat16 k pair's 4 bytes are not 4-byte aligned
                (torch.randn(40, 72, dtype=dtype)[:, 1:71], torch.randn(45, 71, dtype=dtype)[:, :70]),
            ]
            for x, w in operands:
                x, w = x.to(dtype), w.to(dtype)
                out = FL.linear_relu(x, w, b.to(dtype))
                expected = ref.linear_relu(x.double(), w.double(), b.to(dtype).double())
                eager = ref.linear_relu(x, w, b.to(dtype))
                assert rel_error(out, expected) <= tolerance(dtype, rel_error(eager, expected))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_isa_gives_the_same_bits_for_any_thread_count(isa, dtype):
    # Threads split the tiles by rows, by columns or both (1, 2 and 3
    # threads), each walking several row blocks and two k blocks.
    g = torch.Generator().manual_seed(1)
    x, w, b = (torch.randn(s, generator=g).to(dtype) for s in ((400, 1100), (90, 1100), (90,)))
    go = torch.randn(400, 90, generator=g).to(dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        with backends.cpu_gemm("fastlayers"), backends.cpu_isa(isa):
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                leaves = [t.clone().requires_grad_() for t in (x, w, b)]
                out = FL.linear_relu(*leaves)
                results.append((out, *torch.autograd.grad(out, leaves, go)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(results[0], other))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_vendor_route_matches_float64(dtype, bias):
    with backends.cpu_gemm("vendor"):
        # unfused ReLU after the product (M*N <= M*K + N*K), and the fused post-op
        for m, k, n in [(5, 20, 33), (130, 260, 70), (200, 8, 300)]:
            check_against_float64(m, k, n, dtype, bias=bias)


@pytest.mark.parametrize("k,n", [(16, 12), (4, 96)])  # the unfused and the fused oneDNN call
def test_vendor_route_keeps_nan_like_torch_relu(k, n):
    x = torch.randn(8, k)
    x[3, 2] = float("nan")
    w, b = torch.randn(n, k), torch.randn(n)
    for policy in ("vendor", "fastlayers"):
        with backends.cpu_gemm(policy):
            out = FL.linear_relu(x, w, b)
        assert torch.isnan(out[3]).all() and not torch.isnan(out[[0, 1, 2, 4]]).any()


def test_fixed_hidden_mlp_on_the_bfloat16_kernels():
    torch.manual_seed(0)
    x, w, b, c = torch.rand(70, 40), torch.randn(40, 40) / 7, torch.randn(40), torch.rand(40, 40)
    expected = ref.fixed_hidden_mlp(x.double(), w.double(), b.double(), c.double(), return_sum=False)
    for isa in ("avx512_bf16", "amx_emulated"):
        if isa not in INFO["supported"]:
            continue
        with backends.cpu_isa(isa):
            got = FL.fixed_hidden_mlp(*(t.bfloat16() for t in (x, w, b, c)), return_sum=False)
        eager = ref.fixed_hidden_mlp(*(t.bfloat16() for t in (x, w, b, c)), return_sum=False)
        assert rel_error(got, expected) <= eager_bound(rel_error(eager, expected))


@pytest.mark.parametrize("isa", INFO["supported"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_op_runs_on_every_supported_rung(isa, dtype):
    """Each rung this CPU supports, forced, for every op: amx_emulated (the
    highest rung, offered on any CPU) once sent the centering and the
    halving sums to AVX-512 code on an AVX2-only EPYC (SIGILL)."""
    torch.manual_seed(0)
    x, w, b, c = torch.rand(70, 40), torch.randn(40, 40) / 7, torch.randn(40), torch.rand(40, 40)
    args = [t.to(dtype) for t in (x, w, b, c)]
    with backends.cpu_isa(isa):
        got = [
            FL.center(args[0]),
            FL.center(args[0], 0),
            FL.linear_relu(*args[:3]),
            FL.fixed_hidden_mlp(*args, return_sum=False),
        ]
    wide = [t.double() for t in args]
    want = [
        ref.center(wide[0]),
        ref.center(wide[0], 0),
        ref.linear_relu(*wide[:3]),
        ref.fixed_hidden_mlp(*wide, return_sum=False),
    ]
    for g, e in zip(got, want):
        assert rel_error(g, e) <= (1e-5 if dtype == torch.float32 else 2e-2)


def test_switches_are_scoped_and_checked():
    before = backends.cpu_info()
    with backends.cpu_isa("portable"), backends.cpu_gemm("vendor"):
        assert backends.cpu_info()["active"] == "portable"
    assert backends.cpu_info()["active"] == before["active"] == before["default"]
    with pytest.raises(ValueError, match="fastlayers.backends.cpu_isa: name must be"):
        with backends.cpu_isa("sse9"):
            pass
    with pytest.raises(ValueError, match="fastlayers.backends.cpu_gemm: policy must be"):
        with backends.cpu_gemm("fastest"):
            pass
    missing = [name for name in backends.CPU_ISAS if name not in before["supported"]]
    for name in missing:
        with pytest.raises(RuntimeError, match=f"fastlayers::set_cpu_isa: this CPU cannot run the '{name}' kernels"):
            with backends.cpu_isa(name):
                pass
    assert before["default"] != "amx", "AMX is opt-in until its kernel has been measured on an AMX CPU"


def run_python(code, **env):
    full_env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


CHECK_RESULT = """
import torch, fastlayers
from fastlayers import backends, functional as FL, reference as ref
from fastlayers.testing import eager_bound, rel_error
x, w, b = torch.randn(40, 64).bfloat16(), torch.randn(48, 64).bfloat16(), torch.randn(48).bfloat16()
exp = ref.linear_relu(x.double(), w.double(), b.double())
err, eager = rel_error(FL.linear_relu(x, w, b), exp), rel_error(ref.linear_relu(x, w, b), exp)
assert err <= eager_bound(eager), (err, eager)
info = backends.cpu_info()
print(info["active"], "|", info["amx"], "|", ",".join(info["supported"]))
"""


def test_without_the_tile_unit_the_kernels_fall_back_cleanly():
    # FASTLAYERS_CPU_AMX=0 takes the path of a refused tile-state request:
    # AMX is not offered, the next rung runs, and asking for AMX is an error.
    active, amx, supported = (
        run_python(
            CHECK_RESULT + "\ntry:\n    torch.ops.fastlayers.set_cpu_isa(4)\nexcept RuntimeError as e:\n"
            "    assert 'cannot run the' in str(e)\nelse:\n    raise SystemExit('amx accepted')\n",
            FASTLAYERS_CPU_AMX="0",
        )
        .strip()
        .split(" | ")
    )
    assert "amx" not in supported.split(",")
    assert active == INFO["default"]
    if "amx" in INFO["supported"] or INFO["amx"].startswith("turned off") or "refused" in INFO["amx"]:
        assert amx == "turned off by FASTLAYERS_CPU_AMX=0"
    else:
        assert amx == INFO["amx"]  # no AMX at all: the CPU check comes first


def test_the_environment_caps_the_isa_at_start_up():
    active = run_python(CHECK_RESULT, FASTLAYERS_CPU_ISA="avx2" if "avx2" in INFO["supported"] else "portable")
    assert active.split(" | ")[0] == ("avx2" if "avx2" in INFO["supported"] else "portable")


@pytest.mark.parametrize("policy", ["fastlayers", "vendor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("return_sum", [False, True])
def test_fixed_hidden_mlp_on_both_cpu_routes(policy, dtype, return_sum):
    torch.manual_seed(0)
    x, w, b, c = torch.rand(70, 40), torch.randn(40, 40) / 7, torch.randn(40), torch.rand(40, 40)

    def run(fn, cast):
        leaves = [t.to(cast).requires_grad_() for t in (x, w, b)]
        out = fn(*leaves, c.to(cast), return_sum=return_sum)
        return out, torch.autograd.grad(out, leaves, torch.full_like(out, 0.75))

    expected, expected_grads = run(ref.fixed_hidden_mlp, torch.float64)
    eager, eager_grads = run(ref.fixed_hidden_mlp, dtype)
    with backends.cpu_gemm(policy):
        got, grads = run(FL.fixed_hidden_mlp, dtype)
    assert rel_error(got, expected) <= tolerance(dtype, rel_error(eager, expected))
    for g, e, want in zip(grads, eager_grads, expected_grads):
        assert rel_error(g, want) <= tolerance(dtype, rel_error(e, want))


def test_the_core_is_named_from_cpuid():
    # The GEMM policy tells AMD's Zen 4 and Zen 5 apart (csrc/common/cpu_features.h):
    # the family the kernel reads from cpuid must be the one the OS reports.
    core = backends.cpu_info()["core"]
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    amd, family = fields.get("vendor_id") == "AuthenticAMD", int(fields.get("cpu family", "-1"))
    expected = "other"
    if amd and family == 0x1A:
        expected = "zen5"
    elif amd and family == 0x19 and "avx512f" in fields.get("flags", "").split():
        expected = "zen4"
    assert core == expected, (core, fields.get("vendor_id"), family)


def test_gemm_route_reports_the_policy_in_force():
    assert backends.gemm_route("cpu", torch.float32, 2, 256, 20) == "fastlayers"  # tiny: never the vendor
    assert backends.gemm_route("cpu", torch.float64, 4096, 4096, 4096) == "fastlayers"  # oneDNN has no float64
    with backends.cpu_gemm("vendor"):
        assert backends.gemm_route("cpu", torch.float32, 2, 256, 20) == "vendor"
    with backends.cpu_gemm("fastlayers"):
        assert backends.gemm_route("cpu", torch.float32, 4096, 4096, 4096, backward=True) == "fastlayers"
    info = backends.cpu_info()
    if info["active"] in ("avx512", "avx512_bf16"):
        # The measured bands (csrc/common/gemm_policy.h), which follow the
        # CPU's bfloat16 instructions.
        route = [backends.gemm_route("cpu", torch.float32, 2**e, 2**e, 2**e, backward=True) for e in (5, 8, 10)]
        half = backends.gemm_route("cpu", torch.bfloat16, 1024, 1024, 1024)
        if info["best"] == "avx512":  # no AVX512-BF16: oneDNN's bfloat16 is the slower one
            assert route == ["fastlayers", "vendor", "vendor"] and half == "fastlayers"
        elif info["core"] == "zen5":  # full-width FMA: fastlayers' float32 backward wins everywhere,
            # its bfloat16 forward up to 2^24
            assert route == ["fastlayers", "fastlayers", "fastlayers"] and half == "vendor"
            assert backends.gemm_route("cpu", torch.bfloat16, 64, 512, 512) == "fastlayers"
        else:  # with it: the vendor takes the middle of the float32 backward, and large bfloat16
            assert route == ["fastlayers", "vendor", "fastlayers"] and half == "vendor"
    with pytest.raises(RuntimeError, match="uses_vendor_gemm: argument 'device' must be 'cpu' or 'cuda', got 'tpu'"):
        backends.gemm_route("tpu", torch.float32, 1, 1, 1)
