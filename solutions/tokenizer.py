"""Exercise 05: GPT-2's tokenizer: encode text to token ids and decode them back.

The same ids as OpenAI's tiktoken for the same ranks: ``Tokenizer.from_gpt2(path)`` with GPT-2's
ranks encodes exactly as ``tiktoken.get_encoding("gpt2")``. A vocabulary trained with
``bpe.train_bpe`` works too (``Tokenizer.from_merges``).
"""

import base64
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex

from .pretokenize import ENDOFTEXT, GPT2_PATTERN


NOT_A_TOKEN = 1 << 62  # a rank larger than any token's: "this pair is not in the vocabulary"


class Tokenizer:
    """Byte-level BPE with GPT-2's pre-tokenization and tiktoken's merge rule.

    Encoding, in order:

    1. Special tokens: the text is split on the allowed special tokens (the longest first where
       two overlap, e.g. ``"<|endoftext|><|endoftext|>"`` before ``"<|endoftext|>"``); each
       becomes its id. A special token that is in the text but not allowed is an error.
    2. Pre-tokenization: every other part is cut into chunks with ``pattern`` (GPT-2's).
    3. BPE, per chunk (``bpe``): start from the chunk's UTF-8 bytes, one token each; while some
       adjacent pair of tokens concatenates to a token in ``ranks``, merge the pair whose
       concatenation has the lowest rank (the leftmost such pair if it occurs twice); the
       chunk's ids are the ranks of the tokens left.

    Args:
        ranks: each token's bytes -> its id, which is also its merge priority: a lower id merges
            first (tiktoken's "mergeable ranks"). Holds all 256 single bytes.
        special_tokens: special token text -> its id (not in ``ranks``).
        pattern: the pre-tokenization regex, for the `regex` module.

    Attributes:
        ranks, special_tokens: as given.
        pattern: ``pattern`` compiled with ``regex.compile``.
        decoder: every id, special tokens included -> its bytes.
        cache: an empty dict for ``bpe`` to remember the ids of chunks it has seen (optional,
            but English repeats its words, and encoding is several times faster with it).
    """

    def __init__(self, ranks: dict[bytes, int], special_tokens: dict[str, int] | None = None, pattern: str = GPT2_PATTERN):
        self.ranks = dict(ranks)
        self.special_tokens = dict(special_tokens or {})
        self.pattern = regex.compile(pattern)
        self.decoder = {i: b for b, i in self.ranks.items()}
        self.decoder.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self.cache: dict[bytes, list[int]] = {}

    @classmethod
    def from_tiktoken_file(cls, path: str | os.PathLike, special_tokens: dict[str, int] | None = None, pattern: str = GPT2_PATTERN) -> "Tokenizer":
        """Read ranks in tiktoken's format: one ``<base64 of the token's bytes> <id>`` per line."""
        ranks = {}
        for line in Path(path).read_text(encoding="ascii").splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return cls(ranks, special_tokens, pattern)

    @classmethod
    def from_gpt2(cls, path: str | os.PathLike) -> "Tokenizer":
        """GPT-2's tokenizer: the ranks in ``path`` (``gpt2.tiktoken``, the 50,256 BPE tokens) and
        ``<|endoftext|>`` = 50256. ``reference/gpt2_encoding.py``'s ``gpt2_tiktoken_file()`` finds
        that file offline (in the openai-whisper package, or tiktoken's cache)."""
        return cls.from_tiktoken_file(path, {ENDOFTEXT: 50256})

    @classmethod
    def from_merges(cls, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: list[str] = ()) -> "Tokenizer":
        """A tokenizer for what ``bpe.train_bpe`` returns. ``special_tokens`` must be in ``vocab``.

        The ids of merged tokens must grow in the order of ``merges`` (as ``train_bpe`` assigns
        them), since an id is also a merge priority here; else ``ValueError``."""
        by_bytes = {b: i for i, b in vocab.items()}
        specials = {}
        for s in special_tokens:
            if s.encode("utf-8") not in by_bytes:
                raise ValueError(f"the special token {s!r} is not in the vocabulary")
            specials[s] = by_bytes.pop(s.encode("utf-8"))
        ids = [by_bytes.get(a + b) for a, b in merges]
        if None in ids or ids != sorted(ids):
            raise ValueError("every merge must create a token of the vocabulary, with ids growing in the order of merges")
        return cls(by_bytes, specials)

    def bpe(self, chunk: bytes) -> list[int]:
        """The ids of one pre-tokenized chunk (UTF-8 bytes), by BPE as the class docstring says."""
        # BEGIN SOLUTION 05: start from single bytes; merge the lowest-ranked adjacent pair until none is in ranks
        ids = self.cache.get(chunk)
        if ids is not None:
            return ids
        ranks = self.ranks
        parts = [chunk[i : i + 1] for i in range(len(chunk))]  # len(chunk) one-byte parts
        # pair_ranks[i] is the rank of parts[i] + parts[i + 1] (NOT_A_TOKEN when it is none): a merge
        # changes only its two neighbours, so a long chunk costs one min() per merge, not a rescan
        pair_ranks = [ranks.get(chunk[i : i + 2], NOT_A_TOKEN) for i in range(len(chunk) - 1)]
        while pair_ranks:
            best_rank = min(pair_ranks)
            if best_rank == NOT_A_TOKEN:
                break
            i = pair_ranks.index(best_rank)  # the leftmost of the lowest rank, as tiktoken merges
            parts[i : i + 2] = [parts[i] + parts[i + 1]]  # one part fewer
            del pair_ranks[i]  # and one pair fewer: len(pair_ranks) == len(parts) - 1
            if i > 0:
                pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], NOT_A_TOKEN)
            if i < len(pair_ranks):
                pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], NOT_A_TOKEN)
        ids = [ranks[p] for p in parts]  # one id per part left: at most len(chunk)
        self.cache[chunk] = ids
        return ids
        # END SOLUTION

    def encode(self, text: str, allowed_special: str | Iterable[str] = ()) -> list[int]:
        """Token ids of ``text``: special tokens, then pre-tokenization, then ``bpe`` per chunk.

        Args:
            text: any string (without lone surrogates).
            allowed_special: the special tokens to encode as such: an iterable of their texts,
                or ``"all"``. Default: none.

        Returns:
            A list of ints, equal to tiktoken's ``encode(text, allowed_special=...)`` for the
            same ranks, special tokens and pattern.

        Raises:
            ValueError: if ``text`` contains a special token that is not allowed (as tiktoken
                does; the message names the token).
        """
        # BEGIN SOLUTION 05: refuse disallowed special tokens, split on allowed ones (longest first), BPE each chunk
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        disallowed = set(self.special_tokens) - allowed
        if disallowed:
            found = regex.search("|".join(regex.escape(s) for s in sorted(disallowed, key=len, reverse=True)), text)
            if found:
                raise ValueError(
                    f"the text contains the special token {found.group()!r}, which is not allowed: pass "
                    f"allowed_special={{{found.group()!r}}} (or \"all\") to encode it as a special token"
                )
        parts = [text]
        if allowed:
            specials = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
            parts = regex.split(f"({specials})", text)  # odd positions hold the special tokens
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2:
                ids.append(self.special_tokens[part])
                continue
            for chunk in self.pattern.findall(part):
                ids.extend(self.bpe(chunk.encode("utf-8")))  # str -> UTF-8 bytes -> at most one id per byte
        return ids
        # END SOLUTION

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``: their bytes joined, decoded as UTF-8; bytes that are not valid
        UTF-8 become U+FFFD (``errors="replace"``, as tiktoken does).

        Raises:
            ValueError: for an id that is no token; the message names it.
        """
        # BEGIN SOLUTION 05: join each id's bytes, then decode as UTF-8 with errors="replace"
        out = []
        for i in ids:
            token = self.decoder.get(i)
            if token is None:
                raise ValueError(f"unknown token id {i!r}: ids run from 0 to {max(self.decoder)}")
            out.append(token)  # each id's bytes: one or more
        return b"".join(out).decode("utf-8", errors="replace")
        # END SOLUTION

    def encode_iterable(self, iterable: Iterable[str], allowed_special: str | Iterable[str] = ()) -> Iterator[int]:
        """Encode a stream of strings (the lines of a large file, say) lazily, with bounded memory.

        Yields the same ids as ``encode("".join(iterable), allowed_special)``, wherever the
        pieces are cut, while holding only a short tail of the text: the ids of a chunk are
        yielded once the text that follows can no longer change the chunk (see ``final_ids``).
        A disallowed special token raises ``ValueError`` when it is reached.
        """
        # BEGIN SOLUTION 05: buffer the text; yield the ids that later text can no longer change, keep the rest
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        buf = ""
        for piece in iterable:
            buf += piece
            ids, cut = self.final_ids(buf, allowed)
            yield from ids
            buf = buf[cut:]
        yield from self.encode(buf, allowed)
        # END SOLUTION

    def final_ids(self, text: str, allowed_special: set[str]) -> tuple[list[int], int]:
        """The ids of a prefix of ``text`` that no continuation of the text can change.

        Returns ``(ids, cut)``: ``ids`` encode ``text[:cut]`` as ``encode(text + more)`` would
        begin, whatever ``more`` is. What may still change:

        - a tail of ``text`` that is the start of a special token (``"<|endof"``), or a special
          token that a longer one starts with: it may become a (longer) special token. Special
          tokens that start before that tail are final;
        - a chunk that ends where the known text ends (a word or a run of spaces may go on), or
          starts fewer than 3 characters before it (``'`` + ``re`` becomes the one chunk ``'re``).

        Chunks are taken from the pre-tokenization of ``text`` itself, not of ``text[:cut]``:
        cutting the text can change the chunk before the cut (``" "`` + ``"\xa0"`` followed by a
        comma are two chunks, at the end of a text one).
        """
        # BEGIN SOLUTION 05: hold back a possible special-token start; BPE the final chunks before it
        end = len(text)
        for s in self.special_tokens:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    end = min(end, len(text) - k)
                    break
        ids: list[int] = []
        start = 0
        if self.special_tokens:
            specials = "|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True))
            for m in regex.finditer(specials, text):
                if m.start() >= end:
                    break
                ids += self.encode(text[start : m.start()])  # a complete part: a special token ends it
                if m.group() not in allowed_special:
                    self.encode(m.group(), allowed_special)  # raises, naming the token
                ids.append(self.special_tokens[m.group()])
                start = m.end()
        cut = start
        for m in self.pattern.finditer(text, start, end):
            if m.end() >= end or m.start() + 3 > end:
                break
            ids += self.bpe(m.group().encode("utf-8"))
            cut = m.end()
        return ids, cut
        # END SOLUTION
