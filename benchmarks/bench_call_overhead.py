"""Wall time per call of each module at a tiny shape, where the fixed cost of
Python, the dispatcher and autograd is what gets timed: forward with nothing
needing a gradient, forward with parameters that need one, and
forward+backward. Eager chapter code is timed beside it in the same run.

    python -m benchmarks.bench_call_overhead [--repeats N]

Used to check that the torch.func route (taken only while a transform is
active) leaves the plain eager path's per-call cost as it was."""

import argparse

import torch
from torch import nn

import fastlayers

from .anchors import EagerCentered, EagerFixedHiddenMLP
from .timing import cpu_model, fmt_table, wall_us


def cases():
    torch.manual_seed(0)
    x = torch.randn(2, 20)
    fused = fastlayers.FusedLinearReLU(20, 256)
    eager_lr = nn.Sequential(nn.Linear(20, 256), nn.ReLU())
    fhm = fastlayers.FixedHiddenMLP(20)
    eager_fhm = EagerFixedHiddenMLP(20)
    centered, eager_centered = fastlayers.Centered(), EagerCentered()
    xc = torch.randn(4, 8)
    return [
        ("FusedLinearReLU 2x20->256", fused, eager_lr, x),
        ("Centered 4x8", centered, eager_centered, xc),
        ("FixedHiddenMLP 2x20", fhm, eager_fhm, x),
    ]


def measure(module, x, repeats):
    params = list(module.parameters())
    xg = x.clone().requires_grad_(not params)
    out = {}
    with torch.no_grad():
        out["fwd, no grad"] = wall_us(lambda: module(x), repeats=repeats)
    out["fwd, grad"] = wall_us(lambda: module(xg), repeats=repeats)

    def step():
        module(xg).sum().backward()

    out["fwd+bwd"] = wall_us(step, repeats=repeats)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for name, mod, ref, x in cases():
        ours, theirs = measure(mod, x, a.repeats), measure(ref, x, a.repeats)
        for k in ours:
            rows.append({"case": name, "pass": k, "fastlayers µs": f"{ours[k]:.1f}", "eager µs": f"{theirs[k]:.1f}"})
    print(f"# per-call wall time, {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(fmt_table(rows, ["case", "pass", "fastlayers µs", "eager µs"]))


if __name__ == "__main__":
    main()
