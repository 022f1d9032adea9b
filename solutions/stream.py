"""Exercise 35: streaming: an assistant's answer appears as it is generated, token by token, and
stops where a stop string begins.

A chat interface does not wait for the whole answer. ``stream_tokens`` is a generator: each
``next()`` runs the model exactly as far as the next token needs and hands it over at once, the
prompt fed once through exercise 12's ``KVCache`` and ``gpt_cached``, then one token per step.
``stream_text`` turns those token ids into text that a terminal can print as it comes:

- A byte-level tokenizer (GPT-2's) may split one character across tokens: ``"é"`` is the two
  bytes ``c3 a9``, and a token may end after the first. Decoding then gives a replacement
  character, U+FFFD, at the end of the text, which turns into the real character once the next
  token brings the missing byte. So text is decoded from ALL the ids so far, never token by token
  (a token alone may decode to U+FFFD even where the whole text has none), and a trailing U+FFFD
  is held back until the next token settles it.
- A chat template marks the end of a turn with text (``"\\nUser:"``, ``"###"``): generation
  stops there, and none of it is shown. A stop string may span tokens (``"\\nUs"`` then
  ``"er:"``), so the end of the text that could still become one (``"\\nUs"``) is held back until
  the next tokens decide.

Put together, as a chat loop does::

    ids = stream_tokens(model, prompt, 200, eos_id=50256, temperature=0.7, top_p=0.9)
    for piece in stream_text(ids, tokenizer.decode, stop_strings=["\\n###"]):
        print(piece, end="", flush=True)

Choosing the next token is part of this exercise: write exercise 10's rule again, for one
row of logits (greedy at ``temperature == 0``; else divide by the temperature, keep the
``top_k``, keep the ``top_p`` nucleus, sample with ``torch.multinomial``).
"""

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from .kv_cache import KVCache, gpt_cached

REPLACEMENT = "\ufffd"  # what decode(..., errors="replace") gives for the start of an unfinished UTF-8 character


def stream_tokens(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield the new token ids of one prompt, one at a time, each as soon as it is chosen.

    A generator: calling ``stream_tokens`` runs nothing. The first ``next()`` feeds the prompt once
    (the prefill) through ``gpt_cached(model, idx, cache)``, with ``cache =
    KVCache.for_model(model, 1, ...)`` (exercise 12), chooses the first token from the logits at
    the last position and yields it; every later ``next()`` feeds only the token yielded last,
    ``(1, 1)``, through the same cache (one single-token step) and yields the token it chooses.
    Nothing is computed ahead: a token is yielded before the step that follows it runs, and after
    the last one no step runs.

    The token is chosen from the logits at the last position with exercise 10's rule:
    ``temperature == 0``: ``argmax`` (``top_k`` and ``top_p`` change nothing); else the logits
    are divided by ``temperature``; with ``top_k`` all but the ``top_k`` largest become ``-inf``
    (those equal to the k-th largest stay); with ``top_p`` only the most probable tokens whose
    probabilities before them (after the steps before) add up to less than ``top_p`` stay (the
    token that crosses ``top_p`` stays, and the most probable one always does); the token is
    ``torch.multinomial(probs, 1, generator=generator)`` of the softmax of what is left. So, with
    a generator seeded alike, the tokens are exactly exercise 10's ``generate(model, idx,
    max_new_tokens, context_size, temperature, top_k, top_p, eos_id, generator)``'s new tokens
    (up to its eos and context handling below).

    It stops, without an error, after ``max_new_tokens`` tokens; when it chooses ``eos_id``
    (which is NOT yielded); or when the sequence fills the model's context: ``num_tokens +
    yielded == context_length``, the model's number of position embeddings
    (``model.pos_emb.num_embeddings``), so a prompt of ``context_length`` tokens yields nothing.

    The model runs under ``torch.no_grad()`` and its mode (train or eval) is left as it is. The
    caller's own grad mode between tokens is left as it is too: wrap the model calls only, or
    decorate the function with ``@torch.no_grad()`` (which PyTorch applies around each resumption
    of a generator); a ``with torch.no_grad():`` around a ``yield`` would switch gradients off in
    the caller's code while it holds the token.

    Args:
        model: a ``GPTModel`` (exercise 09), in the mode the caller chose.
        idx: ``(1, num_tokens)`` int64, the prompt, ``1 <= num_tokens <= context_length``.
        max_new_tokens: the most tokens to yield.
        eos_id: the end-of-text token id, or None.
        temperature, top_k, top_p, generator: as in exercise 10's ``generate``.

    Yields:
        Python ``int`` token ids.

    Raises:
        ValueError: at the first ``next()``, when ``idx`` is not one row of at least one token
            (a batch is not streamed), or is longer than the context, giving the numbers.
    """
    # BEGIN SOLUTION 35: prefill once, then one token per step through the cache; choose as generate does; stop at eos (unyielded) or a full context
    if idx.dim() != 2 or idx.size(0) != 1 or idx.size(1) < 1:
        raise ValueError(f"idx has shape {tuple(idx.shape)}; expected (1, num_tokens), one prompt of at least one token")
    context_length, prompt_length = model.pos_emb.num_embeddings, idx.size(1)
    if prompt_length > context_length:
        raise ValueError(f"the prompt's {prompt_length} tokens do not fit the model's context_length {context_length}")
    steps = min(max_new_tokens, context_length - prompt_length)  # the whole sequence must fit the context
    if steps <= 0:
        return
    cache = KVCache.for_model(model, 1, prompt_length + steps - 1)  # the last token chosen is never fed
    fed = idx  # the prefill; then (1, 1), the token yielded last
    for _ in range(steps):
        with torch.no_grad():  # around the model only: never across a yield
            logits = gpt_cached(model, fed, cache)[0, -1]  # (vocab_size,): the last position predicts the next token
        if temperature == 0:
            token = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p is not None:
                sorted_probs, order = torch.softmax(logits, dim=-1).sort(descending=True)
                ahead = sorted_probs.cumsum(0) - sorted_probs  # the mass of the more probable tokens
                logits = logits.index_fill(0, order[ahead >= top_p], float("-inf"))
            token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
        if token == eos_id:
            return
        yield token
        fed = torch.tensor([[token]], dtype=torch.long, device=idx.device)
    # END SOLUTION


def stream_text(token_ids: Iterable[int], decode: Callable[[list[int]], str], stop_strings: Sequence[str] = ()) -> Iterator[str]:
    """Turn a stream of token ids into pieces of text, each yielded as soon as it is final.

    After each token, ``text = decode(ids)``, ``ids`` every token so far (a list of ints), and:

    - if a stop string occurs in ``text``: yield what precedes its first occurrence (the earliest
      of any stop string) and was not yielded yet, if anything, and stop: no stop string, nor any
      of its characters, is ever yielded, and no further token is taken from ``token_ids``;
    - otherwise hold back (a) a trailing U+FFFD (the start of a character whose other bytes have
      not come yet) and then (b) the longest end of what is left that is a proper prefix of some
      stop string (it may yet become one), and yield the rest that was not yielded yet, if any.

    When the tokens run out with no stop string found, yield whatever is still held back. Empty
    pieces are never yielded. So ``"".join(pieces)`` is ``decode(all ids)`` cut at its first stop
    string, and each piece comes out before the next token is taken.

    Args:
        token_ids: any iterable of ints (a ``stream_tokens`` generator, a list), taken lazily, one
            at a time.
        decode: maps a list of token ids to text (a tokenizer's ``decode``, which for a
            byte-level tokenizer gives U+FFFD for an unfinished character).
        stop_strings: non-empty strings at which the text ends.

    Yields:
        ``str`` pieces.

    Raises:
        ValueError: at the first ``next()``, when a stop string is empty.
    """
    # BEGIN SOLUTION 35: decode every id so far after each token; cut at the first stop string, else yield what can no longer change
    stops = list(stop_strings)
    if any(len(s) == 0 for s in stops):
        raise ValueError(f"stop_strings {stops!r} holds an empty string, which would stop before any text")
    ids, text, shown = [], "", 0  # shown: how many characters of text are yielded
    for token in token_ids:
        ids.append(token)
        text = decode(ids)
        found = [at for at in (text.find(s) for s in stops) if at >= 0]
        if found:
            if min(found) > shown:
                yield text[shown:min(found)]
            return
        final = len(text) - 1 if text.endswith(REPLACEMENT) else len(text)
        # the longest end of text[:final] that begins some stop string may still become one
        partial = max((k for s in stops for k in range(1, len(s)) if text[:final].endswith(s[:k])), default=0)
        final -= partial
        if final > shown:
            yield text[shown:final]
            shown = final
    if len(text) > shown:
        yield text[shown:]
    # END SOLUTION
