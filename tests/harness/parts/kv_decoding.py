"""Scenarios for exercise 12 (the KV cache), run in the worker: trusted code that builds the
reference ``GPTModel`` (parts/model.py: exercise 12's points depend on its own code, not on the
learner's 07-09), gives it the weights the grader sent, and drives the learner's ``KVCache``,
``gpt_cached`` and ``generate_cached``:

- ``cached_logits`` feeds token ids chunk by chunk through one cache and returns the logits of
  every chunk, concatenated (the grader compares them with one full forward pass);
- ``traced_generate_cached`` runs greedy ``generate_cached`` with a hook on every block's first
  LayerNorm that records how many tokens each block was fed.

These drivers are the grader's: the learner's tree holds only the exercise's own code.
"""

import torch

from harness.worker.parts import load as load_part

_model_part = load_part("model")


def _model(learner, cfg, state_dict):
    model = _model_part.GPTModel(cfg)
    model.load_state_dict(state_dict, strict=False)  # a tied head is missing from state_dict, and shared
    return model.eval()


def cached_logits(learner, cfg, state_dict, idx, chunk_sizes, max_len=None, reset_after=0):
    """Feed ``idx`` in chunks of ``chunk_sizes`` tokens through one ``KVCache`` (``max_len``
    positions, default the context length). ``reset_after=n`` first feeds ``n`` tokens of
    ``idx.flip(1)`` (another prompt) and resets the cache."""
    model = _model(learner, cfg, state_dict)
    cache = learner("kv_cache.KVCache").for_model(model, idx.size(0), max_len)
    gpt_cached = learner("kv_cache.gpt_cached")
    out = []
    with torch.no_grad():
        if reset_after:
            gpt_cached(model, idx.flip(1)[:, :reset_after], cache)
            cache.reset()
        start = 0
        for size in chunk_sizes:
            out.append(gpt_cached(model, idx[:, start:start + size], cache))
            start += size
    return torch.cat(out, dim=1)


def traced_generate_cached(learner, cfg, state_dict, idx, max_new_tokens, eos_id=None, reuse=False):
    """``generate_cached`` on the model, a hook on every block's ``norm1`` recording the number of
    tokens each block was fed: ``{"tokens": (batch, n) tensor, "fed": [tokens per block call]}``.
    With ``reuse``, one cache of the context's length first serves another prompt (one token
    longer, two new tokens), then ``idx``: ``"reused"`` holds what ``idx`` got from it, and
    ``"length_after"`` the cache's length then."""
    model = _model(learner, cfg, state_dict)
    generate_cached = learner("kv_cache.generate_cached")
    fed = []
    hooks = [block.norm1.register_forward_pre_hook(lambda module, args: fed.append(int(args[0].size(1))))
             for block in model.trf_blocks]
    tokens = generate_cached(model, idx, max_new_tokens, eos_id=eos_id)
    out = {"tokens": tokens, "fed": list(fed)}
    if reuse:
        for hook in hooks:
            hook.remove()
        cache = learner("kv_cache.KVCache").for_model(model, idx.size(0))
        other = torch.cat([idx.flip(1), idx[:, :1]], dim=1)
        generate_cached(model, other, 2, cache=cache, eos_id=eos_id)
        try:
            out["reused"] = generate_cached(model, idx, max_new_tokens, cache=cache, eos_id=eos_id)
        except Exception as e:  # a cache that was not reset may overflow: the check names it
            out["reused_error"] = f"{type(e).__name__}: {e}"[:500]
        out["length_after"] = cache.length if type(cache.length) is int else repr(cache.length)[:100]
    return out
