import pytest
import torch

import fastlayers  # noqa: F401  (fails loudly, with the build hint, if the extension is missing)

CUDA = torch.cuda.is_available()

# CUDA cases run wherever a GPU is visible and skip elsewhere (CI has none).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]


# Bad-input tests run on the real devices and on meta tensors, whose checks
# are the fake kernels' (fastlayers/ops.py): both must give the same words.
CHECKED_DEVICES = DEVICES + ["meta"]


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
