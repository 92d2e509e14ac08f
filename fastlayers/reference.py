"""Plain-PyTorch versions of every fastlayers op: the chapter's code, made
general. Tests and benchmarks judge fastlayers against these; nothing here
imports fastlayers."""

import torch
import torch.nn.functional as F


def linear_relu(input: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    return F.relu(F.linear(input, weight, bias))
