"""Exercise 26: a sparse mixture-of-experts feed-forward layer (Qwen3-MoE, Mixtral) and its
load-balancing loss.

Oracles: transformers' Qwen3MoeSparseMoeBlock and load_balancing_loss_func on the same weights
(reference/26_moe.npz, written by ``nox -s reference``; its fused ``gate_up_proj`` is split here
into each expert's ``gate`` and ``up``), and a functional version written here in float64 (a
dense computation over all experts with the unchosen ones weighted 0) on fresh random sizes. The
learner's experts are the course's reference SwiGLU (parts/swiglu.py), so a mistake in 20 costs
this exercise nothing; a hook on each expert counts the tokens it is given.
"""

import math

import torch
import torch.nn.functional as F

from harness.compare import Mistake, assert_close, assert_true, autograd_through, expect_value_error
from harness.draw import n
from harness.failures import Mismatch
from harness.reference import load_reference

EXERCISE = "26"
PARTS = ("swiglu",)


def moe(x, p, num_experts, top_k, norm=True, variant=""):
    """The oracle (``variant`` "") and its known mistakes, in float64: every expert on every
    token, weighted by the chosen probabilities (0 for the others)."""
    tokens = x.reshape(-1, x.size(-1)).double()
    p = {k: v.double() for k, v in p.items()}
    logits = F.linear(tokens, p["router.weight"])
    if variant == "bfloat16_softmax":  # the router's softmax and top-k in bfloat16, as the learner's would run them
        probs = torch.softmax(logits.bfloat16(), dim=-1)
    else:
        probs = torch.softmax(logits, dim=0 if variant == "softmax_over_tokens" else -1)
    top, idx = probs.topk(top_k, dim=-1)
    probs, top = probs.double(), top.double()
    if variant == "not_renormalised":
        norm = False
    elif variant == "renormalised_anyway":  # also what a softmax over the chosen logits only gives
        norm = True
    if norm:
        top = top / (top.sum() if variant == "renormalised_over_batch" else top.sum(-1, keepdim=True))
    if variant == "first_slot_weight":  # every chosen expert weighted by the first choice's (renormalised) probability
        top = top[:, :1].expand_as(top)
    weights = torch.zeros_like(probs).scatter(1, idx, top)
    if variant == "dense":  # every expert, weighted by its full softmax probability
        weights = probs
    if variant == "logits_as_weights":
        weights = torch.zeros_like(probs).scatter(1, idx, F.linear(tokens, p["router.weight"]).gather(1, idx))
    if variant == "unweighted":  # the chosen experts' outputs added without their weights
        weights = torch.zeros_like(probs).scatter(1, idx, 1.0)
    if variant == "assigned":  # out[token_idx] = y, experts in order: each token keeps its highest-numbered expert's output
        last = idx.max(dim=-1, keepdim=True).values
        weights = torch.zeros_like(probs).scatter(1, last, weights.gather(1, last))
    out = 0
    for e in range(num_experts):
        w = {k.split(".", 2)[2]: v for k, v in p.items() if k.startswith(f"experts.{e}.")}
        y = F.linear(F.silu(F.linear(tokens, w["gate.weight"])) * F.linear(tokens, w["up.weight"]), w["down.weight"])
        out = out + weights[:, e:e + 1] * y
    return out.reshape(x.shape)


def aux_loss(logits, num_experts, top_k, variant=""):
    probs = torch.softmax(logits.double(), dim=-1)
    chosen = probs.topk(top_k if variant != "top1_only" else 1, dim=-1).indices
    f = F.one_hot(chosen, num_experts).double().sum(1).mean(0)
    if variant == "f_divided_by_k":
        f = f / top_k
    elif variant == "f_from_probabilities":  # f_e taken as the mean probability, like P_e, not the count of choices
        f = probs.mean(0)
    scale = 1 if variant == "no_num_experts" else num_experts
    total = scale * (f * probs.mean(0)).sum()
    return total * logits.size(0) if variant == "summed_over_tokens" else total


def mistakes(x, p, num_experts, top_k, norm):
    def wrong(variant):
        return lambda: moe(x, p, num_experts, top_k, norm, variant)

    out = [Mistake("every expert ran on every token, weighted by its full softmax probability (a dense mixture)",
                   "Keep only the top_k experts of each token: probs.topk(top_k); the others get weight 0.", wrong("dense")),
           Mistake("the router's logits used as weights, not their softmax probabilities",
                   "weights = softmax(logits) first, then topk.", wrong("logits_as_weights")),
           Mistake("the softmax taken over the tokens (dim=0), not over the experts",
                   "probs = torch.softmax(logits, dim=-1): "
                   "each token's probabilities over the experts sum to 1.", wrong("softmax_over_tokens"))]
    if norm or top_k > 1:  # one expert per token and no renormalisation: unweighted is renormalised (weight 1), no telling them apart
        out.append(Mistake("the chosen experts' outputs added without their weights",
                           "out += weight * expert(x): each chosen expert's "
                           "output times its (renormalised) probability.", wrong("unweighted")))
    if top_k > 1:
        out.append(Mistake("each expert's output assigned to its tokens (out[token_idx] = y), not added: a token keeps only its "
                           "last expert's", "out.index_add_(0, token_idx, y) adds every chosen expert's weighted output.",
                           wrong("assigned")))
        out.append(Mistake("every chosen expert weighted by the first choice's probability",
                           "Weight expert e's output by the "
                           "probability in the slot where the token chose e: weights[token_idx, slot] "
                           "(torch.where(chosen == e)).",
                           wrong("first_slot_weight")))
    if norm:
        out.append(Mistake("the chosen probabilities renormalised over the whole batch, not per token",
                           "weights / weights.sum(dim=-1, keepdim=True): each token's chosen weights sum to 1.",
                           wrong("renormalised_over_batch")))
    if norm and top_k > 1:
        out.append(Mistake("the top-k probabilities were not renormalised", "With norm_topk_prob, divide the chosen "
                           "probabilities by their sum, so that each token's weights sum to 1.", wrong("not_renormalised")))
    if not norm and top_k > 1:  # a softmax over the chosen logits is the chosen probabilities divided by their sum: one name
        out.append(Mistake("the chosen probabilities renormalised although norm_topk_prob is False (divided by their sum, or "
                           "the softmax taken over the chosen logits only)",
                           "probs = softmax(logits) over every expert first, then topk; renormalise only with norm_topk_prob.",
                           wrong("renormalised_anyway")))
    return out


def aux_mistakes(logits, num_experts, top_k):
    def wrong(variant):
        return lambda: aux_loss(logits, num_experts, top_k, variant)

    out = [Mistake("the num_experts factor is missing", "loss = num_experts * sum_e f_e * P_e.",
                   wrong("no_num_experts")),
           Mistake("a sum over the tokens where the mean is meant (f_e or P_e)",
                   "f_e and P_e are means over the tokens: "
                   ".mean(dim=0), not .sum(dim=0).", wrong("summed_over_tokens")),
           Mistake("f_e taken as the mean probability, not the count of top-k choices",
                   "f_e = one_hot(topk indices).sum(1).mean(0): "
                   "how often e is chosen; P_e is the mean probability.", wrong("f_from_probabilities"))]
    if top_k > 1:
        out += [Mistake("only the top-1 choice counted in f_e", "Count every expert among each token's top_k.", wrong("top1_only")),
                Mistake("f_e divided by top_k", "f_e counts the choices per token: the f_e sum to top_k, not to 1.",
                        wrong("f_divided_by_k"))]
    return out


def committed(norm):
    ref = {k: torch.from_numpy(v) for k, v in load_reference("26_moe").items()}
    c = {k.split("/", 1)[1]: int(v.reshape(-1)[0]) for k, v in ref.items() if k.startswith("config/")}
    key = "norm" if norm else "raw"
    p = {"router.weight": ref[f"{key}/router"]}
    for e in range(c["num_experts"]):
        gate, up = ref[f"{key}/gate_up_proj"][e].chunk(2, dim=0)  # transformers' fused layout: gate first, then up
        p.update({f"experts.{e}.gate.weight": gate, f"experts.{e}.up.weight": up, f"experts.{e}.down.weight": ref[f"{key}/down_proj"][e]})
    return c, p, ref[f"{key}/x"], ref[f"{key}/out"], ref[f"{key}/router_logits"], ref[f"{key}/aux_loss"].reshape(())


def random_case(gen, norm=None):
    num_experts = n(gen, 2, 8)
    top_k = n(gen, 1, min(3, num_experts - 1)) if num_experts > 2 else 1
    emb, hidden = n(gen, 4, 16), n(gen, 4, 16)
    norm = bool(n(gen, 0, 1)) if norm is None else norm
    p = {"router.weight": torch.randn(num_experts, emb, generator=gen) / emb ** 0.5}
    for e in range(num_experts):
        p.update({f"experts.{e}.gate.weight": torch.randn(hidden, emb, generator=gen) / emb ** 0.5,
                  f"experts.{e}.up.weight": torch.randn(hidden, emb, generator=gen) / emb ** 0.5,
                  f"experts.{e}.down.weight": torch.randn(emb, hidden, generator=gen) / hidden ** 0.5})
    x = torch.randn(n(gen, 1, 3), n(gen, 2, 12), emb, generator=gen)
    return (emb, hidden, num_experts, top_k, norm), p, x


def describe(init, x):
    emb, hidden, num_experts, top_k, norm = init
    return (f"MoEFeedForward(emb_dim={emb}, hidden_dim={hidden}, num_experts={num_experts}, top_k={top_k}, "
            f"norm_topk_prob={norm}) on x of shape {tuple(x.shape)}")


def dispatch(impl, init, p, x):
    return impl.scenario("moe_dispatch.run", list(init), p, x, substitute=PARTS).out


def test_moe_matches_transformers(impl, gen):
    for norm in [(True, False), (False, True)][n(gen, 0, 1)]:
        c, p, x, want, _, _ = committed(norm)
        init = (c["hidden_size"], c["moe_intermediate_size"], c["num_experts"], c["num_experts_per_tok"], norm)
        got = dispatch(impl, init, p, x)["out"]
        assert_close(got, want, describe(init, x) + " with reference/26_moe.npz's weights", oracle="transformers' Qwen3MoeSparseMoeBlock",
                     atol=1e-5, rtol=1e-4, mistakes=mistakes(x, p, c["num_experts"], c["num_experts_per_tok"], norm))


def test_moe_matches_oracle(impl, gen):
    init, p, x = random_case(gen)
    got = dispatch(impl, init, p, x)["out"]
    assert_close(got, moe(x, p, *init[2:]).float(), describe(init, x), oracle="the top-k mixture written in float64",
                 atol=1e-5, rtol=1e-4, mistakes=mistakes(x, p, *init[2:]))


def test_moe_dispatches_tokens_to_their_experts_only(impl, gen):
    init, p, x = random_case(gen)
    num_experts, top_k = init[2], init[3]
    res = dispatch(impl, init, p, x)
    tokens = x.reshape(-1, x.size(-1))
    chosen = torch.softmax(F.linear(tokens.double(), p["router.weight"].double()), -1).topk(top_k, -1).indices
    want = [int((chosen == e).any(-1).sum()) for e in range(num_experts)]
    seen = res["seen"]
    if seen != want:
        dense = all(s >= tokens.size(0) for s in seen)
        raise Mismatch(
            f"{describe(init, x)}: the experts were given {seen} tokens; the tokens that chose each expert number {want} "
            f"({tokens.size(0)} tokens, {top_k} experts each)."
            + ("\nThis looks like: every expert ran on every token. Gather each expert's own tokens (torch.where(chosen == e)) and "
               "run it on those only: the layer does top_k / num_experts of a dense layer's work." if dense else
               "\nRun each expert once, on exactly the tokens that chose it; skip the experts nobody chose."))
    assert_true(res["router_logits"] is not None and tuple(res["router_logits"].shape) == (tokens.size(0), num_experts),
                f"{describe(init, x)}: router_logits after forward should be the router's logits, shape {(tokens.size(0), num_experts)} "
                f"(tokens, num_experts); got {None if res['router_logits'] is None else tuple(res['router_logits'].shape)}")
    logits = F.linear(tokens.double(), p["router.weight"].double())
    assert_close(res["router_logits"].float(), logits.float(), f"{describe(init, x)}: router_logits after forward",
                 oracle="router(x) in float64, x's leading dimensions flattened",
                 check_dtype=False, atol=1e-5, rtol=1e-4,
                 mistakes=[Mistake("router_logits holds the probabilities (after the softmax), not the logits",
                                   "Keep self.router_logits = logits, before the softmax: load_balancing_loss takes "
                                   "logits.",
                                   torch.softmax(logits, -1).float())])


def test_moe_backward_reaches_the_router_and_the_chosen_experts(impl, gen):
    init, p, x = random_case(gen)
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("moe.MoEFeedForward", x, init_args=init, params=p, grad_output=g, grad_wrt=(0,), substitute=PARTS)
    out, x_grad, grads = autograd_through(lambda xx, pp: moe(xx, pp, *init[2:]).to(xx.dtype), x, p, g)
    assert_close(res.out, out, describe(init, x), oracle="the float64 mixture", atol=1e-5, rtol=1e-4, mistakes=mistakes(x, p, *init[2:]))
    assert_close(res.grad(0), x_grad, f"{describe(init, x)}: the gradient with respect to x", oracle="autograd through the oracle",
                 atol=1e-4, rtol=1e-3)
    for name, want in grads.items():
        assert_close(res.param_grads[name], want, f"{describe(init, x)}: the gradient with respect to {name}",
                     oracle="autograd through the oracle (the router learns through the chosen weights)", atol=1e-4, rtol=1e-3)


def test_load_balancing_loss_matches_transformers(impl, gen):
    norm = bool(n(gen, 0, 1))
    c, _, _, _, logits, want = committed(norm)
    got = impl.call("moe.load_balancing_loss", logits, c["num_experts"], c["num_experts_per_tok"])
    assert_close(got.out, want, f"load_balancing_loss on reference/26_moe.npz's router logits ({logits.size(0)} tokens, "
                 f"num_experts={c['num_experts']}, top_k={c['num_experts_per_tok']})", oracle="transformers' load_balancing_loss_func",
                 atol=1e-5, rtol=1e-5, mistakes=aux_mistakes(logits, c["num_experts"], c["num_experts_per_tok"]))


def test_load_balancing_loss_and_its_gradient(impl, gen):
    num_experts = n(gen, 2, 10)
    top_k = n(gen, 1, num_experts)
    logits = torch.randn(n(gen, 3, 40), num_experts, generator=gen) * 2
    g = torch.randn((), generator=gen)
    res = impl.call("moe.load_balancing_loss", logits, num_experts, top_k, grad_output=g, grad_wrt=(0,))
    want, grad, _ = autograd_through(lambda z, _: aux_loss(z, num_experts, top_k).float(), logits, {}, g)
    what = f"load_balancing_loss on logits of shape {tuple(logits.shape)}, num_experts={num_experts}, top_k={top_k}"
    assert_close(res.out, want, what, oracle="num_experts * sum_e f_e * P_e in float64", atol=1e-5, rtol=1e-5,
                 mistakes=aux_mistakes(logits, num_experts, top_k))
    assert_close(res.grad(0), grad, f"{what}: the gradient with respect to the logits", oracle="autograd through the formula (through P_e only)",
                 atol=1e-5, rtol=1e-4)


def near_tie_case(gen):
    """A bfloat16 layer whose router puts two experts a and b within 2^-10 of each other for every
    token (logits 0 and +-2^-10 * x_j, exact in bfloat16), the others far below, top_k 1: in float32
    (the docstring's softmax) the larger wins, while bfloat16 probabilities round to a tie for most
    tokens, so a softmax in bfloat16 sends some to the other expert whatever its tie-break."""
    num_experts, emb, hidden = n(gen, 2, 6), n(gen, 4, 12), n(gen, 4, 12)
    init = (emb, hidden, num_experts, 1, bool(n(gen, 0, 1)))
    a, b = torch.randperm(num_experts, generator=gen)[:2].tolist()
    c, j = torch.randperm(emb, generator=gen)[:2].tolist()
    router = torch.zeros(num_experts, emb)
    # the others' logits put p_a and p_b at 15/32, a bfloat16 value, so both round to it (never to either side of a
    # midpoint)
    router[[e for e in range(num_experts) if e not in (a, b)], c] = math.log((32 / 15 - 2) / max(1, num_experts - 2))
    router[b, j] = 2.0 ** -10
    p = {"router.weight": router}
    for e in range(num_experts):
        p.update({f"experts.{e}.gate.weight": torch.randn(hidden, emb, generator=gen) / emb ** 0.5,
                  f"experts.{e}.up.weight": torch.randn(hidden, emb, generator=gen) / emb ** 0.5,
                  f"experts.{e}.down.weight": torch.randn(emb, hidden, generator=gen) / hidden ** 0.5})
    x = torch.randn(n(gen, 1, 3), n(gen, 8, 16), emb, generator=gen)
    x[..., c] = 1.0
    x[..., j] = torch.sign(torch.randn(x.shape[:-1], generator=gen)) * (0.5 + 0.5 * torch.rand(x.shape[:-1],
                                                                                               generator=gen))
    return init, {k: v.bfloat16() for k, v in p.items()}, x.bfloat16()


def test_moe_router_softmax_in_float32_for_bfloat16(impl, gen):
    init, p, x = near_tie_case(gen)
    res = impl.module("moe.MoEFeedForward", x, init_args=init, params=p, dtype=torch.bfloat16, substitute=PARTS)
    what = describe(init, x) + " in bfloat16, two experts within 2^-10 of each other in the router's logits"
    assert_true(res.out.dtype == torch.bfloat16, f"{what}: the output is {res.out.dtype}; expected x's dtype, "
                                                 "torch.bfloat16")
    wrong = Mistake("the router's softmax computed in bfloat16, not float32",
                    "probs = torch.softmax(logits.float(), dim=-1): "
                    "in bfloat16 close probabilities round to a tie and top-k picks the wrong expert; cast the weights "
                    "back to x's "
                    "dtype after.", lambda: moe(x, p, *init[2:], variant="bfloat16_softmax").float())
    assert_close(res.out.float(), moe(x, p, *init[2:]).float(), what, oracle="the top-k mixture written in float64",
                 check_dtype=False,
                 atol=3e-2, rtol=3e-2, mistakes=[wrong] + mistakes(x, p, *init[2:]))


def test_moe_refuses_top_k_out_of_range(impl, gen):
    num_experts = n(gen, 1, 6)
    top_k = [0, num_experts + n(gen, 1, 3)][n(gen, 0, 1)]
    expect_value_error(lambda: impl.call("moe.MoEFeedForward", 8, 8, num_experts, top_k, substitute=PARTS, returns="data"),
                       f"MoEFeedForward(emb_dim=8, hidden_dim=8, num_experts={num_experts}, top_k={top_k})",
                       why=": each token chooses between 1 and num_experts experts")
