"""Exercise 21: rotary position embeddings (RoPE), as Llama, Qwen3 and Mistral place tokens (the
modern-architecture track)."""

import math

import torch


def rope_frequencies(head_dim: int, theta: float = 10_000.0) -> torch.Tensor:
    """The rotation speed of each pair of features: ``inv_freq[i] = theta ** (-2 i / head_dim)``
    for ``i = 0 .. head_dim / 2 - 1``, float32, shape ``(head_dim // 2,)``. Pair 0 turns by one
    radian per position, the last pair about ``1 / theta`` as fast. ``theta`` is 10,000 in the
    RoPE paper and Llama 2, 500,000 in Llama 3.

    Raises:
        ValueError: if ``head_dim`` is odd (features rotate in pairs).
    """
    raise NotImplementedError("exercise 21 (rope), rope_frequencies: refuse an odd head_dim; theta to the power -2i / head_dim, in float32")


def llama3_frequencies(inv_freq: torch.Tensor, factor: float, low_freq_factor: float, high_freq_factor: float,
                       original_max_position_embeddings: int) -> torch.Tensor:
    """Llama 3.1's RoPE scaling ("rope_type": "llama3"), which stretches a model trained on
    ``original_max_position_embeddings`` tokens (8,192) to 16 times as many by slowing its slow
    pairs. A pair's wavelength is ``2 pi / inv_freq``, the positions one turn takes, and with
    ``low = original / low_freq_factor`` and ``high = original / high_freq_factor``:

    - wavelength ``< high`` (fast pairs, which tell near positions apart): unchanged;
    - wavelength ``> low`` (slow pairs, which place far positions): divided by ``factor``;
    - in between: ``(1 - s) * inv_freq / factor + s * inv_freq`` with
      ``s = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)``,
      which goes from the first case to the second smoothly (``s`` = 1 at ``high``, 0 at ``low``).

    Returns a tensor of ``inv_freq``'s shape and dtype (computed in float32).
    """
    raise NotImplementedError("exercise 21 (rope), llama3_frequencies: each pair's wavelength decides: keep it, divide it by factor, or blend the two")


def rope_cos_sin(x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0,
                 scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines of the angles ``positions[t] * inv_freq[i]`` for the queries or keys
    ``x`` (``(..., seq, head_dim)``: its last size and its dtype are used, as Hugging Face's rotary
    embedding takes them), laid out for ``apply_rope``: each ``(len(positions), head_dim)`` in
    ``x``'s dtype, with feature ``i`` and feature ``i + head_dim / 2`` sharing the angle of pair
    ``i`` (the halves repeat).

    ``positions`` holds absolute positions (int64), so a cached decode passes ``start .. start +
    n - 1`` and rotates each token as the full pass does. The angles are computed in float32
    whatever ``x``'s dtype is (at position 8,000 a bf16 angle is off by tens of radians); only the
    cosines and sines are cast to it.

    ``scaling``: None, or Llama 3.1's frequency scaling as a dict of ``llama3_frequencies``'
    keyword arguments (``factor``, ``low_freq_factor``, ``high_freq_factor``,
    ``original_max_position_embeddings``), applied to the frequencies before the angles.
    """
    raise NotImplementedError("exercise 21 (rope), rope_cos_sin: angles in float32 (positions times frequencies), both halves, then cos and sin in x's dtype")


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
    raise NotImplementedError("exercise 21 (rope), apply_rope: x * cos + rotate_half(x) * sin, with rotate_half(x) = (-x2, x1)")
