"""Exercise 09: the GPT model.

Oracle: ``gpt_oracle.gpt``, the model written with ``F.embedding``, the functional block,
``F.layer_norm`` and ``F.linear``, on random tiny configurations; autograd for the gradients.
The parameter counts of GPT-2 small are the published ones, which reference/11_gpt2_tiny.npz
confirms with transformers' GPT2LMHeadModel. The learner's model.py is imported with the
reference attention, LayerNorm, multi-head attention and block parts.
"""

import torch
from gpt_oracle import gpt, gpt_params, gpt_shapes, random_config, seeded

from harness.compare import Mistake, assert_close, assert_parameter_shapes, assert_true
from harness.draw import n
from harness.failures import LearnerError, Mismatch, NotStarted
from harness.reference import load_reference

EXERCISE = "09"
PARTS = ("attention", "block", "layers", "multihead")
ORACLE = "F.embedding, the reference blocks, F.layer_norm and F.linear"

GPT2_SMALL = {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12,
              "drop_rate": 0.0, "qkv_bias": True}
# Published counts of GPT-2 small: 124,439,808 with the head tied to the embedding (OpenAI's
# checkpoint as transformers builds it) and 163,037,184 untied; without query/key/value biases
# (qkv_bias=False, the book's model trained from scratch) the untied count is the book's 163,009,536.
COUNTS = {True: 124_439_808, False: 163_037_184}


def describe(cfg, idx):
    keys = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias", "tie_weights")
    return f"GPTModel({', '.join(f'{k}={cfg[k]}' for k in keys)}) on token ids of shape {tuple(idx.shape)}"


def mistakes(idx, params, cfg):
    return [
        Mistake("the position embeddings are missing", "Add self.pos_emb(torch.arange(num_tokens)) to the token embeddings.",
                lambda: gpt(idx, params, cfg, "no_positions")),
        Mistake("the final LayerNorm is missing", "Apply self.final_norm after the blocks, before out_head.",
                lambda: gpt(idx, params, cfg, "no_final_norm")),
    ]


def case(gen, **fixed):
    cfg = random_config(gen, **fixed)
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 3), n(gen, 1, cfg["context_length"])), generator=gen)
    return cfg, idx, gpt_params(gen, cfg)


def test_gpt_forward_matches_oracle(impl, gen):
    cfg, idx, params = case(gen, drop_rate=float(torch.rand(1, generator=gen)) * 0.5)
    res = impl.module("model.GPTModel", idx, init_args=(cfg,), params=params, substitute=PARTS)
    if cfg["tie_weights"] and "out_head.weight" in res.initial:
        raise Mismatch("with tie_weights=True, out_head.weight is a parameter of its own.\nThis looks like: the output head is not "
                       "tied to the token embedding. Share the parameter: self.out_head.weight = self.tok_emb.weight")
    assert_close(res.out, gpt(idx, params, cfg), f"{describe(cfg, idx)}, in eval mode", oracle=ORACLE, atol=1e-4, rtol=1e-4,
                 mistakes=mistakes(idx, params, cfg))


def test_gpt_training_dropout_on_the_embeddings_and_in_the_blocks(impl, gen):
    """Training mode, seeded: the oracle draws the same masks (the embeddings' dropout, then each
    reference block's), in the same order."""
    p = round(0.1 + 0.4 * float(torch.rand(1, generator=gen)), 3)
    cfg, idx, params = case(gen, drop_rate=p)
    seed = n(gen, 0, 2**31 - 1)
    got = impl.module("model.GPTModel", idx, init_args=(cfg,), params=params, train=True, seed=seed, substitute=PARTS).out

    def wrong(variant):
        return lambda: seeded(seed, lambda: gpt(idx, params, cfg, variant, p=p))

    assert_close(got, seeded(seed, lambda: gpt(idx, params, cfg, p=p)), f"{describe(cfg, idx)}, drop_rate={p:g}, in training mode "
                 f"after torch.manual_seed({seed})", oracle="the model with F.dropout on the embeddings and the reference blocks, "
                 "drawn from the same seed", atol=1e-4, rtol=1e-4,
                 mistakes=[
                     Mistake("the embedding dropout is missing",
                             "x = self.drop_emb(tok_embeds + pos_embeds), before the blocks: drop_emb is an nn.Dropout(drop_rate).",
                             wrong("no_embedding_dropout")),
                     Mistake("dropout on the token embeddings before the positions are added",
                             "Add the position embeddings first, then apply self.drop_emb to the sum.",
                             wrong("dropout_on_token_embeddings")),
                 ])


def test_gpt_parameters_are_named_and_shaped(impl, gen):
    for tie in (True, False):
        cfg, idx, _ = case(gen, tie_weights=tie)
        res = impl.module("model.GPTModel", idx, init_args=(cfg,), substitute=PARTS)
        got = {k: tuple(v.shape) for k, v in res.initial.items()}
        assert_parameter_shapes(got, gpt_shapes(cfg), f"GPTModel(tie_weights={tie})",
                                f"GPTModel(vocab_size={cfg['vocab_size']}, context_length={cfg['context_length']}, emb_dim={cfg['emb_dim']})",
                                tie=tie)
        want_out = (*idx.shape, cfg["vocab_size"])
        assert_true(tuple(res.out.shape) == want_out, f"the logits for token ids of shape {tuple(idx.shape)} have shape "
                                                      f"{tuple(res.out.shape)}, expected (batch, num_tokens, vocab_size) = {want_out}")


def test_gpt2_small_parameter_counts(impl):
    ref = load_reference("11_gpt2_tiny")
    for tie in (True, False):
        published = COUNTS[tie]
        assert int(ref[f"params_124M_{'tied' if tie else 'untied'}"].reshape(-1)[0]) == published, "reference/11_gpt2_tiny.npz disagrees"
        cfg = dict(GPT2_SMALL, tie_weights=tie)
        try:  # built on the meta device: 124M parameters counted without allocating them
            got = impl.call("model.GPTModel", cfg, substitute=PARTS, device="meta", then=[("num_parameters", (), {})]).then[0]
        except NotStarted:
            raise
        except LearnerError:  # code that cannot run on the meta device: count on the CPU
            got = impl.call("model.GPTModel", cfg, substitute=PARTS, then=[("num_parameters", (), {})]).then[0]
        if got != published:
            hint = ""
            if tie and got == COUNTS[False]:
                hint = " That is the untied count: the output head has a weight of its own. Share it: self.out_head.weight = self.tok_emb.weight."
            elif got - published == 50257 * 768:
                hint = " The difference is one vocab_size x emb_dim matrix: the head is not tied, or counted twice."
            elif published - got == 3 * 768 * 12:
                hint = " The difference is the query/key/value biases: pass qkv_bias=cfg.qkv_bias to the attention."
            raise Mismatch(f"GPTModel for GPT-2 small (124M, tie_weights={tie}) has {got:,} parameters; GPT-2 small has {published:,}.{hint}")


def test_gpt_rejects_input_longer_than_context(impl, gen):
    cfg, _, _ = case(gen)
    ctx = cfg["context_length"]
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 2), ctx + n(gen, 1, 5)), generator=gen)
    try:
        impl.module("model.GPTModel", idx, init_args=(cfg,), substitute=PARTS)
    except LearnerError as e:
        if e.message.startswith("ValueError"):
            return
        raise Mismatch(f"GPTModel(context_length={ctx}) on {idx.size(1)} tokens raised {e.message.split(' (')[0]}; expected a ValueError "
                       f"that says {idx.size(1)} tokens do not fit the context of {ctx} (check before the position embedding)") from None
    raise Mismatch(f"GPTModel(context_length={ctx}) accepted {idx.size(1)} tokens: raise ValueError when num_tokens > context_length")


def test_gpt_backward_reaches_every_parameter(impl, gen):
    cfg, idx, params = case(gen)
    g = torch.randn(*idx.shape, cfg["vocab_size"], generator=gen)
    res = impl.module("model.GPTModel", idx, init_args=(cfg,), params=params, grad_output=g, substitute=PARTS)
    pp = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    gpt(idx, pp, cfg).backward(g)
    assert_close(res.out, gpt(idx, params, cfg), describe(cfg, idx), oracle=ORACLE, atol=1e-4, rtol=1e-4, mistakes=mistakes(idx, params, cfg))
    for name in ("tok_emb.weight", "pos_emb.weight", "final_norm.scale", "out_head.weight"):
        if name in pp:
            assert_close(res.param_grads[name], pp[name].grad, f"the gradient with respect to {name}", oracle="autograd through the oracle",
                         atol=1e-4, rtol=1e-3)
