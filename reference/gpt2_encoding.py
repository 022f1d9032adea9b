"""GPT-2's BPE ranks offline, and tiktoken's GPT-2 encoding built from them: the one place that
finds them, for the graded tests, the benchmarks and anyone who builds the solutions' tokenizer.

``tiktoken.get_encoding("gpt2")`` downloads its files on first use. Without a network, the same
50,256 ranks ship inside the ``openai-whisper`` source distribution as ``whisper/assets/gpt2.tiktoken``
(byte for byte tiktoken's ``r50k_base.tiktoken``; the hash is checked). That file is found with
``importlib.util.find_spec``, which never imports whisper (nor torch, numba, ... that whisper would
pull in), so installing it with ``pip install --no-deps openai-whisper`` is enough. Where it is
missing, tiktoken's own cache is used if it holds GPT-2's files; this never touches the network.

    gpt2_tiktoken_file()  -> Path of a file of GPT-2's ranks in tiktoken's format
    gpt2_ranks()          -> {token bytes: id}, the 50,256 ranks
    gpt2_encoding()       -> tiktoken.Encoding equal to tiktoken.get_encoding("gpt2")
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

ENDOFTEXT, ENDOFTEXT_ID = "<|endoftext|>", 50256
# sha256 of r50k_base.tiktoken (tiktoken_ext/openai_public.py): GPT-2's ranks in tiktoken's format.
SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken's sources for "gpt2" and "r50k_base" (the same ranks), looked up in its cache only.
TIKTOKEN_URLS = {
    "r50k_base": ["https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"],
    "gpt2": [
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    ],
}
HOW_TO_FIX = (
    "GPT-2's BPE ranks are not on this machine. Install them (about 1 MB, no other packages) with\n"
    "    python -m pip install --no-deps openai-whisper\n"
    "into the environment that runs this (for the kata: .nox/kata/bin/python -m pip install --no-deps "
    "openai-whisper), or, with a network, run `python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\"` "
    "once to fill tiktoken's cache."
)


class GPT2RanksMissing(RuntimeError):
    pass


def _whisper_file() -> Path | None:
    spec = importlib.util.find_spec("whisper")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "assets" / "gpt2.tiktoken"
        if path.is_file():
            return path
    return None


def _tiktoken_cache_holds(name: str) -> bool:
    """Whether tiktoken would load ``name`` from its cache, without a download."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache = cache if cache is not None else os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return bool(cache) and all(
        os.path.exists(os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())) for url in TIKTOKEN_URLS[name]
    )


def _cached_tiktoken_encoding():
    import tiktoken

    for name in TIKTOKEN_URLS:
        if _tiktoken_cache_holds(name):
            return tiktoken.get_encoding(name)
    return None


@functools.lru_cache(maxsize=None)
def gpt2_tiktoken_file() -> Path:
    """A file of GPT-2's ranks in tiktoken's format (``<base64 token> <id>`` per line)."""
    path = _whisper_file()
    if path is not None:
        if hashlib.sha256(path.read_bytes()).hexdigest() != SHA256:
            raise GPT2RanksMissing(f"{path} is not GPT-2's ranks (its sha256 differs).\n{HOW_TO_FIX}")
        return path
    enc = _cached_tiktoken_encoding()
    if enc is None:
        raise GPT2RanksMissing(HOW_TO_FIX)
    out = Path(tempfile.gettempdir()) / "gpt-kata" / "gpt2.tiktoken"
    text = _tiktoken_text(enc._mergeable_ranks)
    if not out.is_file() or out.read_text() != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return out


@functools.lru_cache(maxsize=None)
def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's 50,256 mergeable ranks: token bytes -> id (``<|endoftext|>``, 50256, is not among them)."""
    ranks = {}
    for line in gpt2_tiktoken_file().read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != 50256 or sorted(ranks.values()) != list(range(50256)):
        raise GPT2RanksMissing(f"{gpt2_tiktoken_file()} does not hold GPT-2's 50,256 ranks.\n{HOW_TO_FIX}")
    return ranks


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """``tiktoken.Encoding`` for GPT-2, equal to ``tiktoken.get_encoding("gpt2")``, built offline."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=gpt2_ranks(),
        special_tokens={ENDOFTEXT: ENDOFTEXT_ID},
        explicit_n_vocab=50257,
    )


def encoding_for(ranks: dict[bytes, int], special_tokens: dict[str, int], name: str = "trained"):
    """``tiktoken.Encoding`` for any ranks (a vocabulary trained with BPE, say), with GPT-2's pattern."""
    import tiktoken
    from tiktoken_ext.openai_public import r50k_pat_str

    return tiktoken.Encoding(name=name, pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens=special_tokens)


def write_tiktoken_file(ranks: dict[bytes, int], path: Path) -> Path:
    """Write ``ranks`` in tiktoken's format (what ``Tokenizer.from_tiktoken_file`` reads)."""
    path.write_text(_tiktoken_text(ranks), encoding="ascii")
    return path


def _tiktoken_text(ranks: dict[bytes, int]) -> str:
    return "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


if __name__ == "__main__":  # `python reference/gpt2_encoding.py` prints the ranks file's path
    try:
        print(gpt2_tiktoken_file())
    except GPT2RanksMissing as e:
        raise SystemExit(str(e)) from None
