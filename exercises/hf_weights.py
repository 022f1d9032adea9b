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
    raise NotImplementedError("exercise 24 (hf_weights), load_hf_weights: map each tensor to its parameter (no transposes), check shapes, handle the head, refuse leftovers")


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
    raise NotImplementedError("exercise 24 (hf_weights), config_from_hf: refuse what the model cannot reproduce, then map each key (RoPE's numbers in either place)")
