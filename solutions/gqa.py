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
        # BEGIN SOLUTION 22: check the head counts, make the projections (keys and values per kv head) and the optional QK-norms
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = head_dim or emb_dim // n_heads
        self.window, self.theta, self.rope_scaling = window, theta, rope_scaling
        self.W_query = nn.Linear(emb_dim, n_heads * self.head_dim, bias=False)
        self.W_key = nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False)
        self.W_value = nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(n_heads * self.head_dim, emb_dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps) if qk_norm else None
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 22: project, QK-norm, RoPE, repeat the kv heads over their groups, masked softmax, merge, project out
        b, t, _ = x.shape
        q = self.W_query(x).view(b, t, self.n_heads, self.head_dim)  # (b, t, n_heads, head_dim)
        k = self.W_key(x).view(b, t, self.n_kv_heads, self.head_dim)  # (b, t, n_kv_heads, head_dim)
        v = self.W_value(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (b, n_kv_heads, t, head_dim)
        if self.q_norm is not None:  # Qwen3 normalises each head's queries and keys before rotating them
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (b, heads, t, head_dim)
        cos, sin = rope_cos_sin(q, torch.arange(t, device=x.device), self.theta, self.rope_scaling)  # (t, head_dim) each
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # positions enter here, in q and k only
        group = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(group, dim=1)  # (b, n_heads, t, head_dim): query head h reads kv head h // group
        v = v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)  # (b, n_heads, t, t)
        i = torch.arange(t, device=x.device)[:, None]
        j = torch.arange(t, device=x.device)[None, :]
        allowed = j <= i  # causal
        if self.window is not None:
            allowed = allowed & (j > i - self.window)  # the window latest tokens, itself included
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # heads concatenated in order
        return self.out_proj(context)  # (b, t, emb_dim)
        # END SOLUTION
