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
        # BEGIN SOLUTION 09: embeddings, dropout, the blocks, the final norm and the (tied) output head
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        # GPT-2 reads tokens in and writes them out with one matrix: the head's weight *is* the embedding's
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        # END SOLUTION
        self.apply(_init_weights)
        for name, p in self.named_parameters():  # the projections that end a residual branch
            if name.endswith(("att.out_proj.weight", "ff.layers.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def num_parameters(self) -> int:
        """The number of trainable numbers, a tied weight counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 09: refuse inputs longer than the context, embed tokens and positions (with dropout), the blocks, the final norm, the head
        batch, num_tokens = in_idx.shape
        if num_tokens > self.cfg.context_length:
            raise ValueError(
                f"the input has {num_tokens} tokens but the model's context_length is {self.cfg.context_length}: "
                f"crop it to its last {self.cfg.context_length} tokens"
            )
        positions = torch.arange(num_tokens, device=in_idx.device)  # (num_tokens,): 0 .. num_tokens - 1
        # What each token is plus where it is; the position embeddings broadcast over the batch
        x = self.tok_emb(in_idx) + self.pos_emb(positions)  # (batch, num_tokens, emb_dim)
        x = self.drop_emb(x)
        x = self.trf_blocks(x)  # (batch, num_tokens, emb_dim)
        x = self.final_norm(x)
        return self.out_head(x)  # (batch, num_tokens, vocab_size): one score per token of the vocabulary
        # END SOLUTION


def _init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: weights normal with standard deviation 0.02, biases zero."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
