"""center against what a user would pick instead: eager `x - x.mean(dim,
keepdim=True)` and torch.compile of it, whole-tensor and per-row (last dim)
and per-column (dim 0), from 10^3 elements up; with the memory-bandwidth
limit measured in the same run (a copy: one read + one write).

    python -m benchmarks.bench_center [--quick] [--device cpu|cuda] [--json FILE]
"""

import sys

import torch

from fastlayers import functional as FL
from fastlayers import reference as ref

from .timing import bench_main, gpu_us, wall_us

SIZES = {"cpu": [10**3, 2**16, 2**20, 2**24], "cuda": [10**3, 2**16, 2**20, 2**24, 2**26, 2**28]}
QUICK = {"cpu": [10**3, 2**16, 2**20], "cuda": [10**3, 2**16, 2**24]}
ROW = 1024  # row length of the per-row and per-column cases


def cases(n):
    yield "whole", (n,), None
    if n >= ROW:
        yield "rows", (n // ROW, ROW), -1
        yield "cols", (n // ROW, ROW), 0


def run(device, quick=False, compile_too=None):
    compile_too = (not quick) if compile_too is None else compile_too
    torch.manual_seed(0)
    rows = []
    for n in (QUICK if quick else SIZES)[device]:
        x = torch.randn(n, device=device) + 3.0
        copy_wall = wall_us(lambda: x.clone())
        copy_gpu = gpu_us([lambda: x.clone()]) if device == "cuda" else None
        for kind, shape, dim in cases(n):
            xs = x.view(shape)
            row = {"case": f"{kind} {n}", "copy wall": copy_wall}
            if copy_gpu is not None:
                row["copy gpu"] = copy_gpu
            contenders = {"eager": lambda: ref.center(xs, dim), "fastlayers": lambda: FL.center(xs, dim)}
            if compile_too:
                torch._dynamo.reset()  # a fresh compile per case, not a recompile
                compiled = torch.compile(ref.center, fullgraph=True, dynamic=False)
                contenders["compile"] = lambda: compiled(xs, dim)
            for name, f in contenders.items():
                row[f"{name} wall"] = wall_us(f)
                if device == "cuda":
                    row[f"{name} gpu"] = gpu_us([f])
            base = [v for k, v in row.items() if k.endswith(" wall") and k.split()[0] in ("eager", "compile")]
            row["speedup vs best"] = min(base) / row["fastlayers wall"]
            if device == "cuda":
                # whole tensor: 3 passes (read, read, write) at copy speed = 1.5 copies; along a dim: 1 copy
                passes = 1.5 if kind == "whole" else 1.0
                row["of bw limit"] = passes * copy_gpu / row["fastlayers gpu"]
            rows.append(row)
    return rows


def main(argv=None):
    bench_main(
        argv,
        __doc__,
        run,
        "center, µs per call (wall: N calls then one sync; gpu: CUDA events, median); float32, x = randn + 3",
        "fewer sizes, no torch.compile",
    )


if __name__ == "__main__":
    sys.exit(main())
