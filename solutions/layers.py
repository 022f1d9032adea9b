"""Exercise 02: LayerNorm and GELU, written from their formulas."""

import math

import torch
from torch import nn


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension, as ``torch.nn.LayerNorm(emb_dim)``.

    ``y = (x - mean) / sqrt(var + eps) * scale + shift``, where ``mean`` and ``var`` are taken
    over the last dimension and ``var`` is the biased variance (divided by ``emb_dim``, not
    ``emb_dim - 1``).

    Args:
        emb_dim: the size of the last dimension.
        eps: added to the variance inside the square root.

    Attributes:
        eps: the ``eps`` given.
        scale: ``nn.Parameter`` of shape ``(emb_dim,)``, initialised to ones.
        shift: ``nn.Parameter`` of shape ``(emb_dim,)``, initialised to zeros.

    ``forward(x)`` takes ``(..., emb_dim)`` with any number of leading dimensions and returns the
    same shape and dtype (bf16 in, bf16 out).
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        # BEGIN SOLUTION 02: store eps; scale starts at ones and shift at zeros, both (emb_dim,)
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 02: normalise over the last dimension with the biased variance
        xf = x.float()  # statistics in float32, as the built-in does for bf16 and fp16
        mean = xf.mean(dim=-1, keepdim=True)  # (..., 1)
        var = xf.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1): divided by n, not n - 1
        y = (xf - mean) / torch.sqrt(var + self.eps)  # (..., emb_dim): mean 0, variance 1 per token
        # the learned scale and shift let the model undo the normalisation where that helps
        return (y * self.scale.float() + self.shift.float()).to(x.dtype)
        # END SOLUTION


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, as ``torch.nn.functional.gelu(x, approximate="tanh")``.

    ``gelu(x) = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``, elementwise; the
    output has ``x``'s shape and dtype.
    """
    # BEGIN SOLUTION 02: the tanh approximation, elementwise
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    # END SOLUTION


class GELU(nn.Module):
    """``gelu`` as a module, for use inside ``nn.Sequential``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)
