"""Scenarios for exercise 32 (classification fine-tuning), run in the worker: trusted code builds
the reference ``GPTModel`` (parts/model.py) from the parameters the grader sent, gives it a class
head where a check is not about the learner's, drives the learner's ``classify`` functions on it
and reports what happened as plain data: parameter names and shapes, which ones train, the loss
and the gradients left after a backward, the accuracy and whether gradients were on meanwhile.
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from harness.worker.parts import load as load_part

_model = load_part("model")


def gpt(cfg: dict, state: dict | None = None) -> nn.Module:
    """The reference ``GPTModel(cfg)``, with ``state`` loaded when given, in eval mode. It also
    carries ``cfg`` as attributes (``model.cfg.emb_dim``), as the exercise's ``GPTModel`` does."""
    model = _model.GPTModel(cfg)
    model.cfg = SimpleNamespace(**cfg)
    if state is not None:
        if cfg["tie_weights"] and "out_head.weight" not in state:  # a tied head is listed under both names
            state = {**state, "out_head.weight": state["tok_emb.weight"]}
        model.load_state_dict(state)
    return model.eval()


def classifier(cfg: dict, num_classes: int, **state) -> nn.Module:
    """``gpt(cfg)`` whose head is a trusted ``nn.Linear(emb_dim, num_classes)``, with ``state``
    (which holds ``out_head.weight`` and ``out_head.bias``) loaded."""
    model = gpt(cfg)
    model.out_head = nn.Linear(cfg["emb_dim"], num_classes)
    model.load_state_dict(state)
    return model


def _shapes(model: nn.Module) -> dict:
    return {name: list(p.shape) for name, p in model.named_parameters()}


def head(learner, cfg, num_classes, state, head_state, ids):
    """``add_classification_head(gpt(cfg, state), num_classes)``: whether it returned the model, the
    head it left (its type, shapes, whether its weight is the embedding's), the parameters' names and
    shapes, and the logits on ``ids`` once ``head_state`` is loaded into a head of the right shapes."""
    model = gpt(cfg, state)
    returned = learner("classify.add_classification_head")(model, num_classes)
    out_head = getattr(model, "out_head", None)
    weight, bias = getattr(out_head, "weight", None), getattr(out_head, "bias", None)
    report = {
        "returned_model": returned is model,
        "returned_type": type(returned).__name__,
        "head_type": type(out_head).__name__,
        "weight": list(weight.shape) if isinstance(weight, torch.Tensor) else None,
        "bias": list(bias.shape) if isinstance(bias, torch.Tensor) else None,
        "tied": isinstance(weight, torch.Tensor) and weight is model.tok_emb.weight,
        "shapes": _shapes(model),
        "tok_emb_kept": bool(torch.equal(model.tok_emb.weight.detach(), state["tok_emb.weight"])),
        "logits": None,
    }
    fits = (report["weight"] == list(head_state["out_head.weight"].shape) and report["bias"] == list(head_state["out_head.bias"].shape)
            and not report["tied"])
    if fits:
        with torch.no_grad():
            out_head.weight.copy_(head_state["out_head.weight"])
            out_head.bias.copy_(head_state["out_head.bias"])
            report["logits"] = model(ids)
    return report


def freeze(learner, cfg, num_classes, calls, initial):
    """A classifier (trusted head) whose parameters start with ``requires_grad`` as in ``initial``
    (name -> bool), then ``freeze_for_classification(model, k)`` for each ``k`` of ``calls`` in
    turn: after each, what it returned and the names of the parameters that train."""
    model = gpt(cfg)
    model.out_head = nn.Linear(cfg["emb_dim"], num_classes)
    for name, p in model.named_parameters():
        p.requires_grad_(bool(initial.get(name, True)))
    fn = learner("classify.freeze_for_classification")
    out = []
    for k in calls:
        count = fn(model, k) if k is not None else fn(model)
        out.append({"count": count if type(count) is int else None, "count_type": type(count).__name__,
                    "trainable": sorted(name for name, p in model.named_parameters() if p.requires_grad)})
    return out


def _trusted_freeze(model, trainable_blocks):
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = list(model.trf_blocks)
    for module in [*blocks[len(blocks) - trainable_blocks:], model.final_norm, model.out_head]:
        for p in module.parameters():
            p.requires_grad_(True)


def _trusted_loss(model, ids, lengths, labels):
    logits = model(ids)
    return F.cross_entropy(logits[torch.arange(ids.size(0)), lengths - 1], labels)


def backward(learner, cfg, num_classes, state, ids, lengths, labels, trainable_blocks, *, learners_freeze, learners_loss):
    """One backward through a classifier: frozen by the learner's ``freeze_for_classification``
    (``learners_freeze``) or by trusted code, the loss the learner's ``classification_loss``
    (``learners_loss``) or a trusted cross-entropy at each row's last real token. Reports the loss,
    whether it had a graph, and the gradient of every parameter that got one."""
    model = classifier(cfg, num_classes, **state)
    if learners_freeze:
        learner("classify.freeze_for_classification")(model, trainable_blocks)
    else:
        _trusted_freeze(model, trainable_blocks)
    if learners_loss:
        loss = learner("classify.classification_loss")(model, ids, lengths, labels)
    else:
        loss = _trusted_loss(model, ids, lengths, labels)
    report = {"loss_type": type(loss).__name__, "loss": None, "has_graph": False, "grads": {}}
    if isinstance(loss, torch.Tensor):
        report["loss"] = loss.detach().clone()
        report["has_graph"] = loss.requires_grad and loss.dim() == 0
    if report["has_graph"]:
        loss.backward()
        report["grads"] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return report


def accuracy(learner, cfg, num_classes, state, ids, lengths, labels):
    """``classification_accuracy`` on a classifier: what it returned and whether gradients were on
    while the model ran."""
    model = classifier(cfg, num_classes, **state)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(torch.is_grad_enabled()))
    value = learner("classify.classification_accuracy")(model, ids, lengths, labels)
    plain = value if type(value) in (int, float) else None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        plain = float(value.detach())
    return {"type": type(value).__name__, "value": plain, "grad_enabled": seen}
