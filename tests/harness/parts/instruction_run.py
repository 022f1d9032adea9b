"""Scenarios for exercise 31 (instruction data), run in the worker, and the tokenizers they give
the learner's ``InstructionDataset``. The grader builds the same tokenizers for its oracle.

``ToyTokenizer`` needs nothing: a word-level tokenizer in which a run of whitespace is one token,
so that a prompt ending in a space and the response's "\\n\\n" become one token when the whole
text is encoded at once (where encoding the prompt and the response apart keeps them two).
``gpt2(path)`` is tiktoken's GPT-2 encoding, built from a ranks file the grader sends.
``Counting`` wraps either and records every text it is asked to encode.
"""

import base64
import functools
import re
import zlib

PIECES = re.compile(r"\w+|\s+|[^\w\s]")


class ToyTokenizer:
    """Each run of letters and digits, each run of whitespace and each other character is one
    token; its id is a hash of its text, below 50,000."""

    def encode(self, text: str) -> list[int]:
        return [zlib.crc32(piece.encode("utf-8")) % 50_000 for piece in PIECES.findall(text)]


class Counting:
    """A tokenizer that records the texts given to ``encode``, in order."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []

    def encode(self, text, *args, **kwargs):
        self.texts.append(str(text))
        return list(self.inner.encode(text, *args, **kwargs))


@functools.lru_cache(maxsize=None)
def gpt2(path: str):
    """``tiktoken.Encoding`` for GPT-2 from a file of its ranks (reference/gpt2_encoding.py's)."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def tokenizer(ranks=None):
    return Counting(ToyTokenizer() if ranks is None else gpt2(ranks))


def _plain(item):
    """An item as plain data: tensors (a tensor of ids, a 0-d prompt length) become lists and ints."""
    import torch

    if isinstance(item, (tuple, list)):
        return tuple(_plain(x) for x in item)
    if type(item) is torch.Tensor:
        return item.tolist()
    return item


def dataset(learner, data, ranks=None):
    """``InstructionDataset(data, tokenizer)`` with a counting tokenizer: the texts encoded while it
    was built, its length, every item read twice, and the texts encoded while they were read."""
    tok = tokenizer(ranks)
    ds = learner("instruct.InstructionDataset")(data, tok)
    built = list(tok.texts)
    length = len(ds)
    items = [_plain(ds[k]) for k in range(length)]
    again = [_plain(ds[k]) for k in range(length)]
    return {"encoded_in_init": built, "len": length, "items": items, "again": again, "encoded_later": tok.texts[len(built):]}


def loader(learner, data, batch_size, ranks=None, **collate_kwargs):
    """The batches of ``DataLoader(InstructionDataset(data, tokenizer), batch_size,
    collate_fn=partial(collate, **collate_kwargs))``, in order."""
    from torch.utils.data import DataLoader

    ds = learner("instruct.InstructionDataset")(data, tokenizer(ranks))
    collate = functools.partial(learner("instruct.collate"), **collate_kwargs)
    batches = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    return [tuple(b) if isinstance(b, (tuple, list)) else b for b in batches]
