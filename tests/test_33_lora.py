"""Exercise 33: LoRA: a low-rank update beside each linear layer, the base frozen, merged back
after training (the assistant track's third).

Oracles: the formula ``linear(x) + (alpha / rank) * (x @ A @ B)`` written here in float64 on
random ``A`` and ``B`` (and autograd through it); the models of harness/parts/lora_run.py (a
network of residual Linear blocks, and the course's GPTModel from parts/model.py) written here as
functions, with SGD steps on ``A`` and ``B`` alone; and Hugging Face peft's LoRA on the same
weights (reference/33_lora.npz, written by ``nox -s reference``; peft keeps ``lora_A.weight`` as
``(rank, in)`` and ``lora_B.weight`` as ``(out, rank)``: the learner's ``A`` and ``B`` are their
transposes). Fresh sizes, ranks, alphas and weights each run. ``A``'s initial values are
checked loosely (random, within ``±1 / sqrt(min(in, rank))``: nn.Linear's scheme on either
layout); ``B``'s exactly (zeros).
"""

import math

import torch
import torch.nn.functional as F

from harness.compare import Mistake, assert_close, assert_true, autograd_through, expect_value_error, fitting_alone
from harness.draw import n
from harness.failures import Mismatch
from harness.impl import Part, load_part
from harness.reference import load_reference

EXERCISE = "33"

NO_SCALING = ("the scaling is missing", "Multiply the low-rank product by scaling = alpha / rank.")
ALPHA_ONLY = ("the update scaled by alpha, not alpha / rank",
              "scaling = alpha / rank (the paper's and peft's; the book's appendix E multiplies by alpha alone).")
RANK_OVER_ALPHA = ("the update scaled by rank / alpha", "scaling = alpha / rank: alpha over the rank.")
B_RANDOM = ("B initialised randomly: a fresh LoRA model differs from the base model",
            "B starts at zeros (torch.zeros(rank, out_dim)), so that x @ A @ B adds nothing until training moves it; A is "
            "the random one.")
A_ZERO = ("A initialised to zeros: with B at zero too, neither ever gets a gradient",
          "Draw A as nn.Linear draws a weight: nn.init.kaiming_uniform_(A, a=math.sqrt(5)); only B starts at zero.")
BASE_TRAINABLE = ("the base weights left trainable", "Freeze every parameter of the model (p.requires_grad_(False)) "
                  "before the LoRA layers are added: only their A and B train.")
HEAD_REPLACED = ("the head replaced although include_head=False",
                 "Leave model.out_head as it is unless include_head is True: skip the child that is the head.")
HEAD_KEPT = ("the head left out although include_head=True", "With include_head=True, model.out_head gets LoRA too.")
NOT_DEEP = ("only the model's direct children replaced", "Recurse: a Linear may sit at any depth (in a Sequential, a "
            "ModuleList, a block); call the function on every child that is not a Linear.")
COUNTED_ALL = ("every parameter counted, not only the trainable ones",
               "Return sum(p.numel() for p in model.parameters() if p.requires_grad).")
ALL_FROZEN = ("every parameter frozen, A and B too: the freezing done after the layers were replaced",
              "Freeze the model's parameters first, then replace the linear layers: the new LoRALayers' A and B are created "
              "trainable and stay so.")
SQRT_RANK = ("the update scaled by alpha / sqrt(rank) (rsLoRA's scaling), not alpha / rank",
             "This LoRA (Hu et al.'s, the book's, peft's default) scales by alpha / rank.")
SCALED_TWICE = ("the scaling applied twice: (alpha / rank) ** 2", "Multiply by scaling = alpha / rank once: in the forward, "
                "scaling * (x @ A @ B); in the merge, weight += scaling * (A @ B).T.")
SUBTRACTED = ("the update subtracted, not added", "forward = linear(x) + scaling * (x @ A @ B); the merge adds: weight += "
              "scaling * (A @ B).T.")
NO_UPDATE = ("the low-rank update left out", "Add scaling * (x @ A @ B) to the output (merged: scaling * (A @ B).T to the "
             "weight).")
SCALED_BY_FIX = "The update is exactly (alpha / rank) * (x @ A @ B), or, merged, weight + (alpha / rank) * (A @ B).T."
MERGE_UNSCALED = ("the merge without the scaling", "weight += scaling * (A @ B).T: the same alpha / rank the forward uses.")
MERGE_UNTRANSPOSED = ("the merge without the transpose: A @ B added to the weight as it is",
                      "A @ B is (in, out) and nn.Linear's weight is (out, in): weight += scaling * (A @ B).T.")


# ------------------------------------------------------------------------------------ the oracles


def update(x, A, B, scaling):
    return scaling * (x.double() @ A.double() @ B.double())


def scaling_mistakes(fn, rank, alpha, actual=None, unscaled=NO_SCALING):
    """``fn(scaling)`` -> the output with that scaling (linear in it): the known wrong scalings
    (``unscaled`` names the scaling 1), and, when ``actual`` is given and fits none of them, the
    factor it was scaled by, found from it (``fn(0)`` the output without the update), named when
    ``actual`` is exactly that scaling's output. At most one name: when two fit, neither."""
    right = alpha / rank
    known = [(unscaled, 1.0), (ALPHA_ONLY, float(alpha)), (RANK_OVER_ALPHA, rank / alpha), (SQRT_RANK, alpha / math.sqrt(rank)),
             (SCALED_TWICE, right * right), (SUBTRACTED, -right), (NO_UPDATE, 0.0)]
    out = [Mistake(*words, (lambda f=f: fn(f))) for words, f in known]
    if actual is None:
        return out
    want = fn(right)
    named = fitting_alone(actual, want, out)
    if named or out and any(m.matches(actual, 1e-3, 1e-4) for m in out):
        return named
    base, direction = fn(0.0).double(), (fn(1.0).double() - fn(0.0).double())
    if actual.shape != base.shape or not bool(torch.isfinite(actual).all()) or float(direction.norm()) == 0.0:
        return []
    factor = float(((actual.double() - base) * direction).sum() / (direction * direction).sum())
    words = (f"the update scaled by {factor:.4g}, not alpha / rank = {right:.4g}", f"{SCALED_BY_FIX} Here the factor is "
             f"{factor / right:.4g} times the right one.")
    return fitting_alone(actual, want, [Mistake(*words, fn(factor))])


def net(x, p, lora, scaling, sizes):
    """LoRANet (harness/parts/lora_run.py) as a function, in float64: ``p`` its state dict, ``lora``
    maps a linear layer's name to its ``(A, B)``."""
    p = {k: v.double() for k, v in p.items()}

    def linear(name, h):
        y = F.linear(h, p[f"{name}.weight"], p.get(f"{name}.bias"))
        if name in lora:
            y = y + update(h, *lora[name], scaling)
        return y

    h = x.double()
    for i in range(sizes["n_blocks"]):
        h = h + linear(f"blocks.{i}.2", F.gelu(linear(f"blocks.{i}.0", h)))
    return linear("out_head", F.layer_norm(h, (sizes["d_in"],), p["norm.weight"], p["norm.bias"], eps=1e-5))


def draw_rank_alpha(gen):
    """A rank and an alpha whose wrong scalings (1, alpha, rank / alpha, alpha / sqrt(rank), the
    scaling squared) all differ from alpha / rank and from each other."""
    rank = n(gen, 2, 6)
    alpha = float(n(gen, 1, 16))
    while alpha in (rank, rank * rank, math.sqrt(rank)):
        alpha += 1
    return rank, alpha


def net_case(gen, square=False):
    d_in = n(gen, 4, 12)
    sizes = {"d_in": d_in, "d_hidden": d_in if square else n(gen, 4, 16), "d_out": n(gen, 3, 9), "n_blocks": n(gen, 1, 3)}
    model = load_part("lora_run").LoRANet(**sizes)
    params = {k: torch.randn(v.shape, generator=gen) * (0.2 if k.endswith("bias") else v.shape[-1] ** -0.5)
              for k, v in model.state_dict().items()}
    x = torch.randn(n(gen, 1, 3), n(gen, 2, 6), d_in, generator=gen)
    return sizes, params, x


def gpt_case(gen):
    heads = n(gen, 1, 2)
    cfg = {"vocab_size": n(gen, 10, 30), "context_length": 8, "emb_dim": heads * 2 * n(gen, 1, 3), "n_heads": heads,
           "n_layers": n(gen, 1, 2), "drop_rate": 0.0, "qkv_bias": bool(n(gen, 0, 1)), "tie_weights": False}
    model = load_part("model").GPTModel(cfg)
    params = {k: (torch.randn(v.shape, generator=gen) * 0.3 if v.is_floating_point() and "mask" not in k else v)
              for k, v in model.state_dict().items()}
    x = torch.randint(0, cfg["vocab_size"], (2, n(gen, 2, 8)), generator=gen)
    return cfg, params, x


def linear_layers(kind, sizes):
    """name -> (in, out) of every nn.Linear of the model, in order."""
    model = load_part("lora_run").LoRANet(**sizes) if kind == "net" else load_part("model").GPTModel(sizes)
    return {name: (m.in_features, m.out_features) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def adapted(layers, include_head):
    return {name: dims for name, dims in layers.items() if include_head or name != "out_head"}


def random_lora(gen, layers, rank):
    return {name: (torch.randn(i, rank, generator=gen) / i ** 0.5, torch.randn(rank, o, generator=gen) * 0.5)
            for name, (i, o) in layers.items()}


def as_params(lora):
    return {f"{name}.lora.{k}": t for name, (A, B) in lora.items() for k, t in (("A", A), ("B", B))}


def describe(kind, sizes, rank, alpha, include_head):
    model = f"LoRANet({', '.join(f'{k}={v}' for k, v in sizes.items())})" if kind == "net" else \
        f"GPTModel(emb_dim={sizes['emb_dim']}, n_layers={sizes['n_layers']}, qkv_bias={sizes['qkv_bias']})"
    return f"replace_linear_with_lora({model}, rank={rank}, alpha={alpha:g}, include_head={include_head})"


# ------------------------------------------------------------------------------------ the layers


def test_lora_layer_matches_the_formula(impl, gen):
    d_in, d_out = n(gen, 2, 24), n(gen, 2, 24)
    rank, alpha = draw_rank_alpha(gen)
    A, B = torch.randn(d_in, rank, generator=gen), torch.randn(rank, d_out, generator=gen)
    x = torch.randn(n(gen, 1, 3), n(gen, 1, 5), d_in, generator=gen)
    g = torch.randn(*x.shape[:-1], d_out, generator=gen)
    what = f"LoRALayer({d_in}, {d_out}, rank={rank}, alpha={alpha:g}) with random A and B, on x of shape {tuple(x.shape)}"
    res = impl.module("lora.LoRALayer", x, init_args=(d_in, d_out, rank, alpha), params={"A": A, "B": B}, grad_output=g,
                      grad_wrt=(0,))
    want, x_grad, grads = autograd_through(lambda xx, pp: update(xx, pp["A"], pp["B"], alpha / rank).float(), x, {"A": A, "B": B}, g)
    assert_close(res.out, want, what, oracle="(alpha / rank) * (x @ A @ B) in float64",
                 mistakes=scaling_mistakes(lambda s: update(x, A, B, s).float(), rank, alpha, res.out))
    assert_close(res.grad(0), x_grad, f"{what}: the gradient with respect to x", oracle="autograd through the formula", atol=1e-4, rtol=1e-3)
    for name in ("A", "B"):
        assert_close(res.param_grads[name], grads[name], f"{what}: the gradient with respect to {name}",
                     oracle="autograd through the formula", atol=1e-4, rtol=1e-3)


def check_initial(A, B, d_in, d_out, rank, what):
    """A fresh layer's A (random, nn.Linear's range) and B (zeros)."""
    assert_true(tuple(A.shape) == (d_in, rank) and tuple(B.shape) == (rank, d_out),
                f"{what}: A has shape {tuple(A.shape)} and B {tuple(B.shape)}; expected ({d_in}, {rank}) and ({rank}, {d_out}): "
                "x @ A @ B maps in_dim features to out_dim through rank")
    if bool((B != 0).any()):
        raise Mismatch(f"{what}: B holds {int((B != 0).sum())} nonzero value(s) when built; expected zeros\n"
                       f"This looks like: {B_RANDOM[0]}. {B_RANDOM[1]}")
    if not bool((A != 0).any()):
        raise Mismatch(f"{what}: A is all zeros when built; expected random values\nThis looks like: {A_ZERO[0]}. {A_ZERO[1]}")
    bound = 1 / math.sqrt(min(d_in, rank))
    assert_true(bool(A.isfinite().all()) and float(A.abs().max()) <= bound + 1e-6 and A.numel() > 1 and float(A.std()) > 0,
                f"{what}: A's values span [{float(A.min()):.4g}, {float(A.max()):.4g}]; expected distinct values within ±{bound:.4g}, "
                "as nn.init.kaiming_uniform_(A, a=math.sqrt(5)) draws them")


def test_a_fresh_lora_layer_adds_nothing(impl, gen):
    d_in, d_out = n(gen, 2, 40), n(gen, 2, 40)
    rank, alpha = draw_rank_alpha(gen)
    x = torch.randn(n(gen, 1, 4), d_in, generator=gen)
    what = f"LoRALayer({d_in}, {d_out}, rank={rank}, alpha={alpha:g})"
    res = impl.module("lora.LoRALayer", x, init_args=(d_in, d_out, rank, alpha))
    assert_true("A" in res.initial and "B" in res.initial, f"{what} has parameters {', '.join(res.initial) or 'none'}; expected "
                                                            "A and B (nn.Parameter attributes of those names)")
    check_initial(res.initial["A"], res.initial["B"], d_in, d_out, rank, what)
    assert_close(res.out, torch.zeros(x.size(0), d_out), f"{what}, as built, on x of shape {tuple(x.shape)}",
                 oracle="x @ A @ B with B = 0", atol=0, rtol=0)


def test_linear_with_lora_adds_the_update_to_the_linear_layer(impl, gen):
    d_in, d_out = n(gen, 2, 24), n(gen, 2, 24)
    bias = bool(n(gen, 0, 1))
    rank, alpha = draw_rank_alpha(gen)
    p = {"linear.weight": torch.randn(d_out, d_in, generator=gen) / d_in ** 0.5, "lora.A": torch.randn(d_in, rank, generator=gen),
         "lora.B": torch.randn(rank, d_out, generator=gen)}
    if bias:
        p["linear.bias"] = torch.randn(d_out, generator=gen)
    x = torch.randn(n(gen, 1, 3), n(gen, 1, 5), d_in, generator=gen)
    g = torch.randn(*x.shape[:-1], d_out, generator=gen)
    what = (f"LinearWithLoRA(nn.Linear({d_in}, {d_out}, bias={bias}), rank={rank}, alpha={alpha:g}) with random weights, A and B, "
            f"on x of shape {tuple(x.shape)}")

    def formula(xx, pp, s=alpha / rank):
        return (F.linear(xx.double(), pp["linear.weight"].double(), pp["linear.bias"].double() if bias else None)
                + update(xx, pp["lora.A"], pp["lora.B"], s)).float()

    res = impl.module("lora.LinearWithLoRA", x, init_args=(Part("lora_run.linear", d_in, d_out, bias), rank, alpha), params=p,
                      grad_output=g, grad_wrt=(0,))
    want, x_grad, grads = autograd_through(formula, x, p, g)
    assert_close(res.out, want, what, oracle="linear(x) + (alpha / rank) * (x @ A @ B) in float64",
                 mistakes=scaling_mistakes(lambda s: formula(x, p, s), rank, alpha, res.out)
                 + [Mistake("the linear layer left out", "forward returns linear(x) + lora(x).", update(x, p["lora.A"], p["lora.B"],
                                                                                                       alpha / rank).float())])
    assert_close(res.grad(0), x_grad, f"{what}: the gradient with respect to x", oracle="autograd through the formula", atol=1e-4, rtol=1e-3)
    for name in ("lora.A", "lora.B"):
        assert_close(res.param_grads[name], grads[name], f"{what}: the gradient with respect to {name}",
                     oracle="autograd through the formula", atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------ a model


def fresh(impl, kind, sizes, params, rank, alpha, include_head, x):
    return impl.scenario("lora_run.fresh", kind, sizes, params, rank, alpha, include_head, x).out


def test_replace_wraps_every_linear_layer_and_the_head_only_when_asked(impl, gen):
    first = bool(n(gen, 0, 1))
    for kind, (sizes, params, x), include_head in (("net", net_case(gen), first), ("gpt", gpt_case(gen), not first)):
        rank, alpha = draw_rank_alpha(gen)
        layers = linear_layers(kind, sizes)
        want = adapted(layers, include_head)
        what = describe(kind, sizes, rank, alpha, include_head)
        types = fresh(impl, kind, sizes, params, rank, alpha, include_head, x)["types"]
        got = {name for name in layers if types.get(name) == "LinearWithLoRA"}
        if got == set(want):
            continue
        message = (f"{what}: the layers wrapped in LinearWithLoRA are {sorted(got) or 'none'}; expected {sorted(want)}"
                   + ("" if include_head else " (every nn.Linear but the head, out_head)"))
        if got == set(want) | {"out_head"}:
            message += f"\nThis looks like: {HEAD_REPLACED[0]}. {HEAD_REPLACED[1]}"
        elif got == set(want) - {"out_head"}:
            message += f"\nThis looks like: {HEAD_KEPT[0]}. {HEAD_KEPT[1]}"
        elif all("." not in name for name in got) and any("." in name for name in want):
            message += f"\nThis looks like: {NOT_DEEP[0]}. {NOT_DEEP[1]}"
        raise Mismatch(message)


def test_replace_freezes_everything_but_A_and_B_and_counts_them(impl, gen):
    for kind, (sizes, params, x) in (("net", net_case(gen)), ("gpt", gpt_case(gen))):
        include_head = bool(n(gen, 0, 1))
        rank, alpha = draw_rank_alpha(gen)
        want = adapted(linear_layers(kind, sizes), include_head)
        what = describe(kind, sizes, rank, alpha, include_head)
        res = fresh(impl, kind, sizes, params, rank, alpha, include_head, x)
        lora_names = {f"{name}.lora.{k}" for name in want for k in ("A", "B")}
        trainable = set(res["trainable"])
        extra, missing = sorted(trainable - lora_names), sorted(lora_names - trainable)
        if extra or missing:
            message = (f"{what}: the parameters with requires_grad=True are {len(trainable)}; expected exactly the {len(lora_names)} "
                       "LoRA parameters (each wrapped layer's lora.A and lora.B)"
                       + (f"; these should be frozen: {', '.join(extra[:5])}" if extra else "")
                       + (f"; these should train: {', '.join(missing[:5])}" if missing else ""))
            if extra and not missing:
                message += f"\nThis looks like: {BASE_TRAINABLE[0]}. {BASE_TRAINABLE[1]}"
            elif not trainable and lora_names:
                message += f"\nThis looks like: {ALL_FROZEN[0]}. {ALL_FROZEN[1]}"
            raise Mismatch(message)
        count, total = res["count"], sum(v.numel() for v in res["params"].values())
        assert_true(type(count) is int, f"{what} returned {count}; expected an int, the number of trainable parameters")
        assert_close(torch.tensor(count), torch.tensor(sum(rank * (i + o) for i, o in want.values())), f"{what}'s return value",
                     oracle="sum of rank * (in + out) over the wrapped layers",
                     mistakes=[Mistake(*COUNTED_ALL, torch.tensor(total))])


def test_a_fresh_lora_model_computes_what_the_base_model_did(impl, gen):
    for kind, (sizes, params, x) in (("net", net_case(gen)), ("gpt", gpt_case(gen))):
        include_head = bool(n(gen, 0, 1))
        rank, alpha = draw_rank_alpha(gen)
        want = adapted(linear_layers(kind, sizes), include_head)
        what = describe(kind, sizes, rank, alpha, include_head)
        res = fresh(impl, kind, sizes, params, rank, alpha, include_head, x)
        for name, (i, o) in want.items():
            A, B = res["params"].get(f"{name}.lora.A"), res["params"].get(f"{name}.lora.B")
            assert_true(A is not None and B is not None, f"{what}: the model has no parameters {name}.lora.A and {name}.lora.B; "
                                                         "expected LinearWithLoRA's lora.A and lora.B at each wrapped layer")
            check_initial(A, B, i, o, rank, f"{what}: {name}.lora")
        assert_close(res["out"], res["base"], f"{what}: the model's output, right after", oracle="the base model, before",
                     atol=0, rtol=0)


# ------------------------------------------------------------------------------------ training


def test_training_moves_only_A_and_B(impl, gen):
    sizes, params, x = net_case(gen)
    include_head = bool(n(gen, 0, 1))
    rank, alpha = draw_rank_alpha(gen)
    layers = adapted(linear_layers("net", sizes), include_head)
    lora = {name: (A, torch.zeros_like(B)) for name, (A, B) in random_lora(gen, layers, rank).items()}
    target = torch.randn(*x.shape[:-1], sizes["d_out"], generator=gen)
    lr, steps = 0.05, 2
    what = (f"two SGD steps (lr={lr}) on every parameter of the model, after {describe('net', sizes, rank, alpha, include_head)} "
            "with random A (and B at zero)")
    res = impl.scenario("lora_run.train", sizes, params, rank, alpha, include_head, as_params(lora), x, target, lr, steps).out
    before, after = res["before"], res["after"]
    changed = sorted(k for k in before if k in after and not torch.equal(before[k], after[k]))
    want = sorted(as_params(lora))
    if changed != want:
        extra, missing = sorted(set(changed) - set(want)), sorted(set(want) - set(changed))
        message = (f"{what}: the parameters that changed are {len(changed)}; expected exactly the LoRA parameters"
                   + (f"; these changed but should be frozen: {', '.join(extra[:5])}" if extra else "")
                   + (f"; these did not change: {', '.join(missing[:5])}" if missing else ""))
        if extra:
            message += f"\nThis looks like: {BASE_TRAINABLE[0]}. {BASE_TRAINABLE[1]}"
        raise Mismatch(message)
    # the oracle: the same steps on A and B alone, in float64
    pp = {k: v.double() for k, v in as_params(lora).items()}
    for k in pp:
        pp[k].requires_grad_(True)
    for _ in range(steps):
        out = net(x, params, {name: (pp[f"{name}.lora.A"], pp[f"{name}.lora.B"]) for name in layers}, alpha / rank, sizes)
        loss = ((out - target.double()) ** 2).mean()
        grads = torch.autograd.grad(loss, list(pp.values()))
        with torch.no_grad():
            for p, g in zip(pp.values(), grads):
                p -= lr * g
    for k, p in pp.items():
        assert_close(after[k], p.detach().float(), f"{what}: {k} after the steps", oracle="the same steps through the formula in float64",
                     atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------ merging


def check_merge(res, sizes, params, lora, rank, alpha, x, what, want_out=None, want_params=None, oracle="the formula in float64"):
    scaling = alpha / rank
    layers = linear_layers("net", sizes)
    assert_true(res["returned_model"], f"merge_lora after {what} did not return the model it was given; expected it back")
    left = sorted(name for name, t in res["types"].items() if t == "LinearWithLoRA")
    if left:
        raise Mismatch(f"after merge_lora, {', '.join(left[:4])} is still a LinearWithLoRA; expected the plain nn.Linear back")
    wrong = sorted(name for name in layers if res["types"].get(name) != "Linear")
    if wrong:
        raise Mismatch(f"after merge_lora, {wrong[0]} is {res['types'].get(wrong[0], 'missing')}; expected the layer's nn.Linear")
    expected_params = set(params)
    assert_true(set(res["params"]) == expected_params, f"after merge_lora the model's parameters are {sorted(res['params'])[:6]}...; "
                                                       f"expected the base model's: {sorted(expected_params)[:6]}...")
    for name, (A, B) in lora.items():
        W = params[f"{name}.weight"].double()

        def merged(s=scaling, transpose=True, W=W, A=A, B=B):
            delta = A.double() @ B.double()
            return (W + s * (delta.T if transpose else delta)).float()

        got = res["params"][f"{name}.weight"]
        mistakes = scaling_mistakes(lambda f: merged(f), rank, alpha, got, unscaled=MERGE_UNSCALED)
        if A.size(0) == B.size(1):
            mistakes.append(Mistake(*MERGE_UNTRANSPOSED, lambda: merged(transpose=False)))
        assert_close(res["params"][f"{name}.weight"], merged() if want_params is None else want_params[f"{name}.weight"],
                     f"{name}.weight after merge_lora", oracle=oracle if want_params is None else "peft's merge_and_unload",
                     mistakes=mistakes)
    for k, v in params.items():
        if not any(k == f"{name}.weight" for name in lora):
            assert_close(res["params"][k], v, f"{k} after merge_lora", oracle="the base model's (merging changes only the weights "
                                                                                "of the wrapped layers)")
    want = net(x, params, lora, scaling, sizes).float() if want_out is None else want_out
    assert_close(res["out"], want, f"the output of the model after {what}", oracle=oracle if want_out is None else "peft's LoRA model")
    assert_close(res["merged_out"], res["out"], f"the output of the merged model, after {what}", oracle="the unmerged model",
                 atol=1e-5, rtol=1e-5)


def test_merge_folds_the_update_into_the_weights(impl, gen):
    for square in (True, False):
        sizes, params, x = net_case(gen, square=square)
        include_head = not square and bool(n(gen, 0, 1))
        rank, alpha = draw_rank_alpha(gen)
        lora = random_lora(gen, adapted(linear_layers("net", sizes), include_head), rank)
        what = describe("net", sizes, rank, alpha, include_head) + " with random A and B"
        res = impl.scenario("lora_run.merge", sizes, params, rank, alpha, include_head, as_params(lora), x).out
        check_merge(res, sizes, params, lora, rank, alpha, x, what)


def test_lora_and_merge_match_peft(impl, gen):
    ref = {k: torch.from_numpy(v) for k, v in load_reference("33_lora").items()}
    sizes = {k.split("/", 1)[1]: int(v.reshape(-1)[0]) for k, v in ref.items() if k.startswith("config/")}
    for case in [("blocks", "head"), ("head", "blocks")][n(gen, 0, 1)]:
        rank, alpha = int(ref[f"{case}/config/rank"][0]), float(ref[f"{case}/config/alpha"][0])
        include_head = bool(ref[f"{case}/config/head"][0])
        params = {k.split("/", 2)[2]: v for k, v in ref.items() if k.startswith(f"{case}/base/")}
        lora = {}
        for k in ref:
            if k.startswith(f"{case}/lora/") and k.endswith("/lora_A"):
                name = k.split("/")[2]
                lora[name] = (ref[k].T.contiguous(), ref[f"{case}/lora/{name}/lora_B"].T.contiguous())  # peft's (rank, in), (out, rank)
        merged = {k.split("/", 2)[2]: v for k, v in ref.items() if k.startswith(f"{case}/merged/")}
        x = ref[f"{case}/x"]
        what = describe("net", sizes, rank, alpha, include_head) + " with reference/33_lora.npz's weights"
        res = impl.scenario("lora_run.merge", sizes, params, rank, alpha, include_head, as_params(lora), x).out
        assert_close(torch.tensor(res["count"]) if type(res["count"]) is int else torch.tensor(-1), ref[f"{case}/trainable"].reshape(()),
                     f"{what}: its return value", oracle="peft's get_nb_trainable_parameters")
        check_merge(res, sizes, params, lora, rank, alpha, x, what, want_out=ref[f"{case}/out"], want_params=merged)
        assert_close(res["merged_out"], ref[f"{case}/merged_out"], f"the merged model's output, after {what}",
                     oracle="peft's merge_and_unload", atol=1e-5, rtol=1e-4)


def test_a_lora_layer_takes_the_dtype_of_the_layer_it_wraps(impl, gen):
    """A float64 or bfloat16 layer (a model cast with .double() or .to(torch.bfloat16) before LoRA
    is put on it): A and B in its dtype, and x in that dtype through both."""
    d_in, d_out = n(gen, 2, 12), n(gen, 2, 12)
    rank, alpha = draw_rank_alpha(gen)
    weight = torch.randn(d_out, d_in, generator=gen) / d_in ** 0.5
    B = torch.randn(rank, d_out, generator=gen) * 0.5
    x = torch.randn(n(gen, 1, 3), n(gen, 1, 4), d_in, generator=gen)
    for dtype, tol in ((torch.float64, 1e-9), (torch.bfloat16, 3e-2)):
        name = str(dtype).removeprefix("torch.")
        what = f"LinearWithLoRA(nn.Linear({d_in}, {d_out}, bias=False) in {name}, rank={rank}, alpha={alpha:g})"
        got = impl.scenario("lora_run.wrapped_dtype", name, weight, B, rank, alpha, x).out
        wrong = [f"{k[0]} is {got[k + '_dtype']}" for k in ("A", "B") if got[k + "_dtype"] != str(dtype)]
        if wrong:
            raise Mismatch(f"{what}: {' and '.join(wrong)}, expected {dtype} like the layer's weight"
                           + (f"; its forward on x in {name} raised {got['raised']}" if "raised" in got else "")
                           + f". Move the LoRALayer to the layer's device and dtype: LoRALayer(...).to("
                             "device=linear.weight.device, dtype=linear.weight.dtype)")
        if "raised" in got:
            raise Mismatch(f"{what} on x of shape {tuple(x.shape)} in {name} raised {got['raised']}")
        assert_true(got["out_dtype"] == str(dtype), f"{what} returned {got['out_dtype']} for x in {name}; expected {dtype}")
        xr = x.to(dtype).double()
        want = xr @ weight.to(dtype).double().T + (alpha / rank) * (xr @ got["A"] @ B.to(dtype).double())
        assert_close(got["out"].double(), want, f"{what} on x of shape {tuple(x.shape)} in {name}",
                     oracle=f"linear(x) + (alpha / rank) * (x @ A @ B) in float64, from the {name} values", atol=tol,
                     rtol=tol, check_dtype=False)


def test_merging_a_head_tied_to_the_embedding_leaves_the_embedding_as_it_was(impl, gen):
    """GPT-2's head shares its weight with the token embedding. merge_lora must give the head the
    merged weight and leave the embedding with the weight the LoRA model used."""
    cfg, params, x = gpt_case(gen)
    cfg = {**cfg, "tie_weights": True}
    params = {k: v for k, v in params.items() if k != "out_head.weight"}
    params["out_head.weight"] = params["tok_emb.weight"]
    rank, alpha = draw_rank_alpha(gen)
    lora = random_lora(gen, linear_layers("gpt", cfg), rank)
    what = (f"merge_lora on a GPTModel (emb_dim={cfg['emb_dim']}) whose out_head is tied to tok_emb, after "
            f"replace_linear_with_lora(rank={rank}, alpha={alpha:g}, include_head=True) and random A and B")
    res = impl.scenario("lora_run.merge_tied", cfg, params, rank, alpha, as_params(lora), x).out
    assert_true(res["head_type"] == "Linear", f"after {what}, out_head is a {res['head_type']}; expected the plain nn.Linear")
    E = params["tok_emb.weight"].double()
    A, Bm = lora["out_head"]
    delta = (alpha / rank) * (A.double() @ Bm.double()).T  # (vocab, emb)
    if torch.allclose(res["emb"].double(), E + delta, atol=1e-4, rtol=1e-4):
        raise Mismatch(f"after {what}, tok_emb.weight has the head's update added: the head's weight is the "
                       "embedding's tensor, and adding the update in place changed both.\nThis looks like: the merge "
                       "added in place to a weight the embedding shares. Give the merged layer a weight of its own: "
                       "linear.weight = nn.Parameter(W + scaling * (A @ B).T, requires_grad=W.requires_grad).")
    assert_close(res["emb"], params["tok_emb.weight"], f"tok_emb.weight after {what}",
                 oracle="the embedding the LoRA model used (merging changes only the wrapped layers' weights)")
    assert_close(res["head"], (E + delta).float(), f"out_head.weight after {what}", oracle="W + (alpha / rank) * (A @ B).T in float64")
    assert_true(not res["still_tied"], f"after {what}, out_head.weight is still tok_emb.weight: one of the two is wrong")
    assert_close(res["merged_out"], res["out"], f"the output of the merged model, after {what}", oracle="the unmerged model",
                 atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------ refusals


def test_a_rank_below_one_is_refused(impl, gen):
    rank = -n(gen, 0, 3)
    d_in, d_out = n(gen, 2, 9), n(gen, 2, 9)
    expect_value_error(lambda: impl.call("lora.LoRALayer", d_in, d_out, rank, 8.0, returns="data"),
                       f"LoRALayer({d_in}, {d_out}, rank={rank}, alpha=8)", needles=(rank,),
                       why=": the update needs at least one rank; say the rank given")
    sizes, params, x = net_case(gen)
    expect_value_error(lambda: impl.scenario("lora_run.fresh", "net", sizes, params, rank, 8.0, False, x),
                       describe("net", sizes, rank, 8.0, False), needles=(rank,), why=": say the rank given")
