"""The tokenization track's speed: the solutions' BPE trainer and GPT-2 tokenizer.

- ``train_bpe`` on the default corpus (the text of CPython's ``pydoc_data.topics``, about 465 KB)
  to 1,000 and 5,000 tokens, and the naive trainer of reference/naive_bpe.py (a recount per
  merge) to 1,000 tokens for comparison;
- ``Tokenizer.encode`` with GPT-2's ranks, with an empty cache, on text it has not seen, of four
  kinds: prose (the corpus, once), code (the standard library's own .py files), JSON (seeded
  records) and words in non-Latin scripts (Cyrillic, Greek, CJK, Arabic, Hiragana, Hangul), once
  drawn with a language's Zipf frequencies from 30,000 made-up words and once every word new,
  against tiktoken's GPT-2 encoding, as a ratio of times. Target: within 5x of tiktoken. Then
  1 MB of English (the corpus repeated) with the cache filled, by lines, and decode.

Run with ``nox -s bench -- tokenizer``. Needs GPT-2's ranks offline (see reference/gpt2_encoding.py).
"""

from __future__ import annotations

import glob
import json
import os
import random
import statistics
import sys
import sysconfig
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


def unseen_texts() -> dict[str, str]:
    """Text of four kinds, about 400-500 KB each, that the tokenizer has not cached."""
    rng = random.Random(0)
    code, size = [], 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            code.append(f.read())
        size += len(code[-1])
        if size > 500_000:
            break
    records = [{"id": i, "name": "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 12))),
                "score": round(rng.uniform(-1000, 1000), rng.randint(0, 6)),
                "tags": [rng.randint(0, 10**6) for _ in range(rng.randint(0, 5))], "ok": rng.random() < 0.5}
               for i in range(6000)]
    scripts = [(0x0430, 0x044F), (0x03B1, 0x03C9), (0x4E00, 0x9FA5), (0x0627, 0x064A), (0x3041, 0x3096), (0xAC00, 0xD7A3)]

    def word() -> str:
        low, high = rng.choice(scripts)
        return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 8 if low < 0x3000 else 20)))

    def text_of(next_word) -> str:
        words = []
        while sum(len(w) + 1 for w in words) < 150_000:
            words.append(next_word())
            if rng.random() < 0.1:
                words.append(rng.choice([",", ".", "。", "!", "\n"]))
        return " ".join(words)

    # A language repeats its words with Zipf's frequencies (the k-th most common about 1/k as often):
    # 30,000 made-up words drawn so give some 5,000 distinct chunks among 19,000, a quarter, about
    # what a real text of that length holds in a language with many word forms.
    vocabulary = [word() for _ in range(30000)]
    weights = [1 / (k + 1) for k in range(len(vocabulary))]
    return {"prose (the corpus, once)": corpus(), "code (stdlib .py files)": "".join(code)[:500_000],
            "JSON (seeded records)": json.dumps(records, indent=1)[:500_000],
            "non-Latin, Zipf words": text_of(lambda: rng.choices(vocabulary, weights)[0]),
            "non-Latin, every word new": text_of(word)}


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

    enc = gpt2_encoding.gpt2_encoding()
    tok = Tokenizer.from_gpt2(gpt2_encoding.gpt2_tiktoken_file())
    enc.encode("warm up")
    print(f"encode text the tokenizer has not seen, with an empty cache, median of 5 (target: within {TARGET:g}x tiktoken's time):")
    for kind, unseen in unseen_texts().items():
        if tok.encode(unseen, allowed_special="all") != enc.encode(unseen, allowed_special="all"):
            sys.exit(f"the solutions' Tokenizer differs from tiktoken on {kind}")

        def cold():
            tok.cache.clear()
            tok.encode(unseen, allowed_special="all")

        theirs = statistics.median(best(lambda: enc.encode(unseen, allowed_special="all"), 1) for _ in range(5))
        ours = statistics.median(best(cold, 1) for _ in range(5))
        print(f"  {kind:28s} {len(unseen.encode()) / 1e3:5.0f} KB  Tokenizer {ours:6.3f} s, tiktoken {theirs:6.3f} s: "
              f"{ours / theirs:4.1f}x {'ok' if ours / theirs <= TARGET else 'MISSED'}")

    english = (text * (1 + 1_000_000 // len(text)))[:1_000_000]
    reference = enc.encode(english)
    if tok.encode(english) != reference:
        sys.exit("the solutions' Tokenizer differs from tiktoken on the benchmark text")
    t_tiktoken = statistics.median(best(lambda: enc.encode(english), 1) for _ in range(5))
    t_warm = statistics.median(best(lambda: tok.encode(english), 1) for _ in range(5))
    t_stream = best(lambda: list(tok.encode_iterable(english.splitlines(keepends=True))), 3)
    t_decode = best(lambda: tok.decode(reference), 3)
    mb = len(english.encode()) / 1e6
    print(f"1 MB of English (the corpus repeated, {len(reference):,} tokens), median of 5:")
    print(f"  tiktoken                    {t_tiktoken:6.3f} s  {mb / t_tiktoken:6.1f} MB/s")
    print(f"  Tokenizer, cache filled     {t_warm:6.3f} s  {mb / t_warm:6.1f} MB/s  {t_warm / t_tiktoken:4.1f}x")
    print(f"  encode_iterable, by lines   {t_stream:6.3f} s  {mb / t_stream:6.1f} MB/s  {t_stream / t_tiktoken:4.1f}x")
    print(f"  decode                      {t_decode:6.3f} s")


if __name__ == "__main__":
    main()
