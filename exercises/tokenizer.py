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
        raise NotImplementedError("exercise 05 (tokenizer), Tokenizer.bpe: start from single bytes; merge the lowest-ranked adjacent pair until none is in ranks")

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
        raise NotImplementedError("exercise 05 (tokenizer), Tokenizer.encode: refuse disallowed special tokens, split on allowed ones (longest first), BPE each chunk")

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``: their bytes joined, decoded as UTF-8; bytes that are not valid
        UTF-8 become U+FFFD (``errors="replace"``, as tiktoken does).

        Raises:
            ValueError: for an id that is no token; the message names it.
        """
        raise NotImplementedError("exercise 05 (tokenizer), Tokenizer.decode: join each id's bytes, then decode as UTF-8 with errors=\"replace\"")

    def encode_iterable(self, iterable: Iterable[str], allowed_special: str | Iterable[str] = ()) -> Iterator[int]:
        """Encode a stream of strings (the lines of a large file, say) lazily, with bounded memory.

        Yields the same ids as ``encode("".join(iterable), allowed_special)``, wherever the
        pieces are cut, while holding only a short tail of the text: the ids of a chunk are
        yielded once the text that follows can no longer change the chunk (see ``final_ids``).
        A disallowed special token raises ``ValueError`` when it is reached.
        """
        raise NotImplementedError("exercise 05 (tokenizer), Tokenizer.encode_iterable: buffer the text; yield the ids that later text can no longer change, keep the rest")

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
        raise NotImplementedError("exercise 05 (tokenizer), Tokenizer.final_ids: hold back a possible special-token start; BPE the final chunks before it")
