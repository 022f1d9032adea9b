"""Cached generation speed: the solutions' KV cache against no cache and against transformers.

GPT-2 small (124M) configuration, random weights (transformers' GPT2LMHeadModel initialisation,
loaded into the solutions' GPTModel with load_gpt2_weights, so both models compute the same
function), fp32, eval mode, batch 1, a 4-token prompt, greedy decoding, 200 new tokens:

- solutions, cached: ``kv_cache.generate_cached`` (prefill once, then one token per step);
- solutions, uncached: ``generate.generate`` (the whole sequence every step), UNCACHED_TOKENS new
  tokens (all 200 by default);
- transformers: ``generate(use_cache=True, do_sample=False)``, exactly 200 new tokens.

Targets (issue 6): cached / uncached >= 8x; solutions cached / transformers >= 1.2x (new tokens/s).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from solutions.config import GPTConfig  # noqa: E402
from solutions.generate import generate  # noqa: E402
from solutions.kv_cache import generate_cached  # noqa: E402
from solutions.model import GPTModel  # noqa: E402
from solutions.weights import load_gpt2_weights  # noqa: E402

PROMPT, NEW, UNCACHED_TOKENS = 4, 200, 200
TARGET_UNCACHED, TARGET_HF = 8.0, 1.2


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    theirs = GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa")).eval()
    ours = GPTModel(GPTConfig.preset("124M", drop_rate=0.0)).eval()
    load_gpt2_weights(ours, theirs.state_dict())
    prompt = torch.randint(0, 50257, (1, PROMPT))
    print(f"GPT-2 small, random weights, fp32, {PROMPT}-token prompt, greedy, {torch.get_num_threads()} threads, torch {torch.__version__}")

    generate_cached(ours, prompt, 8)  # warm-up
    theirs.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
    cached, t_cached = timed(lambda: generate_cached(ours, prompt, NEW))
    with torch.no_grad():
        hf, t_hf = timed(lambda: theirs.generate(prompt, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                                                  use_cache=True, pad_token_id=0))
    uncached, t_uncached = timed(lambda: generate(ours, prompt, UNCACHED_TOKENS, context_size=1024))

    rate = {"cached": NEW / t_cached, "uncached": UNCACHED_TOKENS / t_uncached, "hf": (hf.size(1) - PROMPT) / t_hf}
    print(f"  solutions, KV cache    {rate['cached']:6.1f} new tokens/s  ({NEW} tokens in {t_cached:.1f} s)")
    print(f"  solutions, no cache    {rate['uncached']:6.1f} new tokens/s  ({UNCACHED_TOKENS} tokens in {t_uncached:.1f} s)")
    print(f"  transformers, cache    {rate['hf']:6.1f} new tokens/s  ({hf.size(1) - PROMPT} tokens in {t_hf:.1f} s)")
    n = min(cached.size(1), uncached.size(1), hf.size(1))
    print(f"  same greedy tokens: cached vs uncached {torch.equal(cached[:, :n], uncached[:, :n])}, "
          f"cached vs transformers {torch.equal(cached[:, :n], hf[:, :n])} (first {n - PROMPT} new tokens)")
    for name, ratio, target in (("cached / uncached", rate["cached"] / rate["uncached"], TARGET_UNCACHED),
                                ("cached / transformers", rate["cached"] / rate["hf"], TARGET_HF)):
        print(f"  ratio {name}: {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'NOT met'})")


if __name__ == "__main__":
    main()
