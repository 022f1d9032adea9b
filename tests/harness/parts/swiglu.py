"""Reference part for exercise 20 (see parts/attention.py): the same API as the exercise's
swiglu.py, built on torch.nn.functional.silu."""

import torch.nn.functional as F
from torch import nn


def silu(x):
    return F.silu(x)


class SwiGLU(nn.Module):
    def __init__(self, emb_dim: int, hidden_dim: int):
        super().__init__()
        self.gate, self.up = (nn.Linear(emb_dim, hidden_dim, bias=False) for _ in range(2))
        self.down = nn.Linear(hidden_dim, emb_dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))
