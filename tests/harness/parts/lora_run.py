"""Scenarios for exercise 33 (LoRA), run in the worker: each builds a trusted model with the
weights the grader sent, hands it to the learner's ``replace_linear_with_lora`` (and
``merge_lora``), and returns plain data: outputs, the modules' types, the parameters and which
of them train. The grader builds the same models for its oracles.

``LoRANet`` is the network reference/33_lora.npz was written on (reference/make_outputs.py has
its twin, for peft): residual blocks of two ``nn.Linear``, a LayerNorm and an output head. The
course's ``GPTModel`` (parts/model.py) is the other model, with ``kind="gpt"``.
"""

import torch
from torch import nn

from harness.worker.parts import load as load_part


class LoRANet(nn.Module):
    def __init__(self, d_in, d_hidden, d_out, n_blocks):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_in)) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(d_in)
        self.out_head = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.out_head(self.norm(x))


def build(kind, sizes, params):
    """``LoRANet(**sizes)`` or ``GPTModel(sizes)`` (``kind`` "net" or "gpt"), in eval mode, with
    ``params`` (a state dict) loaded."""
    model = LoRANet(**sizes) if kind == "net" else load_part("model").GPTModel(sizes)
    model.load_state_dict(params)
    return model.eval()


def linear(in_features, out_features, bias):
    """A plain ``nn.Linear``, for ``LinearWithLoRA`` to wrap."""
    return nn.Linear(in_features, out_features, bias=bias)


def _count(count):
    return count if type(count) is int else repr(count)[:80]


def _set(model, values):
    """Copy ``values`` (name -> tensor) into the model's parameters of those names."""
    named = dict(model.named_parameters())
    missing = sorted(set(values) - set(named))
    if missing:
        raise AttributeError(f"after replace_linear_with_lora the model has no parameter {missing[0]} (its LoRA parameters: "
                             f"{', '.join(n for n in named if 'lora' in n) or 'none'})")
    with torch.no_grad():
        for name, value in values.items():
            if tuple(named[name].shape) != tuple(value.shape):
                raise ValueError(f"{name} has shape {tuple(named[name].shape)}; expected {tuple(value.shape)}")
            named[name].copy_(value)


def _types(model):
    return {name: type(m).__name__ for name, m in model.named_modules() if name}


def _params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def fresh(learner, kind, sizes, params, rank, alpha, include_head, x):
    """The model's output, then ``replace_linear_with_lora``: what it returned, the modules'
    types, which parameters train, every parameter, and the output again."""
    model = build(kind, sizes, params)
    with torch.no_grad():
        base = model(x)
    count = learner("lora.replace_linear_with_lora")(model, rank, alpha, include_head=include_head)
    with torch.no_grad():
        out = model(x)
    return {"base": base, "out": out, "count": _count(count), "types": _types(model),
            "trainable": [n for n, p in model.named_parameters() if p.requires_grad], "params": _params(model)}


def train(learner, sizes, params, rank, alpha, include_head, lora, x, target, lr, steps):
    """``replace_linear_with_lora``, the LoRA parameters set to ``lora``, then ``steps`` steps of
    SGD on every parameter of the model (``torch.optim.SGD(model.parameters(), lr)``: a frozen
    parameter has no gradient, so the optimizer leaves it) on the mean squared error to
    ``target``: the parameters before and after, the losses."""
    model = build("net", sizes, params)
    learner("lora.replace_linear_with_lora")(model, rank, alpha, include_head=include_head)
    _set(model, lora)
    before = _params(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"before": before, "after": _params(model), "losses": losses}


def merge(learner, sizes, params, rank, alpha, include_head, lora, x):
    """``replace_linear_with_lora`` (what it returned), the LoRA parameters set to ``lora``, the
    output, then ``merge_lora``: whether it returned the model, the modules' types, the parameters and the
    output afterwards."""
    model = build("net", sizes, params)
    count = learner("lora.replace_linear_with_lora")(model, rank, alpha, include_head=include_head)
    _set(model, lora)
    with torch.no_grad():
        out = model(x)
    returned = learner("lora.merge_lora")(model)
    with torch.no_grad():
        merged = model(x)
    return {"count": _count(count), "out": out, "merged_out": merged, "returned_model": returned is model, "types": _types(model),
            "params": _params(model)}


def wrapped_dtype(learner, dtype_name, weight, B, rank, alpha, x):
    """``LinearWithLoRA`` around an ``nn.Linear`` (no bias) whose weight is ``weight`` in the dtype
    ``dtype_name``, its ``B`` set to ``B``: the dtypes of A and B, A as drawn, and the output on
    ``x`` in that dtype (or what the forward raised)."""
    dtype = getattr(torch, dtype_name)
    layer = nn.Linear(weight.size(1), weight.size(0), bias=False).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(weight.to(dtype))
    wrapped = learner("lora.LinearWithLoRA")(layer, rank, alpha)
    A, Bp = wrapped.lora.A, wrapped.lora.B
    got = {"A_dtype": str(A.dtype), "B_dtype": str(Bp.dtype), "A": A.detach().double().clone()}
    with torch.no_grad():
        Bp.copy_(B.to(Bp.dtype))
        try:
            y = wrapped(x.to(dtype))
            got.update(out=y.detach().clone(), out_dtype=str(y.dtype))
        except Exception as e:  # the learner's forward: what it raised is the answer to grade
            got["raised"] = f"{type(e).__name__}: {str(e)[:300]}"
    return got


def merge_tied(learner, cfg, params, rank, alpha, lora, x):
    """A ``GPTModel`` whose head is tied to its token embedding (``cfg["tie_weights"]``), LoRA on
    every linear layer and the head, the LoRA parameters set to ``lora``, then ``merge_lora``:
    the embedding's and the head's weights afterwards, whether they are still one tensor, and the
    outputs before and after the merge."""
    model = build("gpt", cfg, params)
    learner("lora.replace_linear_with_lora")(model, rank, alpha, include_head=True)
    _set(model, lora)
    with torch.no_grad():
        out = model(x)
    learner("lora.merge_lora")(model)
    with torch.no_grad():
        merged = model(x)
    head = model.out_head.weight if isinstance(model.out_head, nn.Linear) else None
    return {"out": out, "merged_out": merged, "emb": model.tok_emb.weight.detach().clone(),
            "head": None if head is None else head.detach().clone(), "head_type": type(model.out_head).__name__,
            "still_tied": head is model.tok_emb.weight}
