"""The main job (scripts/demo.sh): on the device at hand,
1. check every fastlayers op (linear_relu, center, fixed_hidden_mlp) against
   its plain-PyTorch reference (for FixedHiddenMLP: the chapter's loop),
2. train a small classifier on real data (scikit-learn's 8x8 handwritten
   digits) with FusedLinearReLU layers and with nn.Linear + nn.ReLU, from the
   same initial weights, and compare,
3. run the benchmark of every op against its anchors (python -m benchmarks
   --quick; `--full` for all shapes) and print its tables.
"""

import argparse
import tempfile
import time

import torch
from torch import nn

import fastlayers
from fastlayers import functional as FL
from fastlayers import reference as ref
from fastlayers.testing import eager_bound, rel_error, tolerance

from . import suite


def check_ops(device):
    print(f"\n== 1. ops against the float64 reference ({device})")
    torch.manual_seed(0)
    dtypes = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
    print("relative errors against float64; eager = plain PyTorch in the same dtype")
    print(f"{'op':<18}{'dtype':>10}{'fwd err':>11}{'eager fwd':>11}{'grad err':>11}{'eager grad':>12}")
    ok = True
    for dtype in dtypes:
        x = torch.randn(37, 3, 50, device=device)
        w = torch.randn(70, 50, device=device) / 50**0.5
        b = torch.randn(70, device=device)
        g = torch.randn(37, 3, 70, device=device)
        args64 = [t.double().requires_grad_() for t in (x, w, b)]
        expected = ref.linear_relu(*args64)
        grads64 = torch.autograd.grad(expected, args64, g.double())
        args = [t.to(dtype).requires_grad_() for t in (x, w, b)]
        out = FL.linear_relu(*args)
        grads = torch.autograd.grad(out, args, g.to(dtype))
        eager = ref.linear_relu(*args)
        eager_grads = torch.autograd.grad(eager, args, g.to(dtype))
        eager_grad_err = max(rel_error(a, e) for a, e in zip(eager_grads, grads64))
        fwd_err = rel_error(out, expected)
        grad_err = max(rel_error(a, e) for a, e in zip(grads, grads64))
        eager_err = rel_error(eager, expected)
        bound = tolerance(dtype, eager_err)
        ok &= fwd_err <= bound
        print(
            f"{'linear_relu':<18}{str(dtype)[6:]:>10}{fwd_err:>11.2e}{eager_err:>11.2e}{grad_err:>11.2e}{eager_grad_err:>12.2e}"
        )
    for dim in (None, -1, (0, 2)):
        for dtype in dtypes:
            x = torch.randn(37, 3, 50, device=device) + 100.0  # a large common offset
            g = torch.randn(37, 3, 50, device=device)
            d = list(dim) if isinstance(dim, tuple) else dim
            x64 = x.double().requires_grad_()
            expected = ref.center(x64, d)
            (grad64,) = torch.autograd.grad(expected, x64, g.double())
            xd = x.to(dtype).requires_grad_()
            out = FL.center(xd, dim)
            (grad,) = torch.autograd.grad(out, xd, g.to(dtype))
            eager = ref.center(xd, d)
            (eager_grad,) = torch.autograd.grad(eager, xd, g.to(dtype))
            errs = [
                rel_error(out, expected),
                rel_error(eager, expected),
                rel_error(grad, grad64),
                rel_error(eager_grad, grad64),
            ]
            bound = tolerance(dtype, errs[1])
            ok &= errs[0] <= bound
            name = f"center dim={dim}"
            print(f"{name:<18}{str(dtype)[6:]:>10}" + "".join(f"{e:>11.2e}" for e in errs[:3]) + f"{errs[3]:>12.2e}")
    print(f"\n{'FixedHiddenMLP':<18}{'dtype':>10}{'scale':>8}{'k':>5}{'loop k':>8}{'out err':>11}{'eager err':>11}")
    for dtype in (torch.float64, torch.float32):
        for scale in (1e-3, 1.0, 1e4, 1e9):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(64, 20, generator=g, dtype=torch.float64) * scale**0.5
            w = torch.randn(20, 20, generator=g, dtype=torch.float64) * scale**0.5 / 20**0.5
            b = torch.randn(20, generator=g, dtype=torch.float64) * scale**0.5
            c = torch.rand(20, 20, generator=g, dtype=torch.float64)
            args = [t.to(device, dtype) for t in (x, w, b, c)]
            exact = ref.fixed_hidden_mlp(*[t.double() for t in args])
            out, k = FL.fixed_hidden_mlp(*args, return_halvings=True)
            eager, loop_k = ref.fixed_hidden_mlp(*args, return_halvings=True)
            err, eager_err = rel_error(out, exact), rel_error(eager, exact)
            ok &= int(k) == loop_k and err <= (1e-12 if dtype == torch.float64 else eager_bound(eager_err, slack=1e-5))
            print(f"{'':<18}{str(dtype)[6:]:>10}{scale:>8.0e}{int(k):>5}{loop_k:>8}{err:>11.2e}{eager_err:>11.2e}")
    print("all within bounds" if ok else "SOME ERRORS ABOVE THEIR BOUNDS")
    return ok


def digits_demo(device, epochs=60):
    print(f"\n== 2. real data: scikit-learn's handwritten digits ({device})")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("scikit-learn is not installed: skipping the digits demo")
        return
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32, device=device) / 16.0
    y = torch.tensor(data.target, device=device)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
    x, y = x[perm], y[perm]
    split = int(0.8 * len(x))

    def model(fused):
        torch.manual_seed(0)
        if fused:
            return nn.Sequential(
                fastlayers.FusedLinearReLU(64, 256), fastlayers.FusedLinearReLU(256, 128), nn.Linear(128, 10)
            )
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    print(f"{'layers':<26}{'train loss':>11}{'test acc':>10}{'ms/epoch':>10}")
    for fused in (False, True):
        net = model(fused).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        start = time.perf_counter()
        for _ in range(epochs):
            for i in range(0, split, 64):
                loss = nn.functional.cross_entropy(net(x[i : min(i + 64, split)]), y[i : min(i + 64, split)])
                opt.zero_grad()
                loss.backward()
                opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / epochs * 1e3
        with torch.no_grad():
            acc = (net(x[split:]).argmax(1) == y[split:]).float().mean().item()
        name = "FusedLinearReLU" if fused else "nn.Linear + nn.ReLU"
        print(f"{name:<26}{loss.item():>11.4f}{acc:>10.3f}{ms:>10.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--full", action="store_true", help="the full benchmark: all anchor shapes")
    p.add_argument(
        "--results",
        metavar="DIR",
        help="keep the benchmark's results.json, results.md and plots in DIR (default: a temporary folder)",
    )
    args = p.parse_args(argv)
    ok = check_ops(args.device)
    digits_demo(args.device)
    print("\n== 3. benchmark (python -m benchmarks" + ("" if args.full else " --quick") + ")")
    with tempfile.TemporaryDirectory() as tmp:
        bench_args = ["--device", args.device, "--out", args.results or tmp] + ([] if args.full else ["--quick"])
        suite.main(bench_args)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
