"""Scenarios for exercise 30 (the fast path), run in the worker: the learner's ``FastGPT`` with the
grader's weights; ``loss`` takes ``F.cross_entropy`` of its (padded) logits and returns the loss
and every parameter's gradient; ``kernels`` records the ATen operators its forward runs (a
dispatch mode sees each one, with its arguments), in eval mode and under bf16 autocast, and the
logits of both."""

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


def _build(learner, cfg, params):
    model = learner("fast.FastGPT")(cfg)
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in params.items():
            if name in named:
                named[name].copy_(value)
    return model


def loss(learner, cfg, params, idx, targets):
    model = _build(learner, cfg, params).train()
    logits = model(idx)
    value = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
    value.backward()
    return {"loss": value.detach(), "grads": {k: (None if p.grad is None else p.grad.detach()) for k, p in model.named_parameters()}}


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        if name == "gelu":
            name += ":" + str((kwargs or {}).get("approximate", args[1] if len(args) > 1 else "none"))
        self.seen.append(name)
        return func(*args, **(kwargs or {}))


def kernels(learner, cfg, params, idx):
    model = _build(learner, cfg, params).eval()
    with torch.no_grad():
        ops = _Ops()
        with ops:
            logits = model(idx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(idx)
    return {"ops": sorted(set(ops.seen)), "logits": logits, "bf16_logits": low.float()}
