"""A deliberately naive byte-level BPE trainer: the oracle for exercise 04 (bpe_train).

It recounts every pair over every chunk before each merge (quadratic, and slow on purpose: it is
written to be obviously right, not fast), so it shares no clever code with the exercise it checks.
The graded tests run it live on small texts; the switches produce the known wrong variants that
failure messages name.

    vocab, merges = train(text, vocab_size, special_tokens)
"""

from __future__ import annotations

import regex

# GPT-2's pre-tokenization pattern (openai/gpt-2, src/encoder.py).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def chunks(text: str, special_tokens=(), split_special: bool = True, pretokenize: bool = True) -> list[str]:
    """The pieces of ``text`` that merges stay inside: split on special tokens, then GPT-2's pattern."""
    parts = [text]
    if split_special:
        for token in sorted(special_tokens, key=len, reverse=True):
            parts = [piece for part in parts for piece in part.split(token)]
    if not pretokenize:
        return [p for p in parts if p]
    return [c for part in parts for c in regex.findall(GPT2_PATTERN, part)]


def train(
    text: str,
    vocab_size: int,
    special_tokens=(),
    tie: str = "greatest",
    split_special: bool = True,
    pretokenize: bool = True,
    max_merges: int | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train byte-level BPE the slow way. ``tie="least"`` breaks ties the wrong way round,
    ``tie="ids"`` by the pairs' token ids instead of their bytes, ``tie="first"`` by the order they
    first appear in;
    ``split_special=False`` and ``pretokenize=False`` leave out those steps; ``max_merges`` stops early."""
    vocab = {i: bytes([i]) for i in range(256)}
    for token in special_tokens:
        vocab[len(vocab)] = token.encode("utf-8")
    words: dict[tuple[bytes, ...], int] = {}
    for c in chunks(text, special_tokens, split_special, pretokenize):
        key = tuple(bytes([b]) for b in c.encode("utf-8"))
        words[key] = words.get(key, 0) + 1
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size and (max_merges is None or len(merges) < max_merges):
        counts: dict[tuple[bytes, bytes], int] = {}
        for word, n in words.items():
            for i in range(len(word) - 1):
                pair = (word[i], word[i + 1])
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        top = max(counts.values())
        tied = [pair for pair, n in counts.items() if n == top]
        if tie == "ids":  # the known mistake: pairs compared by their ids, not their bytes
            ids = {b: i for i, b in vocab.items()}
            best = max(tied, key=lambda pair: (ids[pair[0]], ids[pair[1]]))
        elif tie == "first":  # the known mistake: the first tied pair met, in the order of the text
            best = tied[0]
        else:
            best = max(tied) if tie == "greatest" else min(tied)
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        merged_words: dict[tuple[bytes, ...], int] = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged_words[tuple(out)] = merged_words.get(tuple(out), 0) + n
        words = merged_words
    return vocab, merges
