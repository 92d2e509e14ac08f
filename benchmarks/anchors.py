"""The eager code the benchmarks time fastlayers' modules against: what a
user of the chapter runs today."""

import torch
import torch.nn.functional as F
from torch import nn

from fastlayers import reference as ref


class EagerFixedHiddenMLP(nn.Module):
    """The chapter's FixedHiddenMLP block: three products, then the halving
    loop with a host sync per test. rand_weight is a buffer, so the
    state_dict loads into fastlayers.FixedHiddenMLP."""

    def __init__(self, features=20):
        super().__init__()
        self.register_buffer("rand_weight", torch.rand((features, features)))
        self.linear = nn.Linear(features, features)

    def forward(self, x):
        h = self.linear(F.relu(torch.mm(self.linear(x), self.rand_weight) + 1))
        while h.abs().sum() > 1:
            h /= 2
        return h.sum()


class EagerCentered(nn.Module):
    """The chapter's CenteredLayer: x - x.mean()."""

    def forward(self, x):
        return ref.center(x)
