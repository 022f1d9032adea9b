"""Scenarios for exercises 28 and 29 (tiled attention), run in the worker: the learner's functions
under a dispatch mode that follows every tensor storage PyTorch makes (added when an operator
returns it, removed when it is freed), so the bytes held at the worst moment are known, and the
largest single tensor made; and, for what the dispatch mode cannot see (memory made outside
PyTorch, another thread, another process), the process's peak resident memory (``VmHWM``, reset
through ``/proc/self/clear_refs``) and the CPU time of child processes. All the grader gets back
is numbers and tensors."""

import contextlib
import gc
import os
import resource
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


def _resident_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size to the current one
        return True
    except OSError:
        return False


def _resident_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Outside:
    """What the dispatch mode cannot see, over a ``with`` block: the growth of the process's peak
    resident memory (threads and NumPy included), and child processes (the CPU time of those that
    ended and were waited for, and those still there or not yet waited for at the end)."""

    def __enter__(self):
        gc.collect()
        self.reset = _resident_reset()
        self.before = _resident_kib("VmRSS")
        self.cpu, self.before_children = _children_cpu(), _children()
        return self

    def __exit__(self, *exc):
        hwm = _resident_kib("VmHWM") if self.reset else None
        self.growth = None if hwm is None or self.before is None else (hwm - self.before) * 1024
        self.children = _children_cpu() > self.cpu or bool(_children() - self.before_children)
        return False

    def report(self) -> dict:
        return {"resident_growth": self.growth, "other_processes": self.children}

    @staticmethod
    def combined(parts: list["Outside"]) -> dict:
        growths = [p.growth for p in parts if p.growth is not None]
        return {"resident_growth": max(growths) if growths else None, "other_processes": any(p.children for p in parts)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children() -> set[int]:
    """The processes whose parent is this one, running or zombies."""
    me, found = str(os.getpid()), set()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        found.add(int(entry))
            except (OSError, IndexError):
                continue
    return found


def forward(learner, q, k, v, is_causal, block_q, block_k):
    """28: ``tiled_attention`` once under the tracker; its output, and what it held."""
    fn = learner("flash.tiled_attention")
    with PeakMemory(q, k, v):  # the first call's costs (imports, threads, kernels) outside the measure
        fn(q[..., :2 * block_q, :], k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    mode = PeakMemory(q, k, v)
    with Outside() as outside, mode:
        result = fn(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    out, lse = (result if isinstance(result, (tuple, list)) and len(result) == 2 else (result, None))
    return {"out": out, "lse": lse, "peak": mode.peak, "largest": mode.largest, **outside.report()}


def backward(learner, q, k, v, is_causal, block_q, block_k, grad_out, track=True):
    """29: ``TiledAttention.apply`` forward, then backward with ``grad_out``; the output, the
    gradients, the bytes the forward left held (what the graph keeps: the output included), the
    saved tensors' shapes, the backward's peak and largest tensor, the forward's, and (with
    ``track``) what ``Outside`` saw of both."""
    fn = learner("flash_grad.TiledAttention")
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    if track:  # the first call's costs (imports, threads, kernels) outside the measure
        with PeakMemory(q, k, v):
            small = fn.apply(*(t[..., :2 * block_q, :].detach().requires_grad_(True) for t in (q, k, v)), is_causal, block_q, block_k)
            small.sum().backward()
        del small
    forward_mode = PeakMemory(q, k, v)
    outside = [Outside(), Outside()]  # the forward's, the backward's
    with outside[0] if track else contextlib.nullcontext(), forward_mode:
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
        with outside[1] if track else contextlib.nullcontext(), backward_mode if track else contextlib.nullcontext():
            grads = torch.autograd.grad(out, (q, k, v), grad_out, allow_unused=True)
    return {"out": out.detach(), "grads": [None if g is None else g.detach() for g in grads], "held": held,
            "node": type(node).__name__ if node is not None else None, "saved": saved,
            "peak": backward_mode.peak, "largest": backward_mode.largest,
            "forward_peak": forward_mode.peak, "forward_largest": forward_mode.largest,
            **(Outside.combined(outside) if track and node is not None else {})}

