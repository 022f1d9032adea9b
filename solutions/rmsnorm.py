"""Exercise 19: RMSNorm, the normalisation of Llama, Qwen3 and Gemma (the modern-architecture track)."""

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension (Zhang and Sennrich, 2019).

    ``forward(x)`` scales each vector of the last dimension by the inverse of its root mean square,
    then by a learned weight, elementwise::

        y = x / sqrt(mean(x ** 2) + eps) * scale        scale = weight, or 1 + weight with offset

    Unlike LayerNorm there is no mean subtracted and no shift: only the size of each vector is
    normalised, not its centre. The statistics are computed in float32 whatever the input's dtype
    (a bf16 mean of squares loses the small terms), and the output has the input's shape and dtype.

    Args:
        emb_dim: the size of the last dimension.
        eps: added to the mean of squares, inside the square root (Llama 3: 1e-5; Qwen3: 1e-6).
        offset: Gemma's convention: the weight is stored as ``w`` and applied as ``1 + w``, so it
            starts at zeros; without it (Llama, Qwen3) the weight is applied as it is and starts at
            ones.

    Attributes (graded by name):
        weight: ``nn.Parameter`` of shape ``(emb_dim,)``: ones, or zeros with ``offset``.
        eps, offset: as given.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-6, offset: bool = False):
        super().__init__()
        # BEGIN SOLUTION 19: store eps and offset; the weight starts at ones (zeros with offset)
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(emb_dim) if offset else torch.ones(emb_dim))
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 19: divide by the root mean square over the last dimension (in float32), then scale
        xf = x.float()  # statistics in float32, as Llama's and Gemma's reference code do
        mean_square = xf.pow(2).mean(dim=-1, keepdim=True)  # (..., 1): no mean subtracted
        y = xf * torch.rsqrt(mean_square + self.eps)  # (..., emb_dim): root mean square 1 per vector
        scale = 1.0 + self.weight.float() if self.offset else self.weight.float()
        return (y * scale).to(x.dtype)
        # END SOLUTION
