"""Exercise 24: load Llama and Qwen3 checkpoints in Hugging Face's layout into a ModernModel (the
modern-architecture track)."""

import torch

from .config import ModernConfig

SUPPORTED = ("llama", "qwen3")
# The four numbers of Llama 3.1's RoPE scaling, by their names in config.json.
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
# Older checkpoints also store each layer's RoPE frequencies; the model computes its own.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_hf_weights(model, state_dict: dict[str, torch.Tensor]):
    """Copy a Llama or Qwen3 checkpoint in Hugging Face's layout into ``model``, a
    ``ModernModel``; return ``model``.

    The checkpoint's names (``[model.]``: the prefix is there in ``LlamaForCausalLM`` and
    ``Qwen3ForCausalLM``, not in a bare ``LlamaModel``), for block ``i``:

    ==================================================  =====================================
    checkpoint                                          model
    ==================================================  =====================================
    ``[model.]embed_tokens.weight``                     ``tok_emb.weight``
    ``layers.i.input_layernorm.weight``                 ``trf_blocks[i].norm1.weight``
    ``layers.i.self_attn.q_proj.weight``                ``att.W_query.weight``
    ``layers.i.self_attn.k_proj.weight``                ``att.W_key.weight``
    ``layers.i.self_attn.v_proj.weight``                ``att.W_value.weight``
    ``layers.i.self_attn.o_proj.weight``                ``att.out_proj.weight``
    ``layers.i.self_attn.q_norm.weight`` (Qwen3)        ``att.q_norm.weight``
    ``layers.i.self_attn.k_norm.weight`` (Qwen3)        ``att.k_norm.weight``
    ``layers.i.post_attention_layernorm.weight``        ``norm2.weight`` (before the MLP)
    ``layers.i.mlp.gate_proj.weight``                   ``ff.gate.weight`` (through SiLU)
    ``layers.i.mlp.up_proj.weight``                     ``ff.up.weight``
    ``layers.i.mlp.down_proj.weight``                   ``ff.down.weight``
    ``[model.]norm.weight``                             ``final_norm.weight``
    ``lm_head.weight``, optional                        ``out_head.weight``
    ==================================================  =====================================

    Every weight is ``nn.Linear``'s ``(out, in)`` already: no transposes, unlike GPT-2. Nor does a
    Hugging Face checkpoint need RoPE's q/k permutation: Meta's original Llama files
    (``consolidated.00.pth``) rotate neighbouring features ``(2i, 2i + 1)``, and transformers'
    conversion script permutes the rows of ``wq`` and ``wk`` once, per head, so that the
    half-split ``rotate_half`` pairing gives the same attention. Loading Meta's own files would
    need that permutation; applying it to a Hugging Face file scrambles every head.

    ``lm_head.weight``: a tied model (``tie_weights``) shares it with the embedding, so a
    checkpoint's ``lm_head.weight`` must equal ``embed_tokens.weight`` (checkpoints of tied models
    often leave it out); an untied model without one in the checkpoint takes ``embed_tokens``'.
    ``*.rotary_emb.inv_freq`` buffers of older checkpoints are ignored.

    Values are copied into the model's existing parameters (under ``torch.no_grad()``), so the
    model keeps its dtype, device and tied weights.

    Raises:
        KeyError: when the checkpoint lacks a tensor the model needs (the message names it).
        ValueError: when a tensor's shape differs from what the model needs (the message names
            the checkpoint's key and both shapes), when the checkpoint holds tensors the model has
            no place for (Qwen3's norms in a model without ``qk_norm``, more layers), or when a tied
            model meets an ``lm_head.weight`` that differs from the embedding.
    """
    # BEGIN SOLUTION 24: map each tensor to its parameter (no transposes), check shapes, handle the head, refuse leftovers
    prefix = "model." if any(k.startswith("model.") for k in state_dict) else ""
    used = set()

    def take(key: str, param: torch.Tensor, key_prefix: str = prefix) -> None:
        key = key_prefix + key
        if key not in state_dict:
            raise KeyError(f"the checkpoint has no {key!r}")
        value = state_dict[key]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{key} has shape {tuple(value.shape)} in the checkpoint, but the model needs {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(value)
        used.add(key)

    # Each weight is (out_features, in_features) in both layouts, nn.Linear's, so none is transposed.
    take("embed_tokens.weight", model.tok_emb.weight)  # (vocab_size, emb_dim)
    for i, block in enumerate(model.trf_blocks):
        layer, att = f"layers.{i}.", block.att
        take(layer + "input_layernorm.weight", block.norm1.weight)  # (emb_dim,)
        # q_proj (n_heads * head_dim, emb_dim); k_proj, v_proj (n_kv_heads * head_dim, emb_dim); o_proj (emb_dim, n_heads * head_dim)
        for name, linear in (("q_proj", att.W_query), ("k_proj", att.W_key), ("v_proj", att.W_value), ("o_proj", att.out_proj)):
            take(f"{layer}self_attn.{name}.weight", linear.weight)
        if att.q_norm is not None:  # Qwen3's per-head norms of queries and keys: (head_dim,) each
            take(layer + "self_attn.q_norm.weight", att.q_norm.weight)
            take(layer + "self_attn.k_norm.weight", att.k_norm.weight)
        take(layer + "post_attention_layernorm.weight", block.norm2.weight)  # (emb_dim,)
        # gate_proj, up_proj (hidden_dim, emb_dim); down_proj (emb_dim, hidden_dim)
        for name, linear in (("gate_proj", block.ff.gate), ("up_proj", block.ff.up), ("down_proj", block.ff.down)):
            take(f"{layer}mlp.{name}.weight", linear.weight)
    take("norm.weight", model.final_norm.weight)  # (emb_dim,)
    tied = model.out_head.weight is model.tok_emb.weight
    if "lm_head.weight" in state_dict:
        head = state_dict["lm_head.weight"]
        if tied:
            if not torch.equal(head, state_dict[prefix + "embed_tokens.weight"]):
                raise ValueError("the checkpoint's lm_head.weight differs from embed_tokens.weight, but the model ties its head to "
                                 "the embedding: build it with tie_weights=False")
            used.add("lm_head.weight")
        else:
            take("lm_head.weight", model.out_head.weight, key_prefix="")  # (vocab_size, emb_dim); the head sits outside model.
    elif not tied:
        take("embed_tokens.weight", model.out_head.weight)
    unused = sorted(k for k in set(state_dict) - used if not k.endswith(IGNORED_SUFFIXES))
    if unused:
        raise ValueError(f"the model has no place for {len(unused)} tensor(s) of the checkpoint: {', '.join(unused[:5])}")
    return model
    # END SOLUTION


def config_from_hf(hf: dict) -> ModernConfig:
    """The ``ModernConfig`` of a Hugging Face ``config.json`` (as a dict) of a Llama or Qwen3 model.

    =================================================  ======================================
    config.json                                        ModernConfig
    =================================================  ======================================
    ``vocab_size``                                     ``vocab_size``
    ``max_position_embeddings``                        ``context_length``
    ``hidden_size``                                    ``emb_dim``
    ``num_attention_heads``                            ``n_heads``
    ``num_key_value_heads`` (absent: the heads)        ``n_kv_heads``
    ``num_hidden_layers``                              ``n_layers``
    ``intermediate_size``                              ``hidden_dim``
    ``head_dim`` (absent or null: hidden / heads)      ``head_dim``
    ``rope_theta``, or ``rope_parameters.rope_theta``  ``theta`` (10,000 when neither is there)
    ``rms_norm_eps``                                   ``eps``
    ``tie_word_embeddings`` (absent: false)            ``tie_weights``
    ``model_type`` "qwen3"                             ``qk_norm=True`` ("llama": False)
    ``rope_type`` "llama3" and its four numbers        ``rope_scaling`` (else None)
    =================================================  ======================================

    Older files give ``rope_theta`` at the top level and the scaling apart, in ``rope_scaling``
    (``{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192}``, the type sometimes under ``"type"``);
    transformers 5 writes both in ``rope_parameters`` (``{"rope_type": "llama3", "rope_theta":
    500000.0, "factor": 32.0, ...}``). ``rope_scaling`` is the dict of the four numbers, as
    ``rope.llama3_frequencies`` takes them. No sliding window (``window=None``). Keys not in the
    table are ignored.

    Raises:
        ValueError, naming the key and its value, for what this model cannot reproduce:
            a ``model_type`` other than "llama" or "qwen3"; a ``rope_type`` other than "default"
            and "llama3" ("linear", "dynamic", "yarn", ...), or a "llama3" one that lacks one of
            its four numbers; ``attention_bias`` or ``mlp_bias`` true; a ``hidden_act`` other
            than "silu"; Qwen3's ``use_sliding_window`` true.
    """
    # BEGIN SOLUTION 24: refuse what the model cannot reproduce, then map each key (RoPE's numbers in either place)
    kind = hf.get("model_type")
    if kind not in SUPPORTED:
        raise ValueError(f"model_type {kind!r} is not supported: only {' and '.join(SUPPORTED)}")
    rope = {**(hf.get("rope_parameters") or {}), **(hf.get("rope_scaling") or {})}  # older files: the scaling apart
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        missing = [k for k in LLAMA3_KEYS if k not in rope]
        if missing:
            raise ValueError(f"rope_type 'llama3' needs {', '.join(LLAMA3_KEYS)}; this config.json lacks {', '.join(missing)}")
        scaling = {k: rope[k] for k in LLAMA3_KEYS}
    elif rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} is not supported: only 'default' and 'llama3' (Llama 3.1's frequency scaling)")
    for key in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if hf.get(key):
            raise ValueError(f"{key}={hf[key]!r} is not supported: the model has no biases and no sliding window for {kind}")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={hf['hidden_act']!r} is not supported: SwiGLU gates with silu")
    heads = hf["num_attention_heads"]
    return ModernConfig(
        vocab_size=hf["vocab_size"], context_length=hf["max_position_embeddings"], emb_dim=hf["hidden_size"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads, n_layers=hf["num_hidden_layers"], hidden_dim=hf["intermediate_size"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, qk_norm=kind == "qwen3", window=None,
        theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))), eps=hf["rms_norm_eps"],
        tie_weights=bool(hf.get("tie_word_embeddings", False)), rope_scaling=scaling)
    # END SOLUTION
