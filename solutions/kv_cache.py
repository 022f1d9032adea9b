"""Exercise 12: the KV cache: keep each block's keys and values, so that generating a token runs
the model on that one token instead of the whole sequence.

Without a cache, ``generate`` runs the model on all ``n`` tokens to pick token ``n + 1``, and the
work grows with ``n``; the keys and values of the earlier positions never change, so a cache keeps
them. The cached forward pass is written here, as functions of the model's parts, so that the
classes of exercises 07-09 stay as they are: ``attention_cached`` (a ``MultiHeadAttention``),
``block_cached`` (a ``TransformerBlock``) and ``gpt_cached`` (a ``GPTModel``).
"""

import math

import torch

from .attention import softmax


class KVCache:
    """Keys and values of the positions seen so far, preallocated per block.

    Args:
        n_layers: number of transformer blocks (one key and one value buffer each).
        batch_size, num_heads, max_len, head_dim: each buffer is a zero tensor of shape
            ``(batch_size, num_heads, max_len, head_dim)``.
        dtype, device: of the buffers.

    Attributes (graded by name):
        keys, values: lists of ``n_layers`` buffers.
        length: the number of positions stored (0 at the start and after ``reset``).
        max_len: the most positions it holds.

    ``update(layer, keys, values)``: ``keys`` and ``values`` are ``(batch_size, num_heads,
    num_tokens, head_dim)``, the next ``num_tokens`` positions of block ``layer``; they are
    written at positions ``length .. length + num_tokens - 1`` of that block's buffers, and the
    keys and values of positions ``0 .. length + num_tokens - 1`` are returned (views of the
    buffers). ``length`` does not change: every block writes at the same positions, and the model
    calls ``advance(num_tokens)`` once all its blocks have. Going past ``max_len`` raises a
    ``ValueError`` that gives the numbers (before anything is written).

    ``advance(num_tokens)``: ``length += num_tokens``. ``reset()``: ``length = 0``, for a new prompt.
    """

    def __init__(self, n_layers: int, batch_size: int, num_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device=None):
        # BEGIN SOLUTION 12: one zero key buffer and one value buffer per block, length 0
        shape = (batch_size, num_heads, max_len, head_dim)  # allocated once, filled as tokens come
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_len = max_len
        self.length = 0
        # END SOLUTION

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int | None = None) -> "KVCache":
        """A cache shaped for ``model`` (a ``GPTModel``), on its device and dtype; ``max_len``
        defaults to the model's context length (its number of position embeddings)."""
        att, weight = model.trf_blocks[0].att, model.tok_emb.weight
        return cls(len(model.trf_blocks), batch_size, att.num_heads, max_len or model.pos_emb.num_embeddings, att.head_dim,
                   dtype=weight.dtype, device=weight.device)

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # BEGIN SOLUTION 12: refuse to go past max_len, write the new positions, return all positions so far
        end = self.length + keys.size(2)
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions: {self.length} cached + {keys.size(2)} new do not fit")
        # keys, values: (batch, num_heads, new, head_dim), written in place: no copy of the old ones
        self.keys[layer][:, :, self.length:end] = keys
        self.values[layer][:, :, self.length:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]  # (batch, num_heads, end, head_dim), views
        # END SOLUTION

    def advance(self, num_tokens: int) -> None:
        # BEGIN SOLUTION 12: count the new positions
        self.length += num_tokens
        # END SOLUTION

    def reset(self) -> None:
        # BEGIN SOLUTION 12: forget every position
        self.length = 0
        # END SOLUTION


def attention_cached(att, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    """``att(x)`` (a ``MultiHeadAttention``) for the next ``num_tokens`` positions of sequences
    whose earlier positions are in ``cache``; ``att`` is block ``layer``'s attention.

    ``x`` is ``(batch, num_tokens, d_in)``: the tokens at absolute positions ``start ..
    start + num_tokens - 1``, where ``start = cache.length``. Their keys and values are appended to
    the cache with ``cache.update(layer, keys, values)``, which returns the keys and values of all
    ``start + num_tokens`` positions, ``(batch, num_heads, start + num_tokens, head_dim)``. Query
    ``i`` (absolute position ``start + i``) attends to keys ``j <= start + i``: the rows
    ``start .. start + num_tokens - 1`` of ``att.mask``. The output equals the last ``num_tokens``
    rows of ``att`` over all ``start + num_tokens`` tokens; ``cache.length`` does not change here.
    Uses ``att``'s parts by name: ``W_query``, ``W_key``, ``W_value``, ``out_proj``, ``dropout``,
    ``mask``, ``num_heads``, ``head_dim``, ``d_out``.
    """
    # BEGIN SOLUTION 12: project, append keys and values to the cache, attend over the cached prefix with the mask rows of the absolute positions
    b, num_tokens, _ = x.shape
    start = cache.length

    def split(t):  # (b, num_tokens, d_out) -> (b, num_heads, num_tokens, head_dim)
        return t.view(b, num_tokens, att.num_heads, att.head_dim).transpose(1, 2)

    queries = split(att.W_query(x))  # (b, num_heads, num_tokens, head_dim): only the new tokens ask
    # the cache returns every position so far: (b, num_heads, start + num_tokens, head_dim)
    keys, values = cache.update(layer, split(att.W_key(x)), split(att.W_value(x)))
    scores = queries @ keys.transpose(2, 3) / math.sqrt(att.head_dim)  # (b, num_heads, num_tokens, start + num_tokens)
    # the new tokens sit at absolute positions start .. start + num_tokens - 1: those rows of the mask
    scores = scores.masked_fill(~att.mask[start:start + num_tokens, :start + num_tokens], float("-inf"))
    weights = att.dropout(softmax(scores, dim=-1))
    context = weights @ values  # (b, num_heads, num_tokens, head_dim)
    context = context.transpose(1, 2).contiguous().view(b, num_tokens, att.d_out)  # heads concatenated again
    return att.out_proj(context)  # (b, num_tokens, d_out)
    # END SOLUTION


def block_cached(block, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
    """``block(x)`` (a ``TransformerBlock``, block ``layer`` of its model) with its attention
    reading and extending ``cache``: the same two pre-norm branches, with
    ``attention_cached(block.att, ..., cache, layer)`` in place of ``block.att(...)``."""
    # BEGIN SOLUTION 12: the same two branches, the attention through the cache
    x = x + block.drop_shortcut(attention_cached(block.att, block.norm1(x), cache, layer))  # (batch, num_tokens, emb_dim)
    x = x + block.drop_shortcut(block.ff(block.norm2(x)))  # the feed-forward sees one token at a time: no cache
    return x
    # END SOLUTION


def gpt_cached(model, in_idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The logits of the next ``num_tokens`` tokens of sequences whose earlier ``start =
    cache.length`` tokens are in ``cache``; ``model`` is a ``GPTModel``.

    ``in_idx`` is ``(batch, num_tokens)`` int64, the tokens at absolute positions ``start ..
    start + num_tokens - 1``, so their position embeddings are ``pos_emb(start ..
    start + num_tokens - 1)``; block ``i`` runs as ``block_cached(block, x, cache, i)``; then
    ``cache.advance(num_tokens)``. Returns ``(batch, num_tokens, vocab_size)``: the last
    ``num_tokens`` rows of ``model`` on the whole sequence.

    Raises:
        ValueError: when ``start + num_tokens`` is more than the model's context length (its
            number of position embeddings); nothing is changed then. ``cache.update`` raises its
            own ValueError past the cache's ``max_len``.
    """
    # BEGIN SOLUTION 12: positions offset by the cached length, the blocks through the cache, then advance it
    batch, num_tokens = in_idx.shape
    start = cache.length
    context_length = model.pos_emb.num_embeddings
    if start + num_tokens > context_length:
        raise ValueError(f"{start} cached + {num_tokens} new tokens exceed the model's context_length {context_length}")
    positions = torch.arange(start, start + num_tokens, device=in_idx.device)  # absolute positions, not 0 ..
    x = model.drop_emb(model.tok_emb(in_idx) + model.pos_emb(positions))  # (batch, num_tokens, emb_dim)
    for layer, block in enumerate(model.trf_blocks):
        x = block_cached(block, x, cache, layer)
    cache.advance(num_tokens)  # once, after every block has written the same positions
    return model.out_head(model.final_norm(x))  # (batch, num_tokens, vocab_size)
    # END SOLUTION


def generate_cached(model, idx: torch.Tensor, max_new_tokens: int, cache: KVCache | None = None,
                    eos_id: int | None = None) -> torch.Tensor:
    """Greedy generation with a KV cache: the same tokens as ``generate(model, idx, max_new_tokens,
    context_size)`` with ``temperature=0``, for sequences that fit the context.

    The prompt is fed once (the prefill: ``gpt_cached(model, idx, cache)``), then each step feeds only
    the token chosen last, ``(batch, 1)``, and picks the ``argmax`` of the logits at the last
    position. With ``eos_id``, rows that produced it keep producing it, and generation stops once
    every row has. Runs under ``torch.no_grad()``; put the model in eval mode first.

    Args:
        model: a ``GPTModel`` (or a model with the same parts, by name).
        idx: ``(batch, num_tokens)`` int64, the prompt.
        max_new_tokens: the most tokens to add; ``num_tokens + max_new_tokens - 1`` positions must
            fit the cache (the last token chosen is never fed).
        cache: the cache to use; None makes ``KVCache.for_model(model, batch, num_tokens +
            max_new_tokens)``. It is reset first.

    Returns:
        ``(batch, num_tokens + n_new)`` int64: ``idx`` followed by the new tokens.
    """
    if cache is None:
        cache = KVCache.for_model(model, idx.size(0), idx.size(1) + max_new_tokens)
    # BEGIN SOLUTION 12: reset, prefill the prompt, then feed one token per step
    cache.reset()
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    tokens, new = [idx], idx
    with torch.no_grad():
        for step in range(max_new_tokens):
            logits = gpt_cached(model, new, cache)[:, -1, :]  # (batch, vocab_size): the last position's
            new = logits.argmax(dim=-1, keepdim=True)
            if eos_id is not None:
                new = new.masked_fill(finished[:, None], eos_id)
                finished |= new[:, 0] == eos_id
            tokens.append(new)
            if eos_id is not None and bool(finished.all()):
                break
    return torch.cat(tokens, dim=1)
    # END SOLUTION
