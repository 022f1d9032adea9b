"""Reference part for exercise 07 (see parts/attention.py): ``MultiHeadAttention`` with the
exercise's attribute names and parameters, computed by PyTorch's own multi-head attention
(``F.multi_head_attention_forward``, what ``nn.MultiheadAttention`` runs). Blocks use it with
``d_in == d_out``, which that function needs."""

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        if d_out % num_heads or d_in != d_out:
            raise ValueError(f"the reference attention needs d_in == d_out and d_out % num_heads == 0 (got {d_in}, {d_out}, {num_heads})")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query, self.W_key, self.W_value = (nn.Linear(d_in, d_out, bias=qkv_bias) for _ in range(3))
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.ones(context_length, context_length).tril().bool(), persistent=False)

    def forward(self, x):
        t = x.size(1)
        qkv = (self.W_query, self.W_key, self.W_value)
        bias = torch.cat([m.bias for m in qkv]) if self.W_query.bias is not None else None
        seq_first = x.transpose(0, 1)
        out, _ = F.multi_head_attention_forward(
            seq_first, seq_first, seq_first, self.d_out, self.num_heads, None, bias, None, None, False,
            self.dropout.p, self.out_proj.weight, self.out_proj.bias, training=self.training, need_weights=False,
            attn_mask=~self.mask[:t, :t], use_separate_proj_weight=True,
            q_proj_weight=qkv[0].weight, k_proj_weight=qkv[1].weight, v_proj_weight=qkv[2].weight,
        )
        return out.transpose(0, 1)
