"""torch.func over every op and module: grad, vjp, jacrev, jacfwd, hessian,
vmap (with the ops' batching rules), functional_call and per-sample
gradients, each against the plain-PyTorch reference in float64."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vjp, vmap

import fastlayers
import fastlayers.functional as F
import fastlayers.reference as ref
from fastlayers import transforms

from .chapter import ChapterCentered, ChapterFixedHiddenMLP

D = torch.float64


def close(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y)
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            close(a[k], b[k])
        return
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)


def linear_relu_args(device, rows=5, k=7, n=6):
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g, dtype=D).to(device) for s in ((rows, k), (n, k), (n,)))
    return x, w, b


def fixed_hidden_args(device, rows=4, f=7):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, f, generator=g, dtype=D)
    w = torch.randn(f, f, generator=g, dtype=D) * 0.3
    b = torch.randn(f, generator=g, dtype=D)
    c = torch.rand(f, f, generator=g, dtype=D)
    return [t.to(device) for t in (x, w, b, c)]


@pytest.mark.parametrize("transform", [jacrev, jacfwd])
def test_linear_relu_jacobians(transform, device):
    args = linear_relu_args(device)
    close(transform(F.linear_relu, argnums=(0, 1, 2))(*args), jacrev(ref.linear_relu, argnums=(0, 1, 2))(*args))


def test_linear_relu_grad_vjp_hessian(device):
    x, w, b = linear_relu_args(device)
    loss = lambda f: lambda x, w, b: (f(x, w, b) ** 2).sum()  # noqa: E731
    close(
        grad(loss(F.linear_relu), argnums=(0, 1, 2))(x, w, b), grad(loss(ref.linear_relu), argnums=(0, 1, 2))(x, w, b)
    )
    out, pull = vjp(F.linear_relu, x, w, b)
    ref_out, ref_pull = vjp(ref.linear_relu, x, w, b)
    cot = torch.randn_like(out)
    close(out, ref_out)
    close(pull(cot), ref_pull(cot))
    close(hessian(lambda x: loss(F.linear_relu)(x, w, b))(x), hessian(lambda x: loss(ref.linear_relu)(x, w, b))(x))


def test_linear_relu_without_bias_and_with_leading_dims(device):
    x, w, _ = linear_relu_args(device)
    x3 = x.reshape(1, 5, 7).expand(2, 5, 7).contiguous()
    close(jacrev(F.linear_relu, argnums=(0, 1))(x3, w, None), jacrev(ref.linear_relu, argnums=(0, 1))(x3, w, None))


@pytest.mark.parametrize("dim", [None, 1, (0, 2), -1])
def test_center_transforms(dim, device):
    x = torch.randn(3, 4, 5, dtype=D, device=device)
    f, r = (lambda x: F.center(x, dim)), (lambda x: ref.center(x, dim))
    close(jacrev(f)(x), jacrev(r)(x))
    close(jacfwd(f)(x), jacrev(r)(x))
    close(grad(lambda x: (f(x) ** 3).sum())(x), grad(lambda x: (r(x) ** 3).sum())(x))
    if dim != (0, 2):  # a dim the 2-d samples have
        close(vmap(f)(x), vmap(r)(x))
        close(vmap(f, in_dims=2, out_dims=1)(x), vmap(r, in_dims=2, out_dims=1)(x))


def test_center_of_a_batch_of_scalars():
    x = torch.tensor([1.0, float("nan"), float("inf")], dtype=D)
    close(vmap(F.center)(x), torch.tensor([0.0, float("nan"), float("nan")], dtype=D))


@pytest.mark.parametrize("return_sum", [True, False])
def test_fixed_hidden_mlp_jacobians(return_sum, device):
    x, w, b, c = fixed_hidden_args(device)
    f = lambda x, w, b: F.fixed_hidden_mlp(x, w, b, c, return_sum)  # noqa: E731
    r = lambda x, w, b: ref.fixed_hidden_mlp(x, w, b, c, return_sum)  # noqa: E731
    assert F.fixed_hidden_mlp(x, w, b, c, return_halvings=True)[1] > 0  # the halving is exercised
    expected = jacrev(r, argnums=(0, 1, 2))(x, w, b)
    close(jacrev(f, argnums=(0, 1, 2))(x, w, b), expected)
    close(jacfwd(f, argnums=(0, 1, 2))(x, w, b), expected)


def test_fixed_hidden_mlp_vmap_halves_each_sample_on_its_own(device):
    x, w, b, c = fixed_hidden_args(device)
    x = torch.stack([x, 100 * x, 1e4 * x])  # different halving counts per sample
    out = vmap(lambda x: F.fixed_hidden_mlp(x, w, b, c, return_halvings=True))(x)
    expected = [ref.fixed_hidden_mlp(xi, w, b, c, return_halvings=True) for xi in x]
    close(out[0], torch.stack([e[0] for e in expected]))
    assert out[1].tolist() == [int(e[1]) for e in expected]
    assert len(set(out[1].tolist())) == 3


def chapter_model(fused: bool):
    torch.manual_seed(0)
    if fused:
        layers = [
            fastlayers.FusedLinearReLU(7, 6),
            fastlayers.Centered(-1),
            nn.Linear(6, 7),
            fastlayers.FixedHiddenMLP(7),
        ]
    else:
        layers = [
            nn.Sequential(nn.Linear(7, 6), nn.ReLU()),
            ChapterCentered(-1),
            nn.Linear(6, 7),
            ChapterFixedHiddenMLP(7),
        ]
    return nn.Sequential(*layers).to(D)


def test_per_sample_gradients_over_a_model_with_every_module(device):
    net = chapter_model(fused=True).to(device)
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.randn(6, 7, dtype=D, device=device)

    def loss(params, sample):
        return functional_call(net, params, (sample.unsqueeze(0),))

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    # The reference: ordinary autograd, one sample at a time.
    for i in range(x.shape[0]):
        net.zero_grad()
        net(x[i : i + 1]).backward()
        for name, p in net.named_parameters():
            close(per_sample[name][i], p.grad)


def test_functional_call_matches_the_chapter_blocks(device):
    fused, plain = chapter_model(fused=True).to(device), chapter_model(fused=False).to(device)
    params = dict(fused.named_parameters())
    renamed = {k.replace("0.", "0.0.", 1) if k.startswith("0.") else k: v for k, v in params.items()}
    x = torch.randn(3, 7, dtype=D, device=device)
    close(functional_call(fused, params, (x,)), functional_call(plain, renamed, (x,)))
    close(
        grad(lambda p: functional_call(fused, p, (x,)))(params),
        {k: v for k, v in zip(params, grad(lambda p: functional_call(plain, p, (x,)))(renamed).values())},
    )


def test_vmap_over_stacked_parameters_an_ensemble(device):
    x, w, b = linear_relu_args(device)
    ws, bs = torch.stack([w, 2 * w, -w]), torch.stack([b, b, -b])
    close(vmap(F.linear_relu, in_dims=(None, 0, 0))(x, ws, bs), vmap(ref.linear_relu, in_dims=(None, 0, 0))(x, ws, bs))
    xs = torch.stack([x, x + 1, x - 1])
    close(vmap(F.linear_relu)(xs, ws, bs), vmap(ref.linear_relu)(xs, ws, bs))


def test_vmap_of_batched_activations_calls_the_kernel_once(monkeypatch):
    """The batching rule folds the batch into the kernel's rows: no loop."""
    calls = []
    op = transforms._linear_relu

    def counting(*args):
        calls.append(1)
        return op(*args)

    monkeypatch.setattr(transforms, "_linear_relu", counting)
    x, w, b = linear_relu_args("cpu")
    xs = torch.stack([x] * 8)
    close(vmap(F.linear_relu, in_dims=(0, None, None))(xs, w, b), ref.linear_relu(xs, w, b))
    # One call of the autograd.Function's forward, which the rule serves
    # with one kernel call, whatever the batch size.
    assert len(calls) == 2


def test_plain_eager_path_does_not_take_the_transform_route(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eager call went through the torch.func route")

    for cls in (transforms.LinearReLUFunction, transforms.CenterFunction, transforms.FixedHiddenMLPFunction):
        monkeypatch.setattr(cls, "apply", refuse)
    net = chapter_model(fused=True)
    net(torch.randn(2, 7, dtype=D)).backward()
    assert transforms.transforms_active() is False
