"""FixedHiddenMLP against the chapter's eager block (a host sync per loop
test) and torch.compile of it (the loop breaks the graph): wall time per
call, forward and forward+backward.

    python -m benchmarks.bench_fixed_hidden_mlp [--quick] [--device cpu|cuda] [--json FILE]
"""

import argparse
import json
import sys

import torch
from torch import nn
from torch.nn import functional as TF

from fastlayers import FixedHiddenMLP

from .bench_linear_relu import environment
from .timing import fmt_table, wall_us

SHAPES = [(2, 20), (64, 20), (4096, 256), (65536, 1024)]
QUICK = [(2, 20), (64, 20), (4096, 256)]


class ChapterBlock(nn.Module):
    """The chapter's FixedHiddenMLP, as written there (rand_weight a buffer)."""

    def __init__(self, features):
        super().__init__()
        self.register_buffer("rand_weight", torch.rand((features, features)))
        self.linear = nn.Linear(features, features)

    def forward(self, x):
        x = self.linear(x)
        x = TF.relu(torch.mm(x, self.rand_weight) + 1)
        x = self.linear(x)
        while x.abs().sum() > 1:
            x /= 2
        return x.sum()


def run(device, quick=False, compile_too=None):
    compile_too = (not quick) if compile_too is None else compile_too
    torch.manual_seed(0)
    rows = []
    for batch, features in QUICK if quick else SHAPES:
        eager = ChapterBlock(features).to(device)
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="no 65536x1024, no torch.compile")
    p.add_argument("--json", help="also write the rows and the environment here")
    args = p.parse_args(argv)
    rows = run(args.device, args.quick)
    env = environment(args.device)
    print("FixedHiddenMLP (return_sum=True), µs per call (wall: N calls then one sync), float32")
    print(", ".join(f"{k} {v}" for k, v in env.items()))
    columns = ["case"]
    for r in rows:
        columns += [c for c in r if c not in columns and c not in ("speedup vs best", "vs eager")]
    columns += ["vs eager", "speedup vs best"]
    shown = [{c: (f"{v:.2f}" if c in ("speedup vs best", "vs eager") else f"{v:.1f}") if isinstance(v, float) else v for c, v in r.items()} for r in rows]
    print(fmt_table(shown, columns))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
