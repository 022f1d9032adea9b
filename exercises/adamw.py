"""Exercise 27: AdamW from scratch, a ``torch.optim.Optimizer`` (the speed track)."""

import torch


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019), as ``torch.optim.AdamW``.

    For each parameter ``p`` with a gradient ``g``, at step ``t = 1, 2, ...`` (counted per
    parameter), with the hyperparameters of its group::

        p = p * (1 - lr * weight_decay)                  decoupled: the decay never enters m or v
        m = beta1 * m + (1 - beta1) * g                  first moment (the mean of g)
        v = beta2 * v + (1 - beta2) * g ** 2             second moment (the mean of g squared)
        m_hat = m / (1 - beta1 ** t)                     bias corrections: m and v start at 0
        v_hat = v / (1 - beta2 ** t)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)         eps outside the root

    Adam with L2 regularisation instead adds ``weight_decay * p`` to ``g``, where ``v`` then
    shrinks the decay of parameters with large gradients: AdamW's decay is the same for all.
    A parameter whose ``grad`` is None is skipped (no state, no decay).

    State (in ``self.state[p]``, so that ``state_dict`` / ``load_state_dict`` carry it): ``step``
    (the count ``t``, a float32 scalar tensor as PyTorch keeps it), ``exp_avg`` (m) and
    ``exp_avg_sq`` (v), created at the parameter's first step.

    Args:
        params: parameters, or dicts of them with their own hyperparameters (param groups).
        lr, betas, eps, weight_decay: as above (PyTorch's defaults).

    Raises:
        ValueError: for ``lr``, ``eps`` or ``weight_decay`` below 0, or a beta outside [0, 1),
            naming the value.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        raise NotImplementedError("exercise 27 (adamw), AdamW.__init__: check the hyperparameters, then hand the groups and their defaults to Optimizer")

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()``'s loss
        (evaluated with gradients enabled, before the update) when a closure is given, else None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        raise NotImplementedError("exercise 27 (adamw), AdamW.step: per parameter: decay, the two moments, bias-corrected, the update")
        return loss


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups for ``AdamW(decay_groups(model, 0.1), lr=...)`` (given): the matrices
    and embeddings decayed, the biases and norms' weights not (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

