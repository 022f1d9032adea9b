"""Reference part for exercise 22 (see parts/attention.py): ``GroupedQueryAttention`` with the
exercise's attribute names and parameters, built on the reference RMSNorm and RoPE parts and
the kernel ``aten.scaled_dot_product_attention`` with ``enable_gqa``, through ``torch.ops``:
exercise 22 forbids that kernel and the allow-list refuses ``torch.ops``. Exercise 25 forbids it
too and builds this part, so nothing here runs it before a forward pass; at import the part runs
``aten._native_multi_head_attention`` (``nn.MultiheadAttention``'s fused kernel, which 22 forbids
and 23-25 do not; computing weights, it calls no attention kernel that 25 forbids)."""

import torch
from torch import nn

from harness.worker.parts import load as load_part

RMSNorm = load_part("rmsnorm").RMSNorm
_rope = load_part("rope")
_ones = torch.ones(1, 1, 2)
torch.ops.aten._native_multi_head_attention(_ones, _ones, _ones, 2, 1, torch.ones(6, 2), torch.zeros(6), torch.ones(2, 2),
                                            torch.zeros(2), need_weights=True)  # refused at import in exercise 22's process


class GroupedQueryAttention(nn.Module):
    def __init__(self, emb_dim, n_heads, n_kv_heads, head_dim=None, qk_norm=False, window=None, theta=10_000.0, eps=1e-6,
                 rope_scaling=None):
        super().__init__()
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim or emb_dim // n_heads
        self.window, self.theta, self.rope_scaling = window, theta, rope_scaling
        self.W_query = nn.Linear(emb_dim, n_heads * self.head_dim, bias=False)
        self.W_key, self.W_value = (nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False) for _ in range(2))
        self.out_proj = nn.Linear(n_heads * self.head_dim, emb_dim, bias=False)
        self.q_norm, self.k_norm = (RMSNorm(self.head_dim, eps) if qk_norm else None for _ in range(2))

    def forward(self, x):
        b, t, _ = x.shape

        def heads(linear, n, norm):
            z = linear(x).unflatten(-1, (n, self.head_dim))
            return (norm(z) if norm is not None else z).transpose(1, 2)

        q, k = heads(self.W_query, self.n_heads, self.q_norm), heads(self.W_key, self.n_kv_heads, self.k_norm)
        v = heads(self.W_value, self.n_kv_heads, None)
        cos, sin = _rope.rope_cos_sin(q, torch.arange(t, device=x.device), self.theta, self.rope_scaling)
        q, k = _rope.apply_rope(q, cos, sin), _rope.apply_rope(k, cos, sin)
        lag = torch.arange(t, device=x.device)[:, None] - torch.arange(t, device=x.device)
        visible = (lag >= 0) & (lag < (self.window or t + 1))
        out = torch.ops.aten.scaled_dot_product_attention(q, k, v, visible, enable_gqa=True)
        return self.out_proj(out.transpose(1, 2).flatten(2))
