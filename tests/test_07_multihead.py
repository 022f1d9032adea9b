"""Exercise 07: multi-head causal self-attention.

Oracles: the same projections split into heads and run through
``torch.nn.functional.scaled_dot_product_attention`` (``gpt_oracle.multihead``), and
``torch.nn.MultiheadAttention`` with the weights copied in; autograd for the gradients. The
learner's module is imported with the reference attention part in place of their attention.py.
"""

import torch
from gpt_oracle import multihead, multihead_params, multihead_train, seeded
from torch import nn

from harness.compare import (Mistake, assert_close_alone, assert_gradients_close, assert_true, autograd_through,
                             softmax_axis_mistakes)
from harness.draw import n
from harness.failures import LearnerError, Mismatch

EXERCISE = "07"
PARTS = ("attention",)
ORACLE = "the heads run through F.scaled_dot_product_attention"


def case(gen, dropout=0.0, same_dims=False, qkv_bias=None):
    heads = n(gen, 2, 4)  # with one head, a split or merge without transpose goes unseen
    d_out = heads * n(gen, 2, 8)
    d_in = d_out if same_dims else n(gen, 2, 20)
    ctx = n(gen, 2, 12)
    qkv_bias = bool(n(gen, 0, 1)) if qkv_bias is None else qkv_bias
    x = torch.randn(n(gen, 1, 3), n(gen, 2, ctx), d_in, generator=gen)
    init = {"d_in": d_in, "d_out": d_out, "context_length": ctx, "dropout": dropout, "num_heads": heads, "qkv_bias": qkv_bias}
    return x, init, multihead_params(gen, d_in, d_out, qkv_bias)


def mistakes(x, params, heads):
    def wrong(variant):
        return lambda: multihead(x, params, heads, variant)

    return [
        Mistake("heads split with a reshape but no transpose",
                "Split with .view(batch, num_tokens, num_heads, head_dim).transpose(1, 2): a reshape straight to "
                "(batch, num_heads, num_tokens, head_dim) puts other tokens' features in each head.", wrong("split_without_transpose")),
        Mistake("heads merged with a reshape but no transpose",
                "Merge with .transpose(1, 2).contiguous().view(batch, num_tokens, d_out): the heads' axis must move back "
                "next to the features before the view.", wrong("merge_without_transpose")),
        Mistake("no causal mask", "Mask the scores with self.mask[:num_tokens, :num_tokens] (False -> -inf) before the softmax.", wrong("no_mask")),
        Mistake("no 1/sqrt(head_dim) scaling", "Divide the scores by math.sqrt(head_dim).", wrong("no_scale")),
        Mistake("scores scaled by 1/sqrt(d_out) instead of 1/sqrt(head_dim)", "Each head's dot products have head_dim terms: divide by math.sqrt(self.head_dim).",
                wrong("scale_by_d_out")),
        Mistake("scores scaled by 1/head_dim instead of 1/sqrt(head_dim)", "Divide by math.sqrt(self.head_dim).", wrong("scale_by_head_dim")),
        Mistake("out_proj is not applied", "End with self.out_proj(context).", wrong("no_out_proj")),
    ] + softmax_axis_mistakes(lambda axis, zeros: multihead(x, params, heads, softmax_axis=axis, zeros=zeros), (x.size(0), heads, x.size(1), x.size(1)),
                              -1, "the keys", "softmax(scores, dim=-1).")


def describe(x, init):
    return (f"MultiHeadAttention(d_in={init['d_in']}, d_out={init['d_out']}, context_length={init['context_length']}, "
            f"num_heads={init['num_heads']}, qkv_bias={init['qkv_bias']}) on x of shape {tuple(x.shape)}")


def test_multihead_matches_builtin_attention(impl, gen):
    x, init, params = case(gen, dropout=float(torch.rand(1, generator=gen)) * 0.5)
    res = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, params=params, substitute=PARTS)
    assert_close_alone(res.out, multihead(x, params, init["num_heads"]), f"{describe(x, init)}, in eval mode", oracle=ORACLE,
                 mistakes=mistakes(x, params, init["num_heads"]))


def test_multihead_matches_nn_multiheadattention(impl, gen):
    x, init, params = case(gen, same_dims=True, qkv_bias=True)
    res = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, params=params, substitute=PARTS)
    d, t = init["d_out"], x.size(1)
    ref = nn.MultiheadAttention(d, init["num_heads"], batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([params[f"W_{k}.weight"] for k in ("query", "key", "value")]))
        ref.in_proj_bias.copy_(torch.cat([params[f"W_{k}.bias"] for k in ("query", "key", "value")]))
        ref.out_proj.weight.copy_(params["out_proj.weight"])
        ref.out_proj.bias.copy_(params["out_proj.bias"])
        blocked = torch.ones(t, t, dtype=torch.bool).triu(1)  # nn.MultiheadAttention: True = may NOT attend
        expected, _ = ref(x, x, x, attn_mask=blocked, need_weights=False)
    assert_close_alone(res.out, expected, describe(x, init), oracle="nn.MultiheadAttention with the same weights",
                 mistakes=mistakes(x, params, init["num_heads"]))


def test_multihead_backward_matches_autograd(impl, gen):
    x, init, params = case(gen)
    g = torch.randn(x.size(0), x.size(1), init["d_out"], generator=gen)
    res = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, params=params, grad_output=g, grad_wrt=(0,), substitute=PARTS)
    out, x_grad, param_grads = autograd_through(lambda xx, pp: multihead(xx, pp, init["num_heads"]), x, params, g)
    assert_close_alone(res.out, out, describe(x, init), oracle=ORACLE, mistakes=mistakes(x, params, init["num_heads"]))
    assert_gradients_close(res, x_grad, param_grads)


def test_multihead_mask_is_a_causal_buffer(impl, gen):
    x, init, params = case(gen)
    ctx = init["context_length"]
    res = impl.call("multihead.MultiHeadAttention", **init, substitute=PARTS, then=[("$attr", ("mask",))])
    mask = res.then[0]
    assert_true(isinstance(mask, torch.Tensor), f"MultiHeadAttention.mask should be a tensor, got {type(mask).__name__}")
    expected = torch.ones(ctx, ctx, dtype=torch.bool).tril()
    if mask.dtype != torch.bool and mask.shape == expected.shape and bool((mask == expected.logical_not().float()).all()):
        raise Mismatch(f"MultiHeadAttention(context_length={ctx}).mask is 1 above the diagonal (the blocked places, the book's "
                       "convention); this course's mask is causal_mask(context_length): bool, True where query i may attend to key j")
    assert_close_alone(mask, expected, f"MultiHeadAttention(context_length={ctx}).mask", oracle="causal_mask(context_length)",
                 mistakes=[Mistake("the mask is inverted", "True marks allowed positions: j <= i, the lower triangle.", lambda: ~expected)])
    built = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, substitute=PARTS)
    assert_true("mask" not in built.initial, "mask is a parameter (the optimiser would train it): use self.register_buffer(\"mask\", ...)")


def test_multihead_eval_mode_has_no_dropout(impl, gen):
    x, init, params = case(gen, dropout=0.5)
    x = torch.cat([x] * 4, dim=0)  # more rows, so that dropout shows
    expected = multihead(x, params, init["num_heads"])
    first = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, params=params, substitute=PARTS).out
    second = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, params=params, substitute=PARTS).out
    if not torch.equal(first, second):
        raise Mismatch("two identical calls in eval mode gave different outputs: dropout is active in eval. Use the nn.Dropout "
                       "module (self.dropout), which model.eval() switches off, not F.dropout(..., training=True)")
    assert_close_alone(first, expected, f"{describe(x, init)} with dropout=0.5, in eval mode (dropout off)", oracle=ORACLE,
                 mistakes=mistakes(x, params, init["num_heads"]))


def test_multihead_training_dropout_falls_on_the_attention_weights(impl, gen):
    """Training mode, seeded: the oracle draws the same masks, in the same place, at the same rate."""
    p = round(0.1 + 0.4 * float(torch.rand(1, generator=gen)), 3)
    x, init, params = case(gen, dropout=p)
    x = torch.cat([x] * 2, dim=0)
    heads, seed = init["num_heads"], n(gen, 0, 2**31 - 1)
    got = impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, params=params, train=True, seed=seed, substitute=PARTS).out

    def wrong(variant):
        return lambda: seeded(seed, lambda: multihead_train(x, params, heads, p, variant))

    assert_close_alone(got, seeded(seed, lambda: multihead_train(x, params, heads, p)),
                 f"{describe(x, init)} with dropout={p:g} in training mode, after torch.manual_seed({seed})",
                 oracle="the same heads with F.dropout on the attention weights, drawn from the same seed",
                 mistakes=[
                     Mistake("dropout is not applied in training mode", "Apply self.dropout (an nn.Dropout) to the attention weights, "
                             "after the softmax: nn.Dropout is active in training mode and off in eval mode.", wrong("no_dropout")),
                     Mistake("dropout on the scores before the softmax, not on the weights after it",
                             "weights = self.dropout(torch.softmax(scores, dim=-1)): the softmax first, then dropout.",
                             wrong("dropout_on_scores")),
                     Mistake("dropout on the module's output instead of the attention weights",
                             "Apply self.dropout to the attention weights (batch, heads, tokens, tokens), before they weight the values.",
                             wrong("dropout_on_output")),
                 ])


def test_multihead_rejects_d_out_not_divisible_by_num_heads(impl, gen):
    heads = n(gen, 2, 5)
    d_out = heads * n(gen, 1, 4) + n(gen, 1, heads - 1)
    init = {"d_in": n(gen, 2, 9), "d_out": d_out, "context_length": 4, "dropout": 0.0, "num_heads": heads}
    x = torch.randn(1, 2, init["d_in"], generator=gen)
    try:
        impl.module("multihead.MultiHeadAttention", x, init_kwargs=init, substitute=PARTS)
    except LearnerError as e:
        if not e.message.startswith("ValueError"):
            raise Mismatch(f"MultiHeadAttention(d_out={d_out}, num_heads={heads}) raised {e.message.split(' (')[0]}; expected a "
                           "ValueError saying that d_out must be divisible by num_heads") from None
        return
    raise Mismatch(f"MultiHeadAttention(d_out={d_out}, num_heads={heads}) raised nothing: {d_out} features cannot be split into "
                   f"{heads} equal heads; raise ValueError")
