"""Exercise 14: the learning-rate schedule (linear warmup, cosine decay) and gradient clipping."""

import math
from collections.abc import Iterable

import torch


def learning_rate(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (counted from 0), shaped like nanoGPT's ``get_lr``.

    - warmup, ``step < warmup_steps``: linear from ``max_lr / warmup_steps`` at step 0 up to
      ``max_lr``: ``max_lr * (step + 1) / warmup_steps``;
    - decay, ``warmup_steps <= step <= total_steps``: cosine from ``max_lr`` down to ``min_lr``,
      ``min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)`` with
      ``r = (step - warmup_steps) / (total_steps - warmup_steps)`` (when ``warmup_steps ==
      total_steps`` the decay is the single step ``total_steps``, at ``max_lr``);
    - after, ``step > total_steps``: ``min_lr``.

    Raises:
        ValueError: when ``step`` is negative, ``warmup_steps`` is negative or larger than
            ``total_steps``, ``total_steps`` is less than 1, or ``min_lr > max_lr``.
    """
    # BEGIN SOLUTION 14: linear warmup, then a half cosine from max_lr to min_lr, then min_lr
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got warmup_steps={warmup_steps}, "
                         f"total_steps={total_steps}")
    if min_lr > max_lr:
        raise ValueError(f"min_lr={min_lr} is larger than max_lr={max_lr}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step > total_steps:
        return min_lr
    if total_steps == warmup_steps:
        return max_lr
    ratio = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)
    # END SOLUTION


def clip_grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    """Clip gradients by their global L2 norm, in place, as ``torch.nn.utils.clip_grad_norm_``.

    The total norm is the L2 norm of all gradients taken together (``sqrt`` of the sum of every
    gradient element squared; parameters whose ``.grad`` is None are skipped). When it exceeds
    ``max_norm``, every gradient is multiplied by ``max_norm / (total_norm + eps)``; otherwise the
    gradients are left as they are (the factor is capped at 1).

    Returns:
        the total norm before clipping, a 0-dim float32 tensor (``0.`` when no parameter has a
        gradient; ``inf`` or ``nan`` when a gradient is not finite, and then the gradients are
        still multiplied by the resulting factor, ``0`` for ``inf`` and ``nan`` for ``nan``, as
        PyTorch does).
    """
    # BEGIN SOLUTION 14: the norm of the per-gradient norms, then one factor min(1, max_norm / (norm + eps)) for all
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([g.detach().float().norm(2) for g in grads])
    total = norms.norm(2)
    factor = torch.clamp(max_norm / (total + eps), max=1.0)
    for g in grads:
        g.detach().mul_(factor.to(g.dtype))
    return total
    # END SOLUTION
