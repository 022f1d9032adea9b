"""Scenario for exercise 27 (AdamW), run in the worker: builds parameters from the tensors the
grader sent, in their groups, gives them the grader's gradients step by step and lets the
learner's ``AdamW`` update them; returns every parameter after every step. With ``reload_at``,
the optimizer's ``state_dict`` is saved to bytes (``torch.save``) before that step, read back
with ``weights_only=True`` as a checkpoint would be, and loaded into a new ``AdamW`` over the same
parameters, which goes on."""

import io

import torch


def run(learner, groups, kwargs, grads, reload_at=None):
    params = [torch.nn.Parameter(t.clone()) for group in groups for t in group["params"]]

    def make():
        it, built = iter(params), []
        for group in groups:
            built.append({**{k: v for k, v in group.items() if k != "params"}, "params": [next(it) for _ in group["params"]]})
        return learner("adamw.AdamW")(built, **kwargs)

    opt = make()
    trajectory, losses = [], []
    for step, step_grads in enumerate(grads):
        if step == reload_at:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            opt = make()
            opt.load_state_dict(saved)
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        losses.append(opt.step(lambda: torch.tensor(float(step))))
        trajectory.append([p.detach().clone() for p in params])
    return {"trajectory": trajectory, "with_state": len(opt.state), "losses": [None if x is None else float(x) for x in losses]}
