"""Exercise 14: the learning-rate schedule (linear warmup, cosine decay) and clipping by the global norm.

Oracles: for ``learning_rate``, the docstring's formula written out here, checked against
PyTorch's own schedulers on the same settings: ``torch.optim.lr_scheduler.LinearLR`` (start
factor ``1 / warmup_steps``) for the warmup and ``CosineAnnealingLR`` (``T_max = total_steps -
warmup_steps``, ``eta_min = min_lr``) for the decay. For ``clip_grad_norm``,
``torch.nn.utils.clip_grad_norm_`` on copies of the same parameters and gradients (its returned
norm and the gradients it leaves), built in the worker by a trusted scenario
(harness/parts/loss_and_schedule.py). Fresh rates, step counts, shapes and gradients each run.
"""

import math

import torch
from harness.draw import n

from harness.compare import Mistake, assert_close, assert_true
from harness.failures import Mismatch

EXERCISE = "14"

WARMUP_FROM_ZERO = ("the warmup starts at 0 (step / warmup_steps instead of (step + 1) / warmup_steps)",
                    "Step 0 already trains: its rate is max_lr * (step + 1) / warmup_steps, so the last warmup step reaches max_lr.")
RATIO_OVER_TOTAL = ("the cosine's ratio is taken over total_steps, not over the decay's length",
                    "The decay runs from warmup_steps to total_steps: r = (step - warmup_steps) / (total_steps - warmup_steps).")
NO_MIN_LR = ("the cosine decays to 0 instead of min_lr",
             "min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr): the cosine runs between max_lr and min_lr.")
PER_PARAMETER = ("each parameter clipped by its own norm, not by the global norm",
                 "Compute ONE total norm over all gradients (the norm of the per-gradient norms) and scale every gradient by the same factor.")
NORM_AFTER = ("the norm after clipping is returned",
              "Return the total norm computed BEFORE scaling the gradients (as clip_grad_norm_ does): it tells you how large they were.")
NOT_CAPPED = ("the factor is not capped at 1: small gradients were scaled UP",
              "Only clip: factor = min(1, max_norm / (total_norm + eps)), so gradients whose norm is below max_norm stay as they are.")


def uniform(gen, low, high):
    return low + (high - low) * float(torch.rand((), generator=gen))


# ----------------------------------------------------------------------------------- learning_rate


def docstring_lr(step, max_lr, min_lr, warmup_steps, total_steps, *, from_zero=False, over_total=False, no_min=False):
    """The schedule as the docstring writes it (and, with the flags, three known mistakes)."""
    if step < warmup_steps:
        return max_lr * (step if from_zero else step + 1) / warmup_steps
    if step > total_steps:
        return min_lr
    if total_steps == warmup_steps:
        return max_lr
    r = (step - warmup_steps) / (total_steps if over_total else total_steps - warmup_steps)
    low = 0.0 if no_min else min_lr
    return low + 0.5 * (1 + math.cos(math.pi * r)) * (max_lr - low)


class _Rates(torch.optim.Optimizer):
    """An optimizer with one parameter group and no parameters: all a scheduler needs to compute
    its rates (a real optimizer's first construction imports torch._dynamo, seconds of start-up)."""

    def __init__(self, lr):  # noqa: D107 (no super().__init__: it refuses an empty parameter list)
        self.defaults, self.state, self.param_groups = {"lr": lr}, {}, [{"lr": lr, "params": []}]

    def step(self, closure=None):
        return None


def scheduler_rates(scheduler, count, lr, **kwargs):
    """The rates of ``count`` consecutive steps of ``scheduler(optimizer, **kwargs)``."""
    opt = _Rates(lr)
    sched = scheduler(opt, **kwargs)
    rates = []
    for _ in range(count):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return rates


def torch_schedule(steps, max_lr, min_lr, warmup_steps, total_steps):
    """The same schedule from PyTorch's schedulers: LinearLR over the warmup, CosineAnnealingLR
    over the decay, min_lr after."""
    if warmup_steps > 1:
        warm = scheduler_rates(torch.optim.lr_scheduler.LinearLR, warmup_steps, max_lr, start_factor=1 / warmup_steps,
                               end_factor=1.0, total_iters=warmup_steps - 1)
    else:
        warm = [max_lr] * warmup_steps
    if total_steps > warmup_steps:
        decay = scheduler_rates(torch.optim.lr_scheduler.CosineAnnealingLR, total_steps - warmup_steps + 1, max_lr,
                                T_max=total_steps - warmup_steps, eta_min=min_lr)
    else:
        decay = [max_lr]
    rates = warm + decay
    return [rates[s] if s <= total_steps else min_lr for s in steps]


def check_schedule(impl, max_lr, min_lr, warmup_steps, total_steps):
    steps = list(range(total_steps + 6))
    settings = dict(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps)
    what = f"learning_rate(step, max_lr={max_lr:.4g}, min_lr={min_lr:.4g}, warmup_steps={warmup_steps}, total_steps={total_steps})"
    got = impl.scenario("loss_and_schedule.learning_rates", steps, **settings).out
    for step, value in zip(steps, got):
        if type(value) is not float:
            shown = value if isinstance(value, str) else "a tensor" if isinstance(value, dict) else repr(value)
            raise Mismatch(f"{what} at step {step} returned {shown}; expected a Python float")
    expected = [docstring_lr(s, **settings) for s in steps]
    oracle = torch_schedule(steps, **settings)
    for s, (a, b) in enumerate(zip(expected, oracle)):  # the formula here and PyTorch's schedulers agree
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12 * max_lr), f"grader's oracles disagree at step {s}: {a} vs {b}"

    def relative(rates):  # in units of max_lr, so that the tolerances (and the mistakes') do not depend on its scale
        return torch.tensor(rates, dtype=torch.float64) / max_lr

    mistakes = [Mistake(*WARMUP_FROM_ZERO, relative([docstring_lr(s, **settings, from_zero=True) for s in steps])),
                Mistake(*RATIO_OVER_TOTAL, relative([docstring_lr(s, **settings, over_total=True) for s in steps])),
                Mistake(*NO_MIN_LR, relative([docstring_lr(s, **settings, no_min=True) for s in steps]))]
    assert_close(relative(got), relative(expected), f"{what} / max_lr for steps 0..{steps[-1]} (the index is the step)",
                 oracle="the warmup of LinearLR and the decay of CosineAnnealingLR", rtol=1e-5, atol=1e-9, mistakes=mistakes)


def random_rates(gen, zero_min_lr=True):
    max_lr = 10 ** uniform(gen, -4.5, -2)
    min_lr = 0.0 if zero_min_lr and n(gen, 0, 3) == 0 else max_lr * uniform(gen, 0.01, 0.5)
    return max_lr, min_lr


def test_learning_rate_warmup_then_cosine(impl, gen):
    max_lr, min_lr = random_rates(gen, zero_min_lr=False)
    warmup = n(gen, 2, 12)
    check_schedule(impl, max_lr, min_lr, warmup, warmup + n(gen, 3, 50))


def test_learning_rate_without_warmup(impl, gen):
    max_lr, min_lr = random_rates(gen)
    check_schedule(impl, max_lr, min_lr, 0, n(gen, 1, 40))


def test_learning_rate_edge_schedules(impl, gen):
    max_lr, min_lr = random_rates(gen)
    total = n(gen, 1, 20)
    check_schedule(impl, max_lr, min_lr, total, total)  # warmup only: the rate reaches max_lr at the last step, then min_lr
    check_schedule(impl, max_lr, min_lr, 1, n(gen, 2, 20))  # one warmup step: max_lr right away
    check_schedule(impl, max_lr, max_lr, n(gen, 0, 5), n(gen, 6, 20))  # min_lr == max_lr: constant after the warmup


def test_learning_rate_rejects_bad_arguments(impl, gen):
    max_lr, min_lr = random_rates(gen)
    total = n(gen, 2, 30)
    warmup = n(gen, 0, total)
    ok = dict(max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup, total_steps=total)
    cases = [
        ((-n(gen, 1, 5),), ok, "a negative step"),
        ((0,), {**ok, "warmup_steps": -n(gen, 1, 5)}, "a negative warmup_steps"),
        ((0,), {**ok, "warmup_steps": total + n(gen, 1, 5)}, "warmup_steps larger than total_steps"),
        ((0,), {**ok, "warmup_steps": 0, "total_steps": 0}, "total_steps = 0"),
        ((0,), {**ok, "min_lr": max_lr * uniform(gen, 1.5, 3)}, "min_lr larger than max_lr"),
    ]
    outs = impl.scenario("loss_and_schedule.outcomes", "schedule.learning_rate", [[list(a), k] for a, k, _ in cases]).out
    for (args, kwargs, why), out in zip(cases, outs):
        what = f"learning_rate({args[0]}, {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in kwargs.items())})"
        if "raised" not in out:
            raise Mismatch(f"{what} returned {out['returned']!r}; expected a ValueError: {why} makes no schedule")
        if out["raised"] != "ValueError":
            raise Mismatch(f"{what} raised {out['raised']}: {out['message']}; expected a ValueError: {why} makes no schedule")


# ----------------------------------------------------------------------------------- clip_grad_norm


def random_params(gen, count, scale, none=True):
    """``count`` parameter values and gradients of random shapes; some gradients None (never the
    first two)."""
    values, grads = [], []
    for i in range(count):
        shape = tuple(n(gen, 1, 6) for _ in range(n(gen, 1, 3)))
        values.append(torch.randn(shape, generator=gen))
        missing = none and i > 1 and n(gen, 0, 2) == 0
        grads.append(None if missing else torch.randn(shape, generator=gen) * scale * uniform(gen, 0.2, 3))
    return values, grads


def torch_clip(values, grads, max_norm, single=False):
    """``torch.nn.utils.clip_grad_norm_`` on copies: its norm and the gradients it leaves."""
    params = [torch.nn.Parameter(v.clone()) for v in values]
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params[0] if single else params, max_norm)
    return norm, [p.grad for p in params]


def global_norm(grads):
    present = [g for g in grads if g is not None]
    return torch.stack([g.norm() for g in present]).norm() if present else torch.tensor(0.0)


def scaled(grads, factors):
    return [None if g is None else g * f for g, f in zip(grads, factors)]


def joint_mistake(got, want, mistakes):
    """The known mistake that all the gradients together match (one parameter alone may not tell
    a mistake apart: its own norm can be close to the global one)."""
    def close(a, b):
        return all(torch.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(a, b) if x is not None and y is not None)

    for name, fix, output in mistakes:
        if close(got, output) and not close(want, output):
            return name, fix
    return None


def check_clip(impl, values, grads, max_norm, what, single=False, generator=False, mistakes_for_grads=(), mistakes_for_norm=()):
    out = impl.scenario("loss_and_schedule.clip", values, grads, max_norm, single=single, generator=generator).out
    norm, want_grads = torch_clip(values, grads, max_norm, single)
    used = 1 if single else len(values)
    for i in range(used):
        got = out["grads"][i]
        if got is not None and want_grads[i] is not None and bool((want_grads[i].isnan() & ~got.isnan()).any()):
            where = tuple((want_grads[i].isnan() & ~got.isnan()).nonzero()[0].tolist())
            raise Mismatch(f"{what}: parameter {i}'s gradient at index {where} is {float(got[where]):g} after clipping; clip_grad_norm_ leaves nan "
                           "there: with a non-finite total norm, multiply by the factor it gives (nan for a nan norm) as PyTorch does; "
                           "do not replace it (the caller, e.g. a GradScaler, must see that the step went wrong)")
        if (got is None) != (want_grads[i] is None):
            raise Mismatch(f"{what}: parameter {i}'s gradient is {'None' if got is None else 'set'} after clipping; "
                           f"it was {'None' if grads[i] is None else 'set'} before: only scale the gradients that exist")
        if got is None:
            continue
        message = ""
        if generator and torch.equal(got, grads[i]) and not torch.equal(want_grads[i], grads[i]):
            message = ("\nThis looks like: the parameters were iterated twice. The gradients were left unchanged: `parameters` is a "
                       "generator here (model.parameters() is one), and a generator is empty the second time it is iterated. "
                       "Turn it into a list first: parameters = list(parameters).")
        try:
            assert_close(got, want_grads[i], f"{what}: parameter {i}'s gradient after clipping", oracle="torch.nn.utils.clip_grad_norm_",
                         mistakes=[Mistake(name, fix, lambda out=output, i=i: out[i]) for name, fix, output in mistakes_for_grads],
                         context=message.strip())
        except Mismatch as e:
            joint = joint_mistake(out["grads"][:used], want_grads[:used], mistakes_for_grads)
            if joint is None or "This looks like" in e.message:
                raise
            raise Mismatch(f"{e.message}\nThis looks like: {joint[0]}. {joint[1]}") from None
        assert_true(out["same"][i], f"{what}: parameter {i}'s .grad is a new tensor after clipping; scale the gradient in place "
                                    "(p.grad.mul_(factor)), as clip_grad_norm_ does")
        assert_close(out["values"][i], values[i], f"{what}: parameter {i}'s value", oracle="its value before (clipping changes gradients only)")
    got_norm = out["norm"]
    if not isinstance(got_norm, dict) or "tensor" not in got_norm:
        shown = got_norm if isinstance(got_norm, str) else repr(got_norm)
        raise Mismatch(f"{what} returned {shown}; expected the total norm as a 0-dim float32 tensor")
    if got_norm["shape"] != [] or got_norm["dtype"] != "float32":
        raise Mismatch(f"{what} returned a tensor of shape {tuple(got_norm['shape'])} and dtype {got_norm['dtype']}; expected a 0-dim float32 tensor")
    assert_close(got_norm["tensor"].reshape(()), norm, f"the total norm {what} returned", oracle="torch.nn.utils.clip_grad_norm_",
                 rtol=1e-5, mistakes=[Mistake(name, fix, output) for name, fix, output in mistakes_for_norm])


def test_clip_grad_norm_above_max_norm(impl, gen):
    values, grads = random_params(gen, n(gen, 2, 5), uniform(gen, 0.5, 10))
    total = float(global_norm(grads))
    max_norm = total * uniform(gen, 0.1, 0.8)
    factor = max_norm / (total + 1e-6)
    own = [1.0 if g is None else min(1.0, max_norm / (float(g.norm()) + 1e-6)) for g in grads]
    present = [g for g in grads if g is not None]
    check_clip(impl, values, grads, max_norm,
               f"clip_grad_norm(<model.parameters() of {len(values)} parameters, {len(present)} with gradients, total norm {total:.4g}>, "
               f"max_norm={max_norm:.4g})",
               generator=True,
               mistakes_for_grads=[(*PER_PARAMETER, scaled(grads, own))],
               mistakes_for_norm=[(*NORM_AFTER, global_norm(scaled(grads, [factor] * len(grads)))), (*NORM_AFTER, torch.tensor(max_norm))])


def test_clip_grad_norm_below_max_norm(impl, gen):
    values, grads = random_params(gen, n(gen, 1, 5), uniform(gen, 0.1, 5))
    total = float(global_norm(grads))
    max_norm = total * uniform(gen, 1.2, 5)
    check_clip(impl, values, grads, max_norm,
               f"clip_grad_norm(<{len(values)} parameters, total gradient norm {total:.4g}>, max_norm={max_norm:.4g})",
               mistakes_for_grads=[(*NOT_CAPPED, scaled(grads, [max_norm / (total + 1e-6)] * len(grads)))])


def test_clip_grad_norm_single_tensor(impl, gen):
    values, grads = random_params(gen, 1, uniform(gen, 0.5, 5), none=False)
    total = float(grads[0].norm())
    max_norm = total * (uniform(gen, 0.1, 0.8) if n(gen, 0, 1) else uniform(gen, 1.2, 3))
    check_clip(impl, values, grads, max_norm, f"clip_grad_norm(<one tensor, not in a list; gradient norm {total:.4g}>, max_norm={max_norm:.4g})",
               single=True)


def test_clip_grad_norm_non_finite_gradients(impl, gen):
    for bad in (math.inf, math.nan):
        values, grads = random_params(gen, n(gen, 2, 4), uniform(gen, 0.5, 5))
        present = [i for i, g in enumerate(grads) if g is not None]
        where = present[n(gen, 0, len(present) - 1)]
        flat = grads[where].view(-1)
        flat[n(gen, 0, flat.numel() - 1)] = bad
        check_clip(impl, values, grads, uniform(gen, 0.5, 2),
                   f"clip_grad_norm(<{len(values)} parameters, one gradient holding {bad}>, max_norm)")


def test_clip_grad_norm_without_gradients(impl, gen):
    values = [torch.randn(n(gen, 1, 5), generator=gen) for _ in range(n(gen, 1, 3))]
    check_clip(impl, values, [None] * len(values), uniform(gen, 0.5, 2), f"clip_grad_norm(<{len(values)} parameters, none with a gradient>, max_norm)")
