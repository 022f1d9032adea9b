"""Exercise 08: the feed-forward network and the transformer block (pre-LayerNorm, as GPT-2)."""

import torch
from torch import nn

from .config import as_config
from .layers import GELU, LayerNorm
from .multihead import MultiHeadAttention


class FeedForward(nn.Module):
    """The block's position-wise MLP: ``Linear(emb_dim, 4 * emb_dim)``, GELU, ``Linear(4 * emb_dim, emb_dim)``.

    Args:
        cfg: a ``GPTConfig`` or a dict of its fields; uses ``emb_dim``.

    Attributes (graded by name):
        layers: ``nn.Sequential(nn.Linear(emb_dim, 4 * emb_dim), GELU(), nn.Linear(4 * emb_dim, emb_dim))``,
            both linear layers with a bias, so the parameters are ``layers.0.weight``,
            ``layers.0.bias``, ``layers.2.weight`` and ``layers.2.bias``.

    ``forward(x)``: ``(..., emb_dim)`` to the same shape.
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = as_config(cfg)
        # BEGIN SOLUTION 08: expand 4x, GELU, project back, in an nn.Sequential called layers
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 08: run the layers
        return self.layers(x)  # (..., emb_dim) -> (..., 4 * emb_dim) -> (..., emb_dim)
        # END SOLUTION


class TransformerBlock(nn.Module):
    """One GPT-2 block: attention and feed-forward, each on a LayerNorm-ed copy of the residual stream.

    ``forward(x)`` computes, in this order::

        x = x + drop_shortcut(att(norm1(x)))
        x = x + drop_shortcut(ff(norm2(x)))

    The LayerNorms come before each branch (pre-norm) and the shortcuts carry ``x`` around them,
    untouched. ``x`` is ``(batch, num_tokens, emb_dim)`` with ``num_tokens <= context_length``;
    the output has the same shape.

    Args:
        cfg: a ``GPTConfig`` or a dict of its fields; uses ``emb_dim``, ``context_length``,
            ``n_heads``, ``drop_rate`` and ``qkv_bias``.

    Attributes (graded by name):
        att: ``MultiHeadAttention(d_in=emb_dim, d_out=emb_dim, context_length=context_length,
            dropout=drop_rate, num_heads=n_heads, qkv_bias=qkv_bias)``.
        ff: ``FeedForward(cfg)``.
        norm1, norm2: ``LayerNorm(emb_dim)``, before ``att`` and before ``ff``.
        drop_shortcut: ``nn.Dropout(drop_rate)``, on each branch's output before it is added back.
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = as_config(cfg)
        # BEGIN SOLUTION 08: the attention, the feed-forward, two LayerNorms and the shortcut dropout
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 08: pre-norm attention and feed-forward branches, each added back to x
        # Shortcut connection around the attention: the branch adds to x, x itself passes untouched
        x = x + self.drop_shortcut(self.att(self.norm1(x)))  # (batch, num_tokens, emb_dim)
        # Shortcut connection around the feed-forward
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))  # (batch, num_tokens, emb_dim)
        return x
        # END SOLUTION
