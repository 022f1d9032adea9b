"""Trusted parts for exercises 13 (the loss) and 14 (schedule and clipping).

``TinyLogits(table, pos)`` is a tiny deterministic language model: for token ids ``idx`` of shape
``(batch, num_tokens)`` (int64) its logits are ``table[idx] + pos[:num_tokens]``, shape
``(batch, num_tokens, vocab_size)``; ``table`` and ``pos`` are its parameters, so gradients reach
them. It records, per call, whether autograd was on. ``Batches(x0, y0, x1, y1, ...)`` is a data
loader: an iterable of ``(input_batch, target_batch)`` pairs with a ``len`` (no indexing, as a
``DataLoader``), whose batches may have different sizes.

The scenarios below drive the learner's functions on those objects and return plain data about
what happened; the grader compares it with its oracles (``F.cross_entropy``,
``torch.nn.utils.clip_grad_norm_``) in its own process.
"""

import numbers

import torch
from torch import nn


class TinyLogits(nn.Module):
    def __init__(self, table, pos):
        super().__init__()
        self.table = nn.Parameter(table.float().clone())
        self.pos = nn.Parameter(pos.float().clone())
        self.grad_enabled: list[bool] = []  # torch.is_grad_enabled() in each forward call

    def forward(self, idx):
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.int64:
            what = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise TypeError(f"the model takes a (batch, num_tokens) int64 tensor of token ids, got {what}")
        if idx.size(1) > self.pos.size(0):
            raise ValueError(f"the model reads at most {self.pos.size(0)} tokens, got {idx.size(1)}")
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.table[idx] + self.pos[: idx.size(1)]


class Batches:
    """``Batches(x0, y0, x1, y1, ...)``: the pairs ``(x0, y0), (x1, y1), ...`` with a ``len``."""

    def __init__(self, *tensors):
        if len(tensors) % 2:
            raise ValueError("Batches takes (input, target) tensors in pairs")
        self.pairs = [(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)]
        self.taken = 0  # batches handed out, over all iterations

    def __len__(self):
        return len(self.pairs)

    def __iter__(self):
        for x, y in self.pairs:
            self.taken += 1
            yield x.clone(), y.clone()


def _params(model):
    return {name: p for name, p in model.named_parameters()}


def _outcome(call):
    """``{"returned": value}`` or ``{"raised": type name, "message": str}``. A stub's
    NotImplementedError passes through, so an unstarted exercise reads as not started."""
    try:
        value = call()
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's exception is the data here
        return {"raised": type(e).__name__, "message": str(e)[:2000]}
    return {"returned": _describe(value)}


def _describe(value):
    """Plain data as it is; a tensor as ``{"tensor": values, "shape": [...], "dtype": name,
    "requires_grad": bool}`` (the values flattened: the wire carries no 0-dim arrays); anything
    else as a line naming its type."""
    if type(value) in (bool, int, float, str) or value is None:
        return value
    if type(value) is torch.Tensor:
        return {"tensor": value.detach().reshape(-1).clone(), "shape": list(value.shape),
                "dtype": str(value.dtype).removeprefix("torch."), "requires_grad": bool(value.requires_grad)}
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def outcomes(learner, target, calls):
    """Call the learner's ``target`` once per ``(args, kwargs)`` in ``calls``; the outcome of each
    (what it returned or raised)."""
    fn = learner(target)
    return [_outcome(lambda a=args, k=kwargs: fn(*a, **k)) for args, kwargs in calls]


# ----------------------------------------------------------------------------------- exercise 13


def cross_entropy(learner, logits, targets, grad_output=None, **kwargs):
    """``cross_entropy(logits, targets, **kwargs)``: what it returned and, with ``grad_output``
    (a float), the gradient of ``grad_output * loss`` w.r.t. the logits (None if none reached them)."""
    logits = logits.clone().requires_grad_(grad_output is not None)
    out = learner("loss.cross_entropy")(logits, targets, **kwargs)
    result = {"out": _describe(out)}
    if grad_output is not None and type(out) is torch.Tensor and out.requires_grad and out.numel() == 1:
        (out.reshape(()) * grad_output).backward()
        result["grad"] = logits.grad.clone() if logits.grad is not None else None
    return result


def perplexities(learner, cases):
    """``perplexity(loss)`` for each ``[value, dtype]`` case: the loss is the float ``value``, or a
    0-dim tensor of ``dtype`` ("float32", "float64") holding it."""
    fn = learner("loss.perplexity")
    return [_describe(fn(value if dtype is None else torch.tensor(value, dtype=getattr(torch, dtype)))) for value, dtype in cases]


def batch_loss(learner, model, input_batch, target_batch, device, device_object=False):
    """``calc_loss_batch`` on a ``TinyLogits`` (``device`` passed as a str, or as a
    ``torch.device`` with ``device_object``), then ``backward``: the loss, whether it required
    grad, and the parameters' gradients."""
    loss = learner("loss.calc_loss_batch")(input_batch, target_batch, model, torch.device(device) if device_object else device)
    out = {"loss": _describe(loss)}
    if type(loss) is torch.Tensor and loss.requires_grad and loss.numel() == 1:
        loss.reshape(()).backward()
        out["grads"] = {n: (p.grad.clone() if p.grad is not None else None) for n, p in _params(model).items()}
    return out


def loader_loss(learner, model, loader, device, num_batches=None, train=False):
    """``calc_loss_loader`` with the model in train (or eval) mode: what it returned (its type
    and value), the mode after, whether any forward ran with autograd on, whether a parameter
    got a gradient, and how many batches were taken from the loader."""
    model.train(train)
    kwargs = {} if num_batches == "absent" else {"num_batches": num_batches}
    value = learner("loss.calc_loss_loader")(loader, model, device, **kwargs)
    return {
        "value": _describe(value),
        "training_after": bool(model.training),
        "forwards": len(model.grad_enabled),
        "forwards_with_grad": sum(model.grad_enabled),
        "params_with_grad": sorted(n for n, p in _params(model).items() if p.grad is not None),
        "taken": loader.taken,
    }


# ----------------------------------------------------------------------------------- exercise 14


def learning_rates(learner, steps, max_lr, min_lr, warmup_steps, total_steps):
    """``learning_rate(step, ...)`` for each step, as a float where it is a real number (a numpy
    float too); anything else is described."""
    fn = learner("schedule.learning_rate")
    out = []
    for step in steps:
        value = fn(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)
        out.append(float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else _describe(value))
    return out


def clip(learner, values, grads, max_norm, single=False, generator=False, eps=None):
    """Parameters with the given values and gradients (None: no gradient), clipped by the
    learner's ``clip_grad_norm`` (passed as a list; as a generator, like ``model.parameters()``,
    with ``generator``; one tensor itself with ``single``): what it returned,
    the gradients after, and whether each gradient was changed in place (the same tensor)."""
    params = [nn.Parameter(v.clone()) for v in values]
    before = []
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g.clone()
        before.append(p.grad)
    kwargs = {} if eps is None else {"eps": eps}
    norm = learner("schedule.clip_grad_norm")(params[0] if single else (p for p in params) if generator else params, max_norm, **kwargs)
    return {
        "norm": _describe(norm),
        "grads": [p.grad.detach().clone() if p.grad is not None else None for p in params],
        "same": [p.grad is b for p, b in zip(params, before)],
        "values": [p.detach().clone() for p in params],
    }
