"""Builds fastlayers' CUDA kernels as CPU code that runs under the emulator in
emulator.h, and loads them as the ops `torch.ops.fastlayers_emulated.*`
(the same schemas as `torch.ops.fastlayers.*`, kernels on the CPU key).

The sources are the real csrc/ files, copied with these mechanical rewrites:

  kernel<<<grid, block, shared, stream>>>(args)  ->  ::emu::launch({grid, block, shared, stream}, "kernel",
                                                                   kernel, args)
  extern __shared__ T name[];                     ->  T* name = <the launch's dynamic shared memory>
  TORCH_LIBRARY[_FRAGMENT](fastlayers, ...)        ->  TORCH_LIBRARY[_FRAGMENT](fastlayers_emulated, ...)
  TORCH_LIBRARY_IMPL(fastlayers, CUDA, ...)        ->  TORCH_LIBRARY_IMPL(fastlayers_emulated, CPU, ...)

Nothing else changes, so a kernel bug shows here as it would on a GPU
(up to the limits listed in emulator.h).
"""

import os
import re
import subprocess

import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(ROOT, "csrc")
BUILD = os.path.join(ROOT, "build", "cuda_emulation")
NAMESPACE = "fastlayers_emulated"

# A kernel name, optionally with template arguments (one level of nesting),
# then <<<config>>>( .
_LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<(?:[^<>;]|<[^<>;]*>)*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w: ]+?)\s+(\w+)\[\]\s*;")


def _launch(m):
    no_args = m.string[m.end() :].lstrip().startswith(")")
    name = " ".join(m.group(1).split()).replace('"', "")  # the kernel as the launch names it, for the launch log
    return f'::emu::launch(::emu::LaunchConfig{{{m.group(2)}}}, "{name}", {m.group(1)}' + ("" if no_args else ", ")


def rewrite(text):
    text = _LAUNCH.sub(_launch, text)
    text = _EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::emu::dynamic_shared());", text
    )
    text = text.replace("TORCH_LIBRARY(fastlayers,", f"TORCH_LIBRARY({NAMESPACE},")
    text = text.replace("TORCH_LIBRARY_FRAGMENT(fastlayers,", f"TORCH_LIBRARY_FRAGMENT({NAMESPACE},")
    text = text.replace("TORCH_LIBRARY_IMPL(fastlayers, CUDA,", f"TORCH_LIBRARY_IMPL({NAMESPACE}, CPU,")
    if "<<<" in text:
        raise RuntimeError("CUDA emulation: a kernel launch was not rewritten")
    return text


def _write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


_COMPILED_CPP = ("registration.cpp", "cpu_features.cpp", "schema.cpp")


def sources():
    """Copies csrc/ rewritten into the build folder (and the emulator's own
    self_test.cu); returns the files to compile."""
    out_root = os.path.join(BUILD, "csrc")
    compiled = []
    for dirpath, _, files in os.walk(CSRC):
        for name in files:
            # the schemas (registration.cpp, each op's schema.cpp) and the CPU
            # switches registration.cpp names (cpu_features.cpp)
            if not name.endswith((".h", ".cuh", ".cu")) and name not in _COMPILED_CPP:
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), CSRC)
            with open(os.path.join(dirpath, name)) as f:
                text = rewrite(f.read())
            target = os.path.join(out_root, rel)
            if name.endswith(".cu") or name == "schema.cpp":  # .cu: compiled by the C++ compiler
                # one object per file, named after its folder: <op>/<op>_cuda_emulated.cpp, <op>/<op>_schema.cpp
                suffix = "_cuda_emulated.cpp" if name.endswith(".cu") else "_schema.cpp"
                target = os.path.join(os.path.dirname(target), os.path.basename(dirpath) + suffix)
                compiled.append(target)
            elif name in _COMPILED_CPP:
                compiled.append(target)
            _write_if_changed(target, text)
    with open(os.path.join(HERE, "self_test.cu")) as f:
        text = rewrite(f.read())
    target = os.path.join(BUILD, "self_test_emulated.cpp")
    _write_if_changed(target, text)
    return sorted(compiled) + [target]


def load(sanitize=False, verbose=False):
    """Builds (incrementally) and loads the emulated kernels; returns
    torch.ops.fastlayers_emulated. sanitize=True builds them with
    AddressSanitizer and the alignment check of UndefinedBehaviorSanitizer
    (the process must preload libasan: see asan_environment)."""
    if hasattr(torch.ops, NAMESPACE) and hasattr(getattr(torch.ops, NAMESPACE), "center"):
        return getattr(torch.ops, NAMESPACE)
    files = sources()
    cflags = ["-O2", "-include", os.path.join(HERE, "emulator.h")]
    ldflags = []
    if sanitize:  # out-of-bounds accesses, and misaligned vector accesses (which fault on a GPU)
        sanitizers = ["-fsanitize=address,alignment", "-fno-sanitize-recover=alignment"]
        cflags += ["-g", "-fno-omit-frame-pointer"] + sanitizers
        ldflags += sanitizers
    build_dir = BUILD + ("_asan" if sanitize else "")
    os.makedirs(build_dir, exist_ok=True)
    cpp_extension.load(
        name=NAMESPACE,
        sources=files,
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        extra_include_paths=[os.path.join(HERE, "include")],
        build_directory=build_dir,
        with_cuda=False,
        is_python_module=False,
        verbose=verbose,
    )
    return getattr(torch.ops, NAMESPACE)


def asan_environment():
    """Environment for a Python process that loads the sanitized build, or
    None when the compiler has no AddressSanitizer runtime. libstdc++ is
    preloaded too, so that the sanitizer finds the C++ runtime it wraps."""
    libs = []
    for name in ("libasan.so", "libstdc++.so"):
        path = subprocess.run(
            [os.environ.get("CXX", "c++"), f"-print-file-name={name}"], capture_output=True, text=True
        ).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            return None
        libs.append(path)
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(libs + [env.get("LD_PRELOAD", "")]).strip()
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    env["FASTLAYERS_EMULATION_ASAN"] = "1"
    return env
