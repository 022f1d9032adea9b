"""Exercise 01: softmax, the causal mask and scaled dot-product attention.

Oracles: ``torch.softmax`` and ``torch.nn.functional.scaled_dot_product_attention``, run here in
the grading process on fresh random inputs; a committed snapshot (reference/01_attention.npz)
pins the contract for fully masked rows.
"""

import math

import torch
import torch.nn.functional as F

from harness.compare import Mistake, assert_close_alone, assert_true, softmax_axis_mistakes, softmax_over
from harness.draw import n
from harness.reference import load_reference

EXERCISE = "01"


def qkv(gen, four_d=True, L=None, S=None, scale=1.0):
    B, H, d = n(gen, 1, 3), n(gen, 1, 4), n(gen, 2, 16)
    L = L or n(gen, 2, 9)
    S = S or L
    lead = (B, H) if four_d else (B,)
    q = torch.randn(*lead, L, d, generator=gen) * scale
    k = torch.randn(*lead, S, d, generator=gen) * scale
    v = torch.randn(*lead, S, n(gen, 2, 16) if not four_d else d, generator=gen)
    return q, k, v


def manual_attention(q, k, v, mask=None, scale=None, dim=-1, zeros=True):
    """A wrong variant's output, for naming mistakes (scale, mask and softmax axis as given; None:
    one softmax over every element of the scores; an all -inf slice gives zeros, or NaN without ``zeros``)."""
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.size(-1)))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax_over(scores, dim, zeros) @ v


def attention_mistakes(q, k, v, mask=None, causal=False):
    d = q.size(-1)
    L, S = q.size(-2), k.size(-2)
    allowed = torch.ones(L, S, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    mistakes = [
        Mistake("no 1/sqrt(d_k) scaling", "Divide the scores q @ k^T by math.sqrt(q.size(-1)).",
                lambda: manual_attention(q, k, v, allowed, scale=1.0)),
        Mistake("scaling by 1/d_k instead of 1/sqrt(d_k)", "The scale is 1 / sqrt(d_k), not 1 / d_k.",
                lambda: manual_attention(q, k, v, allowed, scale=1.0 / d)),
    ]
    mistakes += axis_mistakes(q, k, v, allowed)
    if causal:
        base = mask if mask is not None else torch.ones(L, S, dtype=torch.bool)
        mistakes += [
            Mistake("causal mask off by one: the diagonal is masked", "Query i may attend to key i itself: keep j <= i (torch.tril with diagonal=0).",
                    lambda: manual_attention(q, k, v, base & torch.ones(L, S, dtype=torch.bool).tril(-1))),
            Mistake("causal mask off by one: one future key is visible", "Block every j > i: torch.tril(..., diagonal=0), not diagonal=1.",
                    lambda: manual_attention(q, k, v, base & torch.ones(L, S, dtype=torch.bool).tril(1))),
            Mistake("causal mask inverted: queries attend to the future", "Allowed positions are the lower triangle (j <= i), not the upper one.",
                    lambda: manual_attention(q, k, v, base & torch.ones(L, S, dtype=torch.bool).triu())),
            Mistake("the causal mask is not applied", "With is_causal=True, block every key j > i.",
                    lambda: manual_attention(q, k, v, base)),
        ]
    if mask is not None:
        flipped = ~mask
        if causal:
            flipped = flipped & torch.ones(L, S, dtype=torch.bool).tril()
        mistakes.append(Mistake("the boolean mask is read backwards", "A bool attn_mask is True where attention is ALLOWED, as in F.scaled_dot_product_attention.",
                                lambda: manual_attention(q, k, v, flipped)))
    return mistakes


SDPA = "F.scaled_dot_product_attention"


def axis_mistakes(q, k, v, mask=None):
    """The softmax over each wrong axis of the scores ``(..., L, S)``, with ``mask`` (bool: True
    where allowed; float: added to the scaled scores)."""
    if mask is not None and mask.dtype != torch.bool:
        def variant(axis, zeros):
            return softmax_over(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)) + mask, axis, zeros) @ v
    else:
        def variant(axis, zeros):
            return manual_attention(q, k, v, mask, dim=axis, zeros=zeros)
    return softmax_axis_mistakes(variant, (*q.shape[:-1], k.size(-2)), -1, "the keys", "softmax(scores, dim=-1).")

# ----------------------------------------------------------------------------------- softmax


def softmax_mistakes(x, dim):
    """A softmax over the wrong axis (every other one, the whole tensor), and a maximum or sum taken
    without keepdim=True (then broadcast against the wrong axis), on ``x`` with the argument ``dim``."""
    fix = f"reduce over dim={dim}, the argument given: x.amax(dim, keepdim=True) and e.sum(dim, keepdim=True)."
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return softmax_axis_mistakes(lambda axis, zeros: softmax_over(x, axis, zeros), x.shape, dim, f"dim={dim}", fix) + [
        Mistake("the sum taken without keepdim=True", "e.sum(dim) drops the dimension, so the division broadcasts it against "
                "the wrong axis: e.sum(dim, keepdim=True).", lambda: e / e.sum(dim)),
        Mistake("the maximum taken without keepdim=True", "x.amax(dim) drops the dimension, so the subtraction broadcasts it "
                "against the wrong axis: x.amax(dim, keepdim=True).",
                lambda: torch.exp(x - x.amax(dim)) / torch.exp(x - x.amax(dim)).sum(dim, keepdim=True)),
    ]


def test_softmax_matches_torch(impl, gen):
    ndim = n(gen, 1, 4)
    x = torch.randn(*[n(gen, 1, 7) for _ in range(ndim)], generator=gen) * 3
    dim = n(gen, -ndim, ndim - 1)
    got = impl.call("attention.softmax", x, dim=dim).out
    assert_close_alone(got, torch.softmax(x, dim=dim), f"softmax(x, dim={dim}) for x of shape {tuple(x.shape)}",
                 oracle="torch.softmax", mistakes=softmax_mistakes(x, dim))
    sums = got.sum(dim=dim)
    assert_close_alone(sums, torch.ones_like(sums), f"the sums of softmax(x, dim={dim}) along dim {dim}", oracle="1.0", atol=1e-5)


def test_softmax_stable_for_large_logits(impl, gen):
    x = torch.randn(n(gen, 2, 5), n(gen, 3, 9), generator=gen) * 1e4
    got = impl.call("attention.softmax", x).out
    assert_close_alone(got, torch.softmax(x, dim=-1), "softmax(x) for logits of magnitude 1e4", oracle="torch.softmax",
                 mistakes=softmax_mistakes(x, -1) + [Mistake("exp overflowed: the row maximum was not subtracted",
                                   "exp(88.8) is already inf in float32; compute exp(x - x.max(dim, keepdim=True)).",
                                   lambda: torch.exp(x) / torch.exp(x).sum(-1, keepdim=True))])


def test_softmax_all_masked_row_gives_zeros(impl, gen):
    x = torch.randn(n(gen, 3, 6), n(gen, 2, 8), generator=gen)
    row = n(gen, 0, x.size(0) - 1)
    x[row] = float("-inf")
    x[(row + 1) % x.size(0), 0] = float("-inf")  # a partly masked row must still work
    got = impl.call("attention.softmax", x).out
    expected = torch.softmax(x, dim=-1)
    expected[row] = 0.0  # the docstring's contract: nothing to attend to gives zeros, not NaN
    assert_close_alone(got, expected, f"softmax(x) where row {row} is all -inf", oracle="torch.softmax (zeros for the all -inf row)",
                 mistakes=softmax_mistakes(x, -1) + [Mistake("an all -inf row gives NaN", "max is -inf there, and -inf - (-inf) is NaN: replace a non-finite max by 0 and guard the division by a zero sum.",
                                   lambda: torch.softmax(x, dim=-1))])


# ----------------------------------------------------------------------------------- causal mask


def test_causal_mask(impl, gen):
    size = n(gen, 2, 12)
    got = impl.call("attention.causal_mask", size).out
    expected = torch.ones(size, size).tril().bool()
    assert_true(got.dtype == torch.bool, f"causal_mask({size}) has dtype {got.dtype}, expected torch.bool (True where attention is allowed)")
    assert_close_alone(got, expected, f"causal_mask({size})", oracle="the lower triangle with its diagonal",
                 mistakes=[Mistake("the mask is inverted", "True marks allowed positions: j <= i, the lower triangle.", lambda: ~expected),
                           Mistake("the diagonal is excluded", "Position i may attend to itself: use diagonal=0.", lambda: torch.ones(size, size).tril(-1).bool())])


# ----------------------------------------------------------------------------------- attention


def test_attention_3d_matches_builtin(impl, gen):
    q, k, v = qkv(gen, four_d=False, S=n(gen, 2, 9))
    got = impl.call("attention.scaled_dot_product_attention", q, k, v).out
    assert_close_alone(got, F.scaled_dot_product_attention(q, k, v), f"attention for 3-D q {tuple(q.shape)}, k {tuple(k.shape)}",
                 oracle=SDPA, mistakes=attention_mistakes(q, k, v))


def test_attention_4d_causal_matches_builtin(impl, gen):
    q, k, v = qkv(gen, L=n(gen, 3, 9))  # three positions at least tell the mask's mistakes apart
    got = impl.call("attention.scaled_dot_product_attention", q, k, v, is_causal=True).out
    assert_close_alone(got, F.scaled_dot_product_attention(q, k, v, is_causal=True), f"causal attention for 4-D q {tuple(q.shape)}",
                 oracle=SDPA, mistakes=attention_mistakes(q, k, v, causal=True))


def random_bool_mask(gen, L, S):
    mask = torch.rand(L, S, generator=gen) > 0.3
    mask[torch.arange(L), torch.randint(0, S, (L,), generator=gen)] = True  # every query sees a key
    return mask


def test_attention_bool_mask(impl, gen):
    q, k, v = qkv(gen, S=n(gen, 2, 9))
    mask = random_bool_mask(gen, q.size(-2), k.size(-2))
    got = impl.call("attention.scaled_dot_product_attention", q, k, v, attn_mask=mask).out
    assert_close_alone(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention with a boolean attn_mask",
                 oracle=SDPA, mistakes=attention_mistakes(q, k, v, mask=mask))


def test_attention_additive_float_mask(impl, gen):
    q, k, v = qkv(gen, four_d=bool(n(gen, 0, 1)))
    mask = torch.randn(q.size(-2), k.size(-2), generator=gen)
    got = impl.call("attention.scaled_dot_product_attention", q, k, v, attn_mask=mask).out
    assert_close_alone(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention with an additive float attn_mask",
                 oracle=SDPA,
                 mistakes=axis_mistakes(q, k, v, mask) + [Mistake("the float mask was ignored", "A float attn_mask is added to the scaled scores before the softmax.",
                                   lambda: F.scaled_dot_product_attention(q, k, v)),
                           Mistake("the float mask was added before scaling", "Add the mask to q @ k^T / sqrt(d_k), after the scaling.",
                                   lambda: torch.softmax((q @ k.transpose(-2, -1) + mask) / math.sqrt(q.size(-1)), -1) @ v)])


def test_attention_causal_and_bool_mask(impl, gen):
    q, k, v = qkv(gen)
    L = q.size(-2)
    mask = random_bool_mask(gen, L, L) | torch.eye(L, dtype=torch.bool)
    got = impl.call("attention.scaled_dot_product_attention", q, k, v, attn_mask=mask, is_causal=True).out
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask & torch.ones(L, L, dtype=torch.bool).tril())
    assert_close_alone(got, expected, "attention with is_causal=True and a boolean attn_mask (both apply)",
                 oracle=SDPA, mistakes=attention_mistakes(q, k, v, mask=mask, causal=True)
                 + [Mistake("attn_mask was ignored when is_causal=True", "Apply both: the causal mask and attn_mask.",
                            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))])


def test_attention_gradients_match_builtin(impl, gen):
    q, k, v = qkv(gen)
    g = torch.randn(*q.shape[:-1], v.size(-1), generator=gen)
    res = impl.call("attention.scaled_dot_product_attention", q, k, v, is_causal=True, grad_output=g, grad_wrt=(0, 1, 2))
    qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
    out.backward(g)
    assert_close_alone(res.out, out.detach(), "the output", oracle=SDPA, mistakes=attention_mistakes(q, k, v, causal=True))
    for i, name, ref in ((0, "q", qq), (1, "k", kk), (2, "v", vv)):
        assert_close_alone(res.grad(i), ref.grad, f"the gradient with respect to {name}", oracle=f"{SDPA}'s backward", atol=1e-4, rtol=1e-3)


def test_attention_large_logits_stay_finite(impl, gen):
    q, k, v = qkv(gen, scale=30.0)  # scores of magnitude ~1e4
    L = q.size(-2)
    got = impl.call("attention.scaled_dot_product_attention", q, k, v, is_causal=True).out
    assert_close_alone(got, F.scaled_dot_product_attention(q, k, v, is_causal=True), "causal attention with scores of magnitude 1e4",
                 oracle=SDPA, atol=1e-4, rtol=1e-3, mistakes=axis_mistakes(q, k, v, torch.ones(L, L, dtype=torch.bool).tril()))


def test_attention_fully_masked_row_returns_zeros(impl, gen):
    q, k, v = qkv(gen)
    L = q.size(-2)
    mask = random_bool_mask(gen, L, L)
    row = n(gen, 0, L - 1)
    mask[row] = False
    got = impl.call("attention.scaled_dot_product_attention", q, k, v, attn_mask=mask).out
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_true(bool((expected[..., row, :] == 0).all()), "this PyTorch's F.scaled_dot_product_attention does not return zeros for a fully masked row; grade with torch >= 2.5")
    assert_close_alone(got, expected, f"attention where query {row} may attend to no key (the docstring: its output is zeros)",
                 oracle=SDPA,
                 mistakes=axis_mistakes(q, k, v, mask) + [Mistake("the fully masked row gives NaN", "softmax must give zeros for a row that is all -inf (see its docstring).",
                                   lambda: torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~mask, float("-inf")), -1) @ v)])


def test_attention_known_answer(impl, gen):
    """The committed cases, shuffled afresh each run (batch, heads, value features and, where no
    causal mask ties them to positions, keys), so that no output can be looked up by its input."""
    ref = load_reference("01_attention")
    for case in ("causal", "bool_mask", "fully_masked"):
        t = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in ref.items() if k.startswith(case + "/")}
        q, k, v, out = t["q"], t["k"], t["v"], t["out"]
        for dim in range(q.dim() - 2):  # batch (and heads)
            p = torch.randperm(q.size(dim), generator=gen)
            q, k, v, out = (x.index_select(dim, p) for x in (q, k, v, out))
        p = torch.randperm(v.size(-1), generator=gen)
        v, out = v[..., p], out[..., p]
        kwargs = {"is_causal": bool(t["is_causal"])}
        if "attn_mask" in t:
            keys = torch.randperm(k.size(-2), generator=gen)
            k, v = k[..., keys, :], v[..., keys, :]
            kwargs["attn_mask"] = t["attn_mask"][..., keys]
        got = impl.call("attention.scaled_dot_product_attention", q, k, v, **kwargs).out
        mask = kwargs.get("attn_mask", torch.ones(q.size(-2), k.size(-2), dtype=torch.bool))
        if kwargs["is_causal"]:
            mask = mask & torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
        assert_close_alone(got, out, f"attention on the committed case {case!r} (shuffled)", oracle="reference/01_attention.npz",
                     mistakes=axis_mistakes(q, k, v, mask))
