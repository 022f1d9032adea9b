"""Exercise 15: one optimizer step over G micro-batches, with autocast, a GradScaler and clipping.

The scenario ``steps.train_step`` (tests/harness/parts/steps.py) builds a small GPT (the reference
parts' ``GPTModel``, dropout 0) from parameters drawn here, an optimizer, optionally a
``torch.amp.GradScaler("cpu")``, runs the learner's ``train_step`` on it and reports the returned
``(loss, grad_norm)``, the parameters after the step, the gradients left, the dtypes of the
parameters and of the gradients as they accumulated, and the scaler's scale.

Oracle: a plain float32 step written below on the same model and optimizer: ``F.cross_entropy``
over all ``G * b`` sequences as ONE batch, ``backward``, ``torch.nn.utils.clip_grad_norm_``,
``optimizer.step()``. SGD is used where the scale of the gradient matters (AdamW's update hides a
missing ``1 / G``); AdamW for the realistic two-step check.
"""

import functools
import math

import torch
import torch.nn.functional as F
from harness.draw import n

from harness.compare import Mistake, assert_close, assert_true
from harness.failures import Mismatch
from harness.impl import load_part as _load_part

EXERCISE = "15"
ORACLE = "a plain float32 step on one batch of all G*b sequences (F.cross_entropy, clip_grad_norm_, optimizer.step())"
NO_CLIP = 1e4  # a max_norm no gradient here reaches

steps = _load_part("steps")
_model = _load_part("model")


# ----------------------------------------------------------------------------- inputs


def setup(gen, *, micro=None, nsteps=1, **fixed):
    """A config (``fixed`` overrides), its parameters, and ``(nsteps, G, b, T)`` inputs and targets."""
    emb = 8 * n(gen, 2, 4)
    cfg = {"vocab_size": n(gen, 11, 40), "context_length": 16, "emb_dim": emb, "n_heads": 2 ** n(gen, 0, 2), "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": bool(n(gen, 0, 1)), "tie_weights": bool(n(gen, 0, 1))}
    cfg.update(fixed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(n(gen, 0, 2**31 - 1))
        state = {k: v.detach().clone() for k, v in _model.GPTModel(cfg).state_dict().items()}
    shape = (nsteps, micro if micro is not None else n(gen, 2, 4), n(gen, 1, 3), n(gen, 4, 16))
    inputs = torch.randint(0, cfg["vocab_size"], shape, generator=gen)
    targets = torch.randint(0, cfg["vocab_size"], shape, generator=gen)
    return cfg, state, inputs, targets


def describe(cfg, inputs, **opts):
    s, g, b, t = inputs.shape
    extra = ", ".join(f"{k}={v}" for k, v in opts.items())
    calls = f"{s} calls of " if s > 1 else ""
    return (f"{calls}train_step on a GPT (emb_dim={cfg['emb_dim']}, n_layers=2, vocab={cfg['vocab_size']}) with G={g} micro-batches "
            f"of shape ({b}, {t}){', ' + extra if extra else ''}")


# ----------------------------------------------------------------------------- the oracle


def plain_step(cfg, state, inputs, targets, *, optimizer="sgd", lr=0.1, weight_decay=0.0, max_norm=NO_CLIP,
               loss_factor=1.0, clip_scale=1.0, keep_grads=False):
    """The plain float32 step(s): ``{"losses", "norms", "params"}``.

    Variants for naming mistakes: ``loss_factor`` multiplies the loss before backward (G: the
    loss not divided by G); ``clip_scale`` clips the gradients while they are multiplied by it
    (clipping before ``unscale_``) and reports the norm it saw; ``keep_grads`` never clears them.
    """
    model = steps.build_model(cfg, state)
    opt = steps.make_optimizer(optimizer, model, lr, weight_decay)
    params = list(model.parameters())
    losses, norms = [], []
    for s in range(inputs.size(0)):
        logits = model(inputs[s].flatten(0, 1))
        loss = F.cross_entropy(logits.flatten(0, 1), targets[s].flatten())
        (loss * loss_factor).backward()
        with torch.no_grad():
            for p in params:
                p.grad.mul_(clip_scale)
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm is not None else math.inf)
            for p in params:
                p.grad.div_(clip_scale)
        opt.step()
        if not keep_grads:
            opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        norms.append(float(norm))
    return {"losses": losses, "norms": norms, "params": {k: p.detach().clone() for k, p in model.named_parameters()}}


def variant(*args, **kwargs):
    """A lazily computed wrong step (computed only when a failure needs a name)."""
    return functools.cache(lambda: plain_step(*args, **kwargs))


# ----------------------------------------------------------------------------- checks


def f64(x):
    return torch.tensor(float(x), dtype=torch.float64)


def returned(res, what, i=0):
    """The ``i``-th call's ``(loss, grad_norm)``, checked to be two Python floats."""
    r = res.out["returned"][i]
    if not isinstance(r, (tuple, list)) or len(r) != 2:
        raise Mismatch(f"{what}: train_step returned {type(r).__name__} {str(r)[:80]}; expected a tuple (loss, grad_norm)")
    for name, v in zip(("loss", "grad_norm"), r):
        if type(v) is not float:
            raise Mismatch(f"{what}: train_step returned {name} as {type(v).__name__}, expected a Python float: "
                           f"return float(...) of it (a tensor would keep the graph or the device alive)")
    return r


def check_dtypes(res, what):
    wrong = {k: d for k, d in res.out["param_dtypes"].items() if d != "float32"}
    if wrong:
        name, dtype = next(iter(wrong.items()))
        raise Mismatch(f"{what}: after the step the parameter {name} is {dtype} ({len(wrong)} of {len(res.out['param_dtypes'])} "
                       f"parameters are not float32). This looks like: the model was cast to {dtype}. Never call "
                       f"model.to({dtype}) or model.half(): the parameters stay float32 and torch.autocast runs the "
                       f"computation in lower precision.")
    grads = res.out["grad_dtypes"]
    assert_true(grads == ["float32"], f"{what}: the gradients accumulated into .grad as {grads}, expected float32 only: "
                                      f"the parameters and their gradients stay float32 under autocast")


def check_params(res, expected, what, mistakes=(), atol=1e-6, rtol=1e-5, oracle=ORACLE):
    names = sorted(expected["params"])
    assert_true(sorted(res.out["params"]) == names, f"{what}: the model's parameters changed names")
    for name in names:
        assert_close(res.out["params"][name], expected["params"][name], f"{what}: parameter {name} after the step", oracle=oracle,
                     atol=atol, rtol=rtol,
                     mistakes=[Mistake(m, fix, lambda w=wrong, k=name: w()["params"][k]) for m, fix, wrong in mistakes])


def check_floats(got, want, what, mistakes=(), atol=1e-6, rtol=1e-5, oracle=ORACLE):
    assert_close(f64(got), f64(want), what, oracle=oracle, atol=atol, rtol=rtol, check_dtype=False,
                 mistakes=[Mistake(m, fix, lambda v=value: f64(v() if callable(v) else v)) for m, fix, value in mistakes])


def check_cleared(res, what):
    left = res.out["grads_left"]
    if left and res.out["grads_left_zero"]:
        raise Mismatch(f"{what}: after the step {len(left)} parameters (e.g. {left[0]}) hold a .grad of zeros instead of None. "
                       f"This looks like: zero_grad(set_to_none=False). Call optimizer.zero_grad(set_to_none=True): a gradient "
                       f"of None frees its memory, and the next backward allocates it afresh")
    if left:
        raise Mismatch(f"{what}: after the step {len(left)} parameters (e.g. {left[0]}) still hold their gradients. "
                       f"This looks like: zero_grad was not called. End the step with optimizer.zero_grad(set_to_none=True), "
                       f"or the next step adds its gradients to these")


def check_accumulations(res, inputs, what):
    s, g = inputs.shape[:2]
    want = s * g * res.out["n_params"]
    got = res.out["accumulations"]
    assert_true(got == want, f"{what}: gradients were accumulated into .grad {got} times ({got / max(res.out['n_params'], 1):g} "
                             f"backward passes per parameter), expected {want} (one backward per micro-batch, {s * g} in all): "
                             f"call backward once for each (inputs, targets) pair instead of concatenating them")


NOT_DIVIDED = ("the loss is not divided by G", "Divide each micro-batch's loss by G = len(micro_batches) before backward: "
               "the gradients of the G backward passes add up, and their sum must be the gradient of the MEAN loss")


def check_plain(res, expected, cfg, state, inputs, targets, what, lr):
    g = inputs.size(1)
    wrong = variant(cfg, state, inputs, targets, lr=lr, loss_factor=g)
    check_dtypes(res, what)
    check_params(res, expected, what, mistakes=[NOT_DIVIDED + (wrong,)] if g > 1 else [])
    loss, norm = returned(res, what)
    check_floats(norm, expected["norms"][0], f"{what}: the returned grad_norm",
                 mistakes=[NOT_DIVIDED + (lambda: wrong()["norms"][0],)] if g > 1 else [])
    check_floats(loss, expected["losses"][0], f"{what}: the returned loss",
                 mistakes=[("the sum of the micro-batch losses instead of their mean", "Return the sum of the losses divided by G "
                            "(the mean loss over all G * b sequences)", expected["losses"][0] * g)] if g > 1 else [])
    check_cleared(res, what)
    check_accumulations(res, inputs, what)


def run(impl, cfg, state, inputs, targets, **kwargs):
    return impl.scenario("steps.train_step", cfg, state, inputs, targets, **kwargs)


# ----------------------------------------------------------------------------- tests


def check_plain_sgd_step(impl, gen, **micro):
    """The learner's SGD step without clipping against the plain float32 step."""
    cfg, state, inputs, targets = setup(gen, **micro)
    lr = 0.1 + 0.4 * float(torch.rand(1, generator=gen))
    what = describe(cfg, inputs, optimizer="SGD", amp_dtype=None, scaler=None)
    res = run(impl, cfg, state, inputs, targets, optimizer="sgd", lr=lr, max_norm=NO_CLIP)
    check_plain(res, plain_step(cfg, state, inputs, targets, lr=lr), cfg, state, inputs, targets, what, lr)


def test_one_micro_batch_is_a_plain_step(impl, gen):
    check_plain_sgd_step(impl, gen, micro=1)


def test_accumulation_equals_one_batch_g_times_larger(impl, gen):
    """G micro-batches of b sequences give the step of one batch of G * b sequences (SGD, float32)."""
    check_plain_sgd_step(impl, gen)


def test_clipping_to_max_norm(impl, gen):
    cfg, state, inputs, targets = setup(gen)
    lr = 0.1 + 0.4 * float(torch.rand(1, generator=gen))
    norm = plain_step(cfg, state, inputs, targets, lr=lr)["norms"][0]
    max_norm = norm * (0.1 + 0.4 * float(torch.rand(1, generator=gen)))
    what = describe(cfg, inputs, optimizer="SGD", max_norm=f"{max_norm:.4g} (the gradients' norm is {norm:.4g})")
    res = run(impl, cfg, state, inputs, targets, optimizer="sgd", lr=lr, max_norm=max_norm)
    expected = plain_step(cfg, state, inputs, targets, lr=lr, max_norm=max_norm)
    unclipped = variant(cfg, state, inputs, targets, lr=lr)
    check_params(res, expected, what, mistakes=[
        ("the gradients were not clipped", "Call torch.nn.utils.clip_grad_norm_(params, max_norm) after the backward passes "
         "and before optimizer.step()", unclipped),
        NOT_DIVIDED + (variant(cfg, state, inputs, targets, lr=lr, max_norm=max_norm, loss_factor=inputs.size(1)),)])
    _, got = returned(res, what)
    check_floats(got, expected["norms"][0], f"{what}: the returned grad_norm", mistakes=[
        ("the norm after clipping", "Return the norm clip_grad_norm_ returns: the total norm BEFORE clipping", max_norm)])
    check_cleared(res, what)


def test_max_norm_none_does_not_clip(impl, gen):
    cfg, state, inputs, targets = setup(gen)
    lr = 0.1 + 0.4 * float(torch.rand(1, generator=gen))
    what = describe(cfg, inputs, optimizer="SGD", max_norm=None)
    res = run(impl, cfg, state, inputs, targets, optimizer="sgd", lr=lr, max_norm=None)
    expected = plain_step(cfg, state, inputs, targets, lr=lr, max_norm=None)
    check_params(res, expected, what, mistakes=[
        ("max_norm=None still clipped to 1.0", "max_norm=None means no clipping: take the norm without clipping "
         "(clip_grad_norm_(params, float('inf')) or get_total_norm)", variant(cfg, state, inputs, targets, lr=lr, max_norm=1.0))])
    _, got = returned(res, what)
    check_floats(got, expected["norms"][0], f"{what}: the returned grad_norm (max_norm=None still returns the norm)")
    check_cleared(res, what)


def test_adamw_two_steps_clear_the_gradients(impl, gen):
    """Two consecutive steps with AdamW (weight decay, the default max_norm=1.0): the second step
    must see only its own gradients, so the first must end with zero_grad(set_to_none=True).
    AdamW's update is about lr * sign(gradient), so a gradient that is zero up to rounding moves
    its parameter by rounding-dependent amounts: no key bias here (its gradient is exactly zero in
    exact arithmetic), AdamW's eps is 1e-6, and the parameters are compared within 1% of lr."""
    cfg, state, inputs, targets = setup(gen, nsteps=2, qkv_bias=False)
    lr, wd = 1e-3 * n(gen, 1, 9), 0.1
    what = describe(cfg, inputs, optimizer=f"AdamW(lr={lr:g}, weight_decay={wd}, eps=1e-6)", max_norm="1.0 (the default)")
    res = run(impl, cfg, state, inputs, targets, optimizer="adamw", lr=lr, weight_decay=wd)
    kw = dict(optimizer="adamw", lr=lr, weight_decay=wd, max_norm=1.0)
    expected = plain_step(cfg, state, inputs, targets, **kw)
    check_dtypes(res, what)
    check_cleared(res, what)  # first: AdamW's sign-like update barely shows gradients left from the first step
    check_params(res, expected, what, atol=0.01 * lr, rtol=1e-4, mistakes=[
        ("the gradients of the previous step were not cleared", "End each step with optimizer.zero_grad(set_to_none=True): "
         "otherwise the next step's backward adds its gradients to the old ones", variant(cfg, state, inputs, targets, keep_grads=True, **kw))])
    for i in range(2):
        loss, norm = returned(res, what, i)
        check_floats(norm, expected["norms"][i], f"{what}: the grad_norm returned by call {i + 1}", atol=1e-5, rtol=1e-4)
        check_floats(loss, expected["losses"][i], f"{what}: the loss returned by call {i + 1}", atol=1e-5, rtol=1e-4)
    check_accumulations(res, inputs, what)


def test_bf16_autocast_keeps_float32_parameters(impl, gen):
    """``amp_dtype=torch.bfloat16`` on a CPU: the forward runs in bfloat16 (the output head's
    output, seen by a forward hook, is bfloat16), the parameters and their gradients stay float32,
    and the step is the float32 one up to bfloat16's rounding. Tolerances, measured over many
    seeds (largest seen / allowed): parameters after the step within 5% of the largest parameter
    update (0.5%), the loss within 0.01 + 1% (0.05%), the norm within 2% (0.2%)."""
    cfg, state, inputs, targets = setup(gen)
    lr = 0.1 + 0.4 * float(torch.rand(1, generator=gen))
    what = describe(cfg, inputs, optimizer="SGD", amp_dtype="torch.bfloat16")
    res = run(impl, cfg, state, inputs, targets, optimizer="sgd", lr=lr, amp_dtype="bfloat16", max_norm=NO_CLIP)
    expected = plain_step(cfg, state, inputs, targets, lr=lr)
    check_dtypes(res, what)
    seen = res.out["forward_dtypes"]
    assert_true(seen == ["bfloat16"], f"{what}: the output head (an nn.Linear) computed in {seen}, expected bfloat16. This looks "
                                      f"like: the forward pass did not run under autocast. Wrap it in with torch.autocast("
                                      f"device_type=inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None)")
    update = max(float((expected["params"][k] - state[k]).abs().max()) for k in expected["params"])
    check_params(res, expected, what, atol=0.05 * update, rtol=0.0, oracle=ORACLE + " in float32",
                 mistakes=[NOT_DIVIDED + (variant(cfg, state, inputs, targets, lr=lr, loss_factor=inputs.size(1)),)])
    loss, norm = returned(res, what)
    check_floats(norm, expected["norms"][0], f"{what}: the returned grad_norm", atol=0.0, rtol=0.02, oracle=ORACLE + " in float32")
    check_floats(loss, expected["losses"][0], f"{what}: the returned loss", atol=0.01, rtol=0.01, oracle=ORACLE + " in float32")
    check_cleared(res, what)


def test_grad_scaler_step_is_unscaled(impl, gen):
    """With ``GradScaler("cpu", init_scale=2**k)`` and no inf: the same step as without it. Scaling by
    a power of two is exact, so the unscaled gradients are the float32 ones; ``max_norm`` lies between
    their norm and the scaled norm, so clipping before ``unscale_`` shows."""
    cfg, state, inputs, targets = setup(gen)
    lr = 0.1 + 0.4 * float(torch.rand(1, generator=gen))
    scale = 2.0 ** n(gen, 8, 14)
    norm = plain_step(cfg, state, inputs, targets, lr=lr)["norms"][0]
    max_norm = norm * (2 + 2 * float(torch.rand(1, generator=gen)))
    what = describe(cfg, inputs, optimizer="SGD", scaler=f"GradScaler('cpu', init_scale={scale:g})", max_norm=f"{max_norm:.4g}")
    res = run(impl, cfg, state, inputs, targets, optimizer="sgd", lr=lr, init_scale=scale, max_norm=max_norm)
    expected = plain_step(cfg, state, inputs, targets, lr=lr, max_norm=max_norm)
    check_dtypes(res, what)
    check_params(res, expected, what, mistakes=[
        ("clipping before unscale_", "Call scaler.unscale_(optimizer) right after the backward passes, BEFORE clip_grad_norm_: "
         "clipping the scaled gradients to max_norm shrinks the step by the scale",
         variant(cfg, state, inputs, targets, lr=lr, max_norm=max_norm, clip_scale=scale)),
        NOT_DIVIDED + (variant(cfg, state, inputs, targets, lr=lr, max_norm=max_norm, loss_factor=inputs.size(1)),)])
    loss, got = returned(res, what)
    check_floats(got, expected["norms"][0], f"{what}: the returned grad_norm", mistakes=[
        ("the norm taken before unscale_", "Take the norm after scaler.unscale_(optimizer): before it, the gradients (and their "
         f"norm) are {scale:g} times too large", expected["norms"][0] * scale)])
    check_floats(loss, expected["losses"][0], f"{what}: the returned loss", mistakes=[
        ("the scaled loss", "Return the loss before scaler.scale(...): the scale is only for backward", expected["losses"][0] * scale)])
    assert_true(res.out["scale"] == scale, f"{what}: the scaler's scale is {res.out['scale']:g} after a step with finite gradients, "
                                           f"expected it unchanged at {scale:g}")
    check_cleared(res, what)


def test_grad_scaler_skips_a_step_with_inf(impl, gen):
    """An inf in one gradient (put there by a hook on the embedding): the GradScaler must skip the
    step (parameters and AdamW's state untouched), halve its scale (the backoff factor), and the
    returned norm is not finite; the gradients are still cleared."""
    cfg, state, inputs, targets = setup(gen)
    scale = 2.0 ** n(gen, 8, 14)
    what = describe(cfg, inputs, optimizer="AdamW(lr=0.01, weight_decay=0.1, eps=1e-6)", scaler=f"GradScaler('cpu', init_scale={scale:g})") + \
        ", with an inf in one gradient"
    res = run(impl, cfg, state, inputs, targets, optimizer="adamw", lr=0.01, weight_decay=0.1, init_scale=scale, inject_inf=True)
    check_dtypes(res, what)
    changed = [k for k, v in res.out["params"].items() if not torch.equal(v, state[k])]
    if changed:
        raise Mismatch(f"{what}: the parameters changed ({len(changed)} of them, e.g. {changed[0]}), but a step whose gradients hold an "
                       f"inf must be skipped. This looks like: optimizer.step() instead of scaler.step(optimizer). scaler.step "
                       f"skips the step when unscale_ found an inf or NaN")
    assert_true(res.out["optimizer_state"] == 0, f"{what}: the optimizer's state was created although the step must be skipped: "
                                                 f"call scaler.step(optimizer), not optimizer.step()")
    assert_true(res.out["scale"] == scale * 0.5, f"{what}: the scaler's scale is {res.out['scale']:g} after the skipped step, expected "
                                                 f"{scale * 0.5:g} (halved). Call scaler.update() after scaler.step(optimizer)")
    loss, norm = returned(res, what)
    assert_true(not math.isfinite(norm), f"{what}: the returned grad_norm is {norm:g}, expected inf or NaN: return the norm of the "
                                         f"unscaled gradients, which hold the inf")
    expected = plain_step(cfg, state, inputs, targets, lr=0.01)
    check_floats(loss, expected["losses"][0], f"{what}: the returned loss (the forward pass is unaffected by the inf)",
                 mistakes=[("the scaled loss", "Return the loss before scaler.scale(...)", expected["losses"][0] * scale)])
    check_cleared(res, what)


def test_empty_micro_batches_raise_value_error(impl, gen):
    cfg, state, _, _ = setup(gen)
    out = impl.scenario("steps.empty_micro_batches", cfg, state).out
    if out["raised"] is None:
        raise Mismatch("train_step(model, optimizer, []) returned instead of raising ValueError: with no micro-batches there is "
                       "no loss to average. Check len(micro_batches) == 0 first")
    assert_true(out["raised"] == "ValueError", f"train_step(model, optimizer, []) raised {out['raised']}: {out['message']}; expected "
                                               f"ValueError. Check len(micro_batches) == 0 before dividing by it")
