"""Exercise 08: the feed-forward network and the pre-LayerNorm transformer block.

Oracle: ``gpt_oracle.block`` and ``gpt_oracle.feed_forward``, written with ``F.layer_norm``,
``F.gelu(approximate="tanh")``, ``F.linear`` and ``F.scaled_dot_product_attention``; autograd for
the gradients. The learner's block.py is imported with the reference attention, LayerNorm and
multi-head attention parts, so only the block's own wiring is graded.
"""

import torch
from gpt_oracle import block, block_params, feed_forward, seeded

from harness.compare import Mistake, assert_close, assert_gradients_close, assert_true, autograd_through
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "08"
PARTS = ("attention", "layers", "multihead")
ORACLE = "a pre-norm block of F.layer_norm, F.scaled_dot_product_attention and F.gelu"


def config(gen, drop_rate=0.0):
    heads = n(gen, 1, 4)
    return {"vocab_size": 11, "context_length": n(gen, 2, 10), "emb_dim": heads * n(gen, 2, 6), "n_heads": heads,
            "n_layers": 1, "drop_rate": drop_rate, "qkv_bias": bool(n(gen, 0, 1)), "tie_weights": True}


def inputs(gen, cfg, rows=None):
    return torch.randn(rows or n(gen, 1, 3), n(gen, 1, cfg["context_length"]), cfg["emb_dim"], generator=gen) * 2 + 0.5


def block_mistakes(x, params, heads):
    def wrong(variant):
        return lambda: block(x, params, heads, variant)

    return [
        Mistake("post-norm instead of pre-norm",
                "GPT-2 normalises the input of each branch: x = x + drop_shortcut(att(norm1(x))), not norm1(x + att(x)).", wrong("post_norm")),
        Mistake("missing residual connections", "Add each branch's output back to its input: x = x + drop_shortcut(...).", wrong("no_residual")),
        Mistake("the attention branch has no residual connection", "x = x + self.drop_shortcut(self.att(self.norm1(x))).",
                wrong("no_attention_residual")),
        Mistake("the feed-forward branch has no residual connection", "x = x + self.drop_shortcut(self.ff(self.norm2(x))).",
                wrong("no_feed_forward_residual")),
        Mistake("the shortcut carries norm(x) instead of x", "Keep the block's input for the shortcut: shortcut = x, before norm1.",
                wrong("residual_after_norm")),
        Mistake("norm1 and norm2 swapped", "norm1 comes before att, norm2 before ff.", wrong("norms_swapped")),
    ]


def describe(cfg, x):
    return (f"TransformerBlock(emb_dim={cfg['emb_dim']}, n_heads={cfg['n_heads']}, qkv_bias={cfg['qkv_bias']}, "
            f"drop_rate={cfg['drop_rate']:.2g}) on x of shape {tuple(x.shape)}")


def test_feedforward_matches_oracle(impl, gen):
    cfg = config(gen)
    x = inputs(gen, cfg)
    params = {k.removeprefix("ff."): v for k, v in block_params(gen, cfg["emb_dim"], False).items() if k.startswith("ff.")}
    res = impl.module("block.FeedForward", x, init_args=(cfg,), params=params, substitute=PARTS)
    assert_true(set(res.initial) == set(params),
                f"FeedForward's parameters are {sorted(res.initial)}; expected {sorted(params)} (layers = nn.Sequential(Linear, GELU, Linear))")
    assert_close(res.out, feed_forward(x, params), f"FeedForward(emb_dim={cfg['emb_dim']}) on x of shape {tuple(x.shape)}",
                 oracle='Linear, F.gelu(approximate="tanh"), Linear',
                 mistakes=[Mistake("ReLU instead of GELU", "GPT-2 uses GELU (from .layers import GELU).", lambda: feed_forward(x, params, "relu")),
                           Mistake("no activation between the linear layers", "Put GELU() between the two nn.Linear layers.",
                                   lambda: feed_forward(x, params, "no_activation"))])


def test_block_matches_oracle(impl, gen):
    cfg = config(gen, drop_rate=float(torch.rand(1, generator=gen)) * 0.5)
    x = inputs(gen, cfg)
    params = block_params(gen, cfg["emb_dim"], cfg["qkv_bias"])
    res = impl.module("block.TransformerBlock", x, init_args=(cfg,), params=params, substitute=PARTS)
    assert_true(set(res.initial) == set(params),
                f"TransformerBlock's parameters are {sorted(res.initial)}; expected {sorted(params)} (attributes att, ff, norm1, norm2; "
                f"qkv_bias={cfg['qkv_bias']} from the config)")
    assert_close(res.out, block(x, params, cfg["n_heads"]), f"{describe(cfg, x)}, in eval mode", oracle=ORACLE,
                 mistakes=block_mistakes(x, params, cfg["n_heads"]))


def test_block_backward_matches_autograd(impl, gen):
    cfg = config(gen)
    x = inputs(gen, cfg)
    params = block_params(gen, cfg["emb_dim"], cfg["qkv_bias"])
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("block.TransformerBlock", x, init_args=(cfg,), params=params, grad_output=g, grad_wrt=(0,), substitute=PARTS)
    out, x_grad, param_grads = autograd_through(lambda xx, pp: block(xx, pp, cfg["n_heads"]), x, params, g)
    assert_close(res.out, out, describe(cfg, x), oracle=ORACLE, mistakes=block_mistakes(x, params, cfg["n_heads"]))
    assert_gradients_close(res, x_grad, param_grads)


def test_block_eval_mode_has_no_dropout(impl, gen):
    cfg = config(gen, drop_rate=0.5)
    x = inputs(gen, cfg, rows=6)
    params = block_params(gen, cfg["emb_dim"], cfg["qkv_bias"])
    expected = block(x, params, cfg["n_heads"])
    first = impl.module("block.TransformerBlock", x, init_args=(cfg,), params=params, substitute=PARTS).out
    second = impl.module("block.TransformerBlock", x, init_args=(cfg,), params=params, substitute=PARTS).out
    if not torch.equal(first, second):
        raise Mismatch("two identical calls in eval mode gave different outputs: dropout is active in eval. Use nn.Dropout modules "
                       "(self.drop_shortcut), which model.eval() switches off, not F.dropout(..., training=True)")
    assert_close(first, expected, f"{describe(cfg, x)}, in eval mode (dropout off)", oracle=ORACLE,
                 mistakes=block_mistakes(x, params, cfg["n_heads"]))


def test_block_training_dropout_on_each_branch_output(impl, gen):
    """Training mode, seeded: the oracle draws the same masks (the attention's own, then the
    shortcut dropout after attention and after the feed-forward), in that order."""
    p = round(0.1 + 0.4 * float(torch.rand(1, generator=gen)), 3)
    cfg = config(gen, drop_rate=p)
    x = inputs(gen, cfg, rows=3)
    params = block_params(gen, cfg["emb_dim"], cfg["qkv_bias"])
    heads, seed = cfg["n_heads"], n(gen, 0, 2**31 - 1)
    got = impl.module("block.TransformerBlock", x, init_args=(cfg,), params=params, train=True, seed=seed, substitute=PARTS).out

    def wrong(variant):
        return lambda: seeded(seed, lambda: block(x, params, heads, variant, p=p))

    assert_close(got, seeded(seed, lambda: block(x, params, heads, p=p)),
                 f"{describe(cfg, x)} in training mode, after torch.manual_seed({seed})",
                 oracle="the pre-norm block with F.dropout on each branch's output, drawn from the same seed",
                 mistakes=[
                     Mistake("the shortcut dropout is never applied",
                             "x = x + self.drop_shortcut(branch): drop_shortcut is an nn.Dropout(drop_rate), active in training mode.",
                             wrong("no_shortcut_dropout")),
                     Mistake("dropout on the sum x + branch instead of on the branch",
                             "Drop only the branch's output, then add: x = x + self.drop_shortcut(self.att(self.norm1(x))).",
                             wrong("dropout_after_residual")),
                     Mistake("dropout on the branch's input instead of its output",
                             "x = x + self.drop_shortcut(self.att(self.norm1(x))): dropout comes after the branch.",
                             wrong("dropout_on_branch_input")),
                 ])


def test_block_keeps_shape_for_every_length(impl, gen):
    cfg = config(gen)
    params = block_params(gen, cfg["emb_dim"], cfg["qkv_bias"])
    for t in sorted({1, cfg["context_length"], n(gen, 1, cfg["context_length"])}):
        x = torch.randn(2, t, cfg["emb_dim"], generator=gen)
        res = impl.module("block.TransformerBlock", x, init_args=(cfg,), params=params, substitute=PARTS)
        assert_close(res.out, block(x, params, cfg["n_heads"]), f"{describe(cfg, x)} ({t} of {cfg['context_length']} positions)",
                     oracle=ORACLE, mistakes=block_mistakes(x, params, cfg["n_heads"]))
