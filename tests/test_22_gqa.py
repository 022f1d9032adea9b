"""Exercise 22: grouped-query attention with QK-norm, RoPE and a sliding window.

Oracle: ``gpt_oracle.gqa``, a functional version in float64 (``F.linear``, ``F.rms_norm``, the
complex-number RoPE of gpt_oracle.py, ``repeat_interleave`` of the kv heads, an explicit mask),
on fresh random sizes, weights and inputs. The learner's module is built with the course's
reference RMSNorm and RoPE (parts/rmsnorm.py, parts/rope.py), so a mistake in 19 or 21 costs this
exercise nothing. The worker refuses ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention``.
"""

import math

import torch
from gpt_oracle import gqa

from harness.compare import (Mistake, assert_close_alone, assert_gradients_close, assert_true, autograd_through,
                             expect_value_error, softmax_axis_mistakes)
from harness.draw import n

EXERCISE = "22"
PARTS = ("rmsnorm", "rope")


def config(gen, qk_norm=False, window=None, min_kv=2):
    n_kv = n(gen, min_kv, 3)  # two kv heads at least, so that their order shows (one: multi-query attention)
    n_heads = n_kv * n(gen, 2, 3)  # at least two query heads per group: the grouping shows
    head_dim = 2 * n(gen, 2, 6)
    emb = n(gen, 4, 24)
    return {"emb_dim": emb, "n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": head_dim, "qk_norm": qk_norm,
            "window": window, "theta": [10_000.0, 500_000.0][n(gen, 0, 1)]}


def params(gen, cfg):
    e, h, kv, d = cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    p = {"W_query.weight": torch.randn(h * d, e, generator=gen) / e ** 0.5,
         "W_key.weight": torch.randn(kv * d, e, generator=gen) / e ** 0.5,
         "W_value.weight": torch.randn(kv * d, e, generator=gen) / e ** 0.5,
         "out_proj.weight": torch.randn(e, h * d, generator=gen) / (h * d) ** 0.5}
    if cfg["qk_norm"]:
        p["q_norm.weight"] = 1 + 0.3 * torch.randn(d, generator=gen)
        p["k_norm.weight"] = 1 + 0.3 * torch.randn(d, generator=gen)
    return p


def mistakes(x, p, cfg):
    out = [
        Mistake("the kv heads repeated in the wrong order (repeat, not repeat_interleave)",
                "Query head h reads kv head h // group: k.repeat_interleave(group, dim=1) keeps each group together.",
                lambda: gqa(x, p, cfg, repeat="tile")),
        Mistake("RoPE not applied to the keys", "Rotate both queries and keys (never the values).", lambda: gqa(x, p, cfg, rope_keys=False)),
        Mistake("no 1/sqrt(head_dim) scaling", "Divide the scores by math.sqrt(head_dim).", lambda: gqa(x, p, cfg, scale=False)),
    ]
    out += more_mistakes(x, p, cfg)
    out += softmax_axis_mistakes(lambda axis, zeros: gqa(x, p, cfg, softmax_axis=axis, zeros=zeros), (x.size(0), cfg["n_heads"], x.size(1), x.size(1)),
                                 -1, "the keys", "torch.softmax(scores, dim=-1).")
    if cfg["qk_norm"]:
        out.append(Mistake("the QK-norm applied after RoPE", "Qwen3 normalises each head's queries and keys first, then rotates them.",
                           lambda: gqa(x, p, cfg, norm_after_rope=True)))
    if cfg.get("rope_scaling") is not None:
        out.append(Mistake("rope_scaling not passed to rope_cos_sin", "Keep rope_scaling and give it to rope_cos_sin(q, positions, "
                           "self.theta, self.rope_scaling).", lambda: gqa(x, p, {**cfg, "rope_scaling": None})))
    if cfg["window"] is not None:
        out.append(Mistake("the window one token too wide (j >= i - window)",
                           "Query i sees the window latest keys, itself included: i - window < j <= i.",
                           lambda: gqa(x, p, cfg, window_off_by_one=True)))
    return out


def more_mistakes(x, p, cfg):
    """Mistakes named by their outputs: the scale, the causal mask, where RoPE and the QK-norms go,
    the merge of the heads, the window."""
    d, width = cfg["head_dim"], cfg["n_heads"] * cfg["head_dim"]

    def wrong(zeros=(True,), **kwargs):
        return [lambda z=z: gqa(x, p, cfg, zeros=z, **kwargs) for z in zeros]

    both = (True, False)  # a row with no key left: zeros (the course's softmax) or NaN (torch.softmax)
    named = [
        ("scores scaled by 1/head_dim instead of 1/sqrt(head_dim)", "Divide by math.sqrt(self.head_dim).", wrong(scale=d)),
        ("scores scaled by the square root of the model's width, not of head_dim", "Each head's dot products have head_dim "
         "terms: divide by math.sqrt(self.head_dim).", wrong(scale=math.sqrt(cfg["emb_dim"])) + wrong(scale=math.sqrt(width))),
        ("no causal mask", "Query i sees keys j <= i only: mask the scores where j > i with -inf before the softmax.",
         wrong(causal=None)),
        ("scores multiplied by sqrt(head_dim), not divided by it", "scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim).",
         wrong(scale=1 / math.sqrt(d))),
        ("the mask inverted: the allowed keys masked, the others kept", "Fill where a key is NOT allowed: "
         "scores.masked_fill(~allowed, float(\"-inf\")).", wrong(both, mask_inverted=True)),
        ("causal mask off by one: the diagonal is masked", "Query i may attend to key i itself: allowed = j <= i.",
         wrong(both, causal=-1)),
        ("causal mask off by one: one future key is visible", "Block every j > i: allowed = j <= i.", wrong(causal=1)),
        ("RoPE applied to the values too", "Rotate the queries and keys only: positions enter the scores, not the values.",
         wrong(rope_values=True)),
        ("RoPE applied to neither queries nor keys", "Rotate both with apply_rope(q, cos, sin), apply_rope(k, cos, sin).",
         wrong(rope_queries=False, rope_keys=False)),
        ("the masked scores set to 0, not -inf", "A score of 0 still gets the weight exp(0) in the softmax: "
         "scores.masked_fill(~allowed, float(\"-inf\")).", wrong(fill=0.0)),
        ("the values computed with W_key", "v = self.W_value(x): each projection has its own weight.",
         wrong(weights={"W_value": "W_key"})),
        ("the keys computed with W_query", "k = self.W_key(x): each projection has its own weight.",
         wrong(weights={"W_key": "W_query"})),
        ("heads merged with a reshape but no transpose", "Merge with (weights @ v).transpose(1, 2).reshape(b, t, n_heads * "
         "head_dim): the heads' axis must move back next to the features first.", wrong(merge="reshape")),
    ]
    if cfg["qk_norm"]:
        named += [("the keys not normalised (k_norm left out)", "With qk_norm, normalise both: q, k = self.q_norm(q), "
                   "self.k_norm(k).", wrong(key_norm=None)),
                  ("the keys normalised with q_norm", "The keys have their own norm: self.k_norm(k).", wrong(key_norm="q"))]
    if cfg["window"] is not None:
        named += [("the window not applied", "Query i sees only keys i - window < j <= i: allowed = allowed & (j > i - window).",
                   [lambda: gqa(x, p, {**cfg, "window": None})]),
                  ("the window one token too narrow", "Query i sees the window latest keys, itself included: j > i - window, "
                   "not j > i - window + 1.", [lambda z=z: gqa(x, p, {**cfg, "window": cfg["window"] - 1}, zeros=z) for z in both])]
    return [Mistake(name, fix, out) for name, fix, outs in named for out in outs]


def init(cfg):
    return {k: cfg[k] for k in ("head_dim", "qk_norm", "window", "theta", "rope_scaling") if k in cfg}


def run(impl, gen, cfg, **kwargs):
    x = torch.randn(n(gen, 1, 2), n(gen, 4, 12), cfg["emb_dim"], generator=gen)
    p = params(gen, cfg)
    res = impl.module("gqa.GroupedQueryAttention", x, init_args=(cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_heads"]),
                      init_kwargs=init(cfg), params=p, substitute=PARTS, **kwargs)
    return x, p, res


def describe(cfg, x):
    extra = "".join(f", {k}={cfg[k]}" for k in ("qk_norm", "window") if cfg[k])
    return (f"GroupedQueryAttention(emb_dim={cfg['emb_dim']}, n_heads={cfg['n_heads']}, n_kv_heads={cfg['n_kv_heads']}, "
            f"head_dim={cfg['head_dim']}{extra}) on x of shape {tuple(x.shape)}")


def test_gqa_parameters_are_shared_by_groups(impl, gen):
    cfg = config(gen, qk_norm=True)
    x, _, res = run(impl, gen, cfg)
    e, h, kv, d = cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    want = {"W_query.weight": (h * d, e), "W_key.weight": (kv * d, e), "W_value.weight": (kv * d, e), "out_proj.weight": (e, h * d),
            "q_norm.weight": (d,), "k_norm.weight": (d,)}
    got = {k: tuple(v.shape) for k, v in res.initial.items()}
    biases = sorted(k for k in got if k.endswith("bias"))
    assert_true(not biases, f"{describe(cfg, x)} has the biases {', '.join(biases)}: these projections have none (bias=False)")
    assert_true(got == want, f"{describe(cfg, x)} has the parameters {got}; expected {want}: keys and values have n_kv_heads "
                             "heads, shared by the query heads of each group, not copied into parameters of their own")


def test_gqa_matches_oracle(impl, gen):
    cfg = config(gen)
    x, p, res = run(impl, gen, cfg)
    assert_close_alone(res.out, gqa(x, p, cfg).float(), describe(cfg, x), oracle="grouped-query attention with RoPE, in float64",
                 mistakes=mistakes(x, p, cfg))


def test_gqa_with_qk_norm_as_qwen3(impl, gen):
    cfg = config(gen, qk_norm=True)
    x, p, res = run(impl, gen, cfg)
    assert_close_alone(res.out, gqa(x, p, cfg).float(), describe(cfg, x), oracle="QK-norm, then RoPE, in float64", mistakes=mistakes(x, p, cfg))


def test_gqa_sliding_window(impl, gen):
    cfg = config(gen, window=n(gen, 1, 3))
    x, p, res = run(impl, gen, cfg)
    assert_close_alone(res.out, gqa(x, p, cfg).float(), describe(cfg, x), oracle=f"keys i - {cfg['window']} < j <= i only",
                 mistakes=mistakes(x, p, cfg))


def test_gqa_backward_matches_autograd(impl, gen):
    cfg = config(gen, qk_norm=bool(n(gen, 0, 1)), window=[None, 2][n(gen, 0, 1)], min_kv=1)
    x = torch.randn(n(gen, 1, 2), n(gen, 4, 10), cfg["emb_dim"], generator=gen)
    p = params(gen, cfg)
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("gqa.GroupedQueryAttention", x, init_args=(cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_heads"]),
                      init_kwargs=init(cfg), params=p, substitute=PARTS, grad_output=g, grad_wrt=(0,))
    out, x_grad, param_grads = autograd_through(lambda xx, pp: gqa(xx, pp, cfg).to(xx.dtype), x, p, g)
    assert_close_alone(res.out, out, describe(cfg, x), oracle="the float64 oracle", mistakes=mistakes(x, p, cfg))
    assert_gradients_close(res, x_grad, param_grads)


def test_gqa_refuses_heads_that_do_not_group(impl, gen):
    kv = n(gen, 2, 4)
    h = kv * n(gen, 1, 3) + n(gen, 1, kv - 1)
    expect_value_error(lambda: impl.call("gqa.GroupedQueryAttention", 8 * h, h, kv, substitute=PARTS, returns="data"),
                       f"GroupedQueryAttention(emb_dim={8 * h}, n_heads={h}, n_kv_heads={kv})",
                       why=": n_heads must be a multiple of n_kv_heads, so that each kv head serves a whole group")


def test_gqa_with_llama3_rope_scaling(impl, gen):
    cfg = config(gen)
    cfg["rope_scaling"] = {"factor": [4.0, 8.0, 32.0][n(gen, 0, 2)], "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": n(gen, 8, 32)}  # a context short enough that the scaling shows
    x, p, res = run(impl, gen, cfg)
    assert_close_alone(res.out, gqa(x, p, cfg).float(), describe(cfg, x) + f" and rope_scaling={cfg['rope_scaling']}",
                 oracle="RoPE of Llama 3.1's scaled frequencies, in float64", mistakes=mistakes(x, p, cfg))
