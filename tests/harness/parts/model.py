"""Reference part for exercise 09 (see parts/attention.py): ``GPTModel`` with the exercise's
attribute names and parameters, built from the reference block (parts/block.py); exercise 11
loads checkpoints into it. ``cfg`` is a dict or an object with the fields of ``GPTConfig``.
Exercise 09 forbids no built-in, so the embeddings are summed by the kernel ``aten.add`` through
``torch.ops``, which the allow-list refuses in learner code."""

import torch
from torch import nn

from harness.worker.parts import load as load_part

_block = load_part("block")
field, LayerNorm, TransformerBlock = _block.field, _block.LayerNorm, _block.TransformerBlock


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
        h = torch.ops.aten.add(self.tok_emb(in_idx), self.pos_emb.weight[:t])
        return self.out_head(self.final_norm(self.trf_blocks(self.drop_emb(h))))
