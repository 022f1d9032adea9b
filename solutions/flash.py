"""Exercise 28: attention tile by tile with an online softmax, FlashAttention's forward (the speed track)."""

import math

import torch


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    block_q: int = 64, block_k: int = 64, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention computed one tile at a time, never holding the ``L x S`` scores.

    The result equals ``F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)``,
    but the scores ``q @ k^T * scale`` are only ever made for one tile of ``block_q`` queries by
    ``block_k`` keys (Dao et al., FlashAttention, 2022). Each block of queries walks over the
    blocks of keys and keeps, per query row, a running maximum ``m``, a running sum ``l`` of
    ``exp(score - m)`` and a running output ``acc`` (the sum of those weights times the values).
    When a new tile raises the maximum to ``m_new``, what was summed so far is rescaled by
    ``exp(m - m_new)``, the "online softmax" (Milakov and Gimelshein, 2018)::

        s = q_i @ k_j^T * scale                       (block_q, block_k): the only scores held
        m_new = max(m, rowmax(s))
        p = exp(s - m_new)
        l = exp(m - m_new) * l + rowsum(p)
        acc = exp(m - m_new) * acc + p @ v_j
        m = m_new
        ... after the last tile:  out_i = acc / l,   lse_i = m + log(l)

    ``lse`` is the log-sum-exp of each query's scaled scores over the keys it may see, the one
    number per row that the backward pass (exercise 29) needs to remake any tile's probabilities:
    ``p = exp(s - lse)``.

    With ``is_causal``, query ``i`` sees keys ``0..i`` (the top-left alignment of PyTorch's
    ``is_causal``): key tiles wholly after a query tile's last row are skipped, and the tile on the
    diagonal is masked with ``-inf``. The last tiles may be smaller (``L`` and ``S`` need not be
    multiples of the block sizes).

    Args:
        q: ``(..., L, d)``; k: ``(..., S, d)``; v: ``(..., S, d_v)``; the leading dimensions
            (batch, heads) are the same for all three.
        is_causal: mask keys after each query's own position.
        block_q, block_k: the tile's size: queries and keys per tile (positive).
        scale: the scores' factor; ``1 / sqrt(d)`` when None.

    Returns:
        ``(out, lse)``: ``out`` of shape ``(..., L, d_v)`` in ``q``'s dtype, and ``lse`` of shape
        ``(..., L)`` in float32 (float64 for float64 inputs): the statistics and the sums are kept in
        float32 at least, whatever the inputs' precision.

    Raises:
        ValueError: for a block size below 1, naming it.
    """
    # BEGIN SOLUTION 28: for each block of queries, walk the key blocks with a running max, sum and output; then out = acc / l, lse = m + log(l)
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block_q and block_k must be at least 1, got block_q={block_q}, block_k={block_k}")
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    work = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    lse = torch.empty(q.shape[:-1], dtype=work, device=q.device)
    for i0 in range(0, L, block_q):
        i1 = min(i0 + block_q, L)
        q_i = q[..., i0:i1, :].to(work) * scale
        m = torch.full(q_i.shape[:-1], -math.inf, dtype=work, device=q.device)  # (..., rows): the running maximum
        l = torch.zeros_like(m)  # the running sum of exp(s - m)
        acc = torch.zeros(*q_i.shape[:-1], v.shape[-1], dtype=work, device=q.device)  # the running sum of exp(s - m) @ v
        last = min(S, i1) if is_causal else S  # causal: no key after the tile's last query
        for j0 in range(0, last, block_k):
            j1 = min(j0 + block_k, S)
            s = q_i @ k[..., j0:j1, :].to(work).transpose(-2, -1)  # (..., rows, cols): one tile of scores
            if is_causal and j1 - 1 > i0:  # the tile reaches past some row's own position
                rows = torch.arange(i0, i1, device=q.device)[:, None]
                cols = torch.arange(j0, j1, device=q.device)[None, :]
                s = s.masked_fill(cols > rows, -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            rescale = torch.exp(m - m_new)  # what was summed so far, under the new maximum
            l = rescale * l + p.sum(dim=-1)
            acc = rescale[..., None] * acc + p @ v[..., j0:j1, :].to(work)
            m = m_new
        out[..., i0:i1, :] = (acc / l[..., None]).to(out.dtype)
        lse[..., i0:i1] = m + torch.log(l)
    return out, lse
    # END SOLUTION
