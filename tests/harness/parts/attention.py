"""Reference part for exercise 01. Graded checks of later exercises import the learner's module
with this one in place of their attention.py, so that their points depend on their own code only.
Same public API as solutions/attention.py.

Built on ``torch.softmax``, which exercise 01 forbids (so this is no answer to 01), and on nothing
that the exercises using it forbid (07 and 12 forbid ``F.scaled_dot_product_attention``): every
process that runs this part refuses its own exercise's built-ins, this part included."""

import math

import torch


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    out = torch.softmax(x, dim=dim)
    return torch.nan_to_num(out, nan=0.0)  # an all -inf slice gives zeros, as the exercise's contract says


def causal_mask(seq_len: int, device=None) -> torch.Tensor:
    positions = torch.arange(seq_len, device=device)
    return positions[None, :] <= positions[:, None]


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    logits = torch.matmul(q, k.mT) * q.size(-1) ** -0.5
    if is_causal:
        future = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).triu(1)
        logits = logits.masked_fill(future, -math.inf)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        logits = logits.masked_fill(attn_mask.logical_not(), -math.inf)
    elif attn_mask is not None:
        logits = logits + attn_mask
    return torch.matmul(softmax(logits, dim=-1), v)
