"""The build and its import-time checks."""

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

from fastlayers import _build_info

OPS = (
    "linear_relu",
    "linear_relu_backward_input",
    "linear_relu_backward_params",
    "center",
    "fixed_hidden_mlp",
    "fixed_hidden_mlp_backward",
)


@pytest.mark.skipif(os.environ.get("FASTLAYERS_EXPECT_CUDA") != "1", reason="CUDA kernels not required here")
def test_cuda_kernels_were_compiled():
    """CI builds with FORCE_CUDA=1 and sets FASTLAYERS_EXPECT_CUDA=1, so the CUDA
    sources cannot rot even where no GPU runs them."""
    assert _build_info.WITH_CUDA
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastlayers::{op}", "CUDA"), op


def ptxas_report(source, arch="90", output=os.devnull):
    """{kernel: (registers, spilled bytes)} from compiling `source` for sm_<arch>
    (into `output`) with ptxas's resource report (template arguments kept,
    c10::Half cases left out: they build as the bfloat16 ones); ptxas's
    warnings under the key "warnings"."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    torch_dir = os.path.dirname(torch.__file__)
    site = os.path.dirname(torch_dir)
    includes = [
        os.path.join(torch_dir, "include"),
        os.path.join(torch_dir, "include", "torch", "csrc", "api", "include"),
    ]
    includes += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    includes.append(sysconfig.get_paths()["include"])
    command = [shutil.which("nvcc"), "-std=c++20", "-O3", "--expt-relaxed-constexpr", "-Xptxas", "-v"]
    command += [f"-gencode=arch=compute_{arch},code=sm_{arch}", "-c", os.path.join(root, source), "-o", str(output)]
    result = subprocess.run(command + [f"-I{d}" for d in includes], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report, name, spilled = {}, None, 0
    for line in result.stderr.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            name = subprocess.run(["c++filt", m.group(1)], capture_output=True, text=True).stdout.strip()
            name = re.sub(r"^void |\(anonymous namespace\)::|fastlayers::cuda::", "", name)
            name = re.sub(r"\(.*$", "", name)  # the parameter list
        elif m := re.search(r"(\d+) bytes spill stores", line):
            spilled = int(m.group(1))
        elif (m := re.search(r"Used (\d+) registers", line)) and name and "Half" not in name:
            report[name] = (int(m.group(1)), spilled)
    report["warnings"] = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    return report


def cuobjdump():
    """cuobjdump from the CUDA toolkit, or the copy triton ships; None if neither."""
    path = shutil.which("cuobjdump")
    if path is None:
        try:
            import triton
        except ImportError:
            return None
        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else None


@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("c++filt") is None, reason="no CUDA compiler")
def test_cuda_gemm_kernels_fit_two_blocks_per_sm_and_the_simt_ones_do_not_spill():
    """The compiler's resource report for sm_90 (no GPU needed): every GEMM
    kernel fits its 2-blocks-per-SM launch bound (128 registers), the SIMT
    kernels and the elementwise tensor-core one spill nothing (the pipelined
    float32 one runs one block an SM where it would spill at two), and the
    pipelined tensor-core ones (register-heavy: 64 accumulators, fragments,
    staged vectors) spill no more than they did when last measured
    (benchmarks/NOTES.md), so that a change that adds spills shows."""
    report = ptxas_report(os.path.join("csrc", "common", "cuda_gemm.cu"))
    kernels = {
        "gemm_tiled_kernel<float, float>": 0,
        "gemm_tiled_kernel<double, double>": 0,
        "gemm_float_large_kernel<float>": 0,
        "gemm_float_warp_tiled_kernel<true, true, false>": 0,
        "gemm_float_warp_tiled_kernel<true, false, false>": 0,
        "gemm_float_warp_tiled_kernel<false, true, false>": 0,
        "gemm_float_warp_tiled_kernel<false, false, false>": 0,
        "gemm_float_warp_tiled_kernel<true, true, true>": 0,
        "gemm_small_m_kernel<float, float>": 0,
        "split_k_sum_kernel<float, float>": 0,
        "gemm_tensor_core_kernel<c10::BFloat16>": 0,
        "gemm_tensor_core_async_kernel<c10::BFloat16>": 16,
        "gemm_tensor_core_staged_kernel<c10::BFloat16, true, true>": 128,
        "gemm_tensor_core_staged_kernel<c10::BFloat16, true, false>": 128,
        "gemm_tensor_core_staged_kernel<c10::BFloat16, false, true>": 128,
        "gemm_tensor_core_staged_kernel<c10::BFloat16, false, false>": 128,
    }
    assert set(kernels) <= set(report), sorted(report)
    assert report["warnings"] == []
    for name, spill_bound in kernels.items():
        registers, spilled = report[name]
        assert registers <= 128 and spilled <= spill_bound, (name, registers, spilled)
    # The pipelined float32 kernel in the backward's layouts: one block an SM
    # (kWtMinBlocks), which leaves room for it not to spill.
    for layout in ("true, false", "false, true", "false, false"):
        registers, spilled = report[f"gemm_float_warp_tiled_kernel<{layout}, true>"]
        assert registers <= 255 and spilled == 0, (layout, registers, spilled)


@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("c++filt") is None, reason="no CUDA compiler")
def test_the_wgmma_kernels_build_for_sm90a_into_hgmma_and_tma_without_spills_or_serialisation(tmp_path):
    """Compiled for sm_90a (no GPU needed): the wgmma kernels fit their launch
    bounds (one block per SM: 256 threads, or 384 with the TMA producer)
    without spilling, ptxas warns of nothing (it warns when it has to
    serialise wgmma instructions), and the machine code issues HGMMA, four
    per 64-deep stage in each kernel (one per operand layout and tile width:
    m64n128, or m64n256 for 128x256 tiles; m/n-major operands marked transposed: tnspA, tnspB), moves
    registers to the 128x256 kernels' consumers (USETMAXREG: one release,
    one claim), and loads with the TMA (UTMALDG)."""
    output = tmp_path / "cuda_gemm_sm90a.o"
    report = ptxas_report(os.path.join("csrc", "common", "cuda_gemm.cu"), arch="90a", output=output)
    assert report["warnings"] == []
    layouts = [(a, b) for a in ("true", "false") for b in ("true", "false")]
    tma = [f"gemm_wgmma_tma_kernel<c10::BFloat16, {a}, {b}, {n}>" for a, b in layouts for n in (128, 256)]
    for kernel, bound in [(name, 168) for name in tma]:
        registers, spilled = report[kernel]
        assert registers <= bound and spilled == 0, (kernel, registers, spilled)
    tool = cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump to read the machine code with")
    sass = subprocess.run([tool, "-sass", str(output)], capture_output=True, text=True, check=True).stdout
    hgmma = re.findall(r"HGMMA\.64x(\d+)x16\.F32(\.BF16)? R\d+, gdesc\[UR\d+\](\.tnspA)?(\.tnspB)?", sass)
    for bf16 in ("", ".BF16"):  # float16, bfloat16
        for n, kernels in (("128", 4), ("256", 4)):
            kinds = [(a, b) for width, kind, a, b in hgmma if kind == bf16 and width == n]
            assert len(kinds) == kernels * 4, (bf16, n, len(kinds))
            for transposed in ((".tnspA", ""), ("", ".tnspB"), (".tnspA", ".tnspB")):
                assert kinds.count(transposed) == 4, (bf16, n, transposed, kinds.count(transposed))
    assert sass.count("USETMAXREG") == 2 * 4 * 2, sass.count("USETMAXREG")
    assert "UTMALDG" in sass


def test_every_op_has_cpu_autograd_and_fake_kernels():
    for op in OPS:
        for key in ("CPU", "Autograd", "Meta"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastlayers::{op}", key), (op, key)


def test_import_with_a_mismatched_build_says_how_to_rebuild():
    code = (
        "import sys, types; info = types.ModuleType('fastlayers._build_info');"
        "info.TORCH_VERSION = '0.0-other'; info.WITH_CUDA = False;"
        "sys.modules['fastlayers._build_info'] = info; import fastlayers"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "built for torch 0.0-other" in result.stderr
    assert "pip install --no-build-isolation -e ." in result.stderr


def test_an_error_raised_in_the_extension_reaches_python():
    """In a subprocess, so that a crash fails this one test: an extension that
    carries its own static libstdc++ (linked by a foreign compiler) dies on the
    first error message it formats (setup.py names the shared libstdc++)."""
    code = (
        "import torch, fastlayers\n"
        "try:\n"
        "    fastlayers.functional.center(torch.randn(3, 4), 2)\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert "fastlayers::center: dim 2 is out of range" in result.stdout
