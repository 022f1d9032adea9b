"""Exercise 07: causal multi-head self-attention, as in GPT-2."""

import math

import torch
from torch import nn

from .attention import causal_mask, softmax


class MultiHeadAttention(nn.Module):
    """Causal self-attention with ``num_heads`` heads of ``head_dim = d_out // num_heads`` features.

    Args:
        d_in: features of each input token.
        d_out: features of each output token; must be divisible by ``num_heads``.
        context_length: the longest sequence the module accepts (the size of ``mask``).
        dropout: dropout probability on the attention weights.
        num_heads: number of heads.
        qkv_bias: whether ``W_query``, ``W_key`` and ``W_value`` have a bias.

    Raises:
        ValueError: if ``d_out`` is not divisible by ``num_heads``.

    Attributes (graded by name):
        d_out, num_heads, head_dim: the sizes above.
        W_query, W_key, W_value: ``nn.Linear(d_in, d_out, bias=qkv_bias)``.
        out_proj: ``nn.Linear(d_out, d_out)``, with a bias.
        dropout: ``nn.Dropout(dropout)``, applied to the attention weights.
        mask: a buffer (not a parameter, not saved in ``state_dict``): ``causal_mask(context_length)``,
            a ``(context_length, context_length)`` bool tensor, True where query ``i`` may attend to
            key ``j`` (``j <= i``).

    ``forward(x)``: ``x`` is ``(batch, num_tokens, d_in)`` with ``num_tokens <= context_length``;
    returns ``(batch, num_tokens, d_out)``. Queries, keys and values are split into heads of shape
    ``(batch, num_heads, num_tokens, head_dim)``, where head ``h`` holds features
    ``h * head_dim .. (h + 1) * head_dim - 1`` of the projection. Per head, the weights are
    ``softmax(q @ k^T / sqrt(head_dim))`` with keys ``j > i`` masked out, then dropout; the heads'
    outputs are concatenated back in head order and go through ``out_proj``.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        raise NotImplementedError("exercise 07 (multihead), MultiHeadAttention.__init__: check the sizes, make the projections, the dropout and the mask buffer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 07 (multihead), MultiHeadAttention.forward: project, split into heads, masked softmax, dropout, merge the heads, project out")
