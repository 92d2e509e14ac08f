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
