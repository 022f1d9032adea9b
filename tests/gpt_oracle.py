"""Oracles for the model track (exercises 07-11), run in the grading process.

Each is a few lines of PyTorch's own functions (``F.linear``, ``F.layer_norm``,
``F.gelu(approximate="tanh")``, ``F.scaled_dot_product_attention``, ``F.embedding``) over a dict
of named tensors, never the tree under test. Parameter names are the exercises' attribute names
(``att.W_query.weight``, ``ff.layers.0.bias``, ``trf_blocks.1.norm2.scale``); ``gpt2_hf`` reads
Hugging Face's GPT-2 names instead. ``variant`` computes a known mistake's output, for naming it
in a failure message. The committed transformers outputs in ``reference/`` pin these oracles.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.draw import n

EPS = 1e-5  # LayerNorm's eps, GPT-2's and the exercises'


@contextlib.contextmanager
def one_thread():
    """Torch on one thread meanwhile: an oracle's many tiny operations run faster so, and far faster
    on a machine busy with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seeded(seed: int, fn):
    """``fn()`` after ``torch.manual_seed(seed)``, leaving torch's global generator as it was: the
    oracle draws the dropout masks a module seeded alike draws."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn()


def sub(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def linear(x, params, name):
    return F.linear(x, params[name + ".weight"], params.get(name + ".bias"))


def layer_norm(x, params, name):
    return F.layer_norm(x, x.shape[-1:], params[name + ".scale"], params[name + ".shift"], EPS)


# ----------------------------------------------------------------------------------- 07


def multihead(x, params, num_heads, variant="", dropout_weights=None, softmax_axis=-1, zeros=True):
    """Causal multi-head attention with ``MultiHeadAttention``'s parameters, on F.scaled_dot_product_attention;
    with another ``softmax_axis`` of the scores ``(batch, heads, queries, keys)`` (None: every element at once),
    the mistake of a softmax over it (an all -inf slice gives zeros, or NaN without ``zeros``)."""
    b, t, _ = x.shape
    q, k, v = (linear(x, params, f"W_{name}") for name in ("query", "key", "value"))
    d = q.size(-1)
    hd = d // num_heads
    if variant == "split_without_transpose":
        q, k, v = (z.reshape(b, num_heads, t, hd) for z in (q, k, v))
    else:
        q, k, v = (z.view(b, t, num_heads, hd).transpose(1, 2) for z in (q, k, v))
    scale = {"no_scale": 1.0, "scale_by_d_out": 1 / math.sqrt(d), "scale_by_head_dim": 1 / hd}.get(variant)
    if softmax_axis == -1:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=variant != "no_mask", scale=scale)
    else:
        out = softmax_over_axis(masked_scores(q, k, scale), softmax_axis, zeros) @ v
    if variant == "merge_without_transpose":
        out = out.reshape(b, t, d)
    else:
        out = out.transpose(1, 2).reshape(b, t, d)
    if variant == "no_out_proj":
        return out
    return linear(out, params, "out_proj")


def masked_scores(q, k, scale=None):
    """Causal attention's scores ``q @ k^T`` scaled (by ``1 / sqrt(head_dim)`` unless ``scale``), keys ``j > i`` at -inf."""
    t, s = q.size(-2), k.size(-2)
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.size(-1)))
    return scores.masked_fill(~torch.ones(t, s, dtype=torch.bool).tril(), float("-inf"))


def softmax_over_axis(scores, axis, zeros=True):
    """A softmax over ``axis`` of ``scores`` (None: over every element at once); an all -inf slice
    gives zeros, or NaN with ``zeros`` False (as ``torch.softmax``)."""
    out = torch.softmax(scores.flatten(), 0).view_as(scores) if axis is None else torch.softmax(scores, axis)
    return torch.nan_to_num(out) if zeros else out


def multihead_train(x, params, num_heads, p, variant=""):
    """``MultiHeadAttention`` in training mode, written out: dropout with rate ``p`` on the
    attention weights (``F.dropout``, the draws ``nn.Dropout`` makes). Seed torch the same way
    before both. ``variant``: ``dropout_on_scores`` (on the scaled scores, before the mask and the
    softmax), ``dropout_on_output`` (on the module's output), ``no_dropout``."""
    b, t, _ = x.shape
    q, k, v = (linear(x, params, f"W_{name}") for name in ("query", "key", "value"))
    d = q.size(-1)
    hd = d // num_heads
    q, k, v = (z.view(b, t, num_heads, hd).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
    if variant == "dropout_on_scores":
        scores = F.dropout(scores, p, True)
    weights = torch.softmax(scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")), dim=-1)
    if variant not in ("dropout_on_scores", "dropout_on_output", "no_dropout"):
        weights = F.dropout(weights, p, True)
    out = linear((weights @ v).transpose(1, 2).reshape(b, t, d), params, "out_proj")
    return F.dropout(out, p, True) if variant == "dropout_on_output" else out


def attention_part_train(x, params, num_heads, p):
    """The reference multi-head part (``harness/parts/multihead.py``) in training mode, written out
    with the same calls, so that it draws the same dropout masks: F.scaled_dot_product_attention
    with the causal mask as ``attn_mask`` and ``dropout_p=p``."""
    b, t, _ = x.shape
    q, k, v = (linear(x, params, f"W_{name}") for name in ("query", "key", "value"))
    d = q.size(-1)
    q, k, v = (z.view(b, t, num_heads, d // num_heads).transpose(1, 2) for z in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(t, t).tril().bool(), dropout_p=p)
    return linear(out.transpose(1, 2).reshape(b, t, d), params, "out_proj")


def multihead_params(gen, d_in, d_out, qkv_bias, std=0.4):
    p = {}
    for name in ("W_query", "W_key", "W_value"):
        p[f"{name}.weight"] = torch.randn(d_out, d_in, generator=gen) * std
        if qkv_bias:
            p[f"{name}.bias"] = torch.randn(d_out, generator=gen) * 0.2
    p["out_proj.weight"] = torch.randn(d_out, d_out, generator=gen) * std
    p["out_proj.bias"] = torch.randn(d_out, generator=gen) * 0.2
    return p


# ----------------------------------------------------------------------------------- 08


def feed_forward(x, params, variant=""):
    h = linear(x, params, "layers.0")
    h = {"relu": F.relu(h), "exact_gelu": F.gelu(h), "no_activation": h}.get(variant, F.gelu(h, approximate="tanh"))
    return linear(h, params, "layers.2")


def block(x, params, num_heads, variant="", p=0.0):
    """A pre-LayerNorm transformer block with ``TransformerBlock``'s parameters. With ``p > 0`` it
    is in training mode: the reference multi-head part's attention dropout, then ``F.dropout`` on
    each branch's output before it is added (seed torch alike before both); ``variant``:
    ``no_shortcut_dropout``, ``dropout_after_residual`` (on x + branch), ``dropout_on_branch_input``."""

    def att(z):
        if p:
            return attention_part_train(z, sub(params, "att."), num_heads, p)
        return multihead(z, sub(params, "att."), num_heads)

    if p:
        def drop(z):
            return z if variant == "no_shortcut_dropout" else F.dropout(z, p, True)

        for norm, branch in (("norm1", att), ("norm2", lambda z: feed_forward(z, sub(params, "ff.")))):
            if variant == "dropout_after_residual":
                x = F.dropout(x + branch(layer_norm(x, params, norm)), p, True)
            elif variant == "dropout_on_branch_input":
                x = x + branch(F.dropout(layer_norm(x, params, norm), p, True))
            else:
                x = x + drop(branch(layer_norm(x, params, norm)))
        return x

    def ff(z):
        return feed_forward(z, sub(params, "ff."))

    if variant == "post_norm":
        x = layer_norm(x + att(x), params, "norm1")
        return layer_norm(x + ff(x), params, "norm2")
    if variant == "no_residual":
        return ff(layer_norm(att(layer_norm(x, params, "norm1")), params, "norm2"))
    if variant == "no_attention_residual":
        x = att(layer_norm(x, params, "norm1"))
        return x + ff(layer_norm(x, params, "norm2"))
    if variant == "no_feed_forward_residual":
        x = x + att(layer_norm(x, params, "norm1"))
        return ff(layer_norm(x, params, "norm2"))
    if variant == "residual_after_norm":  # the shortcut carries norm(x), not x
        x = layer_norm(x, params, "norm1")
        x = x + att(x)
        y = layer_norm(x, params, "norm2")
        return y + ff(y)
    if variant == "norms_swapped":
        x = x + att(layer_norm(x, params, "norm2"))
        return x + ff(layer_norm(x, params, "norm1"))
    x = x + att(layer_norm(x, params, "norm1"))
    return x + ff(layer_norm(x, params, "norm2"))


def block_params(gen, emb, qkv_bias, prefix=""):
    p = {f"att.{k}": v for k, v in multihead_params(gen, emb, emb, qkv_bias, std=0.3).items()}
    p["ff.layers.0.weight"] = torch.randn(4 * emb, emb, generator=gen) * 0.3
    p["ff.layers.0.bias"] = torch.randn(4 * emb, generator=gen) * 0.2
    p["ff.layers.2.weight"] = torch.randn(emb, 4 * emb, generator=gen) * 0.15
    p["ff.layers.2.bias"] = torch.randn(emb, generator=gen) * 0.2
    for norm in ("norm1", "norm2"):
        p[f"{norm}.scale"] = 1 + 0.2 * torch.randn(emb, generator=gen)
        p[f"{norm}.shift"] = 0.2 * torch.randn(emb, generator=gen)
    return {prefix + k: v for k, v in p.items()}


# ----------------------------------------------------------------------------------- 09


def gpt(idx, params, cfg, variant="", p=0.0):
    """``GPTModel``'s logits for token ids ``idx`` (batch, num_tokens), from its named parameters.
    With ``p > 0``, in training mode: dropout on the embeddings, then the blocks in training mode
    (seed torch alike before both); ``variant``: ``no_embedding_dropout``,
    ``dropout_on_token_embeddings`` (before the positions are added)."""
    t = idx.size(1)
    x = F.embedding(idx, params["tok_emb.weight"])
    if p and variant == "dropout_on_token_embeddings":
        x = F.dropout(x, p, True)
    if variant != "no_positions":
        x = x + F.embedding(torch.arange(t), params["pos_emb.weight"])
    if p and variant not in ("no_embedding_dropout", "dropout_on_token_embeddings"):
        x = F.dropout(x, p, True)
    for i in range(cfg["n_layers"]):
        x = block(x, sub(params, f"trf_blocks.{i}."), cfg["n_heads"], p=p)
    if variant != "no_final_norm":
        x = layer_norm(x, params, "final_norm")
    head = params["tok_emb.weight"] if cfg["tie_weights"] else params["out_head.weight"]
    return F.linear(x, head)


def gpt_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """``GPTModel``'s ``named_parameters()`` shapes (a tied head is listed once, as tok_emb.weight)."""
    e, v = cfg["emb_dim"], cfg["vocab_size"]
    shapes = {"tok_emb.weight": (v, e), "pos_emb.weight": (cfg["context_length"], e)}
    for i in range(cfg["n_layers"]):
        b = f"trf_blocks.{i}."
        for name in ("W_query", "W_key", "W_value"):
            shapes[f"{b}att.{name}.weight"] = (e, e)
            if cfg["qkv_bias"]:
                shapes[f"{b}att.{name}.bias"] = (e,)
        shapes[f"{b}att.out_proj.weight"], shapes[f"{b}att.out_proj.bias"] = (e, e), (e,)
        shapes[f"{b}ff.layers.0.weight"], shapes[f"{b}ff.layers.0.bias"] = (4 * e, e), (4 * e,)
        shapes[f"{b}ff.layers.2.weight"], shapes[f"{b}ff.layers.2.bias"] = (e, 4 * e), (e,)
        for norm in ("norm1", "norm2"):
            shapes[f"{b}{norm}.scale"] = shapes[f"{b}{norm}.shift"] = (e,)
    shapes["final_norm.scale"] = shapes["final_norm.shift"] = (e,)
    if not cfg["tie_weights"]:
        shapes["out_head.weight"] = (v, e)
    return shapes


def gpt_params(gen, cfg):
    e = cfg["emb_dim"]
    p = {"tok_emb.weight": torch.randn(cfg["vocab_size"], e, generator=gen) * 0.5,
         "pos_emb.weight": torch.randn(cfg["context_length"], e, generator=gen) * 0.5}
    for i in range(cfg["n_layers"]):
        p.update(block_params(gen, e, cfg["qkv_bias"], prefix=f"trf_blocks.{i}."))
    p["final_norm.scale"] = 1 + 0.2 * torch.randn(e, generator=gen)
    p["final_norm.shift"] = 0.2 * torch.randn(e, generator=gen)
    if not cfg["tie_weights"]:
        p["out_head.weight"] = torch.randn(cfg["vocab_size"], e, generator=gen) * 0.3
    return p


def random_config(gen, **fixed):
    heads = n(gen, 1, 4)
    cfg = {"vocab_size": n(gen, 5, 40), "context_length": n(gen, 2, 12), "emb_dim": heads * n(gen, 2, 6),
           "n_heads": heads, "n_layers": n(gen, 1, 3), "drop_rate": 0.0, "qkv_bias": bool(n(gen, 0, 1)),
           "tie_weights": bool(n(gen, 0, 1))}
    cfg.update(fixed)
    return cfg


# ----------------------------------------------------------------------------------- 11


def gpt2_hf(idx, state_dict, num_heads):
    """GPT-2's logits from a state dict in Hugging Face's layout (Conv1D weights are (in, out))."""
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    t = idx.size(1)
    x = F.embedding(idx, sd["wte.weight"]) + F.embedding(torch.arange(t), sd["wpe.weight"])
    e = x.size(-1)

    def ln(z, name):
        return F.layer_norm(z, (e,), sd[name + ".weight"], sd[name + ".bias"], EPS)

    def conv1d(z, name):
        return z @ sd[name + ".weight"] + sd[name + ".bias"]

    i = 0
    while f"h.{i}.ln_1.weight" in sd:
        h = f"h.{i}."
        q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(e, dim=-1)
        q, k, v = (z.view(z.size(0), t, num_heads, e // num_heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(x.shape)
        x = x + conv1d(a, h + "attn.c_proj")
        x = x + conv1d(F.gelu(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh"), h + "mlp.c_proj")
        i += 1
    head = state_dict.get("lm_head.weight", sd["wte.weight"])
    return F.linear(ln(x, "ln_f"), head)


def gpt2_state_dict(gen, cfg, prefix="transformer."):
    """A random GPT-2 checkpoint in Hugging Face's layout (``GPT2LMHeadModel.state_dict()`` without
    the tied ``lm_head.weight``) for a config of this module's field names."""
    e, p = cfg["emb_dim"], {}

    def put(name, *shape, std=0.3, mean=0.0):
        p[prefix + name] = mean + std * torch.randn(*shape, generator=gen)

    put("wte.weight", cfg["vocab_size"], e, std=0.5)
    put("wpe.weight", cfg["context_length"], e, std=0.5)
    for i in range(cfg["n_layers"]):
        h = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            put(h + ln + ".weight", e, std=0.2, mean=1.0)
            put(h + ln + ".bias", e, std=0.2)
        put(h + "attn.c_attn.weight", e, 3 * e)
        put(h + "attn.c_attn.bias", 3 * e, std=0.2)
        put(h + "attn.c_proj.weight", e, e)
        put(h + "attn.c_proj.bias", e, std=0.2)
        put(h + "mlp.c_fc.weight", e, 4 * e)
        put(h + "mlp.c_fc.bias", 4 * e, std=0.2)
        put(h + "mlp.c_proj.weight", 4 * e, e, std=0.15)
        put(h + "mlp.c_proj.bias", e, std=0.2)
    put("ln_f.weight", e, std=0.2, mean=1.0)
    put("ln_f.bias", e, std=0.2)
    return p


def gpt2_mistake(state_dict, mistake):
    """The checkpoint a loader with ``mistake`` effectively loads, in the same layout."""
    out = dict(state_dict)
    for key, w in state_dict.items():
        if mistake in ("qkv_not_transposed", "attention_not_transposed") and key.endswith("attn.c_attn.weight"):
            out[key] = torch.cat([c.T for c in w.split(w.size(0), dim=1)], dim=1)
        elif mistake in ("attn_proj_not_transposed", "attention_not_transposed") and key.endswith("attn.c_proj.weight"):
            out[key] = w.T
        elif mistake == "qkv_order" and key.endswith("attn.c_attn.weight") or mistake == "qkv_order" and key.endswith("attn.c_attn.bias"):
            q, k, v = w.split(w.size(-1) // 3, dim=-1)
            out[key] = torch.cat([k, q, v], dim=-1)
        elif mistake == "norm_swapped" and (".ln_" in key or "ln_f." in key):
            other = key[: -len("weight")] + "bias" if key.endswith("weight") else key[: -len("bias")] + "weight"
            out[key] = state_dict[other]
    return out


# ----------------------------------------------------------------------------------- safetensors


_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file without the safetensors package: an 8-byte little-endian header
    length, a JSON header (name -> dtype, shape, byte offsets), then the raw little-endian bytes."""
    raw = Path(path).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    data = raw[8 + size :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype=np.dtype(_DTYPES[info["dtype"]])).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))
    return out


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """RoPE's frequencies in float64: ``theta ** (-2i / head_dim)``, ``(head_dim // 2,)``; with
    ``scaling``, Llama 3.1's (``llama3_inv_freq``)."""
    inv = theta ** (-torch.arange(0, head_dim // 2, dtype=torch.float64) * 2 / head_dim)
    return inv if scaling is None else llama3_inv_freq(inv, **scaling)


def llama3_inv_freq(inv, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """Llama 3.1's RoPE scaling in float64, written as one blend: each pair keeps the share
    ``s = clamp((original / wavelength - low) / (high - low), 0, 1)`` of its frequency and takes
    the rest divided by ``factor`` (s = 1: fast pairs unchanged; s = 0: slow pairs slowed)."""
    inv = inv.double()
    s = ((original_max_position_embeddings * inv / (2 * math.pi) - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    return s * inv + (1 - s) * inv / factor


def rope_angles(head_dim: int, positions: torch.Tensor, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """RoPE's angles in float64: ``positions[t] * theta ** (-2i / head_dim)``, ``(seq, head_dim // 2)``."""
    return positions.double()[:, None] * rope_inv_freq(head_dim, theta, scaling)[None, :]


def rope_rotate(x: torch.Tensor, positions: torch.Tensor, theta: float, interleaved: bool = False,
                scaling: dict | None = None) -> torch.Tensor:
    """RoPE's rotation in float64, written with complex numbers: pair (i, i + d/2) of the last
    dimension (Llama's half-split pairing; with ``interleaved``, the paper's (2i, 2i + 1)) as
    ``x[first] + j x[second]``, turned by ``rope_angles``."""
    half = x.size(-1) // 2
    first, second = (x[..., 0::2], x[..., 1::2]) if interleaved else (x[..., :half], x[..., half:])
    a = rope_angles(x.size(-1), positions, theta, scaling)
    turned = torch.complex(first.double(), second.double()) * torch.polar(torch.ones_like(a), a)
    if interleaved:
        return torch.stack([turned.real, turned.imag], dim=-1).flatten(-2)
    return torch.cat([turned.real, turned.imag], dim=-1)


# The modern-architecture track (22-24): grouped-query attention and the Llama/Qwen3 decoder, in
# float64. Parameter names are the exercises' (``att.W_query.weight``, ``ff.gate.weight``,
# ``trf_blocks.1.norm2.weight``).


def rms_norm(x, weight, eps):
    return F.rms_norm(x, x.shape[-1:], weight, eps)


def gqa(x, p, cfg, *, repeat="interleave", norm_after_rope=False, rope_keys=True, window_off_by_one=False, scale=True,
        rope_positions=None, softmax_axis=-1, zeros=True, causal=0, rope_queries=True, rope_values=False, merge="transpose",
        key_norm="k", fill=float("-inf"), weights=None, mask_inverted=False):
    """Grouped-query attention (with its keyword arguments at their defaults) and, with them
    changed, its known mistakes. ``p`` holds ``W_query.weight`` .. ``out_proj.weight`` (and
    ``q_norm.weight``, ``k_norm.weight`` with ``qk_norm``); ``cfg`` the sizes, ``qk_norm``,
    ``window``, ``theta`` and ``eps`` (1e-6 when absent). ``rope_positions`` rotates each token
    at another position than its own (a cache's mistake); ``softmax_axis`` of the scores ``(batch,
    heads, queries, keys)`` normalises another axis (None: every element at once; an all -inf
    slice gives zeros, or NaN without ``zeros``). Other mistakes: ``scale`` a number (the scores
    divided by it), ``causal`` (keys ``j <= i + causal`` visible; None: no causal mask),
    ``rope_queries`` False, ``rope_values`` True, ``merge`` "reshape" (the heads merged without the
    transpose), ``key_norm`` "q" (the keys normalised with q_norm) or None (not normalised), ``fill``
    the masked scores' value (0: masked with zero, not -inf), ``weights`` {"W_value": "W_key"}: a
    projection computed with another's weight, ``mask_inverted`` (the allowed keys masked, the others kept)."""
    h, kv, d = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    b, t, _ = x.shape
    x = x.double()
    p = {k: v.double() for k, v in p.items()}
    for which, other in (weights or {}).items():
        p[f"{which}.weight"] = p[f"{other}.weight"]
    q = F.linear(x, p["W_query.weight"]).view(b, t, h, d)
    k = F.linear(x, p["W_key.weight"]).view(b, t, kv, d)
    v = F.linear(x, p["W_value.weight"]).view(b, t, kv, d).transpose(1, 2)
    pos = torch.arange(t) if rope_positions is None else rope_positions

    def norm(z, which):
        return rms_norm(z, p[f"{which}_norm.weight"], cfg.get("eps", 1e-6)) if cfg["qk_norm"] and which else z

    if not norm_after_rope:
        q, k = norm(q, "q"), norm(k, key_norm)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    scaling = cfg.get("rope_scaling")
    q = rope_rotate(q, pos, cfg["theta"], scaling=scaling) if rope_queries else q
    v = rope_rotate(v, pos, cfg["theta"], scaling=scaling) if rope_values else v
    k = rope_rotate(k, pos, cfg["theta"], scaling=scaling) if rope_keys else k
    if norm_after_rope:
        q, k = norm(q, "q"), norm(k, key_norm)
    group = h // kv
    if repeat == "interleave":
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    else:  # the groups in the wrong order: kv head h % n_kv_heads
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d) if scale is True else 1.0 if scale is False else float(scale))
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = j <= i + (causal if causal is not None else t)
    if cfg.get("window") is not None:
        allowed = allowed & (j >= i - cfg["window"] if window_off_by_one else j > i - cfg["window"])
    if mask_inverted:
        allowed = ~allowed
    w = softmax_over_axis(scores.masked_fill(~allowed, fill), softmax_axis, zeros)
    out = (w @ v).reshape(b, t, h * d) if merge == "reshape" else (w @ v).transpose(1, 2).reshape(b, t, h * d)
    return F.linear(out, p["out_proj.weight"])


def modern_block(x, p, cfg, variant="", **attention):
    """One Llama/Qwen3 block in float64; ``variant`` names a known mistake, ``attention`` passes
    keyword arguments (mistakes) to ``gqa``."""
    x = x.double()
    p = {k: v.double() for k, v in p.items()}
    eps = 1e-6 if variant == "default_eps" else cfg["eps"]  # RMSNorm's default where cfg.eps was not passed
    n1, n2 = p["norm1.weight"], p["norm2.weight"]
    if variant == "one_norm":
        n2 = n1
    if variant == "norms_swapped":
        n1, n2 = n2, n1
    att = sub(p, "att.")

    def attend(z):
        return gqa(z, att, cfg, **attention)

    def ff(z):
        return F.linear(F.silu(F.linear(z, p["ff.gate.weight"])) * F.linear(z, p["ff.up.weight"]), p["ff.down.weight"])

    if variant == "post_norm":  # the original transformer's order: normalise the stream after each branch
        x = rms_norm(x + attend(x), n1, eps)
        return rms_norm(x + ff(x), n2, eps)
    if variant == "no_residual":
        x = attend(rms_norm(x, n1, eps))
        return ff(rms_norm(x, n2, eps))
    if variant == "parallel":  # GPT-J's parallel branches, both reading the same input
        return x + attend(rms_norm(x, n1, eps)) + ff(rms_norm(x, n2, eps))
    if variant in ("residual_after_norm", "residual_after_norm1"):  # the shortcut carries norm(x), not x (in both, or the first)
        x = rms_norm(x, n1, eps)
        x = x + attend(x)
        if variant == "residual_after_norm1":
            return x + ff(rms_norm(x, n2, eps))
        x = rms_norm(x, n2, eps)
        return x + ff(x)
    x = attend(rms_norm(x, n1, eps)) + (0 if variant == "no_attention_residual" else x)
    return ff(rms_norm(x, n2, eps)) + (0 if variant == "no_feed_forward_residual" else x)


def modern(idx, params, cfg, variant="", **attention):
    """The Llama/Qwen3 model in float64: logits ``(batch, num_tokens, vocab_size)``; ``variant``
    names a known mistake (``modern_block``'s, ``scaled_embedding``, ``no_final_norm``,
    ``first_block_only``, ``default_eps``: every RMSNorm of the model with eps 1e-6)."""
    p = {k: v.double() for k, v in params.items()}
    x = F.embedding(idx, p["tok_emb.weight"])
    if variant == "scaled_embedding":  # Gemma's, not Llama's or Qwen3's
        x = x * math.sqrt(cfg["emb_dim"])
    for i in range(1 if variant == "first_block_only" else cfg["n_layers"]):
        x = modern_block(x, sub(p, f"trf_blocks.{i}."), cfg, variant, **attention)
    if variant != "no_final_norm":
        x = rms_norm(x, p["final_norm.weight"], 1e-6 if variant == "default_eps" else cfg["eps"])
    return F.linear(x, p["out_head.weight"] if "out_head.weight" in p else p["tok_emb.weight"])


def modern_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The parameters a ``ModernModel(cfg)`` lists, and their shapes."""
    e, h, kv, d = cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    shapes = {"tok_emb.weight": (cfg["vocab_size"], e), "final_norm.weight": (e,)}
    if not cfg["tie_weights"]:
        shapes["out_head.weight"] = (cfg["vocab_size"], e)
    for i in range(cfg["n_layers"]):
        b = f"trf_blocks.{i}."
        shapes.update({b + "norm1.weight": (e,), b + "norm2.weight": (e,), b + "att.W_query.weight": (h * d, e),
                       b + "att.W_key.weight": (kv * d, e), b + "att.W_value.weight": (kv * d, e),
                       b + "att.out_proj.weight": (e, h * d), b + "ff.gate.weight": (cfg["hidden_dim"], e),
                       b + "ff.up.weight": (cfg["hidden_dim"], e), b + "ff.down.weight": (e, cfg["hidden_dim"])})
        if cfg["qk_norm"]:
            shapes.update({b + "att.q_norm.weight": (d,), b + "att.k_norm.weight": (d,)})
    return shapes


def modern_params(gen, cfg):
    """Random weights for ``modern_shapes(cfg)``: norms near 1, projections scaled by their input width."""
    out = {}
    for name, shape in modern_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen)
        out[name] = 1 + 0.3 * noise if name.endswith("norm.weight") or len(shape) == 1 else noise / (1.0 if "emb" in name else shape[1] ** 0.5)
    return out


def modern_config(gen, **fixed):
    """A random tiny ``ModernConfig`` as a dict, ``head_dim`` set (sometimes apart from
    ``emb_dim // n_heads``, as Qwen3's), eps large enough that a lost one shows, and half the
    time Llama 3.1's RoPE scaling over a training context short enough that it shows."""
    n_kv = n(gen, 1, 3)
    n_heads = n_kv * n(gen, 1, 3)
    head_dim = 2 * n(gen, 2, 5)
    emb = [n_heads * head_dim, 4 * n(gen, 2, 8)][n(gen, 0, 1)]
    cfg = {"vocab_size": n(gen, 11, 60), "context_length": n(gen, 4, 16), "emb_dim": emb, "n_heads": n_heads, "n_kv_heads": n_kv,
           "n_layers": n(gen, 1, 3), "hidden_dim": n(gen, 4, 40), "head_dim": head_dim, "qk_norm": bool(n(gen, 0, 1)),
           "window": [None, n(gen, 1, 4)][n(gen, 0, 1)], "theta": [10_000.0, 500_000.0, 1_000_000.0][n(gen, 0, 2)],
           "eps": [1e-6, 1e-5, 0.05, 0.3][n(gen, 0, 3)], "tie_weights": bool(n(gen, 0, 1)),
           "rope_scaling": [None, {"factor": [4.0, 8.0][n(gen, 0, 1)], "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": n(gen, 8, 32)}][n(gen, 0, 1)]}
    cfg.update(fixed)
    return cfg
