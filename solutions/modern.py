"""Exercise 23: the modern decoder, block and model, as Llama 3 and Qwen3 are built (the
modern-architecture track)."""

import math

import torch
from torch import nn

from .config import MODERN_PRESETS, ModernConfig, as_modern_config  # noqa: F401  (part of this module's API)
from .gqa import GroupedQueryAttention
from .rmsnorm import RMSNorm
from .swiglu import SwiGLU


class ModernBlock(nn.Module):
    """One decoder block of Llama 3 or Qwen3: pre-norm, RMSNorm instead of LayerNorm, grouped-query
    attention with RoPE inside (no position embedding anywhere else), SwiGLU, no biases, no dropout::

        x = x + att(norm1(x))
        x = x + ff(norm2(x))

    ``forward(x)``: ``(batch, num_tokens, emb_dim)`` -> the same shape.

    Args:
        cfg: a ``ModernConfig`` or a dict of its fields (see ``config.py``).

    Attributes (graded by name; the names of Hugging Face's checkpoints are in hf_weights.py):
        norm1, norm2: ``RMSNorm(emb_dim, eps)``, before the attention and before the feed-forward.
        att: ``GroupedQueryAttention(emb_dim, n_heads, n_kv_heads, head_dim, qk_norm, window,
            theta, eps, rope_scaling)``.
        ff: ``SwiGLU(emb_dim, hidden_dim)``.
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = as_modern_config(cfg)
        # BEGIN SOLUTION 23: two RMSNorms, the grouped-query attention and the SwiGLU, from the config
        self.norm1 = RMSNorm(cfg.emb_dim, cfg.eps)
        self.att = GroupedQueryAttention(cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.qk_norm, cfg.window,
                                         cfg.theta, cfg.eps, cfg.rope_scaling)
        self.norm2 = RMSNorm(cfg.emb_dim, cfg.eps)
        self.ff = SwiGLU(cfg.emb_dim, cfg.hidden_dim)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 23: two pre-norm residual branches, attention then feed-forward
        x = x + self.att(self.norm1(x))  # (batch, num_tokens, emb_dim): the branch reads a normalised copy
        return x + self.ff(self.norm2(x))  # the residual stream itself is never normalised inside a block
        # END SOLUTION


class ModernModel(nn.Module):
    """A Llama/Qwen3-style language model.

    ``forward(in_idx)`` maps token ids ``(batch, num_tokens)`` (int64) to logits
    ``(batch, num_tokens, vocab_size)``::

        logits = out_head(final_norm(trf_blocks(tok_emb(in_idx))))

    Against exercise 09's GPT: no position embedding (RoPE places the tokens inside each
    attention), no dropout (modern pretraining runs see each token about once), ``ModernBlock``
    for ``TransformerBlock``, an ``RMSNorm`` at the end, and a head tied to the embedding or not
    by the config (Llama 3.2 1B and Qwen3 0.6B tie it; Llama 3 8B does not).

    Args:
        cfg: a ``ModernConfig`` or a dict of its fields (see ``config.py``).

    Raises:
        ValueError: from ``forward``, when ``num_tokens > context_length``: say how many tokens
            came and how many fit.

    Attributes (graded by name):
        cfg: the ``ModernConfig`` (set before your code runs).
        tok_emb: ``nn.Embedding(vocab_size, emb_dim)``.
        trf_blocks: ``nn.Sequential`` of ``n_layers`` ``ModernBlock(cfg)``.
        final_norm: ``RMSNorm(emb_dim, eps)``.
        out_head: ``nn.Linear(emb_dim, vocab_size, bias=False)``; with ``tie_weights`` its weight
            *is* ``tok_emb.weight``, listed once by ``named_parameters()``.

    The weights start normal with standard deviation 0.02 (given below the exercise), the norms
    at ones.
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = as_modern_config(cfg)
        self.cfg = cfg
        # BEGIN SOLUTION 23: the token embedding, the blocks, the final RMSNorm and the head (tied when the config says so)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.trf_blocks = nn.Sequential(*[ModernBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # one matrix reads tokens in and writes them out
        # END SOLUTION
        for name, p in self.named_parameters():
            if p.dim() == 2:  # embeddings and projections; the norms keep their ones
                nn.init.normal_(p, mean=0.0, std=0.02)
                if name.endswith(("att.out_proj.weight", "ff.down.weight")):  # the ends of the residual branches
                    p.data.div_(math.sqrt(2 * cfg.n_layers))

    def num_parameters(self) -> int:
        """The number of trainable numbers, a tied weight counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 23: refuse inputs longer than the context, embed the tokens (no positions), the blocks, the final norm, the head
        num_tokens = in_idx.size(1)
        if num_tokens > self.cfg.context_length:
            raise ValueError(f"the input has {num_tokens} tokens but the model's context_length is {self.cfg.context_length}: "
                             f"crop it to its last {self.cfg.context_length} tokens")
        x = self.tok_emb(in_idx)  # (batch, num_tokens, emb_dim): what each token is; where it is enters in the attention
        x = self.trf_blocks(x)
        return self.out_head(self.final_norm(x))  # (batch, num_tokens, vocab_size)
        # END SOLUTION
