"""Exercise 25: the modern decoder's KV cache: RoPE at absolute positions, n_kv_heads heads cached,
a sliding window kept in a ring buffer of ``window`` slots.

Oracle: ``gpt_oracle.modern``, the whole sequence in one float64 forward pass (its last rows are
what a cache must give, chunk by chunk), on random tiny configurations. The learner's
``ModernKVCache`` and ``modern_cached`` drive the course's reference ModernModel
(parts/modern.py, through the scenarios of parts/modern_decoding.py), so mistakes in 19-23 cost
this exercise nothing.
"""

import torch
from gpt_oracle import modern, modern_config, modern_params

from harness.compare import Mistake, assert_close, assert_true, expect_value_error
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "25"
PARTS = ("rmsnorm", "rope", "swiglu", "gqa", "modern")
ORACLE = "the whole sequence in one forward pass of the float64 modern model"


def split(gen, total, first, window=None):
    """``total`` tokens as a prefill of ``first``, a chunk of several (longer than the window when
    there is one and room for it), then single tokens."""
    chunks, left = [first], total - first
    if left >= 3:
        low = min(left - 1, (window or 1) + 1)
        chunks.append(n(gen, max(2, low), left - 1))
        left -= chunks[-1]
    return chunks + [1] * left


def case(gen, window=None, batch=None, full=False, **fixed):
    """A random tiny model, token ids and chunks; with ``full`` the ids are exactly the context
    length long, so the cache (max_len = context_length) is filled to its last slot."""
    cfg = modern_config(gen, context_length=n(gen, 8, 16), window=window, **fixed)
    total = cfg["context_length"] if full else n(gen, 6, cfg["context_length"])
    idx = torch.randint(0, cfg["vocab_size"], (batch or n(gen, 1, 3), total), generator=gen)
    first = n(gen, 1, total - 4) if window is None else n(gen, min(window + 1, total - 4), total - 4)
    return cfg, idx, modern_params(gen, cfg), split(gen, total, first, window)


def mistakes(idx, params, cfg, chunks):
    restart = torch.cat([torch.arange(c) for c in chunks])
    out = [Mistake("RoPE at positions 0, 1, ... in every chunk instead of cache.length, cache.length + 1, ...",
                   "Rotate the new queries and keys at torch.arange(start, start + num_tokens), start = cache.length read before "
                   "the blocks; advance the cache after them.", lambda: modern(idx, params, cfg, rope_positions=restart))]
    if cfg["qk_norm"]:
        out.append(Mistake("the QK-norm skipped in the cached attention", "Apply att.q_norm and att.k_norm (when not None) before RoPE, "
                           "as the full pass does.", lambda: modern(idx, params, {**cfg, "qk_norm": False})))
    if cfg["window"] is not None:
        out.append(Mistake("the window one token too wide: query p saw key p - window",
                           "Query p sees the keys at positions q with p - window < q <= p: mask by the positions update returns.",
                           lambda: modern(idx, params, cfg, window_off_by_one=True)))
    if cfg["qk_norm"]:
        out.append(Mistake("the QK-norm applied after RoPE, not before",
                           "Normalise q and k (att.q_norm, att.k_norm) first, then "
                           "rotate them, as the full pass does.", lambda: modern(idx, params, cfg,
                                                                                 norm_after_rope=True)))
    if 1 < cfg["n_kv_heads"] < cfg["n_heads"]:
        out.append(Mistake("the key/value heads repeated in the wrong order (.repeat, not repeat_interleave)",
                           "keys.repeat_interleave(n_heads // n_kv_heads, dim=1): query heads 0..group-1 share kv head "
                           "0.",
                           lambda: modern(idx, params, cfg, repeat="tile")))
    out += [Mistake("RoPE left off the cached keys",
                    "Rotate the new keys as well as the queries, at their own positions, before "
                    "cache.update: the cache holds rotated keys.", lambda: modern(idx, params, cfg, rope_keys=False)),
            Mistake("the scores not scaled by 1 / sqrt(head_dim)", "scores = q @ keys^T / math.sqrt(att.head_dim).",
                    lambda: modern(idx, params, cfg, scale=False))]
    return out


def describe(cfg, idx, chunks):
    window = f", window={cfg['window']}" if cfg["window"] is not None else ""
    return (f"ModernModel(n_layers={cfg['n_layers']}, n_heads={cfg['n_heads']}, n_kv_heads={cfg['n_kv_heads']}, "
            f"qk_norm={cfg['qk_norm']}{window}) fed token ids of shape {tuple(idx.shape)} through a ModernKVCache in chunks of "
            f"{chunks}: the logits")


def check_chunks(impl, cfg, idx, params, chunks, **kw):
    res = impl.scenario("modern_decoding.cached_logits", cfg, params, idx, chunks, substitute=PARTS, **kw)
    assert_close(res.out["logits"], modern(idx, params, cfg).float(), describe(cfg, idx, chunks), oracle=ORACLE, atol=1e-4, rtol=1e-4,
                 mistakes=mistakes(idx, params, cfg, chunks),
                 context=f"the {idx.size(1)}-token sequence in one forward pass, rows for the same positions")
    want = [size for size in chunks for _ in range(cfg["n_layers"])]
    assert_true(res.out["fed"] == want, f"{describe(cfg, idx, chunks)[:-15]}: the blocks were fed {res.out['fed']} tokens per call (a hook "
                                        f"on each block's norm1 counted them); expected each chunk's own tokens, {want}: the cache holds "
                                        "the past, so each call runs the model on the new tokens only")
    return res.out


def test_cached_logits_equal_the_full_pass(impl, gen):
    for qk_norm in (True, False):  # Qwen3's, filling the cache to its last slot, then Llama's
        check_chunks(impl, *case(gen, qk_norm=qk_norm, full=qk_norm))


def test_sliding_window_cache_keeps_only_the_window(impl, gen):
    window = n(gen, 1, 4)
    cfg, idx, params, chunks = case(gen, window=window)
    out = check_chunks(impl, cfg, idx, params, chunks)
    b, kv, hd = idx.size(0), cfg["n_kv_heads"], cfg["head_dim"]
    want = [(b, kv, window, hd)] * cfg["n_layers"]
    assert_true(out["buffers"] == want, f"{describe(cfg, idx, chunks)[:-15]}: the cache's key buffers have shapes {out['buffers']}; "
                                        f"expected {want}: a window of {window} needs {window} slots, whatever the context length")
    seen = 0
    for size, held in zip(chunks, out["held"]):
        seen += size
        expected = list(range(max(0, seen - window), seen))
        assert_true(held.get("positions") == expected,
                    f"after {seen} tokens (chunks {chunks}) with window={window}, cache.positions holds {held}; expected the last "
                    f"{window} positions, {expected}, each in slot position % {window}")


def test_cache_stores_only_the_kv_heads(impl, gen):
    cfg, idx, params, chunks = case(gen, n_kv_heads=n(gen, 2, 3))  # two or more, so that the groups' order shows
    cfg["n_heads"] = cfg["n_kv_heads"] * n(gen, 2, 4)
    cfg["emb_dim"] = cfg["n_heads"] * cfg["head_dim"]
    params = modern_params(gen, cfg)
    out = check_chunks(impl, cfg, idx, params, chunks)
    want = [(idx.size(0), cfg["n_kv_heads"], cfg["context_length"], cfg["head_dim"])] * cfg["n_layers"]
    assert_true(out["buffers"] == want, f"{describe(cfg, idx, chunks)[:-15]}: the cache's key buffers have shapes {out['buffers']}; "
                                        f"expected {want}: n_kv_heads heads ({cfg['n_heads'] // cfg['n_kv_heads']}x fewer than "
                                        "n_heads), repeated over their groups only after the cache is read")


def test_update_returns_what_each_query_may_see(impl, gen):
    layers, b, kv, hd = n(gen, 1, 3), n(gen, 1, 2), n(gen, 1, 3), n(gen, 2, 4)
    window = n(gen, 2, 4)
    first, second = n(gen, window + 1, 7), n(gen, 2, 4)
    max_len = first + second + 1  # the last update fills the cache to max_len exactly
    layer = n(gen, 0, layers - 1)
    keys = torch.randn(b, kv, first + second + 1, hd, generator=gen)
    values = torch.randn(b, kv, first + second + 1, hd, generator=gen)
    steps = [("update", (layer, keys[:, :, :first], values[:, :, :first])), ("advance", (first,)),
             ("update", (layer, keys[:, :, first:first + second], values[:, :, first:first + second])), ("advance", (second,)),
             ("update", (layer, keys[:, :, -1:], values[:, :, -1:])), ("$attr", ("length",))]
    res = impl.call("modern_cache.ModernKVCache", layers, b, kv, hd, max_len, window, then=steps)
    what = f"ModernKVCache(n_layers={layers}, batch_size={b}, n_kv_heads={kv}, head_dim={hd}, max_len={max_len}, window={window})"
    start = 0
    for i, size in enumerate((first, second, 1)):
        got_k, got_v, got_pos = res.then[2 * i]
        want_pos = list(range(max(0, start - window), start + size))
        assert_true(isinstance(got_pos, torch.Tensor) and sorted(got_pos.tolist()) == want_pos,
                    f"{what}: update with positions {start}..{start + size - 1} returned positions "
                    f"{got_pos.tolist() if isinstance(got_pos, torch.Tensor) else got_pos}; expected (in any order) {want_pos}: the "
                    f"{min(start, window)} positions held before the call, read before writing, then the {size} new ones")
        order = got_pos.argsort()
        assert_close(got_k[:, :, order], keys[:, :, want_pos], f"{what}: the keys update returned for positions {want_pos}",
                     oracle="the keys given at those positions")
        assert_close(got_v[:, :, order], values[:, :, want_pos], f"{what}: the values update returned for positions {want_pos}",
                     oracle="the values given at those positions")
        start += size
    assert_true(res.then[-1] == first + second, f"{what}.length is {res.then[-1]} after advance({first}), advance({second}) and an "
                                                f"update; expected {first + second} (update does not move it)")


def test_reset_between_prompts(impl, gen):
    cfg, idx, params, chunks = case(gen, window=[None, n(gen, 2, 4)][n(gen, 0, 1)])
    try:
        check_chunks(impl, cfg, idx, params, chunks, reset_after=n(gen, 1, idx.size(1) - 2))
    except Mismatch as e:
        raise Mismatch("after another prompt and cache.reset(), " + str(e) + "\nreset() must empty the cache: length 0 and every "
                       "slot's position -1, so that the next prompt attends to nothing of the last.") from None


def test_greedy_generation_equals_uncached(impl, gen):
    cfg, idx, params, _ = case(gen, window=[None, n(gen, 2, 4)][n(gen, 0, 1)])
    prompt, steps = n(gen, 1, 4), n(gen, 2, cfg["context_length"] - 4)
    want = idx[:, :prompt]
    for step in range(steps):
        top = modern(want, params, cfg)[:, -1].topk(2, dim=-1)
        if float((top.values[:, 0] - top.values[:, 1]).min()) < 1e-3:  # a near tie: float32 may pick either; check up to here
            steps = step
            break
        want = torch.cat([want, top.indices[:, :1]], 1)
    if steps == 0:
        return
    got = impl.scenario("modern_decoding.traced_generate", cfg, params, idx[:, :prompt], steps, substitute=PARTS).out["tokens"]
    assert_true(isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(want.shape),
                f"generate_modern returned {getattr(got, 'shape', type(got).__name__)}; expected a tensor of shape {tuple(want.shape)}")
    if not torch.equal(got, want):
        r, c = (got != want).nonzero()[0].tolist()
        # the first new token read off the prompt's first position (logits[:, 0]); every later step feeds one token, where
        # the first position is the last
        first = idx[:, :prompt]
        for step in range(steps):
            first = torch.cat([first, modern(first, params, cfg)[:, 0 if step == 0 else -1].argmax(-1, keepdim=True)], 1)
        named = prompt > 1 and torch.equal(got, first)
        raise Mismatch(f"greedy generate_modern through your cache differs from greedy uncached generation (argmax of the full "
                       f"forward pass) at row {r}, position {c} (new token {c - prompt + 1} of {steps}): got {got[r, c].item()}, "
                       f"expected {want[r, c].item()}. Row {r} was {want[r].tolist()}."
                       + ("\nThis looks like: the next token taken from the first position's logits after the prompt, not the last. "
                          "The next token follows the last position: logits[:, -1]." if named else ""))


def test_past_max_len_is_a_clear_error(impl, gen):
    cfg, idx, params, chunks = case(gen)
    max_len = idx.size(1) - 1  # one position too many: the boundary
    expect_value_error(lambda: impl.scenario("modern_decoding.cached_logits", cfg, params, idx, chunks, max_len=max_len,
                                             substitute=PARTS),
                       f"feeding {idx.size(1)} tokens in chunks of {chunks} through a ModernKVCache with max_len={max_len}",
                       needles=(max_len,), why=": say that the cache holds max_len positions and how many came")
