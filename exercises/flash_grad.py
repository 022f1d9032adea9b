"""Exercise 29: FlashAttention's backward pass, recomputing each tile (the speed track)."""

import math

import torch

from .flash import tiled_attention


class TiledAttention(torch.autograd.Function):
    """Attention as one autograd node that keeps only ``q, k, v, out, lse`` for the backward pass.

    Autograd through plain attention keeps the ``L x S`` probabilities of every head until the
    backward pass; this node keeps ``O(L)`` numbers per head beyond its inputs and output, and
    remakes each tile's probabilities when the gradients need them (Dao, FlashAttention-2, 2023).

    ``forward(ctx, q, k, v, is_causal, block_q, block_k)`` runs exercise 28's ``tiled_attention``
    (with the default scale ``1 / sqrt(d)``), saves ``q, k, v, out, lse`` with
    ``ctx.save_for_backward`` (nothing else of tensor size) and returns ``out``.

    ``backward(ctx, grad_out)`` returns ``(dq, dk, dv, None, None, None)``. With ``dO = grad_out``
    and ``D = rowsum(dO * out)`` (one number per query row), for every tile of queries ``i`` and
    keys ``j`` (skipping, with ``is_causal``, the tiles wholly above the diagonal)::

        s = q_i @ k_j^T * scale       (-inf where masked, as in the forward)
        p = exp(s - lse_i)            the tile's probabilities, remade
        dv_j += p^T @ dO_i
        dp = dO_i @ v_j^T
        ds = p * (dp - D_i)           the softmax's backward: D_i = rowsum(p * dp) over all keys
        dq_i += ds @ k_j * scale
        dk_j += ds^T @ q_i * scale

    The gradients have the inputs' shapes and dtypes (accumulate them in ``lse``'s dtype: float32,
    or float64 for float64 inputs).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                block_q: int = 64, block_k: int = 64) -> torch.Tensor:
        raise NotImplementedError("exercise 29 (flash_backward), TiledAttention.forward: run tiled_attention, save q, k, v, out and lse (and the options on ctx), return out")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        raise NotImplementedError("exercise 29 (flash_backward), TiledAttention.backward: D = rowsum(dO * out); per tile remake p = exp(s - lse), then dv, dp, ds, dq, dk")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """Attention through ``TiledAttention`` (given): ``flash_attention(q, k, v, is_causal=True)``
    is a drop-in for ``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` that autograd can
    differentiate with memory linear in the sequence."""
    return TiledAttention.apply(q, k, v, is_causal, block_q, block_k)
