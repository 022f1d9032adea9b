"""Exercise 27: AdamW from scratch.

Oracle: ``torch.optim.AdamW`` with ``foreach=False`` and ``fused=False``, run in the grading
process on the same fresh parameters, groups and gradients, step by step (the worker refuses
PyTorch's Adam and AdamW to the learner's code). Named mistakes come from the update written
here in float64 with the mistake in it. A scenario (parts/optim_run.py) drives the learner's
optimizer and round-trips its ``state_dict`` through ``torch.save`` and ``weights_only`` loading.
"""

import torch

from harness.compare import Mistake, assert_close, assert_true, diagnose, expect_value_error
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "27"


def case(gen, groups=2, steps=None, missing_grad=False):
    """Fresh parameters in ``groups`` groups with their own lr / weight_decay, the optimizer's
    defaults (learning rates large enough that each mistake moves the parameters by more than the
    1e-3 the diagnosis needs), and ``steps`` steps of random gradients (one parameter without a gradient at some
    steps when ``missing_grad``)."""
    kwargs = {"lr": [1e-2, 3e-2, 1e-1][n(gen, 0, 2)], "betas": ([0.9, 0.8][n(gen, 0, 1)], [0.999, 0.95][n(gen, 0, 1)]),
              "eps": [1e-8, 1e-6][n(gen, 0, 1)], "weight_decay": [0.0, 0.01, 0.1][n(gen, 0, 2)]}
    spec = []
    for i in range(groups):
        count = n(gen, 2 if missing_grad else 1, 3)  # with a missing gradient, another parameter steps meanwhile
        group = {"params": [torch.randn(*[n(gen, 1, 5) for _ in range(n(gen, 1, 2))],
                                        generator=gen) for _ in range(count)]}
        if i:  # the later groups override some defaults
            group.update({"lr": [5e-2, 1e-1][n(gen, 0, 1)], "weight_decay": [0.05, 0.2][n(gen, 0, 1)]})
        spec.append(group)
    flat = [t for g in spec for t in g["params"]]
    steps = steps or n(gen, 3, 6)
    # each parameter's gradients at one scale: tiny (where eps matters), unit, large
    scales = [[1e-4, 1.0, 30.0][(k + n(gen, 0, 2)) % 3] if k else 1e-4 for k in range(len(flat))]
    grads = [[torch.randn(t.shape, generator=gen) * scale for t, scale in zip(flat, scales)] for _ in range(steps)]
    if missing_grad:
        k = n(gen, 0, len(flat) - 1)
        for s in range(steps):
            if s % 2 == 0:
                grads[s][k] = None
    return spec, kwargs, grads


def torch_trajectory(spec, kwargs, grads):
    params = [torch.nn.Parameter(t.clone()) for g in spec for t in g["params"]]
    it = iter(params)
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [next(it) for _ in g["params"]]} for g in spec]
    opt = torch.optim.AdamW(groups, **kwargs, foreach=False, fused=False)
    out = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def formula_trajectory(spec, kwargs, grads, variant):
    """AdamW in float64, with one known mistake (``variant``)."""
    own = variant != "defaults_only"  # that mistake reads the optimizer's defaults, never a group's own values
    hyper = [{**kwargs, **({k: v for k,
                            v in g.items() if k != "params"} if own else {})} for g in spec for _ in g["params"]]
    shared = 0  # one step counter for the whole optimizer (the "global_step" mistake)
    params = [t.double().clone() for g in spec for t in g["params"]]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = [0] * len(params)
    out = []
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            if g is None and variant == "none_as_zero":
                g = torch.zeros_like(params[i])
            elif g is None:
                continue
            h, g = hyper[i], g.double()
            lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
            if variant == "betas_swapped":
                b1, b2 = b2, b1
            t[i] += 1
            if variant == "global_step":
                shared += 1
                t[i] = shared
            if variant == "l2":
                g = g + wd * params[i]
            elif variant == "decay_lr_squared":
                params[i] = params[i] * (1 - lr * lr * wd)
            elif variant == "decay_without_lr":
                params[i] = params[i] * (1 - wd)
            elif variant != "decay_after":
                params[i] = params[i] * (1 - lr * wd)
            # (1 - beta) on the old moment and beta on the new gradient: in m, in v, or in both
            swap_m, swap_v = variant in ("m_weights_swapped", "weights_swapped"), variant in ("v_weights_swapped",
                                                                                              "weights_swapped")
            # the betas crossed in one moment (a copy-paste): 1 - beta2 on g in m, or 1 - beta1 on g * g in v
            new_m = 1 - b2 if variant == "m_with_beta2" else 1 - b1
            new_v = 1 - b1 if variant == "v_with_beta1" else 1 - b2
            m[i] = (1 - b1) * m[i] + b1 * g if swap_m else b1 * m[i] + new_m * g
            g2 = g.abs() if variant == "v_not_squared" else g * g
            v[i] = (1 - b2) * v[i] + b2 * g2 if swap_v else b2 * v[i] + new_v * g2
            te = t[i] + 1 if variant == "count_from_one" else t[i]  # the count started at 1: the first step is t = 2
            c1, c2 = (1.0, 1.0) if variant == "no_bias_correction" else (1 - b1 ** te, 1 - b2 ** te)
            if variant == "m_corrected_with_beta2":
                c1 = 1 - b2 ** te
            if variant == "no_correction_m":
                c1 = 1.0
            elif variant == "no_correction_v":
                c2 = 1.0
            if variant == "eps_inside_root":
                update = (m[i] / c1) / (v[i] / c2 + eps).sqrt()
            elif variant == "v_corrected_after_root":
                update = (m[i] / c1) / (v[i].sqrt() / c2 + eps)
            else:
                update = (m[i] / c1) / ((v[i] / c2).sqrt() + eps)
            params[i] = params[i] - lr * update
            if variant == "decay_after":
                params[i] = params[i] * (1 - lr * wd)
        out.append([p.clone() for p in params])
    return out


def mistakes(spec, kwargs, grads, step, index):
    def wrong(variant):
        return lambda: formula_trajectory(spec, kwargs, grads, variant)[step][index]

    out = [Mistake("no bias correction", "Divide m by 1 - beta1 ** t and v by 1 - beta2 ** t, t counting this parameter's steps from 1.",
                   wrong("no_bias_correction")),
           Mistake("eps inside the square root", "The denominator is sqrt(v_hat) + eps.", wrong("eps_inside_root")),
           Mistake("the bias correction left off m only",
                   "m_hat = m / (1 - beta1 ** t), as v_hat = v / (1 - beta2 ** t).",
                   wrong("no_correction_m")),
           Mistake("the bias correction left off v only",
                   "v_hat = v / (1 - beta2 ** t), as m_hat = m / (1 - beta1 ** t).",
                   wrong("no_correction_v")),
           Mistake("beta1 and beta2 swapped",
                   "betas = (beta1, beta2): beta1 (0.9) averages the gradient into m, beta2 (0.999) "
                   "its square into v.", wrong("betas_swapped")),
           Mistake("beta and 1 - beta swapped in both moving averages",
                   "m = beta1 * m + (1 - beta1) * g (m.lerp_(g, 1 - beta1)); "
                   "v = beta2 * v + (1 - beta2) * g * g.", wrong("weights_swapped")),
           Mistake("beta1 and 1 - beta1 swapped in m",
                   "m = beta1 * m + (1 - beta1) * g, which is m.lerp_(g, 1 - beta1), not "
                   "m.lerp_(g, beta1).", wrong("m_weights_swapped")),
           Mistake("beta2 and 1 - beta2 swapped in v", "v = beta2 * v + (1 - beta2) * g * g.",
                   wrong("v_weights_swapped")),
           Mistake("the step count one ahead: the first step corrected with t = 2",
                   "state['step'] starts at 0 and is incremented before the update, so the first step has t = 1.",
                   wrong("count_from_one")),
           Mistake("g * g weighted by 1 - beta1 in v", "v = beta2 * v + (1 - beta2) * g * g: v's own beta on both terms.",
                   wrong("v_with_beta1")),
           Mistake("g weighted by 1 - beta2 in m", "m = beta1 * m + (1 - beta1) * g: m's own beta on both terms.",
                   wrong("m_with_beta2")),
           Mistake("m's bias correction made with beta2", "m_hat = m / (1 - beta1 ** t): each moment is corrected by its own beta.",
                   wrong("m_corrected_with_beta2")),
           Mistake("v's bias correction applied after the square root",
                   "The denominator is sqrt(v / (1 - beta2 ** t)) + eps: correct v first, then take the root.",
                   wrong("v_corrected_after_root")),
           Mistake("v averages |g|, not g squared",
                   "v = beta2 * v + (1 - beta2) * g * g (v.addcmul_(g, g, value=1 - beta2)).",
                   wrong("v_not_squared"))]
    if any(g is None for step_grads in grads for g in step_grads):
        out.append(Mistake("a parameter without a gradient stepped as if its gradient were 0",
                           "if p.grad is None: continue "
                           "(no decay, no moments, no step counted), as torch.optim.AdamW "
                           "does.", wrong("none_as_zero")))
    if sum(len(g["params"]) for g in spec) > 1:
        out.append(Mistake("one step count for the whole optimizer, not one per parameter",
                           "Keep state['step'] per parameter, "
                           "counted only on the steps where it had a gradient: the bias correction uses that count.",
                           wrong("global_step")))
    if len(spec) > 1:
        out.append(Mistake("the optimizer's defaults used for every group, not each group's own lr and weight_decay",
                           "Read lr, betas, eps and weight_decay from each group (group['lr'], ...) inside the loop "
                           "over "
                           "self.param_groups.", wrong("defaults_only")))
    decays = kwargs["weight_decay"] > 0 or any(g.get("weight_decay", 0) > 0 for g in spec)
    if decays:
        out += [Mistake("L2 regularisation (weight_decay * p added to the gradient) instead of decoupled decay",
                        "AdamW decays the parameter itself, p *= 1 - lr * weight_decay, and leaves the gradient (and so m and v) alone.",
                        wrong("l2")),
                Mistake("the decay multiplied by lr squared", "p *= 1 - lr * weight_decay, once per step.", wrong("decay_lr_squared")),
                Mistake("the decay applied after the update instead of before", "PyTorch decays p first, then applies the Adam update.",
                        wrong("decay_after")),
                Mistake("the decay not multiplied by lr",
                        "p *= 1 - lr * weight_decay: the decay is scaled by the learning rate.",
                        wrong("decay_without_lr"))]
    return out


def fits_throughout(name, got, spec, kwargs, grads, rtol, atol) -> bool:
    """Whether the learner's trajectory ``got`` is the mistake ``name``'s at every step, for every parameter."""
    for step, got_step in enumerate(got):
        for i, a in enumerate(got_step):
            m = next((m for m in mistakes(spec, kwargs, grads, step, i) if m.name == name), None)
            if m is None or not isinstance(a, torch.Tensor) or not m.matches(a, rtol, atol):
                return False
    return True


def describe(spec, kwargs):
    groups = ", ".join(f"{{{len(g['params'])} tensor(s)" + "".join(f", {k}={v}" for k, v in g.items() if k != "params") + "}"
                       for g in spec)
    return f"AdamW([{groups}], {', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def compare(got, want, spec, kwargs, grads, what):
    """Every parameter after every step within 1e-6 of torch's; where some differ, the report is
    about the one that differs most (the mistakes grow with the steps and with lr * weight_decay:
    that is where they can be told apart)."""
    worst, worst_d = None, 0.0
    for step, (got_step, want_step) in enumerate(zip(got, want)):
        for i, (a, b) in enumerate(zip(got_step, want_step)):
            assert_true(isinstance(a, torch.Tensor) and a.shape == b.shape,
                        f"{describe(spec, kwargs)}{what}: parameter {i} after step {step + 1} is not a tensor of shape {tuple(b.shape)}")
            d = float((a.double() - b.double()).abs().nan_to_num(nan=float("inf")).max())  # a NaN differs most
            if not torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-6) and d > worst_d:
                worst, worst_d = (step, i), d
    if worst is not None:
        step, i = worst
        # a mistake that moves a parameter by less than 1e-4 (the decay's order) is told apart at the check's own
        # tolerance first
        known = mistakes(spec, kwargs, grads, step, i)
        named = None
        for rtol, atol in ((1e-5, 1e-6), (1e-3, 1e-4)):
            named = diagnose(got[step][i], want[step][i], known, rtol, atol)
            # one parameter at one step can fit a mistake by chance (a single number does easily): the
            # name is given only when the mistake's whole trajectory, every parameter at every step, fits
            if named is not None and not fits_throughout(named.name, got, spec, kwargs, grads, rtol, atol):
                named = None
            if named is not None:
                break
        try:
            assert_close(got[step][i], want[step][i],
                         f"{describe(spec, kwargs)}{what}: parameter {i} after step {step + 1}",
                         oracle="torch.optim.AdamW", atol=1e-6, rtol=1e-5)
        except Mismatch as e:
            raise Mismatch(f"{e}\nThis looks like: {named.name}. {named.fix}" if named else str(e)) from None


def test_adamw_matches_torch(impl, gen):
    spec, kwargs, grads = case(gen)
    res = impl.scenario("optim_run.run", spec, kwargs, grads).out
    compare(res["trajectory"], torch_trajectory(spec, kwargs, grads), spec, kwargs, grads, "")


def test_adamw_skips_parameters_without_a_gradient(impl, gen):
    spec, kwargs, grads = case(gen, groups=1, missing_grad=True)
    res = impl.scenario("optim_run.run", spec, kwargs, grads).out
    compare(res["trajectory"], torch_trajectory(spec, kwargs, grads), spec, kwargs, grads,
            " with a parameter whose grad is None at every other step (skipped then: no decay, no step counted)")


def test_adamw_state_dict_round_trip(impl, gen):
    spec, kwargs, grads = case(gen, steps=n(gen, 4, 6))
    at = n(gen, 2, len(grads) - 1)
    res = impl.scenario("optim_run.run", spec, kwargs, grads, reload_at=at).out
    compare(res["trajectory"], torch_trajectory(spec, kwargs, grads), spec, kwargs, grads,
            f" saved with torch.save(opt.state_dict()) after {at} steps, loaded (weights_only=True) into a new AdamW over the "
            "same parameters, which went on")
    flat = sum(len(g["params"]) for g in spec)
    assert_true(res["with_state"] == flat, f"{describe(spec, kwargs)}: after the round trip the optimizer holds state for "
                                           f"{res['with_state']} parameter(s), expected {flat}: keep step, exp_avg and exp_avg_sq in "
                                           "self.state[p], which state_dict() saves and load_state_dict() restores")


def test_adamw_step_returns_the_closure_loss(impl, gen):
    spec, kwargs, grads = case(gen, groups=1, steps=2)
    res = impl.scenario("optim_run.run", spec, kwargs, grads).out
    assert_true(res["losses"] == [0.0, 1.0], f"opt.step(closure) returned {res['losses']} over two steps whose closures returned 0.0 and "
                                             "1.0: return closure()'s value (called with gradients enabled, before the update)")


BAD = [({"lr": -1e-3}, "-0.001"), ({"eps": -1e-8}, "-1e-08"), ({"weight_decay": -0.1}, "-0.1"), ({"betas": (1.0, 0.999)}, "1.0"),
       ({"betas": (0.9, -0.5)}, "-0.5")]


def test_adamw_refuses_bad_hyperparameters(impl, gen):
    for i in torch.randperm(len(BAD), generator=gen)[:3].tolist():
        bad, needle = BAD[i]
        expect_value_error(lambda: impl.call("adamw.AdamW", [torch.zeros(2)], **bad, returns="data"),
                           f"AdamW(params, {', '.join(f'{k}={v}' for k, v in bad.items())})", needles=(needle,),
                           why=": the value would make every step meaningless; refuse it in __init__ and name it")
