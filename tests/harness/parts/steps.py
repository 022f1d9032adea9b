"""Scenarios for exercises 15 and 16 (training.py), run in the worker: trusted code that builds a
small model (parts/model.py's ``GPTModel``) or a stack of reference blocks (parts/block.py) from
parameters the grader sent, drives the learner's ``train_step`` or ``run_blocks`` on it, and
reports what happened as plain data: the returned values, the parameters after the step, which
gradients are left, the dtypes seen while gradients accumulated, the GradScaler's scale, the bytes
saved for backward. The grader builds the same model from the same parameters with ``build_model``
/ ``build_blocks`` / ``make_optimizer`` below and computes its own plain float32 step.
"""

import torch
from torch import nn

from harness.worker.parts import load as load_part

_model = load_part("model")
_block = load_part("block")


# ----------------------------------------------------------------------- shared with the grader


def build_model(cfg: dict, state: dict) -> nn.Module:
    """parts/model.py's ``GPTModel(cfg)`` with the parameters ``state``, in training mode."""
    model = _model.GPTModel(cfg)
    model.load_state_dict(state)
    return model.train()


def build_blocks(cfg: dict, state: dict) -> nn.Sequential:
    """``nn.Sequential`` of ``cfg["n_layers"]`` reference ``TransformerBlock``s with ``state``, training."""
    blocks = nn.Sequential(*(_block.TransformerBlock(cfg) for _ in range(cfg["n_layers"])))
    blocks.load_state_dict(state)
    return blocks.train()


def make_optimizer(kind: str, model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD, or AdamW with eps=1e-6: with the default 1e-8 a gradient that is zero up to rounding
    (a few 1e-10) moves its parameter by up to lr either way, and two correct steps that add the
    same gradients in another order could differ by that much."""
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, eps=1e-6)
    raise ValueError(f"unknown optimizer {kind!r}")


class SavedBytes:
    """Counts the bytes of the activations autograd saves for backward while it is active
    (``torch.autograd.graph.saved_tensors_hooks``); parameters and repeats of one storage count
    once or not at all, so the number is what the forward pass adds to memory."""

    def __init__(self, module: nn.Module):
        self.params = {p.untyped_storage().data_ptr() for p in module.parameters()}
        self.seen: set[int] = set()
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self.seen:
            self.seen.add(ptr)
            self.total += storage.nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


# ----------------------------------------------------------------------- exercise 15


def train_step(learner, cfg, state, inputs, targets, *, optimizer="sgd", lr=0.1, weight_decay=0.0, amp_dtype=None,
               init_scale=None, max_norm="default", inject_inf=False):
    """``inputs`` and ``targets`` are ``(steps, G, b, T)``: ``steps`` calls of the learner's
    ``train_step`` on ``G`` micro-batches each. ``amp_dtype`` is None or "bfloat16";
    ``init_scale`` makes a ``GradScaler("cpu", init_scale=...)``; ``max_norm="default"`` leaves the
    argument out; ``inject_inf`` turns one element of one gradient into inf in the first backward."""
    step_fn = learner("training.train_step")
    model = build_model(cfg, state)
    opt = make_optimizer(optimizer, model, lr, weight_decay)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale) if init_scale is not None else None
    named = dict(model.named_parameters())
    seen = {"grad_dtypes": set(), "accumulations": 0, "forward_dtypes": set()}

    def accumulated(p):
        seen["grad_dtypes"].add(str(p.grad.dtype).removeprefix("torch."))
        seen["accumulations"] += 1

    for p in named.values():
        p.register_post_accumulate_grad_hook(accumulated)
    model.out_head.register_forward_hook(lambda m, i, o: seen["forward_dtypes"].add(str(o.dtype).removeprefix("torch.")))
    if inject_inf:
        fired = []

        def poison(g):
            if fired:
                return g
            fired.append(True)
            g = g.clone()
            g.view(-1)[0] = float("inf")
            return g

        named["tok_emb.weight"].register_hook(poison)
    kwargs = {"scaler": scaler, "amp_dtype": getattr(torch, amp_dtype) if amp_dtype else None}
    if max_norm != "default":
        kwargs["max_norm"] = max_norm
    returned = []
    for s in range(inputs.size(0)):
        micro = [(inputs[s, g], targets[s, g]) for g in range(inputs.size(1))]
        returned.append(step_fn(model, opt, micro, **kwargs))
    left = {n: p.grad for n, p in named.items() if p.grad is not None}
    return {
        "returned": returned,
        "params": {n: p.detach().clone() for n, p in named.items()},
        "param_dtypes": {n: str(p.dtype).removeprefix("torch.") for n, p in named.items()},
        "grads_left": sorted(left),
        "grads_left_zero": all(bool((g == 0).all()) for g in left.values()),
        "grad_dtypes": sorted(seen["grad_dtypes"]),
        "accumulations": seen["accumulations"],
        "n_params": len(named),
        "forward_dtypes": sorted(seen["forward_dtypes"]),
        "scale": float(scaler.get_scale()) if scaler is not None else None,
        "optimizer_state": len(opt.state),
    }


def empty_micro_batches(learner, cfg, state):
    """The learner's ``train_step`` on an empty list: what it raised (None if nothing)."""
    step_fn = learner("training.train_step")
    model = build_model(cfg, state)
    opt = make_optimizer("sgd", model, 0.1)
    try:
        step_fn(model, opt, [])
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - reported to the grader, which says what was expected
        return {"raised": type(e).__name__, "message": str(e)[:300]}
    return {"raised": None, "message": ""}


# ----------------------------------------------------------------------- exercise 16


def run_blocks(learner, cfg, state, x, grad_output, seed, checkpointing=True):
    """The learner's ``run_blocks(blocks, x, checkpointing)`` on reference blocks in training mode
    (dropout on) after ``torch.manual_seed(seed)``, then backward with ``grad_output``.
    ``peak_recomputed`` is the most blocks whose activations backward held at once: each block
    recomputed and not yet through its own backward (1 when each block has its own checkpoint)."""
    fn = learner("training.run_blocks")
    blocks = build_blocks(cfg, state)
    calls = [0] * len(blocks)
    # During backward: which blocks were recomputed and still wait for their own backward. A block
    # whose forward ran again holds its activations until the gradients of its parameters are made.
    backward, held, peak = [False], set(), [0]

    def ran(i):
        calls[i] += 1
        if backward[0]:
            held.add(i)
            peak[0] = max(peak[0], len(held))

    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda m, a, i=i: ran(i))
        for p in block.parameters():
            p.register_hook(lambda g, i=i: held.discard(i))
    x = x.clone().requires_grad_(True)
    saved = SavedBytes(blocks)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with saved.hooks():
            out = fn(blocks, x, checkpointing)
        forward_calls = list(calls)
        backward[0] = True
        out.backward(grad_output)
    return {
        "out": out.detach(),
        "x_grad": x.grad,
        "param_grads": {n: p.grad for n, p in blocks.named_parameters()},
        "saved_bytes": saved.total,
        "forward_calls": forward_calls,
        "calls": calls,
        "peak_recomputed": peak[0],
    }


def model_checkpointing(learner, cfg, idx, targets, seed):
    """Ungraded (tests/integration): the learner's own ``GPTModel`` in training mode, one loss and
    backward without and then with ``training.use_gradient_checkpointing`` from the same parameters
    and random state; the losses, gradients and bytes saved for backward of both."""
    import torch.nn.functional as F

    cls = learner("model.GPTModel")
    use_checkpointing = learner("training.use_gradient_checkpointing")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg).train()
        runs = {}
        for flag in (False, True):
            use_checkpointing(model, flag)
            model.zero_grad(set_to_none=True)
            saved = SavedBytes(model)
            torch.manual_seed(seed + 1)
            with saved.hooks():
                logits = model(idx)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss.backward()
            runs[str(flag)] = {"loss": float(loss.detach()), "saved_bytes": saved.total,
                               "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}
    return runs
