"""The chapter's blocks as the chapter writes them: fixtures the tests hold
fastlayers' modules against (state_dict interop, autocast, torch.func)."""

import torch
import torch.nn.functional as F
from torch import nn


class ChapterFixedHiddenMLP(nn.Module):
    """The chapter's FixedHiddenMLP, with rand_weight made a buffer (so its
    state_dict loads into fastlayers.FixedHiddenMLP)."""

    def __init__(self, features=20):
        super().__init__()
        self.register_buffer("rand_weight", torch.rand((features, features)))
        self.linear = nn.Linear(features, features)

    def forward(self, x):
        x = self.linear(x)
        x = F.relu(torch.mm(x, self.rand_weight) + 1)
        x = self.linear(x)
        while x.abs().sum() > 1:
            x /= 2
        return x.sum()


class ChapterCentered(nn.Module):
    """The chapter's CenteredLayer, along `dim` (None: every element)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x - x.mean() if self.dim is None else x - x.mean(self.dim, keepdim=True)
