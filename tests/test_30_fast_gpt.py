"""Exercise 30: the fast path, GPTModel on PyTorch's fused kernels with a padded vocabulary.

Oracle: ``gpt_oracle.gpt`` (exercise 09's model written with ``torch.nn.functional``, float64 here)
on the unpadded weights; the padded rows the grader adds are random, so a padded logit that is not
masked shows. Autograd through it gives the loss's gradients. A dispatch mode in the worker
(parts/fast_run.py) records the ATen operators the forward runs: the fused ones must be there and
no softmax. Named mistakes come from the same model with the mistake in it.
"""

import torch
import torch.nn.functional as F
from gpt_oracle import (attention_part_train, feed_forward, gpt, gpt_params, gpt_shapes, layer_norm, linear,
                        random_config, seeded, sub)

from harness.compare import Mistake, assert_close, assert_parameter_shapes, assert_true, expect_value_error
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "30"
ORACLE = "exercise 09's model in torch.nn.functional (float64), unpadded"


def padded(v, multiple=64):
    return (v + multiple - 1) // multiple * multiple


def variant_model(idx, params, cfg, variant):
    """The fast model's logits (unpadded columns) with one known mistake."""
    x = F.embedding(idx, params["tok_emb.weight"])
    if variant != "no_positions":
        x = x + F.embedding(torch.arange(idx.size(1)), params["pos_emb.weight"])
    heads = cfg["n_heads"]
    for i in range(cfg["n_layers"]):
        p = sub(params, f"trf_blocks.{i}.")
        h = layer_norm(x, p, "norm1")
        b, t, e = h.shape
        if variant == "heads_split_wrong":  # the joint projection viewed as (heads, 3, head_dim), not (3, heads, ...)
            qkv = torch.cat([linear(h, p, f"att.W_{m}") for m in ("query", "key", "value")], -1)
            q, k, v = qkv.view(b, t, heads, 3, e // heads).permute(3, 0, 2, 1, 4)
        else:
            q, k, v = (linear(h, p, f"att.W_{m}").view(b, t, heads, e // heads).transpose(1, 2)
                       for m in ("query", "key", "value"))
        if variant == "query_key_swapped":
            q, k = k, q
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=variant != "not_causal")
        merged = ctx.reshape(b, t, e) if variant == "heads_merged_wrong" else ctx.transpose(1, 2).reshape(b, t, e)
        x = x + linear(merged, p, "att.out_proj")
        h = linear(layer_norm(x, p, "norm2"), p, "ff.layers.0")
        h = F.gelu(h) if variant == "exact_gelu" else F.gelu(h, approximate="tanh")
        x = x + linear(h, p, "ff.layers.2")
    if variant != "no_final_norm":
        x = layer_norm(x, params, "final_norm")
    return F.linear(x, params["tok_emb.weight"] if cfg["tie_weights"] else params["out_head.weight"])


def dropout_model(idx, params, cfg, p, variant=""):
    """The model's unpadded logits with dropout at rate ``p`` (seed torch alike before): GPTModel's
    order of draws (the embeddings, then in each block the attention's weights inside
    F.scaled_dot_product_attention and each branch's output), the oracle of exercise 09.
    ``variant``: a dropout left out (``no_embedding_dropout``, ``no_attention_dropout``,
    ``no_shortcut_dropout``), or ``eval_attention_dropout``: eval mode with the attention's dropout
    still on (the only one an nn.Dropout does not switch off)."""
    train = variant != "eval_attention_dropout"
    x = F.embedding(idx, params["tok_emb.weight"]) + F.embedding(torch.arange(idx.size(1)), params["pos_emb.weight"])
    if train and variant != "no_embedding_dropout":
        x = F.dropout(x, p, True)
    for i in range(cfg["n_layers"]):
        b = sub(params, f"trf_blocks.{i}.")
        att_p = 0.0 if variant == "no_attention_dropout" else p
        for norm, branch in (("norm1", lambda z: attention_part_train(z, sub(b, "att."), cfg["n_heads"], att_p)),
                             ("norm2", lambda z: feed_forward(z, sub(b, "ff.")))):
            y = branch(layer_norm(x, b, norm))
            x = x + (F.dropout(y, p, True) if train and variant != "no_shortcut_dropout" else y)
    x = layer_norm(x, params, "final_norm")
    return F.linear(x, params["tok_emb.weight"] if cfg["tie_weights"] else params["out_head.weight"])


def mistakes(idx, params, cfg):
    def wrong(variant):
        return lambda: variant_model(idx, params, cfg, variant)

    return [Mistake("attention without the causal mask", "F.scaled_dot_product_attention(q, k, v, is_causal=True).", wrong("not_causal")),
            Mistake("the exact GELU instead of GPT-2's tanh approximation",
                    "nn.GELU(approximate=\"tanh\") (or F.gelu(x, approximate=\"tanh\")): GPT-2's GELU, exercise 02's formula.",
                    wrong("exact_gelu")),
            Mistake("the queries and keys swapped",
                    "Concatenate W_query, W_key, W_value in that order and split q, k, v in the "
                    "same order.", wrong("query_key_swapped")),
            Mistake("the joint projection split as (heads, 3, head_dim) instead of (3, heads, head_dim)",
                    "The weight is [W_query; W_key; W_value] stacked: view(b, t, 3, num_heads, head_dim), then "
                    "permute(2, 0, 3, 1, 4).",
                    wrong("heads_split_wrong")),
            Mistake("the heads merged without moving them back next to each other",
                    "context.transpose(1, 2).reshape(b, num_tokens, d_out): (b, heads, t, hd) -> (b, t, heads, hd) "
                    "before the reshape.",
                    wrong("heads_merged_wrong")),
            Mistake("the position embeddings left out", "x = tok_emb(in_idx) + pos_emb(torch.arange(num_tokens)).",
                    wrong("no_positions")),
            Mistake("the final LayerNorm left out", "logits = head(final_norm(trf_blocks(x))).",
                    wrong("no_final_norm"))]


def case(gen, full=False, **fixed):
    """A random tiny config whose vocabulary is not a multiple of 64, its weights (float64, for the
    oracle), and the learner's: the same with random padded rows. With ``full``: at least two heads
    and token ids exactly the context length long (the boundary, never left to the draw)."""
    if full:
        heads = n(gen, 2, 4)
        fixed = {"n_heads": heads, "emb_dim": heads * n(gen, 2, 6), "context_length": n(gen, 2, 12), **fixed}
    cfg = random_config(gen, vocab_size=n(gen, 5, 200), **fixed)
    if cfg["vocab_size"] % 64 in (0, 63):  # at least two padded columns: a mask one column off then leaves one masked
        cfg["vocab_size"] += 2
    params = {k: v.double() for k, v in gpt_params(gen, cfg).items()}
    extra = padded(cfg["vocab_size"]) - cfg["vocab_size"]
    learner = dict(params)
    for key in ("tok_emb.weight", "out_head.weight"):
        if key in params:
            learner[key] = torch.cat([params[key], torch.randn(extra, cfg["emb_dim"], generator=gen, dtype=torch.float64)])
    learner = {k: v.float() for k, v in learner.items()}
    length = cfg["context_length"] if full else n(gen, 1, cfg["context_length"])
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 3), length), generator=gen)
    return cfg, idx, params, learner


def describe(cfg, idx):
    keys = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias", "tie_weights")
    return f"FastGPT({', '.join(f'{k}={cfg[k]}' for k in keys)}) on token ids of shape {tuple(idx.shape)}"


def check_padding(logits, cfg, what):
    v, vp = cfg["vocab_size"], padded(cfg["vocab_size"])
    assert_true(logits.shape[-1] == vp, f"{what}: the logits have {logits.shape[-1]} columns, expected padded_vocab_size({v}) = {vp}")
    pad = logits[..., v:]
    real = torch.isneginf(logits[..., :v]).flatten(0, -2).all(0)  # the real columns that are -inf in every row
    if bool(real.any()):
        cols = real.nonzero().flatten().tolist()
        early = cols == list(range(cols[0], v))
        raise Mismatch(f"{what}: the logits of real token ids {cols[:8]} are -inf in every row"
                       + (f".\nThis looks like: the mask starts {v - cols[0]} column(s) early, at {cols[0]}, not at "
                          f"vocab_size ({v}). "
                          "Only the padded columns, vocab_size .. padded_vocab_size - 1, get -inf." if early else
                          ": only the padded columns may be masked."))
    unmasked = ~torch.isneginf(pad).flatten(0, -2).all(0)  # the padded columns some row leaves finite
    if bool(unmasked.any()) and not bool(unmasked.all()):
        cols = (unmasked.nonzero().flatten() + v).tolist()
        late = cols == list(range(v, cols[-1] + 1))
        short = cols == list(range(cols[0], vp))
        raise Mismatch(f"{what}: {len(cols)} of the {vp - v} padded logits (columns {cols[:8]}) are not -inf, the "
                       "others are"
                       + (f".\nThis looks like: the mask starts {len(cols)} column(s) late, at {v + len(cols)}, not at "
                          f"vocab_size ({v}). "
                          "logit_mask[vocab_size:] = -inf: the first padded column is vocab_size." if late else
                          f".\nThis looks like: the mask stops {len(cols)} column(s) short of padded_vocab_size "
                          f"({vp}). Mask every "
                          "column from vocab_size to the end." if short else ": every padded column must be -inf."))
    if not bool(torch.isneginf(pad).all()):
        if bool((pad < -1e3).all()):
            raise Mismatch(f"{what}: the padded logits (columns {v}..{vp - 1}) are large negative numbers, not -inf (one is "
                           f"{float(pad.max()):.4g}).\nThis looks like: the padded logits are masked with a finite number. Use -inf, as "
                           "the docstring says: exactly probability 0 for every sampler, in every dtype, whatever the real logits.")
        worst = float(pad[~torch.isneginf(pad)].max())
        open_columns = (~torch.isneginf(pad)).reshape(-1, vp - v).any(0).nonzero().flatten().tolist()
        raise Mismatch(f"{what}: the padded logits (columns {v}..{vp - 1}) are not all -inf (one is {worst:.4g}), so a sampler can pick "
                       "an id that is no token and the loss gives them probability."
                       # with one padded column, a mask one column late looks the same: no name then
                       + ("\nThis looks like: the padded logits are not masked." if vp - v > 1 else "")
                       + " Add a buffer that is 0 for the real tokens and -inf for the padding to the logits (as "
                         "F.linear's bias).")


def test_padded_vocab_size(impl, gen):
    for _ in range(4):
        v, multiple = n(gen, 1, 120_000), [64, 64, 8, 128, n(gen, 1, 100)][n(gen, 0, 4)]
        got = impl.call("fast.padded_vocab_size", v, multiple, returns="data").out
        assert_true(got == padded(v, multiple), f"padded_vocab_size({v}, {multiple}) returned {got!r}, expected {padded(v, multiple)}"
                    + (" (a multiple is its own padded size)" if v % multiple == 0 else "") + one_more(v, multiple, got))
    v = 64 * n(gen, 1, 100)
    got = impl.call("fast.padded_vocab_size", v, returns="data").out
    assert_true(got == v, f"padded_vocab_size({v}) returned {got!r}; {v} is already a multiple of 64" + one_more(v, 64, got))


def one_more(v, multiple, got):
    """The name of the mistake that pads a multiple by one more multiple, when ``got`` shows it
    (``v`` a multiple, ``got`` exactly one multiple above it): ``(v // m + 1) * m`` rounds up
    every other size right."""
    if v % multiple or got != v + multiple:
        return ""
    return (f"\nThis looks like: a size that is already a multiple padded by one more multiple ((v // m + 1) * m). Round up "
            f"with -(-v // m) * m (or (v + m - 1) // m * m): a multiple of {multiple} stays as it is.")
    bad = -n(gen, 0, 5)
    expect_value_error(lambda: impl.call("fast.padded_vocab_size", bad, returns="data"), f"padded_vocab_size({bad})", needles=(bad,))


def test_fast_layer_norm_and_attention(impl, gen):
    e = n(gen, 2, 24)
    x = torch.randn(n(gen, 1, 3), n(gen, 1, 9), e, generator=gen)
    # a row of nearly equal values (likely with e = 2) makes any float32 LayerNorm lose its digits to
    # cancellation, the reference's too: such a row is spread out first (its std is then above 0.3)
    x = torch.where(x.std(-1, keepdim=True) < 0.2, x + torch.linspace(-1, 1, e), x)
    p = {"scale": 1 + 0.3 * torch.randn(e, generator=gen), "shift": 0.3 * torch.randn(e, generator=gen)}
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("fast.FastLayerNorm", x, init_args=(e,), params=p, grad_output=g, grad_wrt=(0,))
    want = F.layer_norm(x.double(), (e,), p["scale"].double(), p["shift"].double(), 1e-5)
    assert_close(res.out, want.float(), f"FastLayerNorm({e}) on x of shape {tuple(x.shape)}", oracle="F.layer_norm (float64)",
                 atol=1e-5, rtol=1e-4)
    # FastFeedForward with its hidden activations near -2.7, where the tanh GELU and the exact (erf) one differ most (by
    # 4.7e-4, 5% of GELU's value there), and a second layer of positive weights that adds those differences up
    x = torch.randn(n(gen, 1, 3), n(gen, 1, 9), e, generator=gen)
    ff = {"layers.0.weight": 0.1 * torch.randn(4 * e, e, generator=gen) / e ** 0.5, "layers.0.bias": torch.full((4 * e,), -2.7),
          "layers.2.weight": 0.5 + torch.rand(e, 4 * e, generator=gen), "layers.2.bias": 0.01 * torch.randn(e, generator=gen)}
    res = impl.module("fast.FastFeedForward", x, init_args=(e,), params=ff)
    d = {k: v.double() for k, v in ff.items()}

    def feed_forward(approximate):
        hidden = F.gelu(F.linear(x.double(), d["layers.0.weight"], d["layers.0.bias"]), approximate=approximate)
        return F.linear(hidden, d["layers.2.weight"], d["layers.2.bias"]).float()

    exact = Mistake("the exact (erf) GELU, not GPT-2's tanh approximation",
                    'GPT-2 (and exercise 02) use the tanh approximation: nn.GELU(approximate="tanh").', lambda: feed_forward("none"))
    assert_close(res.out, feed_forward("tanh"), f"FastFeedForward({e}) on x of shape {tuple(x.shape)}",
                 oracle='Linear, GELU(approximate="tanh"), Linear (float64)', atol=2e-5, rtol=1e-5, mistakes=[exact])
    cfg, idx, params, _ = case(gen)
    heads, e = cfg["n_heads"], cfg["emb_dim"]
    att = {k[len("trf_blocks.0.att."):]: v.float() for k, v in params.items() if k.startswith("trf_blocks.0.att.")}
    x = torch.randn(n(gen, 1, 3), n(gen, 1, 12), e, generator=gen)
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("fast.FastAttention", x, init_args=(e, e, 0.0, heads, cfg["qkv_bias"]), params=att, grad_output=g, grad_wrt=(0,))
    xx = x.double().requires_grad_(True)
    pp = {k: v.double().requires_grad_(True) for k, v in att.items()}
    b, t, _ = x.shape
    q, k, v = (linear(xx, pp, f"W_{m}").view(b, t, heads, e // heads).transpose(1, 2) for m in ("query", "key", "value"))
    what = f"FastAttention(d_in={e}, d_out={e}, dropout=0.0, num_heads={heads}, qkv_bias={cfg['qkv_bias']}) on x of shape {tuple(x.shape)}"

    def attend(causal):
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return linear(ctx.transpose(1, 2).reshape(b, t, e), pp, "out_proj")

    want, mistaken = attend(True), attend(False).detach().float()
    assert_close(res.out, want.detach().float(), what, oracle="F.scaled_dot_product_attention (float64)", atol=1e-4, rtol=1e-4,
                 mistakes=[Mistake("attention without the causal mask", "F.scaled_dot_product_attention(q, k, v, is_causal=True).", mistaken)])
    want.backward(g.double())
    assert_close(res.grad(0), xx.grad.float(), f"{what}: the gradient with respect to x", oracle="autograd (float64)", atol=1e-4, rtol=1e-4)
    for name in att:
        assert_close(res.param_grads[name], pp[name].grad.float(), f"{what}: the gradient with respect to {name}",
                     oracle="autograd (float64)", atol=1e-4, rtol=1e-4)


def test_fast_gpt_logits_match_and_padding_is_masked(impl, gen):
    """Eval mode with a drop rate of at least 0.1, seeded: no dropout may run (an attention
    dropout left on draws from the seed, so its output is known and named)."""
    p = round(0.1 + 0.3 * float(torch.rand(1, generator=gen)), 3)
    cfg, idx, params, learner = case(gen, full=True, drop_rate=p)
    seed = n(gen, 0, 2**31 - 1)
    res = impl.module("fast.FastGPT", idx, init_args=(cfg,), params=learner, seed=seed)
    what = describe(cfg, idx) + f", drop_rate={p:g}, in eval mode"
    check_padding(res.out, cfg, what)
    left_on = Mistake("the attention's dropout left on in eval mode",
                      "dropout_p=self.dropout if self.training else 0.0: "
                      "F.scaled_dot_product_attention does not know the module's mode.",
                      lambda: seeded(seed, lambda: dropout_model(idx, params, cfg, p,
                                                                 "eval_attention_dropout")).float())
    assert_close(res.out[..., :cfg["vocab_size"]], gpt(idx, params, cfg).float(), f"{what}: the first vocab_size logits", oracle=ORACLE,
                 atol=1e-4, rtol=1e-4, mistakes=mistakes(idx, params, cfg) + [left_on])


def test_fast_gpt_training_dropout_matches_gptmodel(impl, gen):
    """Training mode, seeded: the oracle (exercise 09's, in training mode) draws the same masks in
    the same order: the embeddings', then in each block the attention weights' (inside
    F.scaled_dot_product_attention, dropout_p) and each branch's."""
    p = round(0.1 + 0.4 * float(torch.rand(1, generator=gen)), 3)
    cfg, idx, params, learner = case(gen, drop_rate=p)
    seed = n(gen, 0, 2**31 - 1)
    res = impl.module("fast.FastGPT", idx, init_args=(cfg,), params=learner, train=True, seed=seed)
    what = describe(cfg, idx) + f", drop_rate={p:g}, in training mode after torch.manual_seed({seed})"
    check_padding(res.out, cfg, what)

    def wrong(variant):
        return lambda: seeded(seed, lambda: dropout_model(idx, params, cfg, p, variant)).float()

    named = [Mistake("the attention's dropout left out in training mode",
                     "F.scaled_dot_product_attention(q, k, v, is_causal=True, "
                     "dropout_p=self.dropout if self.training else 0.0).", wrong("no_attention_dropout")),
             Mistake("the residual branches' dropout (drop_shortcut) left out",
                     "x = x + self.drop_shortcut(branch) after the "
                     "attention and after the feed-forward, as exercise 08's block.", wrong("no_shortcut_dropout")),
             Mistake("the embedding dropout is missing",
                     "x = self.drop_emb(tok_embeds + pos_embeds), before the blocks.",
                     wrong("no_embedding_dropout"))]
    assert_close(res.out[..., :cfg["vocab_size"]], seeded(seed, lambda: gpt(idx, params, cfg, p=p)).float(),
                 f"{what}: the first vocab_size logits", oracle="exercise 09's model in training mode, drawn from the "
                                                                "same seed",
                 atol=1e-4, rtol=1e-4, mistakes=named)


def test_fast_gpt_parameters_are_gptmodels_padded(impl, gen):
    for tie in (True, False):
        cfg, idx, _, _ = case(gen, tie_weights=tie)
        res = impl.module("fast.FastGPT", idx, init_args=(cfg,))
        want = gpt_shapes(cfg)
        for key in ("tok_emb.weight", "out_head.weight"):
            if key in want:
                want[key] = (padded(cfg["vocab_size"]), cfg["emb_dim"])
        got = {k: tuple(v.shape) for k, v in res.initial.items()}
        assert_parameter_shapes(got, want, f"FastGPT(tie_weights={tie})",
                                f"FastGPT(vocab_size={cfg['vocab_size']} padded to {padded(cfg['vocab_size'])}, emb_dim={cfg['emb_dim']})",
                                tie=tie)


def test_fast_gpt_loss_and_gradients_ignore_the_padding(impl, gen):
    cfg, idx, params, learner = case(gen)
    targets = torch.randint(0, cfg["vocab_size"], idx.shape, generator=gen)
    res = impl.scenario("fast_run.loss", cfg, learner, idx, targets).out
    pp = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    logits = gpt(idx, pp, cfg)
    want = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    want.backward()
    what = describe(cfg, idx) + ", in training mode, F.cross_entropy of its logits"
    assert_close(res["loss"], want.detach().float(), f"{what}: the loss", oracle=ORACLE, atol=1e-4, rtol=1e-4)
    v = cfg["vocab_size"]
    for name, p in pp.items():
        got = res["grads"].get(name)
        assert_true(got is not None, f"{what}: {name} got no gradient")
        if name in ("tok_emb.weight", "out_head.weight"):
            pad = got[v:]
            assert_true(bool((pad == 0).all()), f"{what}: the padded rows of {name} got a gradient (largest "
                        f"{float(pad.abs().max()):.3g}): their logits must be -inf, so the loss never reaches them")
            got = got[:v]
        assert_close(got, p.grad.float(), f"{what}: the gradient of {name}", oracle="autograd through " + ORACLE, atol=1e-4, rtol=1e-3)


def test_fast_gpt_runs_fused_kernels(impl, gen):
    cfg, idx, params, learner = case(gen)
    res = impl.scenario("fast_run.kernels", cfg, learner, idx).out
    ops = set(res["ops"])
    what = describe(cfg, idx)
    missing = []
    if not any(op.startswith("_scaled_dot_product") or op == "scaled_dot_product_attention" for op in ops):
        missing.append("F.scaled_dot_product_attention (no _scaled_dot_product_* kernel ran)")
    if "native_layer_norm" not in ops:
        missing.append("F.layer_norm (no native_layer_norm kernel ran)")
    if "gelu:tanh" not in ops:
        missing.append("GELU's tanh kernel (F.gelu(x, approximate=\"tanh\") or nn.GELU(approximate=\"tanh\"))"
                       + (": the exact GELU ran instead" if "gelu:none" in ops else ""))
    if missing:
        raise Mismatch(f"{what} in eval mode did not run {'; '.join(missing)}. The fast path is PyTorch's fused kernels. Kernels seen: "
                       f"{', '.join(sorted(ops))}")
    slow = sorted(op for op in ops if "softmax" in op or op in ("tanh", "pow", "var", "mean"))
    assert_true(not slow, f"{what} in eval mode ran {', '.join(slow)}: attention, LayerNorm and GELU written op by op (exercises 01, 02, "
                          "07), where the fast path calls one fused kernel for each")
    check_padding(res["bf16_logits"], cfg, what + " under torch.autocast(\"cpu\", dtype=torch.bfloat16)")


def test_fast_gpt_rejects_input_longer_than_context(impl, gen):
    cfg, _, _, _ = case(gen)
    ctx = cfg["context_length"]
    idx = torch.randint(0, cfg["vocab_size"], (1, ctx + n(gen, 1, 5)), generator=gen)
    expect_value_error(lambda: impl.module("fast.FastGPT", idx, init_args=(cfg,)), f"FastGPT(context_length={ctx}) on {idx.size(1)} tokens",
                       why=f": {idx.size(1)} tokens do not fit the context of {ctx}")
