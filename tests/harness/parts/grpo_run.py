"""Scenario for exercise 38 (GRPO), run in the worker: trusted code calls the learner's
``grpo_loss`` on tensors that require gradients, backpropagates the loss, and reports as plain
data what came back (the loss, the stats, whether each carries a graph) and which inputs the
gradient reached.
"""

import torch


def _tensor(value):
    """``value`` detached and copied if it is a tensor (and whether it had a graph), else its type."""
    if not isinstance(value, torch.Tensor):
        return {"tensor": None, "type": type(value).__name__, "requires_grad": False}
    return {"tensor": value.detach().clone(), "type": "Tensor", "requires_grad": bool(value.requires_grad)}


def loss(learner, logprobs, old_logprobs, ref_logprobs, advantages, mask, options, same_old=False):
    """``grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, **options)``, every float
    input a leaf that requires gradients (``ref_logprobs`` may be None); with ``same_old``,
    ``old_logprobs`` IS ``logprobs`` (the same tensor object: the first pass over a batch, as trl
    does it), so only a detach keeps the ratio's gradient. Then ``loss.backward()``: each input's
    gradient (None where none reached it)."""
    lp = logprobs.clone().requires_grad_(True)
    inputs = {"logprobs": lp, "old_logprobs": lp if same_old else old_logprobs.clone().requires_grad_(True),
              "ref_logprobs": None if ref_logprobs is None else ref_logprobs.clone().requires_grad_(True),
              "advantages": advantages.clone().requires_grad_(True)}
    out = learner("grpo.grpo_loss")(inputs["logprobs"], inputs["old_logprobs"], inputs["ref_logprobs"], inputs["advantages"],
                                    mask.clone(), **options)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return {"ok": False, "type": type(out).__name__, "length": len(out) if isinstance(out, (tuple, list)) else None}
    value, stats = out
    report = {"ok": True, "loss": _tensor(value), "stats_type": type(stats).__name__, "stats": {}, "grads": None}
    if isinstance(stats, dict):
        report["stats"] = {str(k): _tensor(v) for k, v in stats.items() if isinstance(k, str)}
    if isinstance(value, torch.Tensor) and value.requires_grad and value.dim() == 0:
        value.backward()
        names = [k for k in inputs if inputs[k] is not None and not (same_old and k == "old_logprobs")]
        report["grads"] = {k: None if inputs[k].grad is None else inputs[k].grad.clone() for k in names}
    return report
