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
        # BEGIN SOLUTION 07: check the sizes, make the projections, the dropout and the mask buffer
        if d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 07: project, split into heads, masked softmax, dropout, merge the heads, project out
        b, num_tokens, _ = x.shape  # (b, num_tokens, d_in)

        # Each head gets its own slice of the projected features: head h holds h * head_dim ..
        def split(t):  # (b, num_tokens, d_out) -> (b, num_tokens, num_heads, head_dim) -> (b, num_heads, num_tokens, head_dim)
            return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        queries, keys, values = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = queries @ keys.transpose(2, 3) / math.sqrt(self.head_dim)  # (b, num_heads, num_tokens, num_tokens)
        # Causal: query i sees keys j <= i only; -inf becomes a weight of exactly 0 after the softmax
        scores.masked_fill_(~self.mask[:num_tokens, :num_tokens], float("-inf"))  # in place: a copy less
        weights = self.dropout(softmax(scores, dim=-1))  # each row sums to 1 (before dropout)
        context = weights @ values  # (b, num_heads, num_tokens, head_dim)
        # Concatenate the heads again, in head order: (b, num_tokens, num_heads, head_dim) -> (b, num_tokens, d_out)
        context = context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context)  # (b, num_tokens, d_out)
        # END SOLUTION
