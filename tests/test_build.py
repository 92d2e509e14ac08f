"""The build and its import-time checks."""

import os
import subprocess
import sys

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
