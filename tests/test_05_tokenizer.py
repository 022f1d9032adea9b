"""Exercise 05: GPT-2's tokenizer, id for id equal to tiktoken.

Oracle: ``tiktoken.Encoding`` built from GPT-2's ranks, found offline by
reference/gpt2_encoding.py (the ranks ship in the openai-whisper package); for a trained
vocabulary, the same with ranks from the naive trainer of reference/naive_bpe.py. Inputs: the
committed stress corpus (reference/tokenizer_stress.txt) cut afresh each run, and random strings
drawn each run from many scripts, digits, emoji, contractions and odd whitespace.
"""

import functools
import sys
import unicodedata

import pydoc_data.topics
import regex

from harness.draw import n
from harness.failures import LearnerError, Mismatch
from harness.impl import File
from harness.manifest import ROOT

if str(ROOT / "reference") not in sys.path:
    sys.path.append(str(ROOT / "reference"))
import gpt2_encoding  # noqa: E402  (reference/gpt2_encoding.py: GPT-2's ranks offline, tiktoken's encoding)
import naive_bpe  # noqa: E402  (reference/naive_bpe.py: the naive trainer, for a trained vocabulary)

EXERCISE = "05"

EOT = "<|endoftext|>"
# Characters drawn for random strings: blocks assigned long ago, where the `regex` module's and
# tiktoken's Unicode tables agree (characters assigned in Unicode 15 or later may differ).
BLOCKS = [(0x21, 0x7E), (0xA1, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x5D0, 0x5EA), (0x620, 0x64A), (0x660, 0x669),
          (0x900, 0x97F), (0xE01, 0xE5B), (0x1E00, 0x1EFF), (0x2010, 0x205E), (0x2070, 0x209C), (0x20A0, 0x20C0),
          (0x2100, 0x218B), (0x2190, 0x23FF), (0x2460, 0x24FF), (0x2500, 0x27BF), (0x3001, 0x303F), (0x3041, 0x30FF),
          (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF01, 0xFF5E), (0x1F300, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
          (0x300, 0x36F)]
WHITESPACE = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\r", "\x0b", "\x0c", "\xa0", "\u2003", "\u3000", "\x85", "\u2028", "   \n"]
PIECES = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE", "n't", "'", "''", "123", "4,567.89", "0", "\u200d", "\u200b",
          "\ufeff", "👍🏽", "👨\u200d👩\u200d👧", "🇩🇪", "e\u0301"]


@functools.cache
def stress() -> str:
    return (ROOT / "reference" / "tokenizer_stress.txt").read_bytes().decode("utf-8")


@functools.cache
def words() -> list[str]:
    topics = pydoc_data.topics.topics
    return sorted(set(regex.findall(r"\w+", topics[sorted(topics)[0]] + stress())))


def random_char(gen) -> str:
    while True:
        lo, hi = BLOCKS[n(gen, 0, len(BLOCKS) - 1)]
        c = chr(n(gen, lo, hi))
        if unicodedata.category(c) not in ("Cn", "Cs", "Co"):
            return c


def random_string(gen, units: int, special: bool = True) -> str:
    """Words, random characters, whitespace runs, contractions, digits, emoji and (maybe) <|endoftext|>."""
    out = []
    for _ in range(units):
        kind = n(gen, 0, 9)
        if kind <= 2:
            w = words()[n(gen, 0, len(words()) - 1)]
            out.append(w.upper() if kind == 2 else w)
        elif kind <= 4:
            out.append("".join(random_char(gen) for _ in range(n(gen, 1, 4))))
        elif kind <= 6:
            out.append(WHITESPACE[n(gen, 0, len(WHITESPACE) - 1)] * n(gen, 1, 3))
        elif kind <= 8 or not special:
            out.append(PIECES[n(gen, 0, len(PIECES) - 1)])
        else:
            out.append(EOT)
    return "".join(out)


def gpt2_file() -> File:
    return File(gpt2_encoding.gpt2_tiktoken_file())


def gpt2(impl, then):
    """``Tokenizer.from_gpt2(<gpt2.tiktoken>)`` in the worker, then the method calls ``then``."""
    return impl.call("tokenizer.Tokenizer.from_gpt2", gpt2_file(), then=then).then


def with_specials(impl, path, specials, then):
    return impl.call("tokenizer.Tokenizer.from_tiktoken_file", File(path), specials, then=then).then


# ----------------------------------------------------------------------------------- what differs


@functools.cache
def variant_encodings():
    """tiktoken encodings that make known mistakes, to name them when the learner's ids match."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = gpt2_encoding.gpt2_ranks()
    specials = {EOT: gpt2_encoding.ENDOFTEXT_ID}

    def make(name, pat):
        return tiktoken.Encoding(name=name, pat_str=pat, mergeable_ranks=ranks, special_tokens=specials)

    return [
        ("no pre-tokenization: BPE over the whole text", "Cut the text into chunks with self.pattern.findall first; merges never cross chunks.",
         make("whole", r"[\s\S]+")),
        ("whitespace runs not split before a word", "Use GPT-2's pattern as given: \\s+(?!\\S) leaves a run's last space to the word after it.",
         make("ws", r50k_pat_str.replace(r"\s++$|\s+(?!\S)|\s", r"\s+"))),
        ("a pre-tokenizer pattern without the contractions", "GPT-2's pattern starts with 's|'t|'re|'ve|'m|'ll|'d: \"don't\" is "
         "cut into \"don\" and \"'t\". Use GPT2_PATTERN from pretokenize.py as it is.",
         make("no_contractions", r50k_pat_str.replace("'(?:[sdmt]|ll|ve|re)|", ""))),
    ]


def lowest_rank_mistakes(text: str):
    """BPE that merges the wrong pair first: the leftmost mergeable pair, or the highest rank."""
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = gpt2_encoding.gpt2_ranks()

    def bpe(chunk: bytes, pick) -> list[int]:
        parts = [chunk[i : i + 1] for i in range(len(chunk))]
        while True:
            found = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in ranks]
            if not found:
                return [ranks[p] for p in parts]
            i = pick(found)[1]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]

    def encode(pick):
        ids = []
        for part in regex.split(f"({regex.escape(EOT)})", text):
            if part == EOT:
                ids.append(gpt2_encoding.ENDOFTEXT_ID)
            else:
                for chunk in regex.findall(r50k_pat_str, part):
                    ids += bpe(chunk.encode(), pick)
        return ids

    return [
        ("the leftmost mergeable pair merged first", "Merge the pair whose concatenation has the LOWEST rank, wherever it is.",
         lambda: encode(lambda found: found[0])),
        ("the highest rank merged first", "A lower rank means an earlier merge: pick the minimum rank.",
         lambda: encode(max)),
    ]


def compare_ids(got, expected, text: str, what: str, mistakes=()) -> None:
    if got == expected:
        return
    if type(got) is not list or not all(type(i) is int for i in got):
        raise Mismatch(f"{what} returned {type(got).__name__} {str(got)[:80]}; expected a list of ints")
    k = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    enc = gpt2_encoding.gpt2_encoding()
    try:
        near = repr(enc.decode(expected[max(0, k - 3) : k + 3]))
    except Exception:
        near = "?"
    message = (f"{what} differs from tiktoken's encoding at token {k} of {len(expected)} (got {len(got)} tokens), "
               f"around the text {near}:\n  got      {got[max(0, k - 3) : k + 4]}\n  expected {expected[max(0, k - 3) : k + 4]}\n"
               f"the text: {text[:200]!r}{'...' if len(text) > 200 else ''}")
    for name, fix, wrong in mistakes:
        try:
            out = wrong()
        except Exception:
            continue
        if out == got and out != expected:
            message += f"\nThis looks like: {name}. {fix}"
            break
    raise Mismatch(message)


def gpt2_mistakes(text: str, allowed="all"):
    out = [(name, fix, lambda e=e: e.encode(text, allowed_special=allowed if allowed == "all" else set(allowed)))
           for name, fix, e in variant_encodings()]
    enc = gpt2_encoding.gpt2_encoding()
    out.append(("special tokens encoded as text", "Split the text on the allowed special tokens first; each one becomes its own id.",
                lambda: enc.encode(text, disallowed_special=())))
    return out + lowest_rank_mistakes(text)


def check_gpt2_encodings(impl, texts: list[str], what: str) -> None:
    enc = gpt2_encoding.gpt2_encoding()
    results = gpt2(impl, [("encode", (t,), {"allowed_special": "all"}) for t in texts])
    for i, (text, got) in enumerate(zip(texts, results)):
        compare_ids(got, enc.encode(text, allowed_special="all"), text, f"encode({what} {i})", gpt2_mistakes(text))


def learner_raises(call, exception: str, must_name: str, what: str, fixes: dict[str, str] | None = None) -> None:
    try:
        call()
    except LearnerError as e:
        text = f"{e.message}\n{e.details}"
        if not e.message.startswith(exception) and f"\n{exception}:" not in text:
            raised = e.message.split(":")[0]
            fix = (fixes or {}).get(raised, "")
            raise Mismatch(f"{what} raised {raised}; expected {exception} (as tiktoken does)\n{e.message}" + (f"\n{fix}" if fix else "")) from None
        if must_name not in text:
            raise Mismatch(f"{what} raised {exception}, but its message does not name {must_name}: {e.message}") from None
        return
    raise Mismatch(f"{what} returned normally; expected {exception} naming {must_name}")


# ----------------------------------------------------------------------------------- encode


def test_encode_stress_corpus_like_tiktoken(impl, gen):
    text = stress()
    cuts = sorted(n(gen, 0, len(text)) for _ in range(12))
    pieces = [text[a:b] for a, b in zip(cuts[::2], cuts[1::2])]
    check_gpt2_encodings(impl, [text, *pieces], "a piece of reference/tokenizer_stress.txt, number")


def test_encode_random_strings_like_tiktoken(impl, gen):
    texts = [random_string(gen, n(gen, 1, 40)) for _ in range(40)]
    check_gpt2_encodings(impl, texts, "a random string, number")


def test_special_tokens_need_allowing(impl, gen):
    before, after = random_string(gen, n(gen, 1, 8), special=False), random_string(gen, n(gen, 1, 8), special=False)
    text = before + EOT + after
    enc = gpt2_encoding.gpt2_encoding()
    got = gpt2(impl, [("encode", (text,), {"allowed_special": [EOT]}), ("encode", (before + after,), {})])
    compare_ids(got[0], enc.encode(text, allowed_special={EOT}), text, f"encode(text, allowed_special={{{EOT!r}}})", gpt2_mistakes(text, [EOT]))
    compare_ids(got[1], enc.encode(before + after), before + after, "encode(text) without special tokens")
    learner_raises(lambda: gpt2(impl, [("encode", (text,), {})]), "ValueError", EOT,
                   f"encode({text[:40]!r}...) with {EOT} in the text and no allowed_special")


def test_overlapping_special_tokens_longest_first(impl, gen):
    specials = {EOT: 50256, EOT * 2: 50257, "<|pad|>": 50258}
    enc = gpt2_encoding.encoding_for(gpt2_encoding.gpt2_ranks(), specials, name="gpt2_more_specials")
    texts = []
    for _ in range(6):
        texts.append("".join(random_string(gen, n(gen, 0, 3), special=False) + [EOT, EOT * 2, EOT * 3, "<|pad|>", "<|endof"][n(gen, 0, 4)]
                             for _ in range(n(gen, 1, 4))))
    got = with_specials(impl, gpt2_file(), specials, [("encode", (t,), {"allowed_special": "all"}) for t in texts])
    for t, ids in zip(texts, got):
        single = gpt2_encoding.encoding_for(gpt2_encoding.gpt2_ranks(), {EOT: 50256, "<|pad|>": 50258}, name="single")
        compare_ids(ids, enc.encode(t, allowed_special="all"), t, f"encode with the special tokens {list(specials)}",
                    [("a shorter special token matched before a longer one", "Sort the special tokens longest first in the alternation: "
                      "'<|endoftext|><|endoftext|>' must be tried before '<|endoftext|>'.", lambda t=t: single.encode(t, allowed_special="all"))])


def test_trained_vocabulary_like_tiktoken(impl, gen, tmp_path):
    topics = pydoc_data.topics.topics
    corpus = "\n\n".join(topics[k] for k in sorted(topics))
    start = n(gen, 0, len(corpus) - 6000)
    vocab, _ = naive_bpe.train(corpus[start : start + 6000], 257 + n(gen, 40, 120), [EOT])
    ranks = {b: i for i, b in vocab.items() if i != 256}
    path = gpt2_encoding.write_tiktoken_file(ranks, tmp_path / "trained.tiktoken")
    enc = gpt2_encoding.encoding_for(ranks, {EOT: 256})
    texts = [corpus[n(gen, 0, len(corpus) - 400):][: n(gen, 50, 400)] for _ in range(4)] + [random_string(gen, n(gen, 5, 30)) for _ in range(6)]
    got = with_specials(impl, path, {EOT: 256}, [("encode", (t,), {"allowed_special": "all"}) for t in texts])
    for i, (t, ids) in enumerate(zip(texts, got)):
        compare_ids(ids, enc.encode(t, allowed_special="all"), t, f"encode(text {i}) with a vocabulary of {len(vocab)} trained tokens")


# ----------------------------------------------------------------------------------- decode


def test_decode_round_trips(impl, gen):
    enc = gpt2_encoding.gpt2_encoding()
    texts = [random_string(gen, n(gen, 1, 30)) for _ in range(15)] + [stress()]
    got = gpt2(impl, [("decode", (enc.encode(t, allowed_special="all"),)) for t in texts])
    for t, back in zip(texts, got):
        if back != t:
            k = next((i for i, (a, b) in enumerate(zip(back, t)) if a != b), min(len(back), len(t)))
            raise Mismatch(f"decode(encode(text)) differs from the text at character {k}: got {back[max(0, k - 10):k + 10]!r}, "
                           f"expected {t[max(0, k - 10):k + 10]!r}")


def test_decode_invalid_utf8_like_tiktoken(impl, gen):
    """Ids whose bytes are not valid UTF-8 (a multi-byte character cut in two): U+FFFD, as tiktoken."""
    enc = gpt2_encoding.gpt2_encoding()
    id_lists = []
    for _ in range(20):
        ids = enc.encode(random_string(gen, n(gen, 1, 10)), allowed_special="all")
        k = n(gen, 0, len(ids))
        id_lists.append(ids[:k] + [n(gen, 0, 50256) for _ in range(n(gen, 1, 4))] + ids[k:])
    id_lists.append([enc.encode("é")[0]])  # half of a two-byte character
    try:
        got = gpt2(impl, [("decode", (ids,)) for ids in id_lists])
    except LearnerError as e:
        if "UnicodeDecodeError" in e.message:
            raise Mismatch(f"decode raised {e.message}\nBytes that are not valid UTF-8 must become U+FFFD: "
                           "bytes.decode('utf-8', errors='replace'), as tiktoken does.") from None
        raise
    for ids, text in zip(id_lists, got):
        expected = enc.decode(ids)
        if text != expected:
            raw = b"".join(enc.decode_single_token_bytes(i) for i in ids)
            hint = ""
            if text == raw.decode("utf-8", errors="ignore"):
                hint = "\nThis looks like: invalid bytes dropped (errors='ignore'). Use errors='replace': each becomes U+FFFD."
            elif text == "".join(b.decode("utf-8", errors="replace") for b in (enc.decode_single_token_bytes(i) for i in ids)):
                hint = "\nThis looks like: each token decoded on its own. Join all the bytes first, then decode once: a character may span tokens."
            raise Mismatch(f"decode({ids}) is {text!r}; tiktoken gives {expected!r}{hint}")


def test_decode_unknown_id_raises(impl, gen):
    bad = 50257 + n(gen, 0, 10_000)
    ids = [n(gen, 0, 50000) for _ in range(n(gen, 0, 5))] + [bad]
    learner_raises(lambda: gpt2(impl, [("decode", (ids,))]), "ValueError", str(bad), f"decode({ids})",
                   {"KeyError": "Look the id up with self.decoder.get(i) and raise ValueError(f'unknown token id {i}') when it is missing."})


# ----------------------------------------------------------------------------------- streaming


def test_encode_iterable_equals_encode(impl, gen):
    enc = gpt2_encoding.gpt2_encoding()
    text = stress()
    streams = [text.splitlines(keepends=True)]
    cuts = sorted({n(gen, 0, len(text)) for _ in range(n(gen, 20, 80))} | {0, len(text)})
    streams.append([text[a:b] for a, b in zip(cuts, cuts[1:])])  # cut anywhere: in words, in <|endoftext|>, in runs of spaces
    s = random_string(gen, 40)
    streams.append(list(s))  # one character at a time
    streams.append(["  ", " ", "\n", "\n", "  x", "'", "r", "e ", "<|end", "of", "text|", ">", "", "a"])
    got = gpt2(impl, [("encode_iterable", (pieces,), {"allowed_special": "all"}) for pieces in streams])
    for k, (pieces, ids) in enumerate(zip(streams, got)):
        joined = "".join(pieces)
        one_by_one = [("each piece encoded on its own", "A chunk may go on in the next piece (a word, a run of spaces, "
                       "'\\n\\n' + '  x'): yield only the ids that the text still to come cannot change, and keep the rest.",
                       lambda pieces=pieces: [i for p in pieces for i in enc.encode(p, allowed_special="all")])]
        compare_ids(ids, enc.encode(joined, allowed_special="all"), joined,
                    f"list(encode_iterable(pieces)) for stream {k} ({len(pieces)} pieces: {[p[:12] for p in pieces[:4]]}...)", one_by_one)
