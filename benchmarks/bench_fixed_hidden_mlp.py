"""FixedHiddenMLP against the chapter's eager block (a host sync per loop
test), torch.compile of it (the loop breaks the graph) and the smart-eager
form a PyTorch user would write instead of the loop (the three products,
then k = ceil(log2(sum|h|)) from a float64 sum and one multiplication by
2^-k: no loop, no host sync): wall time per call, forward and
forward+backward, in float32 and bfloat16.

    python -m benchmarks.bench_fixed_hidden_mlp [--quick] [--device cpu|cuda] [--json FILE]
"""

import sys

import torch

from fastlayers import FixedHiddenMLP

from .anchors import EagerFixedHiddenMLP
from .timing import bench_main, wall_us

SHAPES = [(2, 20), (64, 20), (4096, 256), (65536, 1024)]
QUICK = [(2, 20), (64, 20), (4096, 256)]
DTYPES = {"cpu": [torch.float32, torch.bfloat16], "cuda": [torch.float32]}


def smart_eager(block):
    """The chapter's block with the halving loop replaced by its closed form."""

    def forward(x):
        lin, c = block.linear, block.rand_weight
        h = lin(torch.relu(torch.mm(lin(x), c) + 1))
        s = h.abs().sum(dtype=torch.float64)
        k = torch.where(s > 1, torch.ceil(torch.log2(s)), torch.zeros_like(s))
        return (h * torch.exp2(-k).to(h.dtype)).sum()

    return forward


def run(device, quick=False, compile_too=None):
    compile_too = (not quick) if compile_too is None else compile_too
    torch.manual_seed(0)
    rows = []
    cases = [(b, f, dt) for dt in DTYPES[device] for b, f in (QUICK if quick else SHAPES)]
    for batch, features, dtype in cases:
        if device == "cpu" and batch * features * features > 2**34:
            continue  # 65536x1024: seconds per call on a 2-core machine
        eager = EagerFixedHiddenMLP(features).to(device, dtype)
        fused = FixedHiddenMLP(features).to(device, dtype)
        fused.load_state_dict(eager.state_dict())
        x = torch.rand(batch, features, device=device, dtype=dtype)
        contenders = {"eager": eager, "smart eager": smart_eager(eager), "fastlayers": fused}
        if compile_too:
            torch._dynamo.reset()
            contenders["compile"] = torch.compile(eager)
        big = batch * features * features >= 2**30
        calls = 2 if big else None
        row_fwd = {"case": f"fwd {batch}x{features} {str(dtype)[6:]}"}
        row_bwd = {"case": f"fwd+bwd {batch}x{features} {str(dtype)[6:]}"}
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
    bench_main(
        argv,
        __doc__,
        run,
        "FixedHiddenMLP (return_sum=True), µs per call (wall: N calls then one sync)",
        "no 65536x1024, no torch.compile",
    )


if __name__ == "__main__":
    sys.exit(main())
