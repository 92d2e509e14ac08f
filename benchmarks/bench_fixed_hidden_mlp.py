"""FixedHiddenMLP against the chapter's eager block (a host sync per loop
test) and torch.compile of it (the loop breaks the graph): wall time per
call, forward and forward+backward.

    python -m benchmarks.bench_fixed_hidden_mlp [--quick] [--device cpu|cuda] [--json FILE]
"""

import sys

import torch

from fastlayers import FixedHiddenMLP
from fastlayers import reference as ref

from .timing import bench_main, wall_us

SHAPES = [(2, 20), (64, 20), (4096, 256), (65536, 1024)]
QUICK = [(2, 20), (64, 20), (4096, 256)]


def run(device, quick=False, compile_too=None):
    compile_too = (not quick) if compile_too is None else compile_too
    torch.manual_seed(0)
    rows = []
    for batch, features in QUICK if quick else SHAPES:
        eager = ref.ChapterFixedHiddenMLP(features).to(device)
        fused = FixedHiddenMLP(features).to(device)
        fused.load_state_dict(eager.state_dict())
        x = torch.rand(batch, features, device=device)
        contenders = {"eager": eager, "fastlayers": fused}
        if compile_too:
            torch._dynamo.reset()
            contenders["compile"] = torch.compile(eager)
        big = batch * features * features >= 2**30
        calls = 2 if big else None
        row_fwd = {"case": f"fwd {batch}x{features}"}
        row_bwd = {"case": f"fwd+bwd {batch}x{features}"}
        for name, model in contenders.items():
            with torch.no_grad():
                row_fwd[f"{name} wall"] = wall_us(lambda: model(x), calls=calls)

            def step(model=model):
                model(x).backward()

            row_bwd[f"{name} wall"] = wall_us(step, calls=calls)
        for row in (row_fwd, row_bwd):
            base = [v for k, v in row.items() if k.endswith(" wall") and not k.startswith("fastlayers")]
            row["speedup vs best"] = min(base) / row["fastlayers wall"]
            row["vs eager"] = row["eager wall"] / row["fastlayers wall"]
        rows += [row_fwd, row_bwd]
    return rows


def main(argv=None):
    bench_main(argv, __doc__, run, 'FixedHiddenMLP (return_sum=True), µs per call (wall: N calls then one sync), float32', 'no 65536x1024, no torch.compile')


if __name__ == "__main__":
    sys.exit(main())
