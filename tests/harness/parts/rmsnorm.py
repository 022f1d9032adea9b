"""Reference part for exercise 19 (see parts/attention.py): the same API as the exercise's
rmsnorm.py, built on the kernel ``aten.rms_norm``, which exercise 19 forbids (and no exercise
using this part does); it runs once when the part is imported."""

import torch
from torch import nn

torch.ops.aten.rms_norm(torch.ones(1, 1), [1], None, 1e-6)  # refused at import in exercise 19's process


class RMSNorm(nn.Module):
    def __init__(self, emb_dim: int, eps: float = 1e-6, offset: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.full((emb_dim,), 0.0 if offset else 1.0))  # Gemma's offset starts at 0
        self.offset, self.eps = offset, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (1 + self.weight.float()) if self.offset else self.weight.float()
        return torch.ops.aten.rms_norm(x.float(), list(x.shape[-1:]), weight, self.eps).to(x.dtype)
