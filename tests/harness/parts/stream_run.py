"""Scenarios for exercise 35 (streaming), run in the worker: trusted code builds the reference
``GPTModel`` (parts/model.py) with the weights the grader sent, drives the learner's
``stream_tokens`` one ``next()`` at a time and records what each ``next()`` made the model do;
and feeds the learner's ``stream_text`` a counted stream of token ids with a byte-level decode,
recording how many tokens had been taken when each piece came out. The learner's ``stream.py``
imports the reference ``KVCache`` and ``gpt_cached`` (parts/kv_cache.py) in place of exercise 12's.
"""

import torch

from harness.worker.parts import load as load_part

_model = load_part("model")


def _build(cfg, state, dtype, train):
    model = _model.GPTModel(cfg).to(getattr(torch, dtype))  # cast first: the weights load exactly
    model.load_state_dict(state, strict=False)  # a tied head is missing from state, and shared
    return model.train(train)


def _kind(value):
    return type(value).__name__


def tokens(learner, cfg, state, idx, max_new_tokens, *, dtype="float64", train=False, eos_id=None, temperature=0.0,
           top_k=None, top_p=None, seed=None, pulls=None):
    """``stream_tokens(model, idx, max_new_tokens, ...)`` pulled one ``next()`` at a time (at most
    ``pulls`` times, default ``max_new_tokens + 3``), with ``generator`` seeded with ``seed`` when
    given. Hooks record each pass through the first block (``norm1``: the number of tokens fed,
    whether gradients were on) and each call of the model itself (``model(...)``, not a cached
    step). Reports the tokens (ints; other types as their names), the passes before the first
    ``next()`` and during each, the caller's grad mode after each ``next()``, the model's mode
    afterwards, and whether the generator and torch's global generator were drawn from."""
    with torch.enable_grad():  # the caller's mode, on; and whatever the stream does to it ends here
        return _tokens(learner, _build(cfg, state, dtype, train), idx, max_new_tokens, eos_id, temperature, top_k, top_p, seed, pulls)


def _tokens(learner, model, idx, max_new_tokens, eos_id, temperature, top_k, top_p, seed, pulls):
    events = []
    model.trf_blocks[0].norm1.register_forward_pre_hook(
        lambda module, args: events.append({"fed": int(args[0].size(1)), "grad": torch.is_grad_enabled(), "whole": False}))
    model.register_forward_pre_hook(lambda module, args: events.append({"model": True}))
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    before_gen = generator.get_state() if generator is not None else None
    global_before = torch.get_rng_state()
    stream = learner("stream.stream_tokens")(model, idx, max_new_tokens, eos_id=eos_id, temperature=temperature, top_k=top_k,
                                             top_p=top_p, generator=generator)
    out = {"returned": _kind(stream), "is_iterator": hasattr(stream, "__next__"), "before": _passes(events), "steps": [],
           "tokens": [], "kinds": [], "caller_grad": [], "stopped": False}
    if out["is_iterator"]:
        for _ in range(max_new_tokens + 3 if pulls is None else pulls):
            events.clear()
            try:
                value = next(stream)
            except StopIteration:
                out["steps"].append(_passes(events))
                out["stopped"] = True
                break
            out["steps"].append(_passes(events))
            out["caller_grad"].append(torch.is_grad_enabled())
            out["kinds"].append(_kind(value))
            out["tokens"].append(value if type(value) is int else None)
    out["training_after"] = model.training
    out["generator_drawn"] = generator is not None and not torch.equal(generator.get_state(), before_gen)
    out["global_drawn"] = not torch.equal(torch.get_rng_state(), global_before)
    return out


def _passes(events):
    """The passes since the last ``next()``: ``[tokens fed, ...]`` of the block, ``"model"`` for a
    call of ``model(...)``; and whether gradients were on in any of them."""
    return {"fed": [e["fed"] if "fed" in e else "model" for e in events], "grad": any(e.get("grad", False) for e in events)}


class _Counted:
    """The token ids, handed out one at a time; ``taken`` counts them."""

    def __init__(self, ids):
        self.ids, self.taken = list(ids), 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.taken >= len(self.ids):
            raise StopIteration
        self.taken += 1
        return self.ids[self.taken - 1]


def text(learner, vocab, ids, stop_strings, limit=None):
    """``stream_text`` over the ids (a counted iterator) with ``decode(ids) = b"".join(vocab[i]
    ...).decode("utf-8", errors="replace")``: each piece with the number of tokens taken when it
    came (types other than str as their names), the tokens taken in all, and how many the stream
    had taken before its first ``next()``."""
    table = [bytes(b) for b in vocab]

    def decode(token_ids):
        return b"".join(table[int(i)] for i in token_ids).decode("utf-8", errors="replace")

    source = _Counted(ids)
    stream = learner("stream.stream_text")(source, decode, list(stop_strings))
    out = {"returned": _kind(stream), "is_iterator": hasattr(stream, "__next__"), "taken_before": source.taken, "pieces": [],
           "taken": 0, "finished": False}
    if out["is_iterator"]:
        for _ in range(limit or 4 * len(ids) + 8):
            try:
                piece = next(stream)
            except StopIteration:
                out["finished"] = True
                break
            out["pieces"].append([source.taken, piece if type(piece) is str else None, _kind(piece)])
    out["taken"] = source.taken
    return out
