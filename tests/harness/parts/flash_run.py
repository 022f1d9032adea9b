"""Scenarios for exercises 28 and 29 (tiled attention), run in the worker: the learner's functions
under a dispatch mode that follows every tensor storage PyTorch makes (added when an operator
returns it, removed when it is freed), so the bytes held at the worst moment are known, and the
largest single tensor made. All the grader gets back is numbers and tensors.

These numbers are made in the learner's process, so a hostile tree can change them: they only
name an honest learner's mistake precisely. The verdict on memory and processes rests on what
the kernel says, read from outside that process (``impl.scenario(..., measure=True)``), after
``warm`` ran in a fresh one."""

import contextlib
import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """Bytes of tensor storage alive, at most and now, counting storages made while it is on."""

    def __init__(self, *existing: torch.Tensor):
        super().__init__()
        self.before = {t.untyped_storage()._cdata for t in existing}  # views of these are not new memory
        self.live: dict[int, int] = {}
        self.now = self.peak = self.largest = 0

    def _freed(self, key):
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key, size = storage._cdata, storage.nbytes()
                if key not in self.live and key not in self.before and size:
                    self.live[key] = size
                    self.now += size
                    self.peak = max(self.peak, self.now)
                    self.largest = max(self.largest, size)
                    weakref.finalize(storage, self._freed, key)
        return out


def warm(learner, q, block_q, block_k, grad=False):
    """Before a measured scenario, in a fresh worker (``impl.scenario(..., fresh=True)``): the
    operators a tiled attention uses, on tensors of its sizes, under the dispatch mode and without
    it, so that PyTorch's one-time costs (its thread pool, its kernels' buffers, the modules the
    dispatch mode loads when first used) are paid before the measure starts. Calls nothing of the
    tree; returns nothing."""
    lead = q.shape[:-2]
    tile_q, tile_k = torch.randn(*lead, block_q, q.shape[-1]), torch.randn(*lead, block_k, q.shape[-1])
    for mode in (PeakMemory(q), contextlib.nullcontext()):
        with mode:
            s = (tile_q @ tile_k.transpose(-2, -1)).masked_fill(torch.ones(block_q, block_k, dtype=torch.bool).triu(1), -1e9)
            m = torch.maximum(s.amax(-1), torch.full(s.shape[:-1], -1e9))
            p = torch.exp(s - torch.where(torch.isinf(m), 0.0, m)[..., None])
            torch.cat([p.sum(-1), torch.log(p.sum(-1))], -1)
            (p / p.sum(-1, keepdim=True)) @ tile_k
            (q * 2 + 1).sum(-1).clone().zero_()
            if grad:
                x = tile_q.clone().requires_grad_(True)
                (torch.exp(x @ tile_k.transpose(-2, -1)) @ tile_k).sum().backward()
    gc.collect()
    return None


def forward(learner, q, k, v, is_causal, block_q, block_k):
    """28: ``tiled_attention`` once under the tracker; its output, and what it held."""
    fn = learner("flash.tiled_attention")
    with PeakMemory(q, k, v):  # the first call's costs (imports, threads, kernels) outside the measure
        fn(q[..., :2 * block_q, :], k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    mode = PeakMemory(q, k, v)
    with mode:
        result = fn(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    out, lse = (result if isinstance(result, (tuple, list)) and len(result) == 2 else (result, None))
    return {"out": out, "lse": lse, "peak": mode.peak, "largest": mode.largest}


def backward(learner, q, k, v, is_causal, block_q, block_k, grad_out, track=True):
    """29: ``TiledAttention.apply`` forward, then backward with ``grad_out``; the output, the
    gradients, the bytes the forward left held (what the graph keeps: the output included), the
    saved tensors' shapes, the backward's peak and largest tensor, and the forward's (measured
    with ``track``, after a first small call)."""
    fn = learner("flash_grad.TiledAttention")
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    if track:  # the first call's costs (imports, threads, kernels) outside the measure
        with PeakMemory(q, k, v):
            small = fn.apply(*(t[..., :2 * block_q, :].detach().requires_grad_(True) for t in (q, k, v)), is_causal, block_q, block_k)
            small.sum().backward()
        del small
    forward_mode = PeakMemory(q, k, v)
    with forward_mode:
        out = fn.apply(q, k, v, is_causal, block_q, block_k)
    held = forward_mode.now
    node = getattr(out, "grad_fn", None)
    try:
        saved = [tuple(t.shape) for t in node.saved_tensors]
    except Exception:  # noqa: BLE001  (not a custom Function's node, or nothing saved)
        saved = None
    backward_mode = PeakMemory(q, k, v, grad_out, out, *(node.saved_tensors if saved is not None else ()))
    grads = [None, None, None]
    if node is not None:
        with backward_mode if track else contextlib.nullcontext():
            grads = torch.autograd.grad(out, (q, k, v), grad_out, allow_unused=True)
    return {"out": out.detach(), "grads": [None if g is None else g.detach() for g in grads], "held": held,
            "node": type(node).__name__ if node is not None else None, "saved": saved,
            "peak": backward_mode.peak, "largest": backward_mode.largest,
            "forward_peak": forward_mode.peak, "forward_largest": forward_mode.largest}

