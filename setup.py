"""Builds fastlayers' compiled extension, fastlayers._C, against the torch
already installed (use `pip install --no-build-isolation -e .`).

The CPU kernels are always built. The CUDA kernels are built when torch is a
CUDA build, nvcc is found and a GPU is visible, or when FORCE_CUDA=1 (e.g. to
compile them on a machine without a GPU); FORCE_CUDA=0 leaves them out.
TORCH_CUDA_ARCH_LIST picks the GPU targets (default: 8.0 and 9.0, plus 9.0 PTX
for newer GPUs).
DEBUG=1 builds with -O0 -g.
"""

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The CUDA toolkit that holds nvcc, or None. nvcc on PATH may be a
    wrapper script, so candidates are checked for the real layout."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in candidates:
        if (
            home
            and os.path.isfile(os.path.join(home, "bin", "nvcc"))
            and os.path.isfile(os.path.join(home, "include", "cuda_runtime.h"))
        ):
            return home
    return None


# torch.utils.cpp_extension reads CUDA_HOME when it is imported.
CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def want_cuda():
    force = os.environ.get("FORCE_CUDA")
    if force == "0":
        return False
    have_toolchain = torch.version.cuda is not None and CUDA_HOME is not None
    if force == "1":
        if not have_toolchain:
            sys.exit(
                "FORCE_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch {torch.__version__} is {'a CPU-only build' if torch.version.cuda is None else 'a CUDA build'}"
                f", nvcc {'found in ' + CUDA_HOME if CUDA_HOME else 'not found'}."
            )
        return True
    return have_toolchain and torch.cuda.is_available()


def cuda_library_includes():
    """Headers of the CUDA libraries torch's own headers include (cublas_v2.h,
    cusparse.h, ...): pip-installed torch ships them under nvidia/*/include."""
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", "include")) if os.path.isdir(d))


def write_build_info(with_cuda):
    with open(os.path.join(ROOT, "fastlayers", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py: what fastlayers._C was built against.\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"WITH_CUDA = {with_cuda!r}\n")
        # the GPU targets (9.0a: sm_90a code, which the wgmma kernel needs)
        f.write(f"CUDA_ARCH_LIST = {os.environ.get('TORCH_CUDA_ARCH_LIST', '') if with_cuda else ''!r}\n")


def extension():
    debug = os.environ.get("DEBUG") == "1"
    with_cuda = want_cuda()
    if with_cuda:
        # +PTX: newer GPUs (sm_100, ...) JIT-compile the sm_90 code. 9.0a
        # instead of 9.0 builds sm_90a code for Hopper, with the wgmma kernel
        # (experimental: see csrc/common/gemm_policy.h).
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    # Every op's C++ (schema.cpp, cpu.cpp, autograd.cpp, autocast.cpp) and CUDA (cuda.cu)
    # files, and the shared ones in csrc/common (the CUDA GEMM: cuda_gemm.cu).
    sources = ["csrc/registration.cpp"] + sorted(glob.glob("csrc/*/*.cpp"))
    # -fopenmp turns at::parallel_for on (its OpenMP pragmas live in the
    # headers); libgomp itself is the one torch already loaded.
    cxx = (["-O0", "-g"] if debug else ["-O3"]) + ["-fopenmp"]
    # libstdc++ as the shared library torch uses, named before the compiler's
    # own -lstdc++: a compiler that links it statically (seen: the
    # /opt/gcc/bin/g++ a GPU machine's Python was built with) would otherwise
    # put a second, uninitialised copy of the C++ runtime in the extension,
    # and the first error message it formats crashes the process.
    link = ["-l:libstdc++.so.6"] if sys.platform.startswith("linux") else []
    args = dict(extra_compile_args={"cxx": cxx}, extra_link_args=link)
    if with_cuda:
        sources += sorted(glob.glob("csrc/*/*.cu"))
        args["extra_compile_args"]["nvcc"] = (["-O0", "-g", "-lineinfo"] if debug else ["-O3"]) + [
            "--expt-relaxed-constexpr"
        ]
        args["include_dirs"] = cuda_library_includes()
        args["define_macros"] = [("FASTLAYERS_WITH_CUDA", "1")]
        ext = CUDAExtension("fastlayers._C", sources, **args)
    else:
        ext = CppExtension("fastlayers._C", sources, **args)
    write_build_info(with_cuda)
    return ext


setup(
    name="fastlayers",
    version="0.1.0",
    description="Fused PyTorch layers with hand-written CPU and CUDA kernels",
    packages=["fastlayers"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.6"],
)
