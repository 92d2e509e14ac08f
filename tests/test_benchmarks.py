"""`python -m benchmarks --quick` on the CPU: the files it writes are well
formed and name every op and anchor. No timing thresholds: the machines
that run the tests are too noisy for them."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_quick_run_writes_json_markdown_and_plots(quick_run):
    out, stdout = quick_run
    with open(out / "results.json") as f:
        result = json.load(f)
    env = result["environment"]
    for key in ("date", "cpu", "cpu instruction sets", "cpu kernels", "threads", "torch", "machine class"):
        assert env.get(key) not in (None, ""), key
    assert result["ceilings"]["copy_GBps"] > 0 and result["ceilings"]["gemm_GFLOPs"]["float32"] > 0
    md = (out / "results.md").read_text()
    assert md.startswith("# fastlayers benchmarks") and "| case | dtype | pass |" in md
    for op in ("linear_relu", "center", "fixed_hidden_mlp"):
        assert f"## {op}" in md
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib is not installed: the run writes no plots")
    plots = sorted(os.listdir(out / "plots"))
    assert {"linear_relu_speedup.png", "center_speedup.png", "fixed_hidden_mlp_speedup.png"} <= set(plots)
    assert {"linear_relu_gflops.png", "center_bandwidth.png"} <= set(plots)
    for p in plots:
        data = (out / "plots" / p).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, p
    assert "[1/" in stdout and "about" in stdout  # progress lines with an estimate of the time left


def test_every_op_and_anchor_is_in_the_json(quick_run):
    out, _ = quick_run
    with open(out / "results.json") as f:
        records = json.load(f)["records"]
    named = {}
    for r in records:
        assert r["pass"] in ("fwd", "fwd+bwd") and r["dtype"] in ("float32", "bfloat16")
        assert r["times"]["fastlayers"]["wall_us"] > 0 and r["times"]["fastlayers"]["wall_spread"] >= 0
        assert "route" in r and r["work"] > 0
        named.setdefault(r["op"], set()).update(r["times"], r.get("unsupported", {}))
        if r["pass"] == "fwd+bwd":
            saved = r["memory"]["saved_for_backward"]
            assert saved["eager"] >= 0 and saved["fastlayers"] >= 0
            if r["op"] != "center":  # centering needs nothing saved, eager or fused
                assert saved["eager"] > 0 and saved["fastlayers"] > 0
    assert {"fastlayers", "eager", "compile", "own kernel"} <= named["linear_relu"]
    has_onednn = hasattr(torch.ops.mkldnn, "_linear_pointwise")
    assert ("onednn" in named["linear_relu"]) == has_onednn
    assert {"fastlayers", "eager", "compile"} <= named["center"]
    assert {"fastlayers", "eager", "compile", "while_loop compile", "smart eager"} <= named["fixed_hidden_mlp"]
    routes = {r["route"]["forward"] for r in records if r["op"] == "linear_relu"}
    assert routes <= {"fastlayers", "vendor"}


def test_a_fused_layer_keeps_no_more_for_the_backward_than_eager(quick_run):
    out, _ = quick_run
    with open(out / "results.json") as f:
        records = json.load(f)["records"]
    for r in records:
        if r["pass"] == "fwd+bwd":
            saved = r["memory"]["saved_for_backward"]
            assert saved["fastlayers"] <= saved["eager"], (r["op"], r["case"], r["dtype"], saved)


def test_bad_options_are_refused_with_the_option_named():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--ops", "linear_relu,nope"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and "--ops: unknown op 'nope'" in result.stderr


def test_gemm_targets_script_times_every_target_case(tmp_path):
    """benchmarks.bench_gemm_targets (the GPU's GEMM targets; on the CPU at
    1/16 of each size): one row per target case, every route timed."""
    from benchmarks import bench_gemm_targets

    out = tmp_path / "targets.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_gemm_targets", "--device", "cpu", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == len(bench_gemm_targets.TARGETS)
    for row, (which, dtype, (m, k, n), _, _) in zip(rows, bench_gemm_targets.TARGETS):
        scale = bench_gemm_targets.CPU_SCALE
        assert row["case"] == f"{which} {m // scale}x{k // scale}->{n // scale} {str(dtype)[6:]}"
        assert row["vendor µs"] > 0 and row["own µs"] > 0 and row["own ÷ vendor"] > 0
    assert "GEMM targets" in result.stdout and "own ÷ vendor" in result.stdout
