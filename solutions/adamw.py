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
        # BEGIN SOLUTION 27: check the hyperparameters, then hand the groups and their defaults to Optimizer
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"lr, eps and weight_decay must be at least 0, got lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must each be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        # END SOLUTION

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()``'s loss
        (evaluated with gradients enabled, before the update) when a closure is given, else None."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # BEGIN SOLUTION 27: per parameter: decay, the two moments, bias-corrected, the update
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:  # the first step of this parameter
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                p.mul_(1 - lr * decay)  # decoupled weight decay, before the Adam update
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v / (1 - beta2 ** t)).sqrt_().add_(eps)  # sqrt(v_hat) + eps
                p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))  # - lr * m_hat / denom
        # END SOLUTION
        return loss


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups for ``AdamW(decay_groups(model, 0.1), lr=...)`` (given): the matrices
    and embeddings decayed, the biases and norms' weights not (nanoGPT's rule)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

