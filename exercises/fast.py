"""Exercise 30: the fast path, GPTModel on PyTorch's fused pieces with a padded vocabulary (the speed track).

``FastGPT`` is exercise 09's ``GPTModel``, parameter for parameter and name for name, with the
from-scratch pieces swapped for PyTorch's fused ones: ``F.scaled_dot_product_attention`` (one
kernel that never writes the scores out: FlashAttention on a GPU, a tiled kernel on a CPU) on
one projection for the queries, keys and values, ``F.layer_norm`` and ``F.gelu(approximate="tanh")``.
Its token embedding (and so the tied head) has ``padded_vocab_size(vocab_size)`` rows, a multiple
of 64 that matrix kernels tile evenly; the padded rows stand for no token, so their logits are
``-inf``: never sampled, and worth nothing in a cross-entropy. ``nox -s train -- --fused``
trains it (with PyTorch's fused AdamW); ``nox -s bench -- fast`` measures what each piece buys.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig, as_config  # noqa: F401  (GPTConfig is part of this module's API)


def padded_vocab_size(vocab_size: int, multiple: int = 64) -> int:
    """The smallest multiple of ``multiple`` that is at least ``vocab_size`` (50257 -> 50304).

    Raises:
        ValueError: when ``vocab_size`` or ``multiple`` is below 1, naming it.
    """
    raise NotImplementedError("exercise 30 (fast_gpt), padded_vocab_size: round vocab_size up to the next multiple (refusing sizes below 1)")


class FastLayerNorm(nn.Module):
    """Exercise 02's ``LayerNorm`` (parameters ``scale`` and ``shift``, eps 1e-5, the biased
    variance) as one call of ``F.layer_norm``."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.scale, self.shift = eps, nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 30 (fast_gpt), FastLayerNorm.forward: one F.layer_norm over the last dimension with scale, shift and eps")


class FastAttention(nn.Module):
    """Exercise 07's causal ``MultiHeadAttention`` (the same ``W_query``, ``W_key``, ``W_value``
    and ``out_proj``) on ``F.scaled_dot_product_attention``.

    ``forward(x)``, ``x`` of shape ``(batch, num_tokens, d_in)``: the three projections as one
    ``F.linear`` whose weight (and bias) is the three concatenated (one matrix product instead of
    three), split into heads ``(batch, num_heads, num_tokens, head_dim)``, then
    ``F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)`` with ``p`` the dropout
    probability while training and 0 in eval mode, the heads merged, ``out_proj``.
    """

    def __init__(self, d_in: int, d_out: int, dropout: float, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        raise NotImplementedError("exercise 30 (fast_gpt), FastAttention.__init__: exercise 07's checks and projections; keep the dropout probability (a float: SDPA applies it)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 30 (fast_gpt), FastAttention.forward: one F.linear for q, k and v (the weights concatenated), split the heads, SDPA (causal; dropout only in training), merge, out_proj")


class FastFeedForward(nn.Module):
    """Exercise 08's ``FeedForward``: ``layers = nn.Sequential(nn.Linear(emb, 4 emb),
    nn.GELU(approximate="tanh"), nn.Linear(4 emb, emb))``, GPT-2's GELU as one kernel."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(emb_dim, 4 * emb_dim), nn.GELU(approximate="tanh"), nn.Linear(4 * emb_dim, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FastBlock(nn.Module):
    """Exercise 08's ``TransformerBlock`` (``att``, ``ff``, ``norm1``, ``norm2``,
    ``drop_shortcut``; the same pre-norm residual order) built from the fast pieces above."""

    def __init__(self, cfg):
        super().__init__()
        cfg = as_config(cfg)
        raise NotImplementedError("exercise 30 (fast_gpt), FastBlock.__init__: exercise 08's modules, from the fast pieces")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 30 (fast_gpt), FastBlock.forward: exercise 08's two pre-norm branches")


class FastGPT(nn.Module):
    """Exercise 09's ``GPTModel`` on the fast pieces, with the vocabulary padded to a multiple of 64.

    ``forward(in_idx)`` maps token ids ``(batch, num_tokens)`` to logits
    ``(batch, num_tokens, padded_vocab_size(vocab_size))``: the first ``vocab_size`` columns are
    ``GPTModel``'s logits for the same weights, and every padded column is ``-inf``, so that no
    sampler picks a padded id and ``F.cross_entropy`` gives the padded columns probability 0 (the
    loss and its gradients are those of the unpadded model). Inputs longer than the context are a
    ``ValueError``, as in ``GPTModel``.

    Args:
        cfg: a ``GPTConfig`` or a dict of its fields.

    Attributes (graded by name): ``GPTModel``'s, with the fast modules: ``tok_emb``
    (``nn.Embedding(padded_vocab_size(vocab_size), emb_dim)``), ``pos_emb``, ``drop_emb``,
    ``trf_blocks`` (``nn.Sequential`` of ``FastBlock``), ``final_norm`` (``FastLayerNorm``) and
    ``out_head`` (``nn.Linear(emb_dim, padded_vocab_size(vocab_size), bias=False)``, its weight
    *being* ``tok_emb.weight`` with ``tie_weights``). So a ``GPTModel``'s state dict loads once its
    ``tok_emb.weight`` (and an untied ``out_head.weight``) gets the padded rows: ``pad_state_dict``.
    The weights start as ``GPTModel``'s do.
    """

    def __init__(self, cfg):
        super().__init__()
        cfg = as_config(cfg)
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        raise NotImplementedError("exercise 30 (fast_gpt), FastGPT.__init__: GPTModel's modules with FastBlock / FastLayerNorm, the embedding and head padded; a buffer that masks the padded logits")
        for name, p in self.named_parameters():  # GPT-2's initialisation, as GPTModel's
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("att.out_proj.weight", "ff.layers.2.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def num_parameters(self) -> int:
        """The number of trainable numbers, a tied weight counted once (the padded rows included)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 30 (fast_gpt), FastGPT.forward: GPTModel's forward, then the head with the mask added (one addmm: F.linear with the mask as its bias)")


def pad_state_dict(state_dict: dict, vocab_size: int) -> dict:
    """A ``GPTModel``'s state dict for a ``FastGPT`` (given): ``tok_emb.weight`` and
    ``out_head.weight`` get zero rows up to ``padded_vocab_size(vocab_size)``."""
    padded = padded_vocab_size(vocab_size)
    out = dict(state_dict)
    for key in ("tok_emb.weight", "out_head.weight"):
        if key in out and out[key].shape[0] == vocab_size:
            w = out[key]
            out[key] = torch.cat([w, w.new_zeros(padded - vocab_size, w.shape[1])])
    return out


def unpad_state_dict(state_dict: dict, vocab_size: int) -> dict:
    """A ``FastGPT``'s state dict for a ``GPTModel`` (given): the padded rows dropped."""
    return {k: v[:vocab_size] if k in ("tok_emb.weight", "out_head.weight") else v for k, v in state_dict.items()}


# --- decoding with a cache (given): what `nox -s bench -- fast` times against transformers' generate

class _Projection:
    """A linear layer's weight stored transposed, ``(in, out)``, for decoding: with one row of
    input, ``x @ W^T`` is a matrix-vector product, and CPU kernels read a weight laid out
    ``(in, out)`` much faster there than ``nn.Linear``'s ``(out, in)`` (1.7x measured for GPT-2's
    head on the 2-core EPYC of ``nox -s bench -- fast``; transformers' Conv1D keeps GPT-2's
    weights that way). Made once per ``generate_fast`` call, it costs a copy of the weights."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight_t, self.bias = weight.t().contiguous(), bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight_t
        return y if self.bias is None else y + self.bias


def _plan(block: FastBlock) -> dict:
    """Block ``block``'s projections, transposed once: the query, key and value joined, the
    attention's output and the feed-forward's two layers."""
    att, ff = block.att, block.ff.layers
    bias = None if att.W_query.bias is None else torch.cat([att.W_query.bias, att.W_key.bias, att.W_value.bias])
    return {"qkv": _Projection(torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight]), bias),
            "out": _Projection(att.out_proj.weight, att.out_proj.bias),
            "up": _Projection(ff[0].weight, ff[0].bias), "down": _Projection(ff[2].weight, ff[2].bias)}


def _attention_cached(att: FastAttention, plan: dict, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      start: int) -> torch.Tensor:
    """``att`` (its projections in ``plan``) for the tokens at positions ``start ..`` whose earlier
    keys and values are in the preallocated ``keys`` / ``values`` (batch, heads, max_len,
    head_dim); writes the new ones there."""
    b, num_tokens, _ = x.shape
    q, k, v = plan["qkv"](x).view(b, num_tokens, 3, att.num_heads, att.head_dim).permute(2, 0, 3, 1, 4)
    end = start + num_tokens
    keys[:, :, start:end], values[:, :, start:end] = k, v
    if num_tokens == 1 or start == 0:  # one new token sees everything held; a prefill is plain causal attention
        context = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], is_causal=num_tokens > 1)
    else:
        allowed = torch.arange(end, device=x.device)[None, :] <= torch.arange(start, end, device=x.device)[:, None]
        context = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=allowed)
    return plan["out"](context.transpose(1, 2).reshape(b, num_tokens, att.d_out))


@torch.no_grad()
def generate_fast(model: FastGPT, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding with a preallocated key/value cache (given): the tokens of exercise 12's
    ``generate_cached``. The prompt is fed once, then one token per step; the head runs on the last
    position only, and every weight is read in the layout that matrix-vector products read fastest
    (``_Projection``). Put the model in eval mode first."""
    batch, prompt = idx.shape
    total = prompt + max_new_tokens
    if total - 1 > model.cfg.context_length:
        raise ValueError(f"{prompt} prompt tokens + {max_new_tokens} new exceed the model's context_length {model.cfg.context_length}")
    first = model.trf_blocks[0].att
    weight = next(model.parameters())
    caches = [(weight.new_empty(batch, first.num_heads, total, first.head_dim), weight.new_empty(batch, first.num_heads, total, first.head_dim))
              for _ in model.trf_blocks]
    plans = [_plan(block) for block in model.trf_blocks]
    head = _Projection(model.out_head.weight, model.logit_mask.to(weight.dtype))
    out = torch.empty(batch, total, dtype=idx.dtype, device=idx.device)
    out[:, :prompt] = idx
    fed = 0  # positions whose keys and values are cached
    for end in range(prompt, total):
        x = model.tok_emb(out[:, fed:end]) + model.pos_emb(torch.arange(fed, end, device=idx.device))
        for block, plan, (keys, values) in zip(model.trf_blocks, plans, caches):
            x = x + _attention_cached(block.att, plan, block.norm1(x), keys, values, fed)
            x = x + plan["down"](F.gelu(plan["up"](block.norm2(x)), approximate="tanh"))
        fed = end
        out[:, end] = head(model.final_norm(x[:, -1])).argmax(dim=-1)
    return out
