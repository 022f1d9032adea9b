"""Reference part for exercise 12 (see parts/attention.py): the same API as the exercise's
kv_cache.py, for the checks of the exercises built on it (35 streams tokens through
``KVCache`` and ``gpt_cached``), so that their points depend on their own code only.

The cache keeps one key and one value buffer per block, made once and filled by slice
assignment; attention over the cached keys, with the mask rows of the absolute positions, is the
kernel ``aten.scaled_dot_product_attention`` through ``torch.ops``: exercise 12 forbids that
kernel (35 does not) and the allow-list refuses ``torch.ops``; the kernel runs once when the part
is imported. The model's modules are called as modules (``block.norm1(x)``, ``block.ff(...)``),
so forward hooks on them see each cached step.
"""

import torch

torch.ops.aten.scaled_dot_product_attention(*torch.zeros(3, 1, 1, 1))  # refused at import in exercise 12's process


class KVCache:
    def __init__(self, n_layers, batch_size, num_heads, max_len, head_dim, dtype=torch.float32, device=None):
        size = (batch_size, num_heads, max_len, head_dim)
        self.keys = [torch.zeros(size, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(size, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_len, self.length = int(max_len), 0

    @classmethod
    def for_model(cls, model, batch_size, max_len=None):
        first = model.trf_blocks[0].att
        table = model.tok_emb.weight
        limit = max_len if max_len else model.pos_emb.num_embeddings
        return cls(len(model.trf_blocks), batch_size, first.num_heads, limit, first.head_dim, dtype=table.dtype, device=table.device)

    def update(self, layer, keys, values):
        stop = self.length + int(keys.shape[2])
        if stop > self.max_len:
            raise ValueError(f"{self.length} positions cached and {keys.shape[2]} more do not fit a KV cache of {self.max_len}")
        window = slice(self.length, stop)
        self.keys[layer][:, :, window] = keys
        self.values[layer][:, :, window] = values
        return self.keys[layer][:, :, :stop], self.values[layer][:, :, :stop]

    def advance(self, num_tokens):
        self.length = self.length + int(num_tokens)

    def reset(self):
        self.length = 0


def attention_cached(att, x, cache, layer):
    batch, count, _ = x.shape
    first = cache.length
    heads = [w(x).reshape(batch, count, att.num_heads, att.head_dim).permute(0, 2, 1, 3) for w in (att.W_query, att.W_key, att.W_value)]
    k_all, v_all = cache.update(layer, heads[1], heads[2])
    allowed = att.mask[first:first + count, :first + count]
    p = att.dropout.p if att.training else 0.0
    mixed = torch.ops.aten.scaled_dot_product_attention(heads[0], k_all, v_all, allowed, p)
    mixed = mixed.permute(0, 2, 1, 3).reshape(batch, count, att.d_out)
    return att.out_proj(mixed)


def block_cached(block, x, cache, layer):
    h = x + block.drop_shortcut(attention_cached(block.att, block.norm1(x), cache, layer))
    return h + block.drop_shortcut(block.ff(block.norm2(h)))


def gpt_cached(model, in_idx, cache):
    count = int(in_idx.shape[1])
    first = cache.length
    limit = model.pos_emb.num_embeddings
    if first + count > limit:
        raise ValueError(f"{first} cached and {count} new tokens are more than the model's context_length {limit}")
    where = torch.arange(first, first + count, device=in_idx.device)
    h = model.drop_emb(model.tok_emb(in_idx) + model.pos_emb(where))
    for i, block in enumerate(model.trf_blocks):
        h = block_cached(block, h, cache, i)
    cache.advance(count)
    return model.out_head(model.final_norm(h))


def generate_cached(model, idx, max_new_tokens, cache=None, eos_id=None):
    if cache is None:
        cache = KVCache.for_model(model, idx.shape[0], idx.shape[1] + max_new_tokens)
    cache.reset()
    out, step_in = idx, idx
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            pick = gpt_cached(model, step_in, cache)[:, -1].argmax(-1)
            if eos_id is not None:
                pick = torch.where(done, torch.full_like(pick, eos_id), pick)
                done = done | (pick == eos_id)
            step_in = pick[:, None]
            out = torch.cat([out, step_in], dim=1)
            if eos_id is not None and bool(done.all()):
                break
    return out
