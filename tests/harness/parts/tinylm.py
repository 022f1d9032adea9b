"""Trusted tiny language models for exercise 10: generate's points depend on generate only.

``TinyLM(table, first, context_size)`` gives, at every position ``t`` of a window, the logits
``table[idx[:, t]] + first[idx[:, 0]]``: they depend on the token itself and on the first token of
the window the model was given, so a window cropped at the wrong end gives other logits. A window
longer than ``context_size`` is a ``ValueError``, as in a real GPT.
"""

import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self, table, first, context_size):
        super().__init__()
        self.table, self.first, self.context_size = table.float(), first.float(), int(context_size)
        self.calls = 0

    def forward(self, idx):
        if idx.dim() != 2 or idx.dtype != torch.int64:
            raise TypeError(f"the model takes (batch, n) int64 token ids, got {tuple(idx.shape)} {idx.dtype}")
        if idx.size(1) > self.context_size:
            raise ValueError(
                f"the model was given {idx.size(1)} tokens but reads at most context_size={self.context_size}: "
                "give it the last context_size tokens, idx[:, -context_size:]"
            )
        self.calls += 1
        return self.table[idx] + self.first[idx[:, :1]]


def generator(seed):
    """A ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(int(seed))
