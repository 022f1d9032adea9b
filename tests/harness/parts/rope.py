"""Reference part for exercise 21 (see parts/attention.py): the same API as the exercise's rope.py,
the rotation written with complex numbers (torch.polar)."""

import torch


def rope_frequencies(head_dim: int, theta: float = 10_000.0) -> torch.Tensor:
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    return (theta ** (-torch.arange(0, head_dim // 2, dtype=torch.float64) * 2 / head_dim)).float()


def rope_cos_sin(x: torch.Tensor, positions: torch.Tensor, theta: float = 10_000.0):
    angles = torch.outer(positions.double(), rope_frequencies(x.size(-1), theta).double())
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    turn = torch.complex(cos[..., :half].double(), sin[..., :half].double())
    out = z * turn
    return torch.cat([out.real, out.imag], dim=-1).to(x.dtype)
