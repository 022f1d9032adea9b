"""Reference part for exercise 01. Graded checks of later exercises import the learner's module
with this one in place of their attention.py, so that their points depend on their own code only.
Same public API as solutions/attention.py.

No part is an answer. A part stands in for the exercise whose module has its name (this one for
exercise 01's attention.py), and a copy of it in the learner's tree must score 0 on that exercise
(tests/meta/test_parts_are_not_answers.py). So each part computes through ``torch.ops.aten``, which
the grader's allow-list refuses in learner code, and, where its exercise forbids built-ins that no
exercise using the part forbids, through those built-ins, one of which it calls when it is
imported: the copy is refused from its first check. Every process that runs a part refuses its own
exercise's built-ins, the part's included, so a part uses nothing those exercises forbid.

This one: ``aten._softmax`` (01 forbids every softmax kernel; 07, 08, 09 and 12, which use this
part, forbid only the fused attention kernels)."""

import math

import torch

torch.ops.aten._softmax(torch.zeros(1), 0, False)  # refused at import in exercise 01's process


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    out = torch.ops.aten._softmax(x, dim, False)
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
