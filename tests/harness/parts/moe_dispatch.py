"""Scenario for exercise 26 (mixture of experts), run in the worker: builds the learner's
``MoEFeedForward`` with the weights the grader sent, puts a hook on every expert that records how
many tokens it was given, runs ``forward`` and returns the output, the router logits it kept and
the tokens each expert saw (0 for an expert that did not run)."""

import torch


def run(learner, init_args, params, x):
    layer = learner("moe.MoEFeedForward")(*init_args)
    with torch.no_grad():
        for name, value in layer.named_parameters():
            if name in params:
                value.copy_(params[name])
    seen = [0] * len(layer.experts)
    for e, expert in enumerate(layer.experts):
        expert.register_forward_pre_hook(lambda module, args, e=e: seen.__setitem__(e, seen[e] + int(args[0].reshape(-1, args[0].size(-1)).size(0))))
    with torch.no_grad():
        out = layer(x)
    logits = layer.router_logits
    return {"out": out, "router_logits": logits if isinstance(logits, torch.Tensor) else None, "seen": seen}
