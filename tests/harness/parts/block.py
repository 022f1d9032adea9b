"""Reference part for exercise 08 (see parts/attention.py): ``FeedForward`` and
``TransformerBlock`` with the exercise's attribute names and parameters, built on the reference
parts for LayerNorm (parts/layers.py) and multi-head attention (parts/multihead.py). Exercise 08
forbids nothing that the exercises using this part do not, so the feed-forward's GELU and the
shortcuts' additions are the kernels ``aten.gelu`` and ``aten.add``, through ``torch.ops``, which
the allow-list refuses in learner code. ``cfg`` is a dict or an object with the fields of
``GPTConfig``."""

import torch
from torch import nn

from harness.worker.parts import load as load_part

LayerNorm = load_part("layers").LayerNorm
MultiHeadAttention = load_part("multihead").MultiHeadAttention


def field(cfg, name):
    return cfg[name] if isinstance(cfg, dict) else getattr(cfg, name)


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width = field(cfg, "emb_dim")
        self.layers = nn.Sequential(nn.Linear(width, width * 4), nn.GELU(approximate="tanh"), nn.Linear(width * 4, width))

    def forward(self, x):
        first, _, second = self.layers
        return second(torch.ops.aten.gelu(first(x), approximate="tanh"))


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
            x = torch.ops.aten.add(x, self.drop_shortcut(branch(norm(x))))
        return x
