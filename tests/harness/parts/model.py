"""Reference part for exercise 09 (see parts/attention.py): ``GPTModel`` with the exercise's
attribute names and parameters; exercise 11 loads checkpoints into it. Self-contained: it
carries its own block, attention and LayerNorm (those of parts/block.py). ``cfg`` is a dict or
an object with the fields of ``GPTConfig``."""
import torch
import torch.nn.functional as F
from torch import nn


def field(cfg, name):
    return cfg[name] if isinstance(cfg, dict) else getattr(cfg, name)


class LayerNorm(nn.Module):
    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        builtin = nn.LayerNorm(emb_dim, eps=eps)
        self.eps, self.scale, self.shift = eps, builtin.weight, builtin.bias

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
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


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width = field(cfg, "emb_dim")
        self.layers = nn.Sequential(nn.Linear(width, width * 4), nn.GELU(approximate="tanh"), nn.Linear(width * 4, width))

    def forward(self, x):
        y = self.layers(x)
        return y


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width, p = field(cfg, "emb_dim"), field(cfg, "drop_rate")
        self.att = MultiHeadAttention(width, width, field(cfg, "context_length"), p, field(cfg, "n_heads"), field(cfg, "qkv_bias"))
        self.ff = FeedForward(cfg)
        self.norm1, self.norm2 = LayerNorm(width), LayerNorm(width)
        self.drop_shortcut = nn.Dropout(p)

    def forward(self, x):
        for norm, branch in ((self.norm1, self.att), (self.norm2, self.ff)):
            x = x + self.drop_shortcut(branch(norm(x)))
        return x


class GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width, vocab = field(cfg, "emb_dim"), field(cfg, "vocab_size")
        self.context_length = field(cfg, "context_length")
        self.tok_emb = nn.Embedding(vocab, width)
        self.pos_emb = nn.Embedding(self.context_length, width)
        self.drop_emb = nn.Dropout(field(cfg, "drop_rate"))
        self.trf_blocks = nn.Sequential(*(TransformerBlock(cfg) for _ in range(field(cfg, "n_layers"))))
        self.final_norm = LayerNorm(width)
        self.out_head = nn.Linear(width, vocab, bias=False)
        if field(cfg, "tie_weights"):
            self.out_head.weight = self.tok_emb.weight

    def forward(self, in_idx):
        t = in_idx.size(1)
        if t > self.context_length:
            raise ValueError(f"{t} tokens do not fit a context of {self.context_length}")
        h = self.tok_emb(in_idx) + self.pos_emb.weight[:t]
        return self.out_head(self.final_norm(self.trf_blocks(self.drop_emb(h))))
