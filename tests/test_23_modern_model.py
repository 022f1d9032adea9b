"""Exercise 23: the modern decoder (Llama 3, Qwen3): ModernBlock and ModernModel.

Oracle: ``gpt_oracle.modern``, the model written with ``F.embedding``, ``F.rms_norm``, the
functional grouped-query attention of exercise 22's checks, ``F.silu`` and ``F.linear``, in
float64, on random tiny configurations; autograd for the gradients. The presets' parameter counts
are transformers' LlamaForCausalLM and Qwen3ForCausalLM built on the meta device
(reference/23_modern_presets.npz). The learner's modern.py is imported with the reference RMSNorm,
RoPE, SwiGLU and grouped-query attention parts, so mistakes in 19-22 cost this exercise nothing.
"""

import torch
from gpt_oracle import modern, modern_block, modern_config, modern_params, modern_shapes, sub

from harness.compare import Mistake, assert_close_alone, assert_parameter_shapes, assert_true, autograd_through, expect_value_error
from harness.draw import n
from harness.failures import LearnerError, Mismatch, NotStarted
from harness.reference import load_reference

EXERCISE = "23"
PARTS = ("rmsnorm", "rope", "swiglu", "gqa")
ORACLE = "F.embedding, F.rms_norm, grouped-query attention with RoPE, SwiGLU and F.linear, in float64"

# The published configurations (config.json on the Hugging Face hub), in ModernConfig's names.
PRESETS = {
    "llama3.2-1b": {"vocab_size": 128_256, "context_length": 131_072, "emb_dim": 2048, "n_heads": 32, "n_kv_heads": 8, "n_layers": 16,
                    "hidden_dim": 8192, "head_dim": 64, "qk_norm": False, "window": None, "theta": 500_000.0, "eps": 1e-5,
                    "tie_weights": True, "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 8192}},
    "qwen3-0.6b": {"vocab_size": 151_936, "context_length": 40_960, "emb_dim": 1024, "n_heads": 16, "n_kv_heads": 8, "n_layers": 28,
                   "hidden_dim": 3072, "head_dim": 128, "qk_norm": True, "window": None, "theta": 1_000_000.0, "eps": 1e-6,
                   "tie_weights": True, "rope_scaling": None},
}
# What the model cards say, rounded: Llama 3.2 1B "1.23B" (1.24B on the hub's page), Qwen3-0.6B
# "0.6B" with "0.44B" non-embedding. The exact counts come from transformers (reference/).
PUBLISHED = {"llama3.2-1b": (1.23e9, 1.24e9), "qwen3-0.6b": (0.595e9, 0.605e9)}
PUBLISHED_NON_EMBEDDING = {"qwen3-0.6b": (0.435e9, 0.445e9)}


def describe(cfg, idx=None):
    keys = ("vocab_size", "emb_dim", "n_heads", "n_kv_heads", "n_layers", "hidden_dim", "head_dim", "qk_norm", "window", "eps", "tie_weights")
    shape = f" on token ids of shape {tuple(idx.shape)}" if idx is not None else ""
    return f"ModernModel({', '.join(f'{k}={cfg[k]}' for k in keys)}){shape}"


def block_mistakes(wrong):
    """The block's known mistakes; ``wrong(variant)`` computes one's output."""
    return [
        Mistake("the residual connections are missing", "Each branch adds to its input: x = x + self.att(self.norm1(x)).", wrong("no_residual")),
        Mistake("post-norm: the residual stream normalised after each branch",
                "Llama and Qwen3 are pre-norm: normalise the branch's input, x + att(norm1(x)), never the sum.", wrong("post_norm")),
        Mistake("norm1 used before both branches", "The feed-forward reads norm2(x), a norm of its own.", wrong("one_norm")),
        Mistake("parallel branches: the feed-forward reads the block's input, not the attention's output",
                "Sequential: x = x + att(norm1(x)), then x = x + ff(norm2(x)) on that new x.", wrong("parallel")),
        Mistake("the attention's residual connection is missing", "Add the attention's output to its input: x = x + "
                "self.att(self.norm1(x)).", wrong("no_attention_residual")),
        Mistake("the feed-forward's residual connection is missing", "Add the feed-forward's output to its input: x + "
                "self.ff(self.norm2(x)).", wrong("no_feed_forward_residual")),
        Mistake("norm1 and norm2 swapped", "norm1 comes before the attention, norm2 before the feed-forward.", wrong("norms_swapped")),
        Mistake("the residual carries the normalised x, not x", "Normalise a copy for the branch only: x = x + "
                "self.att(self.norm1(x)), never x = self.norm1(x).", wrong("residual_after_norm")),
        Mistake("the residual carries the normalised x, not x", "Normalise a copy for the branch only: x = x + "
                "self.att(self.norm1(x)), never x = self.norm1(x).", wrong("residual_after_norm1")),
        Mistake("eps not passed to the RMSNorms (their default 1e-6 used)", "Build each norm with the config's eps: "
                "RMSNorm(cfg.emb_dim, cfg.eps).", wrong("default_eps")),
    ]


def config_mistakes(run, cfg):
    """A field of the config not passed to the attention: ``run(changed_cfg)`` computes the output."""
    out = [Mistake("theta not passed to the attention (RoPE's default 10,000 used)", "GroupedQueryAttention(..., cfg.theta, ...): "
                   "the base comes from the config.", lambda: run({**cfg, "theta": 10_000.0}))]
    if cfg["window"] is not None:
        out.append(Mistake("the window not passed to the attention", "GroupedQueryAttention(..., cfg.window, ...): Mistral's "
                           "sliding window comes from the config.", lambda: run({**cfg, "window": None})))
    return out


def mistakes(idx, params, cfg):
    def wrong(variant):
        return lambda: modern(idx, params, cfg, variant)

    scaled = [Mistake("rope_scaling not passed to the attention", "GroupedQueryAttention(..., cfg.eps, cfg.rope_scaling): Llama 3.1's "
                      "frequencies come from the config.", lambda: modern(idx, params, {**cfg, "rope_scaling": None}))] if cfg["rope_scaling"] else []
    return block_mistakes(wrong) + scaled + config_mistakes(lambda changed: modern(idx, params, changed), cfg) + [
        Mistake("only the first block applied", "Run every block in order: x = self.trf_blocks(x).", wrong("first_block_only")),
        Mistake("the final RMSNorm is missing", "Apply self.final_norm after the blocks, before out_head.", wrong("no_final_norm")),
        Mistake("the embeddings scaled by sqrt(emb_dim) (Gemma's convention)", "Llama and Qwen3 feed tok_emb(in_idx) to the blocks as it is.",
                wrong("scaled_embedding")),
    ]


def case(gen, min_tokens=1, **fixed):
    cfg = modern_config(gen, **fixed)
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 3), n(gen, min_tokens, cfg["context_length"])), generator=gen)
    return cfg, idx, modern_params(gen, cfg)


def test_modern_block_matches_oracle(impl, gen):
    cfg, _, params = case(gen, n_layers=1, tie_weights=True)
    p = sub(params, "trf_blocks.0.")
    x = torch.randn(n(gen, 1, 3), n(gen, 2, 10), cfg["emb_dim"], generator=gen)
    res = impl.module("modern.ModernBlock", x, init_args=(cfg,), params=p, substitute=PARTS)

    def wrong(variant):
        return lambda: modern_block(x, p, cfg, variant)

    assert_close_alone(res.out, modern_block(x, p, cfg).float(), f"ModernBlock({describe(cfg)[12:-1]}) on x of shape {tuple(x.shape)}",
                 oracle="pre-norm RMSNorm, grouped-query attention and SwiGLU, in float64", atol=1e-4, rtol=1e-4,
                 mistakes=block_mistakes(wrong) + config_mistakes(lambda changed: modern_block(x, p, changed), cfg))


def test_modern_model_matches_oracle(impl, gen):
    cfg, idx, params = case(gen, rope_scaling={"factor": [4.0, 8.0, 32.0][n(gen, 0, 2)], "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": n(gen, 8, 32)}, min_tokens=4,
                              window=[None, n(gen, 3, 6)][n(gen, 0, 1)])  # Llama 3.1's scaling, where it shows
    res = impl.module("modern.ModernModel", idx, init_args=(cfg,), params=params, substitute=PARTS)
    if cfg["tie_weights"] and "out_head.weight" in res.initial:
        raise Mismatch("with tie_weights=True, out_head.weight is a parameter of its own.\nThis looks like: the output head is not "
                       "tied to the token embedding. Share the parameter: self.out_head.weight = self.tok_emb.weight")
    assert_close_alone(res.out, modern(idx, params, cfg).float(), describe(cfg, idx), oracle=ORACLE, atol=1e-4, rtol=1e-4,
                 mistakes=mistakes(idx, params, cfg))


def unexpected_parameters(missing, extra):
    """The known mistakes a ModernModel's parameter names show."""
    if any(k.endswith("bias") for k in extra):
        return "biases. Llama's and Qwen3's projections have none (bias=False)."
    if any("pos_emb" in k for k in extra):
        return "a position embedding. RoPE places the tokens inside the attention; the model has none."
    if missing and all(k.endswith(("q_norm.weight", "k_norm.weight")) for k in missing):
        return "qk_norm was not passed to the attention (GroupedQueryAttention(..., cfg.qk_norm, ...))."
    return ""


def test_modern_parameters_are_named_and_shaped(impl, gen):
    for tie in (True, False):
        cfg, idx, _ = case(gen, tie_weights=tie, qk_norm=True)
        res = impl.module("modern.ModernModel", idx, init_args=(cfg,), substitute=PARTS)
        got = {k: tuple(v.shape) for k, v in res.initial.items()}
        assert_parameter_shapes(got, modern_shapes(cfg), f"ModernModel(tie_weights={tie}, qk_norm=True)", describe(cfg), tie=tie,
                                explain=unexpected_parameters)
        want_out = (*idx.shape, cfg["vocab_size"])
        assert_true(tuple(res.out.shape) == want_out, f"the logits for token ids of shape {tuple(idx.shape)} have shape "
                                                      f"{tuple(res.out.shape)}, expected (batch, num_tokens, vocab_size) = {want_out}")


def test_modern_backward_reaches_every_parameter(impl, gen):
    cfg, idx, params = case(gen)
    g = torch.randn(*idx.shape, cfg["vocab_size"], generator=gen)
    res = impl.module("modern.ModernModel", idx, init_args=(cfg,), params=params, grad_output=g, substitute=PARTS)
    out, _, grads = autograd_through(lambda _, pp: modern(idx, pp, cfg).float(), torch.zeros(1), params, g)
    assert_close_alone(res.out, out, describe(cfg, idx), oracle=ORACLE, atol=1e-4, rtol=1e-4, mistakes=mistakes(idx, params, cfg))
    for name, want in grads.items():
        assert_close_alone(res.param_grads[name], want, f"{describe(cfg, idx)}: the gradient with respect to {name}",
                     oracle="autograd through the oracle", atol=1e-4, rtol=1e-3)


def _count(impl, cfg):
    try:  # built on the meta device: a billion parameters counted without allocating them
        return impl.call("modern.ModernModel", cfg, substitute=PARTS, device="meta", then=[("num_parameters", (), {})]).then[0]
    except NotStarted:
        raise
    except LearnerError as e:
        raise Mismatch(f"ModernModel could not be built on the meta device (torch.device('meta')): {e.message}\nBuild every parameter "
                       "with nn.Embedding, nn.Linear and the norms' nn.Parameter, and nothing that reads their values in __init__.") from None


def test_presets_have_the_published_parameter_counts(impl):
    ref = load_reference("23_modern_presets")
    for preset, cfg in PRESETS.items():
        want = int(ref[f"params/{preset}"].reshape(-1)[0])
        low, high = PUBLISHED[preset]
        assert low <= want <= high, f"reference/23_modern_presets.npz: {preset} has {want:,} parameters, outside the published {low:,.0f}-{high:,.0f}"
        if preset in PUBLISHED_NON_EMBEDDING:
            low, high = PUBLISHED_NON_EMBEDDING[preset]
            assert low <= int(ref[f"params_without_embedding/{preset}"].reshape(-1)[0]) <= high, "reference/23_modern_presets.npz disagrees"
        got = _count(impl, cfg)
        if got != want:
            e, v, d = cfg["emb_dim"], cfg["vocab_size"], cfg["head_dim"]
            diff, layers = got - want, cfg["n_layers"]
            hints = {v * e: " The difference is one vocab_size x emb_dim matrix: the head is not tied to the embedding.",
                     -2 * d * layers: " The difference is the QK-norms' weights: pass qk_norm to the attention.",
                     2 * d * layers: " The difference is QK-norms' weights that this model does not have.",
                     2 * layers * (cfg["n_heads"] - cfg["n_kv_heads"]) * d * e:
                         " The difference is the keys' and values' projections: give them n_kv_heads heads, not n_heads."}
            hint = hints.get(diff, "")
            raise Mismatch(f"ModernModel for {preset} ({describe(cfg)}) has {got:,} parameters; transformers' model of the published "
                           f"configuration has {want:,}.{hint}")


def test_modern_rejects_input_longer_than_context(impl, gen):
    cfg, _, _ = case(gen)
    ctx = cfg["context_length"]
    full = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 2), ctx), generator=gen)  # the boundary, always: exactly ctx tokens fit
    try:
        impl.module("modern.ModernModel", full, init_args=(cfg,), substitute=PARTS)
    except LearnerError as e:
        if not e.message.startswith("ValueError"):
            raise
        raise Mismatch(f"ModernModel(context_length={ctx}) refused exactly {ctx} tokens: {e.message}\nThis looks like: the "
                       "context check off by one (num_tokens >= context_length). Refuse only num_tokens > context_length: "
                       "a full context fits.") from None
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 2), ctx + n(gen, 1, 5)), generator=gen)
    expect_value_error(lambda: impl.module("modern.ModernModel", idx, init_args=(cfg,), substitute=PARTS),
                       f"ModernModel(context_length={ctx}) on {idx.size(1)} tokens", needles=(idx.size(1), ctx),
                       why=": say how many tokens came and how many fit")
