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
        # BEGIN SOLUTION 29: run tiled_attention, save q, k, v, out and lse (and the options on ctx), return out
        out, lse = tiled_attention(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.is_causal, ctx.block_q, ctx.block_k = is_causal, block_q, block_k
        return out
        # END SOLUTION

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # BEGIN SOLUTION 29: D = rowsum(dO * out); per tile remake p = exp(s - lse), then dv, dp, ds, dq, dk
        q, k, v, out, lse = ctx.saved_tensors
        L, S = q.shape[-2], k.shape[-2]
        scale = 1.0 / math.sqrt(q.shape[-1])
        work = lse.dtype  # float32, or float64 for float64 inputs
        d_out = grad_out.to(work)
        D = (d_out * out.to(work)).sum(dim=-1)  # (..., L)
        dq = torch.zeros(q.shape, dtype=work, device=q.device)
        dk = torch.zeros(k.shape, dtype=work, device=k.device)
        dv = torch.zeros(v.shape, dtype=work, device=v.device)
        for j0 in range(0, S, ctx.block_k):  # FlashAttention-2's order: a key block, then every query block that sees it
            j1 = min(j0 + ctx.block_k, S)
            k_j, v_j = k[..., j0:j1, :].to(work), v[..., j0:j1, :].to(work)
            first = j0 if ctx.is_causal else 0  # causal: the queries before j0 see none of these keys
            for i0 in range(first - first % ctx.block_q, L, ctx.block_q):
                i1 = min(i0 + ctx.block_q, L)
                q_i, do_i = q[..., i0:i1, :].to(work), d_out[..., i0:i1, :]
                s = q_i @ k_j.transpose(-2, -1) * scale
                if ctx.is_causal and j1 - 1 > i0:
                    rows = torch.arange(i0, i1, device=q.device)[:, None]
                    cols = torch.arange(j0, j1, device=q.device)[None, :]
                    s = s.masked_fill(cols > rows, -math.inf)
                p = torch.exp(s - lse[..., i0:i1, None])  # the tile's probabilities, from the saved log-sum-exp
                dv[..., j0:j1, :] += p.transpose(-2, -1) @ do_i
                dp = do_i @ v_j.transpose(-2, -1)
                ds = p * (dp - D[..., i0:i1, None])
                dq[..., i0:i1, :] += ds @ k_j * scale
                dk[..., j0:j1, :] += ds.transpose(-2, -1) @ q_i * scale
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None
        # END SOLUTION


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """Attention through ``TiledAttention`` (given): ``flash_attention(q, k, v, is_causal=True)``
    is a drop-in for ``F.scaled_dot_product_attention(q, k, v, is_causal=True)`` that autograd can
    differentiate with memory linear in the sequence."""
    return TiledAttention.apply(q, k, v, is_causal, block_q, block_k)
