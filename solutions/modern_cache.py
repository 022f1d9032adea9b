"""Exercise 25: the KV cache of the modern decoder: RoPE at absolute positions, n_kv_heads heads
cached, and a sliding window that keeps only its last positions (the modern-architecture track).

Exercise 12's cache holds every position of every head. Grouped-query attention stores only the
``n_kv_heads`` key/value heads (repeated over their groups after the cache is read), so the cache
shrinks by ``n_heads / n_kv_heads``: 4x for Llama 3.2 1B. A sliding window needs only the last
``window`` positions, so its cache is a ring buffer of ``window`` slots that never grows.
"""

import math

import torch

from .rope import apply_rope, rope_cos_sin


class ModernKVCache:
    """Keys and values per block, ``n_kv_heads`` heads, in ``capacity`` slots.

    Position ``p`` lives in slot ``p % capacity``. Without a window ``capacity = max_len`` and
    that is slot ``p`` (the cache of exercise 12); with one, ``capacity = min(window, max_len)``
    and a new position overwrites the one ``capacity`` positions before it, which no later query
    can see.

    Args:
        n_layers: number of blocks (one key and one value buffer each).
        batch_size, n_kv_heads, head_dim: the buffers' other sizes.
        max_len: the most positions a sequence may reach.
        window: the model's sliding window, or None.
        dtype, device: of the buffers.

    Attributes (graded by name):
        keys, values: lists of ``n_layers`` zero buffers ``(batch_size, n_kv_heads, capacity, head_dim)``.
        positions: int64 ``(capacity,)``, the absolute position each slot holds, -1 while empty.
        capacity, max_len, window: as above.
        length: positions seen so far (0 at the start and after ``reset``).

    ``update(layer, keys, values)``: ``keys`` and ``values`` are ``(batch_size, n_kv_heads,
    num_tokens, head_dim)``, positions ``length .. length + num_tokens - 1`` of block ``layer``,
    already rotated by RoPE. Returns ``(keys, values, positions)``: every position a query of
    this step may need, in any order, with ``positions`` (int64, one per returned key) saying
    which is which: the positions held before the call, then the new ones. The new positions are
    written to their slots (only the last ``capacity`` of them, when more come at once); a
    window's held keys are read *before* that write, since it may overwrite keys that the first
    new queries still see. ``length`` does not change. More than ``max_len`` positions in all
    raises ``ValueError`` with the numbers, before anything is written.

    ``advance(num_tokens)``: records the new positions' slots in ``positions`` and adds to
    ``length``. ``reset()``: empty again (``length`` 0, ``positions`` all -1).
    """

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, head_dim: int, max_len: int, window: int | None = None,
                 dtype: torch.dtype = torch.float32, device=None):
        # BEGIN SOLUTION 25: the capacity (window or max_len), the buffers of n_kv_heads heads, empty positions
        self.max_len, self.window = max_len, window
        self.capacity = min(window, max_len) if window is not None else max_len
        shape = (batch_size, n_kv_heads, self.capacity, head_dim)  # n_kv_heads, not n_heads: GQA's saving
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.positions = torch.full((self.capacity,), -1, dtype=torch.int64, device=device)
        self.length = 0
        # END SOLUTION

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int | None = None) -> "ModernKVCache":
        """A cache shaped for ``model`` (a ``ModernModel``), on its device and dtype; ``max_len``
        defaults to the model's context length."""
        att, weight = model.trf_blocks[0].att, model.tok_emb.weight
        return cls(len(model.trf_blocks), batch_size, att.n_kv_heads, att.head_dim, max_len or model.cfg.context_length,
                   att.window, dtype=weight.dtype, device=weight.device)

    def _kept(self, num_tokens: int) -> torch.Tensor:
        """The new positions that stay in the cache (the last ``capacity``), whose slots are ``% capacity``."""
        return torch.arange(self.length, self.length + num_tokens, device=self.positions.device)[-self.capacity:]

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # BEGIN SOLUTION 25: refuse overflow; read what is held (a window: before writing), write the kept new positions to their slots
        num_tokens = keys.size(2)
        end = self.length + num_tokens
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions: {self.length} cached + {num_tokens} new do not fit")
        new_positions = torch.arange(self.length, end, device=self.positions.device)
        held = min(self.length, self.capacity)  # slots 0 .. held - 1 are filled: they fill in order before they roll
        if self.window is not None:  # read first: the write below may overwrite keys the first new queries still see
            out = (torch.cat([self.keys[layer][:, :, :held], keys], dim=2), torch.cat([self.values[layer][:, :, :held], values], dim=2),
                   torch.cat([self.positions[:held], new_positions]))
        kept = new_positions[-self.capacity:]  # the new positions that stay (the last capacity of them)
        slots = kept % self.capacity  # (kept,): position p lives in slot p % capacity
        self.keys[layer][:, :, slots] = keys[:, :, -len(kept):]
        self.values[layer][:, :, slots] = values[:, :, -len(kept):]
        if self.window is None:  # slot p is position p: views of the buffers, no copy
            return self.keys[layer][:, :, :end], self.values[layer][:, :, :end], torch.arange(end, device=self.positions.device)
        return out
        # END SOLUTION

    def advance(self, num_tokens: int) -> None:
        # BEGIN SOLUTION 25: record which position each written slot holds, then count them
        kept = self._kept(num_tokens)
        self.positions[kept % self.capacity] = kept
        self.length += num_tokens
        # END SOLUTION

    def reset(self) -> None:
        # BEGIN SOLUTION 25: empty again
        self.positions.fill_(-1)
        self.length = 0
        # END SOLUTION


def gqa_cached(att, x: torch.Tensor, cache: ModernKVCache, layer: int) -> torch.Tensor:
    """``att(x)`` (a ``GroupedQueryAttention``, block ``layer``'s) for the next ``num_tokens``
    positions of sequences whose earlier positions are in ``cache``.

    ``x`` is ``(batch, num_tokens, emb_dim)``, the tokens at absolute positions ``start ..
    start + num_tokens - 1`` (``start = cache.length``). In the order of exercise 22: project,
    QK-norm when ``att.q_norm`` is not None, RoPE at those absolute positions (queries and the new
    keys: a key is rotated once, at its own position, and cached rotated), then
    ``cache.update(layer, keys, values)`` with the ``n_kv_heads`` heads, the returned keys and
    values repeated over their groups, and query ``p`` sees the returned keys ``q`` with
    ``q <= p`` (and ``q > p - att.window`` with a window), by their ``positions``. Returns the
    last ``num_tokens`` rows of ``att`` over the whole sequence. Uses ``att``'s parts by name:
    ``W_query``, ``W_key``, ``W_value``, ``out_proj``, ``q_norm``, ``k_norm``, ``n_heads``,
    ``n_kv_heads``, ``head_dim``, ``window``, ``theta``, ``rope_scaling``.
    """
    # BEGIN SOLUTION 25: project, QK-norm, RoPE at absolute positions, cache the kv heads, repeat them, mask by positions
    b, num_tokens, _ = x.shape
    start = cache.length
    q = att.W_query(x).view(b, num_tokens, att.n_heads, att.head_dim)
    k = att.W_key(x).view(b, num_tokens, att.n_kv_heads, att.head_dim)
    v = att.W_value(x).view(b, num_tokens, att.n_kv_heads, att.head_dim).transpose(1, 2)
    if att.q_norm is not None:
        q, k = att.q_norm(q), att.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (b, heads, num_tokens, head_dim)
    positions = torch.arange(start, start + num_tokens, device=x.device)  # absolute, so RoPE turns as in the full pass
    cos, sin = rope_cos_sin(q, positions, att.theta, att.rope_scaling)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    keys, values, key_positions = cache.update(layer, k, v)  # (b, n_kv_heads, S, head_dim), (S,)
    group = att.n_heads // att.n_kv_heads
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)  # after the cache: it stays small
    scores = q @ keys.transpose(2, 3) / math.sqrt(att.head_dim)  # (b, n_heads, num_tokens, S)
    allowed = key_positions[None, :] <= positions[:, None]  # (num_tokens, S): causal, by absolute position
    if att.window is not None:
        allowed = allowed & (key_positions[None, :] > positions[:, None] - att.window)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    context = (weights @ values).transpose(1, 2).reshape(b, num_tokens, att.n_heads * att.head_dim)
    return att.out_proj(context)  # (b, num_tokens, emb_dim)
    # END SOLUTION


def modern_cached(model, in_idx: torch.Tensor, cache: ModernKVCache) -> torch.Tensor:
    """The logits of the next ``num_tokens`` tokens (``in_idx``, ``(batch, num_tokens)``) of
    sequences whose earlier ``cache.length`` tokens are in ``cache``; ``model`` is a
    ``ModernModel``. Each block runs ``x + gqa_cached(block.att, block.norm1(x), cache, i)``,
    then ``x + block.ff(block.norm2(x))``; then ``cache.advance(num_tokens)``, once. Returns
    ``(batch, num_tokens, vocab_size)``: the last ``num_tokens`` rows of ``model`` on the whole
    sequence."""
    # BEGIN SOLUTION 25: embed (no positions here), the blocks through the cache, advance once, the final norm and the head
    x = model.tok_emb(in_idx)  # (batch, num_tokens, emb_dim)
    for layer, block in enumerate(model.trf_blocks):
        x = x + gqa_cached(block.att, block.norm1(x), cache, layer)
        x = x + block.ff(block.norm2(x))
    cache.advance(in_idx.size(1))  # every block wrote the same positions
    return model.out_head(model.final_norm(x))
    # END SOLUTION


@torch.no_grad()
def generate_modern(model, idx: torch.Tensor, max_new_tokens: int, cache: ModernKVCache | None = None,
                    eos_id: int | None = None) -> torch.Tensor:
    """Greedy generation through the cache (given: exercise 12's loop, with ``modern_cached``):
    the prompt once, then one token per step; rows that produced ``eos_id`` keep producing it,
    and generation stops when all have. Returns ``idx`` followed by the new tokens."""
    cache = cache or ModernKVCache.for_model(model, idx.size(0), idx.size(1) + max_new_tokens)
    cache.reset()
    out, step_input = idx, idx
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        step_input = modern_cached(model, step_input, cache)[:, -1].argmax(-1, keepdim=True)
        if eos_id is not None:
            step_input[done] = eos_id
            done |= step_input[:, 0] == eos_id
        out = torch.cat([out, step_input], dim=1)
        if eos_id is not None and done.all():
            break
    return out
