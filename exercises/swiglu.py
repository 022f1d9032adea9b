"""Exercise 20: SwiGLU, the gated feed-forward of Llama, Qwen3 and Mistral (the modern-architecture track)."""

import torch
from torch import nn


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU (also called swish), elementwise: ``x * sigmoid(x)``; the output has ``x``'s shape and dtype."""
    raise NotImplementedError("exercise 20 (swiglu), silu: x times its sigmoid")


class SwiGLU(nn.Module):
    """The gated feed-forward network that replaces GPT-2's ``Linear -> GELU -> Linear``::

        SwiGLU(x) = down(silu(gate(x)) * up(x))

    Two projections up to ``hidden_dim``: ``gate``'s output goes through SiLU and then gates
    ``up``'s output elementwise (a learned, smooth on/off per hidden unit); ``down`` projects back.
    No biases, as in Llama and Qwen3. With three matrices instead of two, such models take
    ``hidden_dim`` near ``8/3 * emb_dim`` (Llama 3.2 1B: 2048 -> 8192) to keep the parameter count.

    ``forward(x)``: ``(..., emb_dim)`` -> ``(..., emb_dim)``.

    Args:
        emb_dim: features in and out.
        hidden_dim: features of the gated hidden layer.

    Attributes (graded by name):
        gate, up: ``nn.Linear(emb_dim, hidden_dim, bias=False)``.
        down: ``nn.Linear(hidden_dim, emb_dim, bias=False)``.
    """

    def __init__(self, emb_dim: int, hidden_dim: int):
        super().__init__()
        raise NotImplementedError("exercise 20 (swiglu), SwiGLU.__init__: three projections without biases: gate and up to hidden_dim, down back to emb_dim")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 20 (swiglu), SwiGLU.forward: SiLU of the gate times the up projection, then down")
