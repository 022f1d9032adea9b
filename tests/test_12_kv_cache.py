"""Exercise 12: the KV cache.

Oracles: the full forward pass of ``gpt_oracle.gpt`` (``F.embedding``, the functional blocks on
``F.scaled_dot_product_attention``, ``F.layer_norm``, ``F.linear``) over the whole sequence, and
greedy ``argmax`` chains of it; ``cached`` below, a functional cached forward on
``F.scaled_dot_product_attention`` with an explicit mask, gives the outputs of known mistakes
(no position offset, mask rows not offset). The learner's ``gpt_cached``, ``block_cached`` and
``attention_cached`` run on the reference GPTModel (parts/model.py, with the reference attention
part in place of the learner's attention.py), so a mistake in 07-09 costs nothing here; the
trusted scenarios of ``harness/parts/kv_decoding.py`` build the model in the worker and feed it
chunk by chunk, or record what each block is fed.
"""

import torch
import torch.nn.functional as F
from gpt_oracle import feed_forward, gpt, gpt_params, layer_norm, linear, random_config, sub

from harness.compare import Mistake, assert_close, assert_true
from harness.draw import n
from harness.failures import LearnerError, Mismatch

EXERCISE = "12"
PARTS = ("attention",)
ORACLE = "the full forward pass (F.embedding, blocks on F.scaled_dot_product_attention, F.layer_norm, F.linear)"


def cached(idx, params, cfg, chunks, variant=""):
    """The logits of ``idx`` fed chunk by chunk through a cache, written out; ``variant``:
    ``no_offset`` (positions restart at 0 in every chunk), ``mask_from_zero`` (mask rows 0..t-1)."""
    heads, layers = cfg["n_heads"], cfg["n_layers"]
    past = [[None, None] for _ in range(layers)]
    out, start = [], 0
    for size in chunks:
        tok = idx[:, start:start + size]
        first = 0 if variant == "no_offset" else start
        x = F.embedding(tok, params["tok_emb.weight"]) + params["pos_emb.weight"][first:first + size]
        for i in range(layers):
            p = sub(params, f"trf_blocks.{i}.")
            h = layer_norm(x, p, "norm1")
            b, t, d = h.shape
            q, k, v = (linear(h, p, f"att.W_{w}").view(b, t, heads, d // heads).transpose(1, 2) for w in ("query", "key", "value"))
            if past[i][0] is not None:
                k, v = torch.cat([past[i][0], k], 2), torch.cat([past[i][1], v], 2)
            past[i] = [k, v]
            row0 = 0 if variant == "mask_from_zero" else start
            mask = torch.ones(start + size, start + size).tril().bool()[row0:row0 + size]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)
            x = x + linear(a, p, "att.out_proj")
            x = x + feed_forward(layer_norm(x, p, "norm2"), sub(p, "ff."))
        x = layer_norm(x, params, "final_norm")
        out.append(F.linear(x, params["tok_emb.weight"] if cfg["tie_weights"] else params["out_head.weight"]))
        start += size
    return torch.cat(out, 1)


def mistakes(idx, params, cfg, chunks):
    return [
        Mistake("missing position offset: the new tokens got positions 0, 1, ... instead of cache.length, cache.length + 1, ...",
                "In gpt_cached, positions = torch.arange(start, start + num_tokens) with start = cache.length "
                "(read it before the blocks; advance the cache after them).",
                lambda: cached(idx, params, cfg, chunks, "no_offset")),
        Mistake("the causal mask is not aligned to absolute positions: the rows 0 .. num_tokens - 1 were used",
                "In attention_cached, use att.mask[start:start + num_tokens, :start + num_tokens].",
                lambda: cached(idx, params, cfg, chunks, "mask_from_zero")),
    ]


def split(gen, total, first):
    """``total`` tokens as a prefill of ``first``, a chunk of several, then single tokens."""
    chunks, left = [first], total - first
    if left >= 3:
        chunks.append(n(gen, 2, left - 1))
        left -= chunks[-1]
    return chunks + [1] * left


def case(gen, batch=None, **fixed):
    cfg = random_config(gen, context_length=n(gen, 6, 14), **fixed)
    if "emb_dim" not in fixed:  # 8 features at least: LayerNorm over 2 or 4 hides what a wrong mask does
        heads = cfg["n_heads"]
        cfg["emb_dim"] = heads * max(cfg["emb_dim"] // heads, -(-8 // heads))
    total = n(gen, 5, cfg["context_length"])
    idx = torch.randint(0, cfg["vocab_size"], (batch or n(gen, 1, 3), total), generator=gen)
    return cfg, idx, gpt_params(gen, cfg), split(gen, total, n(gen, 1, total - 4))


def describe(cfg, idx, chunks):
    return (f"GPTModel(n_layers={cfg['n_layers']}, n_heads={cfg['n_heads']}, emb_dim={cfg['emb_dim']}) fed token ids "
            f"of shape {tuple(idx.shape)} through a KVCache in chunks of {chunks}: the logits")


def check_chunks(impl, cfg, idx, params, chunks, **kw):
    res = impl.scenario("kv_decoding.cached_logits", cfg, params, idx, chunks, substitute=PARTS, **kw)
    assert_close(res.out, gpt(idx, params, cfg), describe(cfg, idx, chunks), oracle=ORACLE, atol=1e-4, rtol=1e-4,
                 mistakes=mistakes(idx, params, cfg, chunks),
                 context=f"the {idx.size(1)}-token sequence in one forward pass, rows for the same positions")


def test_incremental_logits_equal_full_forward(impl, gen):
    for _ in range(2):
        check_chunks(impl, *case(gen))


def test_chunk_after_prefill(impl, gen):
    cfg, idx, params, _ = case(gen)
    total = idx.size(1)
    first = n(gen, 1, total - 2)
    check_chunks(impl, cfg, idx, params, [first, total - first])


def test_batch_of_prompts(impl, gen):
    check_chunks(impl, *case(gen, batch=n(gen, 3, 5)))


def test_reset_between_prompts(impl, gen):
    cfg, idx, params, chunks = case(gen)
    try:
        check_chunks(impl, cfg, idx, params, chunks, reset_after=n(gen, 1, idx.size(1) - 2))
    except Mismatch as e:
        raise Mismatch("after another prompt and cache.reset(), " + str(e) + "\nreset() must set length back to 0, so that "
                       "the next prompt overwrites the old positions and attends to nothing else.") from None


def test_decode_feeds_one_token_per_step(impl, gen):
    cfg, idx, params, _ = case(gen)
    prompt, steps = n(gen, 1, 4), n(gen, 2, cfg["context_length"] - 4)
    res = impl.scenario("kv_decoding.traced_generate_cached", cfg, params, idx[:, :prompt], steps, substitute=PARTS)
    fed, layers = res.out["fed"], cfg["n_layers"]
    want = [prompt] * layers + [1] * (layers * (steps - 1))
    if fed != want:
        calls = [fed[i:i + layers] for i in range(0, len(fed), layers)]
        raise Mismatch(f"generate_cached with a {prompt}-token prompt and max_new_tokens={steps}: the {layers} block(s) were fed "
                       f"{calls[:8]}{' ...' if len(calls) > 8 else ''} tokens per model call (a hook on each block's norm1 counted them); expected "
                       f"the prompt once ({prompt} tokens), then 1 token per step for {steps - 1} steps (the last token chosen is "
                       f"never fed). Feed only the newest token, gpt_cached(model, next_token, cache), not the whole sequence.")


NOT_RESET = ("\nThis looks like: the cache is not reset: it still counts the other prompt's positions. Call cache.reset() "
             "first, before the prefill, so that one cache can serve one prompt after another.")


def test_greedy_cached_equals_uncached(impl, gen):
    cfg, idx, params, _ = case(gen)
    prompt, steps = n(gen, 1, 4), n(gen, 2, cfg["context_length"] - 4)
    want = idx[:, :prompt]
    for _ in range(steps):
        want = torch.cat([want, gpt(want, params, cfg)[:, -1].argmax(-1, keepdim=True)], 1)
    # a fresh cache; then one cache that first served another prompt (prompt + 1 tokens, 2 new)
    res = impl.scenario("kv_decoding.traced_generate_cached", cfg, params, idx[:, :prompt], steps, reuse=True, substitute=PARTS)
    compare_tokens(res.out["tokens"], want, prompt, steps, "with a fresh cache")
    what = f"generate_cached with a {prompt}-token prompt, max_new_tokens={steps} and a cache that had served another prompt"
    if "reused_error" in res.out:
        raise Mismatch(f"{what} raised {res.out['reused_error']}{NOT_RESET}")
    length, fed = res.out["length_after"], prompt + steps - 1
    if length != fed:
        hint = NOT_RESET if length == fed + (prompt + 1) + 1 else ""
        raise Mismatch(f"{what} left cache.length = {length}; expected {fed} (the prompt and every new token but the last, which "
                       f"is never fed).{hint}")
    compare_tokens(res.out["reused"], want, prompt, steps, "with a cache that had served another prompt", hint=NOT_RESET)


def compare_tokens(got, want, prompt, steps, how, hint=""):
    assert_true(isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(want.shape),
                f"generate_cached {how} returned {getattr(got, 'shape', type(got).__name__)}; expected a tensor of shape {tuple(want.shape)}")
    if not torch.equal(got, want):
        r, c = (got != want).nonzero()[0].tolist()
        raise Mismatch(f"greedy generate_cached {how} differs from greedy uncached generation (argmax of the full forward pass) at row "
                       f"{r}, position {c} (new token {c - prompt + 1} of {steps}): got {got[r, c].item()}, expected {want[r, c].item()}. "
                       f"Row {r} was {want[r].tolist()}.{hint}")


def test_kvcache_buffers_length_and_reset(impl, gen):
    layers, b, h, hd, max_len = n(gen, 1, 3), n(gen, 1, 3), n(gen, 1, 4), n(gen, 2, 6), n(gen, 4, 10)
    t = n(gen, 1, max_len - 2)
    k, v = torch.randn(b, h, t, hd, generator=gen), torch.randn(b, h, t, hd, generator=gen)
    k2, v2 = torch.randn(b, h, 2, hd, generator=gen), torch.randn(b, h, 2, hd, generator=gen)
    layer = layers - 1
    res = impl.call("kv_cache.KVCache", layers, b, h, max_len, hd, then=[
        ("$attr", ("keys",)), ("$attr", ("length",)), ("update", (layer, k, v)), ("$attr", ("length",)), ("advance", (t,)),
        ("$attr", ("length",)), ("update", (layer, k2, v2)), ("reset", ()), ("$attr", ("length",))])
    keys, len0, (ka, va), len1, _, len2, (kb, vb), _, len3 = res.then
    what = f"KVCache(n_layers={layers}, batch_size={b}, num_heads={h}, max_len={max_len}, head_dim={hd})"
    assert_true(isinstance(keys, list) and len(keys) == layers and all(tuple(x.shape) == (b, h, max_len, hd) for x in keys),
                f"{what}.keys should be a list of {layers} preallocated buffers of shape {(b, h, max_len, hd)}")
    assert_true(len0 == 0 and len1 == 0 and len2 == t and len3 == 0,
                f"{what}.length: got {len0} at the start, {len1} after update (update must not move it), {len2} after advance({t}), "
                f"{len3} after reset(); expected 0, 0, {t}, 0")
    assert_close(ka, k, f"{what}.update({layer}, keys of {t} tokens) on an empty cache: the keys returned", oracle="the keys given")
    assert_close(va, v, f"{what}.update({layer}, ...) on an empty cache: the values returned", oracle="the values given")
    assert_close(kb, torch.cat([k, k2], 2), f"{what}: after advance({t}), update({layer}, keys of 2 tokens): the keys returned",
                 oracle="the earlier keys followed by the new ones")
    assert_close(vb, torch.cat([v, v2], 2), f"{what}: after advance({t}), update({layer}, values of 2 tokens): the values returned",
                 oracle="the earlier values followed by the new ones")


def test_past_max_len_is_a_clear_error(impl, gen):
    cfg, idx, params, chunks = case(gen)
    max_len = n(gen, 1, idx.size(1) - 1)
    try:
        impl.scenario("kv_decoding.cached_logits", cfg, params, idx, chunks, max_len=max_len, substitute=PARTS)
    except LearnerError as e:
        if e.message.startswith("ValueError"):
            return
        raise Mismatch(f"feeding {idx.size(1)} tokens in chunks of {chunks} to a KVCache with max_len={max_len} raised "
                       f"{e.message.split(' (')[0]}; expected a ValueError that says how many positions it holds and how many "
                       f"came (check in update, before writing)") from None
    raise Mismatch(f"a KVCache with max_len={max_len} accepted {idx.size(1)} tokens (chunks {chunks}): update must raise ValueError "
                   f"when length + num_tokens > max_len")
