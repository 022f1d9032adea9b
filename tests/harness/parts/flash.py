"""Reference part for exercise 28 (see parts/attention.py): the same API as the exercise's
flash.py. Each block of queries takes the log-sum-exp of every key tile (``torch.logsumexp``)
and merges the tiles' partial outputs with ``torch.logaddexp``: tile-sized scores, another route
to the same numbers than the exercise's running maximum. Exercise 29, which uses this part,
forbids every built-in that 28 forbids, so both are the kernels ``aten.logsumexp`` and
``aten.logaddexp`` through ``torch.ops``, which the allow-list refuses in learner code."""

import math

import torch


def tiled_attention(q, k, v, is_causal=False, block_q=64, block_k=64, scale=None):
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block_q and block_k must be at least 1, got {block_q}, {block_k}")
    work = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    L, S = q.shape[-2], k.shape[-2]
    outs, lses = [], []
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        q_i = q[..., i0:i1, :].to(work)
        total, out = None, None
        for j0 in range(0, min(S, i1) if is_causal else S, block_k):
            j1 = min(j0 + block_k, S)
            s = torch.matmul(q_i, k[..., j0:j1, :].to(work).transpose(-1, -2)) * scale
            if is_causal:
                s = s.masked_fill(torch.arange(j0, j1)[None, :] > torch.arange(i0, i1)[:, None], -math.inf)
            part = torch.ops.aten.logsumexp(s, [-1])  # -inf for a row that sees none of this tile
            weights = torch.exp(s - torch.where(torch.isinf(part), 0.0, part)[..., None])
            partial = torch.matmul(weights, v[..., j0:j1, :].to(work))
            if total is None:
                total, out = part, partial
            else:
                merged = torch.ops.aten.logaddexp(total, part)
                out = (torch.exp(total - merged)[..., None] * out
                       + torch.nan_to_num(torch.exp(part - merged))[..., None] * partial)
                total = merged
        outs.append(out)
        lses.append(total)
    return torch.cat(outs, dim=-2).to(q.dtype), torch.cat(lses, dim=-1)
