"""Exercise 01: softmax, the causal mask and scaled dot-product attention.

Shapes follow PyTorch: ``q`` is ``(..., L, d_k)``, ``k`` is ``(..., S, d_k)``, ``v`` is
``(..., S, d_v)`` and the output is ``(..., L, d_v)``, where ``...`` is ``(batch,)`` for 3-D inputs
or ``(batch, heads)`` for 4-D ones. ``L`` counts queries and ``S`` keys.
"""

import math

import torch


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax of ``x`` along ``dim``.

    ``softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)`` with ``m = max_j x_j``: subtracting the
    maximum changes nothing mathematically and keeps ``exp`` from overflowing, so logits of
    magnitude 1e4 give finite probabilities.

    Args:
        x: a floating-point tensor of any shape; entries may be ``-inf`` (masked).
        dim: the dimension whose entries sum to one.

    Returns:
        A tensor of ``x``'s shape and dtype whose slices along ``dim`` sum to one. A slice whose
        entries are all ``-inf`` (nothing to attend to) gives all zeros, not NaN.
    """
    # BEGIN SOLUTION 01: subtract each slice's maximum, exponentiate, divide by the sum
    # softmax(x) = softmax(x - c) for any c: subtracting the maximum keeps exp() from overflowing
    m = x.amax(dim=dim, keepdim=True)  # x's shape with size 1 along dim
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # an all -inf slice: keep exp at 0
    e = torch.exp(x - m)  # x's shape, every entry in [0, 1]
    total = e.sum(dim=dim, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)  # 0 / 1 = 0 where nothing was allowed
    # END SOLUTION


def causal_mask(seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The causal mask for ``seq_len`` positions.

    Returns:
        A ``(seq_len, seq_len)`` bool tensor that is True where query ``i`` may attend to key
        ``j``, that is where ``j <= i`` (lower triangle and diagonal), False above the diagonal.
    """
    # BEGIN SOLUTION 01: True on and below the diagonal, False above it
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    # END SOLUTION


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """Attention weights ``softmax(q @ k^T / sqrt(d_k) + mask)`` applied to ``v``.

    The same contract as ``torch.nn.functional.scaled_dot_product_attention`` without dropout:

    Args:
        q: ``(..., L, d_k)`` queries; 3-D ``(batch, L, d_k)`` or 4-D ``(batch, heads, L, d_k)``.
        k: ``(..., S, d_k)`` keys.
        v: ``(..., S, d_v)`` values.
        attn_mask: optional, broadcastable to ``(..., L, S)``. A bool mask is True where
            attention is allowed; a float mask is added to the scaled scores.
        is_causal: if True, query ``i`` attends only to keys ``j <= i`` (the mask's top-left
            alignment, as in PyTorch), on top of ``attn_mask`` if one is given.

    Returns:
        ``(..., L, d_v)``, the dtype of ``q``. A query row with no allowed key returns zeros.
    """
    # BEGIN SOLUTION 01: scale the scores, mask them, softmax over the keys, weight the values
    # dividing by sqrt(d_k) keeps the scores' variance near 1, so the softmax does not saturate
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., L, S)
    if is_causal:
        allowed = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return softmax(scores, dim=-1) @ v  # weights (..., L, S) @ (..., S, d_v) -> (..., L, d_v)
    # END SOLUTION
