"""Exercise 22: grouped-query attention with QK-norm, RoPE and a sliding window, as Llama 3, Qwen3
and Mistral attend (the modern-architecture track)."""

import math

import torch
from torch import nn

from .rmsnorm import RMSNorm
from .rope import apply_rope, rope_cos_sin


class GroupedQueryAttention(nn.Module):
    """Causal self-attention where groups of query heads share one key head and one value head.

    ``n_heads`` query heads and ``n_kv_heads`` key/value heads (``n_heads`` a multiple of it):
    query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``, so consecutive query
    heads form a group (heads 0 and 1 share kv head 0 when there are two per group). The keys and
    values are projected once per kv head and repeated across their group (``repeat_interleave``),
    never stored as new parameters: the KV cache shrinks by ``n_heads / n_kv_heads``.

    ``forward(x)``: ``x`` is ``(batch, num_tokens, emb_dim)``; returns the same shape. Per head,
    in this order:

    1. project: queries ``(batch, n_heads, num_tokens, head_dim)``, keys and values ``(batch,
       n_kv_heads, num_tokens, head_dim)``;
    2. with ``qk_norm`` (Qwen3), ``q_norm`` and ``k_norm`` (``RMSNorm(head_dim)``) normalise each
       head's queries and keys, *before* RoPE;
    3. RoPE (``rope.rope_cos_sin`` and ``rope.apply_rope``, positions ``0 .. num_tokens - 1``,
       ``theta`` and ``rope_scaling``) rotates queries and keys, not values;
    4. scores ``q @ k^T / sqrt(head_dim)``; query ``i`` sees keys ``j <= i``, and with a ``window``
       (Mistral, Gemma) only ``i - window < j <= i``: the ``window`` latest tokens, itself included;
    5. softmax over the keys, the weights times the values, the heads concatenated in order, and
       ``out_proj``.

    Args:
        emb_dim, n_heads, n_kv_heads: as above.
        head_dim: features per head (default ``emb_dim // n_heads``; Qwen3 sets it apart).
        qk_norm: RMSNorm of queries and keys per head (Qwen3).
        window: the sliding window's length, or None for full causal attention.
        theta: RoPE's base.
        eps: the QK-norms' eps.
        rope_scaling: Llama 3.1's frequency scaling, passed to ``rope_cos_sin`` as its
            ``scaling`` (None: plain RoPE).

    Raises:
        ValueError: if ``n_heads`` is not a multiple of ``n_kv_heads``.

    Attributes (graded by name; no biases):
        W_query: ``nn.Linear(emb_dim, n_heads * head_dim, bias=False)``.
        W_key, W_value: ``nn.Linear(emb_dim, n_kv_heads * head_dim, bias=False)``.
        out_proj: ``nn.Linear(n_heads * head_dim, emb_dim, bias=False)``.
        q_norm, k_norm: ``RMSNorm(head_dim, eps)`` with ``qk_norm``, else None.
        n_heads, n_kv_heads, head_dim, window, theta, rope_scaling: as given.
    """

    def __init__(self, emb_dim: int, n_heads: int, n_kv_heads: int, head_dim: int | None = None, qk_norm: bool = False,
                 window: int | None = None, theta: float = 10_000.0, eps: float = 1e-6, rope_scaling: dict | None = None):
        super().__init__()
        raise NotImplementedError("exercise 22 (gqa), GroupedQueryAttention.__init__: check the head counts, make the projections (keys and values per kv head) and the optional QK-norms")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 22 (gqa), GroupedQueryAttention.forward: project, QK-norm, RoPE, repeat the kv heads over their groups, masked softmax, merge, project out")
