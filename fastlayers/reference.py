"""Plain-PyTorch versions of every fastlayers op: the chapter's code, made
general. Tests and benchmarks judge fastlayers against these; nothing here
imports fastlayers."""

import torch
import torch.nn.functional as F


def linear_relu(input: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    return F.relu(F.linear(input, weight, bias))


def center(input: torch.Tensor, dim=None) -> torch.Tensor:
    """The chapter's CenteredLayer, generalised to centering along dims."""
    if dim is None:
        return input - input.mean()
    return input - input.mean(dim, keepdim=True)


def fixed_hidden_mlp(input, weight, bias, rand_weight, return_sum=True, return_halvings=False, max_halvings=100_000):
    """The chapter's FixedHiddenMLP forward, loop and all (one host sync per
    loop test). Raises instead of looping forever on an infinite sum."""
    h = F.linear(input, weight, bias)
    h = F.relu(h @ rand_weight + 1)
    h = F.linear(h, weight, bias)
    k = 0
    while h.abs().sum() > 1:
        h = h / 2
        k += 1
        if k > max_halvings:
            raise RuntimeError("reference.fixed_hidden_mlp: the halving loop does not end (an infinite sum)")
    out = h.sum() if return_sum else h
    return (out, k) if return_halvings else out
