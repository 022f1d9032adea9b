"""Scenarios for exercise 34 (DPO), run in the worker: trusted code builds the reference
``GPTModel`` (parts/model.py) for the policy and for the reference model from the weights the
grader sent, drives the learner's ``dpo`` functions on them and reports what happened as plain
data: the losses and rewards, whether they carry a graph, the mode and the gradient switch each
model ran with, and the gradients a backward left on each model's parameters.
"""

import torch
from torch import nn

from harness.worker.parts import load as load_part

_model = load_part("model")


def build(cfg: dict, state: dict, drop_rate: float, training: bool) -> nn.Module:
    """The reference ``GPTModel`` with ``state`` loaded, its dropout at ``drop_rate``, in training
    mode or not. A tied head is listed in ``state`` under ``tok_emb.weight`` only."""
    model = _model.GPTModel(dict(cfg, drop_rate=drop_rate))
    if cfg["tie_weights"]:
        state = {**state, "out_head.weight": state["tok_emb.weight"]}
    model.load_state_dict(state)
    return model.train(training)


def watch(model: nn.Module) -> list:
    """A list that gets, at each forward of ``model``, ``[its training flag, whether gradients were on]``."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append([module.training, torch.is_grad_enabled()]))
    return seen


def _tensor(value):
    """``value`` detached and copied if it is a tensor (and whether it had a graph), else its type."""
    if not isinstance(value, torch.Tensor):
        return {"tensor": None, "type": type(value).__name__, "requires_grad": False}
    return {"tensor": value.detach().clone(), "type": "Tensor", "requires_grad": bool(value.requires_grad)}


def _triple(out) -> dict:
    """What a ``(loss, chosen_rewards, rejected_rewards)`` return holds, as data."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        return {"ok": False, "type": type(out).__name__, "length": len(out) if isinstance(out, (tuple, list)) else None}
    names = ("loss", "chosen", "rejected")
    return {"ok": True, **{name: _tensor(v) for name, v in zip(names, out)}}


def loss(learner, policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=None):
    """``dpo_loss`` on four log-probability tensors that require gradients (``beta`` left to its
    default when None): what it returned, and after ``loss.backward()`` each input's gradient."""
    inputs = [t.clone().requires_grad_(True) for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)]
    fn = learner("dpo.dpo_loss")
    out = fn(*inputs) if beta is None else fn(*inputs, beta=beta)
    report = _triple(out)
    report["grads"] = None
    if report["ok"] and report["loss"]["requires_grad"] and out[0].dim() == 0:
        out[0].backward()
        report["grads"] = [None if t.grad is None else t.grad.clone() for t in inputs]
    return report


def batch_loss(learner, cfg, policy_state, reference_state, policy_drop, policy_training, reference_drop, batch, beta, calls=2):
    """``dpo_batch_loss(policy, reference, batch, beta)`` ``calls`` times on the same two models:
    the policy built in the mode asked, the reference with dropout and in TRAINING mode when handed
    over. After the first call, ``loss.backward()``. Reports each call's return, the modes and the
    gradient switch each model's forwards ran with, each model's mode after the calls, the policy's
    gradients and the names of the reference's parameters that got one."""
    policy = build(cfg, policy_state, policy_drop, policy_training)
    reference = build(cfg, reference_state, reference_drop, True)
    policy_seen, reference_seen = watch(policy), watch(reference)
    reference_requires = {name: p.requires_grad for name, p in reference.named_parameters()}
    fn = learner("dpo.dpo_batch_loss")
    report = {"calls": [], "policy_grads": {}, "reference_grads": [], "backward": False}
    for k in range(calls):
        out = fn(policy, reference, {key: t.clone() for key, t in batch.items()}, beta)
        report["calls"].append(_triple(out))
        if k == 0 and report["calls"][0]["ok"] and report["calls"][0]["loss"]["requires_grad"] and out[0].dim() == 0:
            out[0].backward()
            report["backward"] = True
            report["policy_grads"] = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
            report["reference_grads"] = sorted(name for name, p in reference.named_parameters() if p.grad is not None)
    report.update(policy_seen=policy_seen, reference_seen=reference_seen, policy_training=policy.training,
                  reference_training=reference.training,
                  reference_requires_changed=sorted(n for n, p in reference.named_parameters() if p.requires_grad != reference_requires[n]))
    return report


def train(learner, cfg, state, reference_drop, batch, beta, lr, eps, steps):
    """DPO training as a fine-tuning script runs it: the policy and the reference start from the
    same weights (the reference with dropout, handed over in training mode), the policy in
    training mode (no dropout, so that the run is deterministic), ``torch.optim.AdamW`` on the
    policy's parameters (an ``eps`` above its default, so that a gradient near 0 does not move a
    weight by a whole ``lr`` one way or the other); ``steps`` steps, each ``dpo_batch_loss``,
    ``backward``, ``step``, then one more ``dpo_batch_loss`` to see where the steps led. Reports each call's return, the names of
    the reference's parameters that got a gradient or changed, and the policy's final weights."""
    policy = build(cfg, state, 0.0, True)
    reference = build(cfg, state, reference_drop, True)
    before = {name: p.detach().clone() for name, p in reference.named_parameters()}
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, eps=eps, weight_decay=0.0)
    fn = learner("dpo.dpo_batch_loss")
    calls = []
    for step in range(steps + 1):
        opt.zero_grad()
        out = fn(policy, reference, {key: t.clone() for key, t in batch.items()}, beta)
        calls.append(_triple(out))
        if step == steps or not (calls[-1]["ok"] and calls[-1]["loss"]["requires_grad"] and out[0].dim() == 0):
            break
        out[0].backward()
        opt.step()
    return {"calls": calls,
            "reference_grads": sorted(name for name, p in reference.named_parameters() if p.grad is not None),
            "reference_changed": sorted(name for name, p in reference.named_parameters() if not torch.equal(p.detach(), before[name])),
            "policy": {name: p.detach().clone() for name, p in policy.named_parameters()}}
