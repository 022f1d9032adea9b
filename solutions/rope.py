"""Exercise 21: rotary position embeddings (RoPE), as Llama, Qwen3 and Mistral place tokens (the
modern-architecture track)."""

import torch


def rope_frequencies(head_dim: int, theta: float = 10_000.0) -> torch.Tensor:
    """The rotation speed of each pair of features: ``inv_freq[i] = theta ** (-2 i / head_dim)``
    for ``i = 0 .. head_dim / 2 - 1``, float32, shape ``(head_dim // 2,)``. Pair 0 turns by one
    radian per position, the last pair about ``1 / theta`` as fast. ``theta`` is 10,000 in the
    RoPE paper and Llama 2, 500,000 in Llama 3.

    Raises:
        ValueError: if ``head_dim`` is odd (features rotate in pairs).
    """
    # BEGIN SOLUTION 21: refuse an odd head_dim; theta to the power -2i / head_dim, in float32
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (features rotate in pairs), got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim  # (head_dim // 2,): 2i / head_dim
    return theta ** -exponents
    # END SOLUTION


def rope_cos_sin(x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines of the angles ``positions[t] * inv_freq[i]`` for the queries or keys
    ``x`` (``(..., seq, head_dim)``: its last size and its dtype are used, as Hugging Face's rotary
    embedding takes them), laid out for ``apply_rope``: each ``(len(positions), head_dim)`` in
    ``x``'s dtype, with feature ``i`` and feature ``i + head_dim / 2`` sharing the angle of pair
    ``i`` (the halves repeat).

    ``positions`` holds absolute positions (int64), so a cached decode passes ``start .. start +
    n - 1`` and rotates each token as the full pass does. The angles are computed in float32
    whatever ``x``'s dtype is (at position 8,000 a bf16 angle is off by tens of radians); only the
    cosines and sines are cast to it.
    """
    # BEGIN SOLUTION 21: angles in float32 (positions times frequencies), both halves, then cos and sin in x's dtype
    angles = positions.to(torch.float32)[:, None] * rope_frequencies(x.size(-1), theta)[None, :]  # (seq, head_dim // 2)
    angles = torch.cat([angles, angles], dim=-1)  # (seq, head_dim): feature i and i + head_dim / 2 share pair i's angle
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    # END SOLUTION


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of features of ``x`` by its angle: the half-split convention of Llama and
    Hugging Face, where pair ``i`` is features ``(i, i + head_dim / 2)``::

        x1, x2 = x[..., :head_dim / 2], x[..., head_dim / 2:]
        out    = (x1 * cos - x2 * sin,  x2 * cos + x1 * sin)        (as two halves)

    that is ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = (-x2, x1)``. The original
    RoPE paper pairs neighbours instead, ``(2i, 2i + 1)`` (interleaved): the same rotation of other
    pairs, so weights trained one way do not work the other.

    Args:
        x: ``(..., seq, head_dim)``, e.g. ``(batch, heads, seq, head_dim)`` queries or keys.
        cos, sin: ``(seq, head_dim)`` from ``rope_cos_sin``; they broadcast over the leading dims.

    Returns:
        ``x``'s shape and dtype, rotated (computed in float32).
    """
    # BEGIN SOLUTION 21: x * cos + rotate_half(x) * sin, with rotate_half(x) = (-x2, x1)
    xf = x.float()
    half = x.size(-1) // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)  # rotate_half: (-x2, x1)
    return (xf * cos.float() + rotated * sin.float()).to(x.dtype)
    # END SOLUTION
