"""Reference part for exercise 23 (see parts/attention.py): ``ModernBlock`` and ``ModernModel``
with the exercise's attribute names and parameters, built from the reference RMSNorm, SwiGLU and
grouped-query attention parts; exercise 24 loads checkpoints into it. ``cfg`` is a dict or an
object with the fields of ``ModernConfig`` (head_dim, qk_norm and window may be left out).
Exercise 23 forbids no built-in, so the block's shortcuts are the kernel ``aten.add`` through
``torch.ops``, which the allow-list refuses in learner code."""

from types import SimpleNamespace

import torch
from torch import nn

from harness.worker.parts import load as load_part

RMSNorm = load_part("rmsnorm").RMSNorm
SwiGLU = load_part("swiglu").SwiGLU
GroupedQueryAttention = load_part("gqa").GroupedQueryAttention


def field(cfg, name, default=None):
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


class ModernBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width, eps = field(cfg, "emb_dim"), field(cfg, "eps", 1e-5)
        self.norm1, self.norm2 = RMSNorm(width, eps), RMSNorm(width, eps)
        self.att = GroupedQueryAttention(width, field(cfg, "n_heads"), field(cfg, "n_kv_heads"), field(cfg, "head_dim"),
                                         bool(field(cfg, "qk_norm", False)), field(cfg, "window"), field(cfg, "theta", 10_000.0), eps,
                                         field(cfg, "rope_scaling"))
        self.ff = SwiGLU(width, field(cfg, "hidden_dim"))

    def forward(self, x):
        h = torch.ops.aten.add(x, self.att(self.norm1(x)))
        return torch.ops.aten.add(h, self.ff(self.norm2(h)))


class ModernModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width, vocab = field(cfg, "emb_dim"), field(cfg, "vocab_size")
        self.context_length = field(cfg, "context_length")
        self.cfg = SimpleNamespace(context_length=self.context_length)  # what the KV cache of exercise 25 reads
        self.tok_emb = nn.Embedding(vocab, width)
        self.trf_blocks = nn.Sequential(*(ModernBlock(cfg) for _ in range(field(cfg, "n_layers"))))
        self.final_norm = RMSNorm(width, field(cfg, "eps", 1e-5))
        self.out_head = nn.Linear(width, vocab, bias=False)
        if field(cfg, "tie_weights", True):
            self.out_head.weight = self.tok_emb.weight

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, in_idx: torch.Tensor):
        if in_idx.size(1) > self.context_length:
            raise ValueError(f"{in_idx.size(1)} tokens do not fit a context of {self.context_length}")
        return self.out_head(self.final_norm(self.trf_blocks(self.tok_emb(in_idx))))
