import pytest
import torch

import fastlayers  # noqa: F401  (fails loudly, with the build hint, if the extension is missing)

CUDA = torch.cuda.is_available()

# CUDA cases run wherever a GPU is visible and skip elsewhere (CI has none).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _exact_float32():
    """Forward checks compare against float64: no TF32 shortcuts."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def rel_error(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()
