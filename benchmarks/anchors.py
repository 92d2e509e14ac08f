"""The code the benchmarks time fastlayers against: what a user of the
chapter runs today, and what a PyTorch user would write instead."""

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


def has_onednn_fused():
    try:
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 1), torch.ones(1, 1), None, "relu", [], "")
        return True
    except (AttributeError, RuntimeError):
        return False


class WhileLoopFixedHiddenMLP(nn.Module):
    """The chapter's block with its loop as torch._higher_order_ops.while_loop,
    the way a PyTorch user removes the graph break under torch.compile."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        from torch._higher_order_ops import while_loop

        lin, c = self.block.linear, self.block.rand_weight
        h = lin(torch.relu(torch.mm(lin(x), c) + 1))
        (h,) = while_loop(lambda h: h.abs().sum() > 1, lambda h: (h / 2,), (h,))
        return h.sum()


def smart_eager(block):
    """The chapter's block with the halving loop replaced by its closed form
    (k = ceil(log2 sum|h|) from a float64 sum): no loop, no host sync."""

    def forward(x):
        lin, c = block.linear, block.rand_weight
        h = lin(torch.relu(torch.mm(lin(x), c) + 1))
        s = h.abs().sum(dtype=torch.float64)
        k = torch.where(s > 1, torch.ceil(torch.log2(s)), torch.zeros_like(s))
        return (h * torch.exp2(-k).to(h.dtype)).sum()

    return forward
