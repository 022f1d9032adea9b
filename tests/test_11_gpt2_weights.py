"""Exercise 11: loading GPT-2 weights from Hugging Face's layout.

The learner's loader fills a trusted reference GPTModel (harness/parts/model.py) built in the
worker, which then runs. Oracles: transformers' GPT2LMHeadModel, through the tiny checkpoint,
logits and greedy continuation committed in reference/11_gpt2_tiny.* (written by
``nox -s reference``); and ``gpt_oracle.gpt2_hf``, GPT-2's forward pass written with PyTorch's
functions straight from a checkpoint's tensors, on fresh random checkpoints.
"""

import torch
from gpt_oracle import gpt2_hf, gpt2_mistake, gpt2_state_dict, random_config, read_safetensors

from harness.compare import Mistake, assert_close
from harness.draw import n
from harness.failures import LearnerError, Mismatch
from harness.impl import Part
from harness.reference import REFERENCE, load_reference

EXERCISE = "11"

# Read when the tests are collected, before any code under test runs.
CHECKPOINT = read_safetensors(REFERENCE / "11_gpt2_tiny.safetensors")


def committed():
    ref = load_reference("11_gpt2_tiny")
    c = {k.split("/", 1)[1]: int(v.reshape(-1)[0]) for k, v in ref.items() if k.startswith("config/")}
    cfg = {"vocab_size": c["vocab_size"], "context_length": c["n_positions"], "emb_dim": c["n_embd"], "n_heads": c["n_head"],
           "n_layers": c["n_layer"], "drop_rate": 0.0, "qkv_bias": True, "tie_weights": True}
    return cfg, {k: torch.from_numpy(v) for k, v in ref.items()}


def layout(gen, state_dict, prefix=None):
    """The checkpoint with or without the ``transformer.`` prefix, its keys in a fresh order."""
    prefix = bool(n(gen, 0, 1)) if prefix is None else prefix
    items = [(k if prefix else k.removeprefix("transformer."), v.clone()) for k, v in state_dict.items()]
    order = torch.randperm(len(items), generator=gen).tolist()
    return dict(items[i] for i in order)


def load_and_run(impl, cfg, state_dict, idx):
    res = impl.call("weights.load_gpt2_weights", Part("model.GPTModel", cfg), Part("checkpoint.state_dict", **state_dict),
                    then=[("__call__", (idx,), {})])
    return res.then[0]


def mistakes(idx, state_dict, heads):
    def wrong(name):
        return lambda: gpt2_hf(idx, gpt2_mistake(state_dict, name), heads)

    square = "Conv1D stores (in, out); nn.Linear wants (out, in): copy w.T. These weights are square, so a missing transpose raises no shape error."
    return [
        Mistake("the attention's Conv1D weights (c_attn and attn.c_proj) were not transposed", square, wrong("attention_not_transposed")),
        Mistake("c_attn's query, key and value weights were not transposed", square, wrong("qkv_not_transposed")),
        Mistake("attn.c_proj's weight was not transposed", square, wrong("attn_proj_not_transposed")),
        Mistake("query, key and value taken in the wrong order", "c_attn holds query, key, value in that order along its last dimension.",
                wrong("qkv_order")),
        Mistake("LayerNorm weight and bias swapped", "ln_*.weight goes to scale and ln_*.bias to shift.", wrong("norm_swapped")),
    ]


def describe(cfg, keys):
    prefixed = "with" if any(k.startswith("transformer.") for k in keys) else "without"
    return f"a GPTModel(tie_weights={cfg['tie_weights']}) loaded from a checkpoint {prefixed} the 'transformer.' prefix"


def test_logits_match_transformers(impl, gen):
    cfg, ref = committed()
    cfg["tie_weights"] = bool(n(gen, 0, 1))
    rows = torch.randperm(ref["ids"].size(0), generator=gen)
    ids, expected = ref["ids"][rows], ref["logits"][rows]
    sd = layout(gen, CHECKPOINT)
    got = load_and_run(impl, cfg, sd, ids)
    assert_close(got, expected, f"the output of {describe(cfg, sd)} (reference/11_gpt2_tiny.safetensors)",
                 oracle="transformers' GPT2LMHeadModel", atol=1e-4, rtol=1e-4, mistakes=mistakes(ids, CHECKPOINT, cfg["n_heads"]))


def test_greedy_continuation_matches_transformers(impl, gen):
    cfg, ref = committed()
    tokens, start = ref["greedy"], ref["prompt"].size(1)
    sd = layout(gen, CHECKPOINT)
    logits = load_and_run(impl, cfg, sd, tokens)
    chosen = logits[:, start - 1 : -1].argmax(-1)
    want = tokens[:, start:]
    if not torch.equal(chosen, want):
        row, step = (chosen != want).nonzero()[0].tolist()
        raise Mismatch(f"greedy decoding with {describe(cfg, sd)}: after row {row}'s first {start + step} tokens the model's most likely "
                       f"next token is {int(chosen[row, step])}, where transformers' GPT2LMHeadModel.generate chose {int(want[row, step])}")


def random_checkpoint(gen):
    cfg = random_config(gen, qkv_bias=True)
    sd = gpt2_state_dict(gen, cfg)
    if n(gen, 0, 1):  # GPT2LMHeadModel.state_dict() lists the tied head too
        sd["lm_head.weight"] = sd["transformer.wte.weight"].clone()
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 3), n(gen, 2, cfg["context_length"])), generator=gen)
    return cfg, sd, idx


def test_random_checkpoint_matches_gpt2_forward(impl, gen):
    cfg, sd, idx = random_checkpoint(gen)
    sd = layout(gen, sd)
    got = load_and_run(impl, cfg, sd, idx)
    assert_close(got, gpt2_hf(idx, sd, cfg["n_heads"]), f"the output of {describe(cfg, sd)} with {cfg['n_layers']} block(s)",
                 oracle="GPT-2's forward pass on the checkpoint's tensors", atol=1e-4, rtol=1e-4, mistakes=mistakes(idx, sd, cfg["n_heads"]))


def test_hub_layout_with_mask_buffers(impl, gen):
    """The hub's model.safetensors: no prefix, no lm_head, and (old checkpoints) each block's mask."""
    cfg, sd, idx = random_checkpoint(gen)
    sd.pop("lm_head.weight", None)
    sd = layout(gen, sd, prefix=False)
    ctx = cfg["context_length"]
    for i in range(cfg["n_layers"]):
        sd[f"h.{i}.attn.bias"] = torch.ones(ctx, ctx).tril().view(1, 1, ctx, ctx)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    got = load_and_run(impl, cfg, sd, idx)
    assert_close(got, gpt2_hf(idx, sd, cfg["n_heads"]), f"the output of {describe(cfg, sd)} holding h.N.attn.bias masks (to be ignored)",
                 oracle="GPT-2's forward pass on the checkpoint's tensors", atol=1e-4, rtol=1e-4, mistakes=mistakes(idx, sd, cfg["n_heads"]))


def test_shape_mismatch_names_the_key(impl, gen):
    cfg, sd, idx = random_checkpoint(gen)
    sd.pop("lm_head.weight", None)
    sd = layout(gen, sd)
    keys = sorted(sd)
    key = keys[n(gen, 0, len(keys) - 1)]
    bad = list(sd[key].shape)
    bad[0] += 1
    sd[key] = torch.randn(*bad, generator=gen)
    short = key.removeprefix("transformer.")
    try:
        load_and_run(impl, cfg, sd, idx)
    except LearnerError as e:
        if short in e.message:
            return
        raise Mismatch(f"loading a checkpoint whose {key} has shape {tuple(bad)} raised \"{e.message.split(' (')[0]}\", which does not "
                       f"name {key!r}: check each tensor's shape and raise ValueError naming the key and both shapes") from None
    raise Mismatch(f"a checkpoint whose {key} has shape {tuple(bad)} loaded without an error: check each tensor's shape against the "
                   "parameter it goes to and raise ValueError naming the key")
