"""Exercise 24: Llama and Qwen3 checkpoints from Hugging Face's layout.

The learner's loader fills a trusted reference ModernModel (harness/parts/modern.py) built in the
worker, which then runs. Oracles: transformers' LlamaForCausalLM and Qwen3ForCausalLM, through the
tiny checkpoints, logits and greedy continuations committed in reference/24_* (written by
``nox -s reference``); and ``gpt_oracle.modern`` on fresh random checkpoints, its tensors renamed
here from the table of Hugging Face's names. ``config_from_hf`` is checked against the same
table on random config.json dicts in both of transformers' ways of writing RoPE's theta.
"""

import torch
from gpt_oracle import modern, modern_config, modern_params, read_safetensors

from harness.compare import Mistake, assert_close_alone, expect_value_error
from harness.draw import n
from harness.failures import LearnerError, Mismatch
from harness.impl import Part
from harness.reference import REFERENCE, load_reference

EXERCISE = "24"
KINDS = ("llama", "qwen3")

# Read when the tests are collected, before any code under test runs.
CHECKPOINTS = {kind: read_safetensors(REFERENCE / f"24_{kind}_tiny.safetensors") for kind in KINDS}


def committed(kind):
    ref = load_reference("24_hf_tiny")
    cfg = {k.rsplit("/", 1)[1]: v.reshape(-1)[0].item() for k, v in ref.items() if k.startswith(f"{kind}/config/") and "/rope_scaling/" not in k}
    scaling = {k.rsplit("/", 1)[1]: v.reshape(-1)[0].item() for k, v in ref.items() if k.startswith(f"{kind}/config/rope_scaling/")}
    cfg.update(qk_norm=bool(cfg["qk_norm"]), tie_weights=bool(cfg["tie_weights"]), window=None, rope_scaling=scaling or None)
    return cfg, {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in ref.items() if k.startswith(f"{kind}/")}


def hf_names(cfg, prefix="model."):
    """The exercise's parameter name -> Hugging Face's, from the docstring's table."""
    names = {"tok_emb.weight": prefix + "embed_tokens.weight", "final_norm.weight": prefix + "norm.weight"}
    if not cfg["tie_weights"]:
        names["out_head.weight"] = "lm_head.weight"
    for i in range(cfg["n_layers"]):
        ours, theirs = f"trf_blocks.{i}.", f"{prefix}layers.{i}."
        pairs = {"norm1": "input_layernorm", "norm2": "post_attention_layernorm", "att.W_query": "self_attn.q_proj",
                 "att.W_key": "self_attn.k_proj", "att.W_value": "self_attn.v_proj", "att.out_proj": "self_attn.o_proj",
                 "ff.gate": "mlp.gate_proj", "ff.up": "mlp.up_proj", "ff.down": "mlp.down_proj"}
        if cfg["qk_norm"]:
            pairs.update({"att.q_norm": "self_attn.q_norm", "att.k_norm": "self_attn.k_norm"})
        names.update({f"{ours}{a}.weight": f"{theirs}{b}.weight" for a, b in pairs.items()})
    return names


def to_params(state_dict, cfg):
    """A Hugging Face state dict as the exercise's parameters (for the oracle)."""
    prefix = "model." if any(k.startswith("model.") for k in state_dict) else ""
    names = hf_names(cfg, prefix)
    return {ours: state_dict[theirs] for ours, theirs in names.items()}


def layout(gen, state_dict, prefix=None):
    """The checkpoint with or without the ``model.`` prefix, its keys in a fresh order."""
    prefix = bool(n(gen, 0, 1)) if prefix is None else prefix
    items = [(k if prefix else k.removeprefix("model."), v.clone()) for k, v in state_dict.items()]
    order = torch.randperm(len(items), generator=gen).tolist()
    return dict(items[i] for i in order)


def meta_permutation(w, heads):
    """transformers' conversion of Meta's interleaved q/k rows to the half-split pairing: right
    for Meta's consolidated.00.pth, wrong for a Hugging Face checkpoint."""
    out_dim, in_dim = w.shape
    return w.view(heads, out_dim // heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def mistakes(idx, params, cfg):
    def swapped(*pairs):
        def run():
            p = dict(params)
            for i in range(cfg["n_layers"]):
                for a, b in pairs:
                    a, b = f"trf_blocks.{i}.{a}.weight", f"trf_blocks.{i}.{b}.weight"
                    p[a], p[b] = params[b], params[a]
            return modern(idx, p, cfg)
        return run

    def permuted():
        p = dict(params)
        for i in range(cfg["n_layers"]):
            for name, heads in (("W_query", cfg["n_heads"]), ("W_key", cfg["n_kv_heads"])):
                key = f"trf_blocks.{i}.att.{name}.weight"
                p[key] = meta_permutation(params[key], heads)
        return modern(idx, p, cfg)

    def first_layer_everywhere():
        p = dict(params)
        for key, value in params.items():
            if key.startswith("trf_blocks.0."):
                for i in range(1, cfg["n_layers"]):
                    p[key.replace("trf_blocks.0.", f"trf_blocks.{i}.", 1)] = value
        return modern(idx, p, cfg)

    out = [
        Mistake("gate_proj and up_proj swapped", "gate_proj is ff.gate, the projection that goes through SiLU; up_proj is ff.up.",
                swapped(("ff.gate", "ff.up"))),
        Mistake("input_layernorm and post_attention_layernorm swapped",
                "input_layernorm normalises the block's input, before the attention (norm1); post_attention_layernorm comes "
                "after the attention, before the MLP (norm2).", swapped(("norm1", "norm2"))),
        Mistake("k_proj and v_proj swapped", "k_proj is att.W_key, v_proj is att.W_value.", swapped(("att.W_key", "att.W_value"))),
        Mistake("q_proj and k_proj swapped", "q_proj is att.W_query, k_proj is att.W_key.", swapped(("att.W_query", "att.W_key"))),
        Mistake("every block loaded from layers.0", "Block i takes the tensors of model.layers.{i}: build each key from the loop's "
                "index.", first_layer_everywhere),
        Mistake("q_proj and k_proj permuted as for Meta's original checkpoints",
                "Hugging Face's files are permuted already: copy q_proj and k_proj as they are.", permuted),
    ]
    if cfg["qk_norm"]:
        out.append(Mistake("q_norm and k_norm swapped", "self_attn.q_norm is att.q_norm, self_attn.k_norm is att.k_norm.",
                           swapped(("att.q_norm", "att.k_norm"))))
    if not cfg["tie_weights"]:
        out.append(Mistake("lm_head.weight ignored: the untied head took the embedding",
                           "An untied model's out_head gets lm_head.weight when the checkpoint has it.",
                           lambda: modern(idx, {**params, "out_head.weight": params["tok_emb.weight"]}, cfg)))
    return out


def load_and_run(impl, cfg, state_dict, idx):
    res = impl.call("hf_weights.load_hf_weights", Part("modern.ModernModel", cfg), Part("checkpoint.state_dict", **state_dict),
                    then=[("__call__", (idx,), {})])
    return res.then[0]


def describe(cfg, keys, kind="a"):
    prefixed = "with" if any(k.startswith("model.") for k in keys) else "without"
    extra = ", qk_norm=True" if cfg["qk_norm"] else ""
    return (f"a ModernModel(n_heads={cfg['n_heads']}, n_kv_heads={cfg['n_kv_heads']}, tie_weights={cfg['tie_weights']}{extra}) "
            f"loaded from {kind} checkpoint {prefixed} the 'model.' prefix")


def check_committed(impl, gen, kind):
    cfg, ref = committed(kind)
    rows = torch.randperm(ref["ids"].size(0), generator=gen)
    ids, expected = ref["ids"][rows], ref["logits"][rows]
    sd = layout(gen, CHECKPOINTS[kind])
    got = load_and_run(impl, cfg, sd, ids)
    model = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[kind]
    assert_close_alone(got, expected, f"the output of {describe(cfg, sd, f'reference/24_{kind}_tiny.safetensors, a')}",
                 oracle=f"transformers' {model}", atol=1e-4, rtol=1e-4, mistakes=mistakes(ids, to_params(CHECKPOINTS[kind], cfg), cfg))


def test_llama_logits_match_transformers(impl, gen):
    check_committed(impl, gen, "llama")


def test_qwen3_logits_match_transformers(impl, gen):
    check_committed(impl, gen, "qwen3")


def test_greedy_continuations_match_transformers(impl, gen):
    for kind in KINDS:
        cfg, ref = committed(kind)
        tokens, start = ref["greedy"], ref["prompt"].size(1)
        sd = layout(gen, CHECKPOINTS[kind])
        chosen = load_and_run(impl, cfg, sd, tokens)[:, start - 1 : -1].argmax(-1)
        want = tokens[:, start:]
        if not torch.equal(chosen, want):
            row, step = (chosen != want).nonzero()[0].tolist()
            raise Mismatch(f"greedy decoding with {describe(cfg, sd, f'reference/24_{kind}_tiny.safetensors, a')}: after row {row}'s "
                           f"first {start + step} tokens the model's most likely next token is {int(chosen[row, step])}, where "
                           f"transformers' generate chose {int(want[row, step])}")


def random_checkpoint(gen, **fixed):
    cfg = modern_config(gen, window=None, **fixed)
    params = modern_params(gen, cfg)
    sd = {hf: params[ours] for ours, hf in hf_names(cfg).items()}
    if cfg["tie_weights"] and n(gen, 0, 1):  # Qwen3ForCausalLM.state_dict() lists the tied head too
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    idx = torch.randint(0, cfg["vocab_size"], (n(gen, 1, 3), n(gen, 2, cfg["context_length"])), generator=gen)
    return cfg, sd, idx


def test_random_checkpoint_matches_oracle(impl, gen):
    cfg, sd, idx = random_checkpoint(gen)
    if n(gen, 0, 1):  # older checkpoints store each layer's RoPE frequencies: ignored
        for i in range(cfg["n_layers"]):
            sd[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.rand(cfg["head_dim"] // 2, generator=gen)
    sd = layout(gen, sd)
    got = load_and_run(impl, cfg, sd, idx)
    assert_close_alone(got, modern(idx, to_params(sd, cfg), cfg).float(), f"the output of {describe(cfg, sd)} with {cfg['n_layers']} block(s)",
                 oracle="the modern model's forward pass on the checkpoint's tensors, in float64", atol=1e-4, rtol=1e-4,
                 mistakes=mistakes(idx, to_params(sd, cfg), cfg))


def test_untied_model_without_lm_head_takes_the_embedding(impl, gen):
    cfg, sd, idx = random_checkpoint(gen, tie_weights=False)
    sd.pop("lm_head.weight")
    sd = layout(gen, sd)
    params = to_params({**sd, "lm_head.weight": sd[[k for k in sd if k.endswith("embed_tokens.weight")][0]]}, cfg)
    got = load_and_run(impl, cfg, sd, idx)
    assert_close_alone(got, modern(idx, params, cfg).float(), f"the output of {describe(cfg, sd)} that has no lm_head.weight",
                 oracle="the model with embed_tokens.weight as its head", atol=1e-4, rtol=1e-4)


def test_tied_model_refuses_a_different_lm_head(impl, gen):
    cfg, sd, idx = random_checkpoint(gen, tie_weights=True)
    sd["lm_head.weight"] = torch.randn(cfg["vocab_size"], cfg["emb_dim"], generator=gen)
    sd = layout(gen, sd)
    expect_value_error(lambda: load_and_run(impl, cfg, sd, idx), f"loading into {describe(cfg, sd)} an lm_head.weight that is not "
                       "embed_tokens.weight", needles=("lm_head",),
                       why=": a tied model has one matrix for both, so this checkpoint's head would be lost")


def test_leftover_tensors_are_refused(impl, gen):
    cfg, sd, idx = random_checkpoint(gen, qk_norm=False)
    i = n(gen, 0, cfg["n_layers"] - 1)
    key = f"model.layers.{i}.self_attn.q_norm.weight"  # a Qwen3 checkpoint into a model built without qk_norm
    sd[key] = torch.ones(cfg["head_dim"])
    sd = layout(gen, sd)
    short = key.removeprefix("model.")
    expect_value_error(lambda: load_and_run(impl, cfg, sd, idx), f"loading a checkpoint that holds {short} into a model without qk_norm",
                       needles=(short,), why=": a tensor the model has no place for would be lost; name it")


def test_missing_tensor_is_a_key_error(impl, gen):
    cfg, sd, idx = random_checkpoint(gen)
    keys = sorted(k for k in sd if k != "lm_head.weight")
    key = keys[n(gen, 0, len(keys) - 1)]
    del sd[key]
    sd = layout(gen, sd)
    short = key.removeprefix("model.")
    try:
        load_and_run(impl, cfg, sd, idx)
    except LearnerError as e:
        if e.message.startswith("KeyError") and short in e.message:
            return
        raise Mismatch(f"loading a checkpoint without {key} raised \"{e.message.split(' (')[0]}\"; expected a KeyError that names "
                       f"{short!r}") from None
    raise Mismatch(f"a checkpoint without {key} loaded without an error: raise KeyError naming the missing tensor")


def test_shape_mismatch_names_the_key(impl, gen):
    cfg, sd, idx = random_checkpoint(gen)
    sd = layout(gen, sd)
    if cfg["tie_weights"]:  # a tied head's mismatch is the "differs" error, checked on its own
        sd.pop("lm_head.weight", None)
    keys = sorted(sd)
    key = keys[n(gen, 0, len(keys) - 1)]
    bad = list(sd[key].shape)
    bad[0] += 1
    sd[key] = torch.randn(*bad, generator=gen)
    short = key.removeprefix("model.")
    expect_value_error(lambda: load_and_run(impl, cfg, sd, idx), f"loading a checkpoint whose {key} has shape {tuple(bad)}",
                       needles=(short,), why=": check each tensor's shape against its parameter and name the key")


# config_from_hf: the docstring's table, on random config.json dicts.
FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_heads", "n_layers", "hidden_dim", "head_dim", "qk_norm", "window",
          "theta", "eps", "tie_weights", "rope_scaling")


def random_hf_config(gen, older_format=None, own_head_dim=False):
    """A config.json and the config it stands for; ``own_head_dim``: a head_dim other than
    hidden_size // num_attention_heads (as Qwen3's), which only the file's head_dim gives."""
    kind = KINDS[n(gen, 0, 1)]
    cfg = modern_config(gen, window=None, qk_norm=kind == "qwen3", theta=[500_000.0, 1_000_000.0][n(gen, 0, 1)])
    if own_head_dim and cfg["head_dim"] * cfg["n_heads"] == cfg["emb_dim"]:
        cfg["head_dim"] += 2
    if kind == "qwen3":
        cfg["rope_scaling"] = None
    hf = {"model_type": kind, "architectures": [f"{'Llama' if kind == 'llama' else 'Qwen3'}ForCausalLM"], "vocab_size": cfg["vocab_size"],
          "max_position_embeddings": cfg["context_length"], "hidden_size": cfg["emb_dim"], "num_attention_heads": cfg["n_heads"],
          "num_key_value_heads": cfg["n_kv_heads"], "num_hidden_layers": cfg["n_layers"], "intermediate_size": cfg["hidden_dim"],
          "rms_norm_eps": cfg["eps"], "tie_word_embeddings": cfg["tie_weights"], "hidden_act": "silu", "attention_bias": False,
          "bos_token_id": n(gen, 0, 9), "eos_token_id": n(gen, 0, 9), "torch_dtype": "bfloat16", "use_cache": True,
          "initializer_range": 0.02, "attention_dropout": 0.0}
    scaling = cfg["rope_scaling"]
    if older_format if older_format is not None else n(gen, 0, 1):  # theta at the top level, the scaling apart ("rope_type" or "type")
        hf["rope_theta"] = cfg["theta"]
        hf["rope_scaling"] = None if scaling is None else {["rope_type", "type"][n(gen, 0, 1)]: "llama3", **scaling}
    else:  # transformers 5's way
        hf["rope_parameters"] = {"rope_type": "default" if scaling is None else "llama3", "rope_theta": cfg["theta"], **(scaling or {})}
    if cfg["head_dim"] * cfg["n_heads"] == cfg["emb_dim"] and n(gen, 0, 1):
        hf["head_dim"] = [None, "absent"][n(gen, 0, 1)]  # left out or null: hidden_size // heads
        if hf["head_dim"] == "absent":
            del hf["head_dim"]
    else:
        hf["head_dim"] = cfg["head_dim"]
    if kind == "qwen3":
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg["n_layers"])
    if not cfg["tie_weights"] and n(gen, 0, 1):
        del hf["tie_word_embeddings"]  # transformers' default: untied
    return cfg, hf


def read_config(impl, hf):
    res = impl.call("hf_weights.config_from_hf", hf, then=[("$attr", (f,), {}) for f in FIELDS])
    return dict(zip(FIELDS, res.then))


def test_config_from_hf(impl, gen):
    for j, older_format in enumerate((True, False, bool(n(gen, 0, 1)))):
        cfg, hf = random_hf_config(gen, older_format, own_head_dim=j == 2)  # one head_dim of its own every run
        got = read_config(impl, hf)
        wrong = [f"{f} is {got[f]!r}, expected {cfg[f]!r}" for f in FIELDS if got[f] != cfg[f]]
        if wrong:
            hints = []
            if got["theta"] != cfg["theta"]:
                hints.append("rope_theta is at the top level in older files, in rope_parameters['rope_theta'] in transformers 5's")
            if got["head_dim"] != cfg["head_dim"]:
                hints.append("head_dim comes from the file when it is there and not null, else hidden_size // num_attention_heads")
            if got["qk_norm"] != cfg["qk_norm"]:
                hints.append("qk_norm is model_type == 'qwen3'")
            if got["rope_scaling"] != cfg["rope_scaling"]:
                hints.append("rope_scaling is None for the 'default' rope_type and the dict of factor, low_freq_factor, high_freq_factor "
                             "and original_max_position_embeddings for 'llama3', read from rope_scaling or rope_parameters")
            named = theta_not_read(impl, gen, got, wrong, older_format)
            raise Mismatch(f"config_from_hf({hf}): " + "; ".join(wrong) + (".\n" + "; ".join(hints) if hints else "") + named)


def theta_not_read(impl, gen, got, wrong, older_format):
    """The name of the place theta was not read from, when theta alone is wrong and is the default
    10,000: the learner's config_from_hf is asked again with theta in the other place, so that a
    loader that reads neither is not told that it misses one."""
    if got["theta"] != 10_000.0 or any(not w.startswith("theta ") for w in wrong):
        return ""
    cfg, hf = random_hf_config(gen, not older_format)
    try:
        other = read_config(impl, hf)["theta"]
    except LearnerError:  # the learner's code failed there: no evidence either way
        return ""
    fix = "Read theta from rope_parameters['rope_theta'] when it is there, else from the top-level rope_theta, else 10,000."
    if other == cfg["theta"]:
        place = "top-level rope_theta (older files)" if older_format else "rope_theta of rope_parameters (transformers 5's files)"
        return f"\nThis looks like: the {place} not read (the default 10,000 taken). {fix}"
    if other == 10_000.0:
        return f"\nThis looks like: rope_theta never read, in either place (the default 10,000 taken). {fix}"
    return ""


REFUSED = [
    ("model_type", {"model_type": "mistral"}, "mistral"),
    ("rope_scaling", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}, "yarn"),
    ("rope_parameters", {"rope_parameters": {"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0}}, "linear"),
    ("rope_parameters", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0}}, "low_freq_factor"),
    ("attention_bias", {"attention_bias": True}, "attention_bias"),
    ("mlp_bias", {"mlp_bias": True}, "mlp_bias"),
    ("hidden_act", {"hidden_act": "gelu_pytorch_tanh"}, "hidden_act"),
    ("use_sliding_window", {"model_type": "qwen3", "use_sliding_window": True, "sliding_window": 4096}, "use_sliding_window"),
]


def test_config_from_hf_refuses_what_the_model_cannot_do(impl, gen):
    _, hf = random_hf_config(gen)
    for i in torch.randperm(len(REFUSED), generator=gen)[:4].tolist():
        key, change, needle = REFUSED[i]
        bad = {k: v for k, v in hf.items() if k not in ("rope_theta", "rope_scaling")} if key.startswith("rope_") else dict(hf)
        bad.update(change)
        expect_value_error(lambda: impl.call("hf_weights.config_from_hf", bad, then=[("$attr", ("theta",), {})]),
                           f"config_from_hf on a config.json with {key}={change[key]!r}", needles=(needle,),
                           why=": the model would load and then give other logits than the checkpoint's model")
