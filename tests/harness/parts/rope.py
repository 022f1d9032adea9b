"""Reference part for exercise 21 (see parts/attention.py): the same API as the exercise's rope.py,
the rotation written with complex numbers. Exercise 21 forbids no built-in, so the rotation is the
kernel ``aten.mul`` of complex tensors built by ``aten.complex``, through ``torch.ops``, which the
allow-list refuses in learner code."""

import math

import torch


def rope_frequencies(head_dim: int, theta: float = 10_000.0) -> torch.Tensor:
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    return (theta ** (-torch.arange(0, head_dim // 2, dtype=torch.float64) * 2 / head_dim)).float()


def llama3_frequencies(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    turns = original_max_position_embeddings * inv_freq.double() / (2 * math.pi)  # the original context over the wavelength
    keep = ((turns - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0.0, 1.0)
    return (keep * inv_freq.double() + (1 - keep) * inv_freq.double() / factor).to(inv_freq.dtype)


def rope_cos_sin(x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0, scaling=None):
    inv = rope_frequencies(x.size(-1), theta)
    if scaling is not None:
        inv = llama3_frequencies(inv, **scaling)
    angles = torch.outer(positions.double(), inv.double())
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    z = torch.ops.aten.complex(x[..., :half].double(), x[..., half:].double())
    turn = torch.ops.aten.complex(cos[..., :half].double(), sin[..., :half].double())
    out = torch.ops.aten.mul(z, turn)
    return torch.cat([out.real, out.imag], dim=-1).to(x.dtype)
