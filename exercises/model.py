"""Exercise 09: the GPT model: embeddings, a stack of transformer blocks, a final norm, the LM head."""

import math

import torch
from torch import nn

from .block import TransformerBlock
from .config import GPTConfig, as_config  # noqa: F401  (GPTConfig is part of this module's API)
from .layers import LayerNorm


class GPTModel(nn.Module):
    """A GPT-2 style language model.

    ``forward(in_idx)`` maps token ids ``(batch, num_tokens)`` (int64) to logits
    ``(batch, num_tokens, vocab_size)``::

        x = drop_emb(tok_emb(in_idx) + pos_emb(positions 0 .. num_tokens - 1))
        logits = out_head(final_norm(trf_blocks(x)))

    Args:
        cfg: a ``GPTConfig`` or a dict of its fields (see ``config.py``).

    Raises:
        ValueError: from ``forward``, when ``num_tokens > context_length``: say how many tokens
            came and how many fit (the caller must crop its input).

    Attributes (graded by name):
        cfg: the ``GPTConfig`` (set before your code runs).
        tok_emb: ``nn.Embedding(vocab_size, emb_dim)``.
        pos_emb: ``nn.Embedding(context_length, emb_dim)``, learned positions.
        drop_emb: ``nn.Dropout(drop_rate)``.
        trf_blocks: ``nn.Sequential`` of ``n_layers`` ``TransformerBlock(cfg)``.
        final_norm: ``LayerNorm(emb_dim)``.
        out_head: ``nn.Linear(emb_dim, vocab_size, bias=False)``; with ``tie_weights`` its weight
            *is* ``tok_emb.weight`` (one shared parameter, as in GPT-2), so ``named_parameters()``
            lists it once, as ``tok_emb.weight``.

    The weights start as in GPT-2 (given below the exercise): normal with standard deviation
    0.02, biases zero, and the projections that end a residual branch scaled by
    ``1 / sqrt(2 * n_layers)``.
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = as_config(cfg)
        self.cfg = cfg
        raise NotImplementedError("exercise 09 (gpt), GPTModel.__init__: embeddings, dropout, the blocks, the final norm and the (tied) output head")
        self.apply(_init_weights)
        for name, p in self.named_parameters():  # the projections that end a residual branch
            if name.endswith(("att.out_proj.weight", "ff.layers.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def num_parameters(self) -> int:
        """The number of trainable numbers, a tied weight counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 09 (gpt), GPTModel.forward: refuse inputs longer than the context, embed tokens and positions (with dropout), the blocks, the final norm, the head")


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: weights normal with standard deviation 0.02, biases zero."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
