"""The tokenization track's speed: the solutions' BPE trainer and GPT-2 tokenizer.

- ``train_bpe`` on the default corpus (the text of CPython's ``pydoc_data.topics``, about 465 KB)
  to 1,000 and 5,000 tokens, and the naive trainer of reference/naive_bpe.py (a recount per
  merge) to 1,000 tokens for comparison;
- ``Tokenizer.encode`` with GPT-2's ranks on 1 MB of English (the same corpus, repeated) against
  tiktoken's GPT-2 encoding, as a ratio of times. Target: within 5x of tiktoken.

Run with ``nox -s bench -- tokenizer``. Needs GPT-2's ranks offline (see reference/gpt2_encoding.py).
"""

from __future__ import annotations

import statistics
import sys
import time

import pydoc_data.topics

from harness.manifest import ROOT

sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "reference"))

import gpt2_encoding  # noqa: E402
import naive_bpe  # noqa: E402
from solutions.bpe import train_bpe  # noqa: E402
from solutions.tokenizer import Tokenizer  # noqa: E402

TARGET = 5.0


def corpus() -> str:
    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    text = corpus()
    print(f"corpus: pydoc_data.topics, {len(text.encode()) / 1e6:.2f} MB")
    for vocab_size in (1000, 5000):
        seconds = best(lambda: train_bpe(text, vocab_size, ["<|endoftext|>"]), 3)
        print(f"train_bpe to {vocab_size:>5} tokens: {seconds:6.2f} s (best of 3)")
    start = time.perf_counter()
    _, merges = naive_bpe.train(text, 1000, ["<|endoftext|>"])
    naive = time.perf_counter() - start
    fast = best(lambda: train_bpe(text, 1000, ["<|endoftext|>"]), 1)
    same = merges == train_bpe(text, 1000, ["<|endoftext|>"])[1]
    print(f"naive trainer to  1000 tokens: {naive:6.2f} s, {naive / fast:.0f}x the solution's time (same merges: {same})")

    english = (text * (1 + 1_000_000 // len(text)))[:1_000_000]
    enc = gpt2_encoding.gpt2_encoding()
    tok = Tokenizer.from_gpt2(gpt2_encoding.gpt2_tiktoken_file())
    enc.encode(english[:1000])
    reference = enc.encode(english)
    if tok.encode(english) != reference:
        sys.exit("the solutions' Tokenizer differs from tiktoken on the benchmark text")
    t_tiktoken = statistics.median(best(lambda: enc.encode(english), 1) for _ in range(5))

    def cold():
        tok.cache.clear()
        tok.encode(english)

    t_cold = statistics.median(best(cold, 1) for _ in range(5))
    t_warm = statistics.median(best(lambda: tok.encode(english), 1) for _ in range(5))
    t_stream = best(lambda: list(tok.encode_iterable(english.splitlines(keepends=True))), 3)
    t_decode = best(lambda: tok.decode(reference), 3)
    mb = len(english.encode()) / 1e6
    print(f"encode 1 MB of English ({len(reference):,} tokens), median of 5:")
    print(f"  tiktoken                    {t_tiktoken:6.3f} s  {mb / t_tiktoken:6.1f} MB/s")
    print(f"  Tokenizer, empty cache      {t_cold:6.3f} s  {mb / t_cold:6.1f} MB/s  {t_cold / t_tiktoken:4.1f}x tiktoken's time "
          f"(target: within {TARGET:g}x) {'ok' if t_cold / t_tiktoken <= TARGET else 'MISSED'}")
    print(f"  Tokenizer, cache filled     {t_warm:6.3f} s  {mb / t_warm:6.1f} MB/s  {t_warm / t_tiktoken:4.1f}x")
    print(f"  encode_iterable, by lines   {t_stream:6.3f} s  {mb / t_stream:6.1f} MB/s  {t_stream / t_tiktoken:4.1f}x")
    print(f"  decode                      {t_decode:6.3f} s")


if __name__ == "__main__":
    main()
