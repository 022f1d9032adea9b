"""Reference part for exercise 02 (see parts/attention.py): the same API as the exercise's
layers.py, built on the kernels ``aten.layer_norm`` and ``aten.gelu``, which exercise 02 forbids
(and no exercise using this part does); one of them runs when the part is imported."""

import torch
from torch import nn

torch.ops.aten.gelu(torch.zeros(1), approximate="tanh")  # refused at import in exercise 02's process


class LayerNorm(nn.Module):
    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale, self.shift = nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu(x, approximate="tanh")


class GELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)
