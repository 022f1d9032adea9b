"""Scenarios for exercise 12 (the KV cache), run in the worker: trusted code that builds the
learner's ``GPTModel`` (with the reference attention and LayerNorm the check substitutes), gives it
the weights the grader sent, and drives the learner's ``KVCache`` and ``generate_cached``:

- ``cached_logits`` feeds token ids chunk by chunk through one cache and returns the logits of
  every chunk, concatenated (the grader compares them with one full forward pass);
- ``traced_generate_cached`` runs greedy ``generate_cached`` with a forward hook on every block
  that records how many tokens each call was fed.

These drivers are the grader's: the learner's tree holds only the exercise's own code.
"""

import torch


def _model(learner, cfg, state_dict):
    model = learner("model.GPTModel")(cfg)
    model.load_state_dict(state_dict, strict=False)  # a tied head is missing from state_dict, and shared
    return model.eval()


def cached_logits(learner, cfg, state_dict, idx, chunk_sizes, max_len=None, reset_after=0):
    """Feed ``idx`` in chunks of ``chunk_sizes`` tokens through one ``KVCache`` (``max_len``
    positions, default the context length). ``reset_after=n`` first feeds ``n`` tokens of
    ``idx.flip(1)`` (another prompt) and resets the cache."""
    model = _model(learner, cfg, state_dict)
    cache = learner("kv_cache.KVCache").for_model(model, idx.size(0), max_len)
    out = []
    with torch.no_grad():
        if reset_after:
            model(idx.flip(1)[:, :reset_after], cache=cache)
            cache.reset()
        start = 0
        for size in chunk_sizes:
            out.append(model(idx[:, start:start + size], cache=cache))
            start += size
    return torch.cat(out, dim=1)


def traced_generate_cached(learner, cfg, state_dict, idx, max_new_tokens, eos_id=None):
    """``generate_cached`` on the model, a forward hook on every block recording the number of
    tokens each call was fed: ``{"tokens": (batch, n) tensor, "fed": [tokens per block call]}``."""
    model = _model(learner, cfg, state_dict)
    fed = []
    for block in model.trf_blocks:
        block.register_forward_hook(lambda module, args, output: fed.append(int(args[0].size(1))))
    tokens = learner("kv_cache.generate_cached")(model, idx, max_new_tokens, eos_id=eos_id)
    return {"tokens": tokens, "fed": fed}
