"""Reference part for exercise 20 (see parts/attention.py): the same API as the exercise's
swiglu.py, built on the kernel ``aten.silu``, which exercise 20 forbids (and no exercise using
this part does); it runs once when the part is imported."""

import torch
from torch import nn

torch.ops.aten.silu(torch.zeros(1))  # refused at import in exercise 20's process


def silu(x):
    return torch.ops.aten.silu(x)


class SwiGLU(nn.Module):
    def __init__(self, emb_dim: int, hidden_dim: int):
        super().__init__()
        self.gate, self.up = (nn.Linear(emb_dim, hidden_dim, bias=False) for _ in range(2))
        self.down = nn.Linear(hidden_dim, emb_dim, bias=False)

    def forward(self, x):
        return self.down(silu(self.gate(x)) * self.up(x))
