"""Reference part for exercise 07 (see parts/attention.py): ``MultiHeadAttention`` with the
exercise's attribute names and parameters, its attention computed by the kernel
``aten.scaled_dot_product_attention``, reached through ``torch.ops``: exercise 07 forbids the
kernels behind it and the allow-list refuses ``torch.ops``. Exercise 12 forbids it too and builds
this part, so nothing here runs it before a forward pass. In training mode the dropout falls on
the attention weights, inside the kernel."""

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query, self.W_key, self.W_value = (nn.Linear(d_in, d_out, bias=qkv_bias) for _ in range(3))
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(context_length, context_length).tril().bool(), persistent=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (w(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2) for w in (self.W_query, self.W_key, self.W_value))
        p = self.dropout.p if self.training else 0.0
        out = torch.ops.aten.scaled_dot_product_attention(q, k, v, self.mask[:t, :t], p)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, self.d_out))
