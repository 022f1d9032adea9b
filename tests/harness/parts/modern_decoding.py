"""Scenarios for exercise 25 (the modern decoder's KV cache), run in the worker: trusted code that
builds the reference ``ModernModel`` (parts/modern.py, so 25's points depend on its own code, not
on the learner's 19-23), gives it the weights the grader sent, and drives the learner's
``ModernKVCache`` and ``modern_cached``:

- ``cached_logits`` feeds token ids chunk by chunk through one cache and returns the logits of
  every chunk, concatenated, what the cache held after each chunk, and how many tokens each
  block was fed (a hook on every block's first norm);
- ``traced_generate`` runs the given greedy ``generate_modern`` with a hook on every block's
  first norm that records how many tokens each block was fed.
"""

import torch

from harness.worker.parts import load as load_part

_modern = load_part("modern")


def _model(cfg, state_dict):
    model = _modern.ModernModel(cfg)
    model.load_state_dict(state_dict, strict=False)  # a tied head is missing from state_dict, and shared
    return model.eval()


def _held(cache):
    """What the cache says it holds: slot count and the sorted positions of its filled slots."""
    positions = cache.positions
    if not isinstance(positions, torch.Tensor):
        return {"error": f"positions is a {type(positions).__name__}, not a tensor"}
    return {"slots": int(positions.numel()), "positions": sorted(int(p) for p in positions.tolist() if p >= 0)}


def cached_logits(learner, cfg, state_dict, idx, chunk_sizes, max_len=None, reset_after=0):
    """Feed ``idx`` in chunks of ``chunk_sizes`` tokens through one ``ModernKVCache`` (``max_len``
    positions, default the context length); ``reset_after=n`` first feeds ``n`` tokens of
    ``idx.flip(1)`` and resets the cache."""
    model = _model(cfg, state_dict)
    cache = learner("modern_cache.ModernKVCache").for_model(model, idx.size(0), max_len)
    step = learner("modern_cache.modern_cached")
    out, held, fed = [], [], []
    with torch.no_grad():
        if reset_after:
            step(model, idx.flip(1)[:, :reset_after], cache)
            cache.reset()
        for block in model.trf_blocks:  # what each block is fed from here on: the new tokens only
            block.norm1.register_forward_pre_hook(lambda module, args: fed.append(int(args[0].size(1))))
        start = 0
        for size in chunk_sizes:
            out.append(step(model, idx[:, start:start + size], cache))
            held.append(_held(cache))
            start += size
    buffers = [tuple(k.shape) for k in cache.keys] if isinstance(cache.keys, list) else None
    return {"logits": torch.cat(out, dim=1), "held": held, "buffers": buffers, "fed": fed}


def traced_generate(learner, cfg, state_dict, idx, max_new_tokens, eos_id=None):
    """``generate_modern`` on the model, a hook on every block's ``norm1`` recording the tokens
    each block was fed: ``{"tokens": (batch, n) tensor, "fed": [tokens per block call]}``."""
    model = _model(cfg, state_dict)
    fed = []
    for block in model.trf_blocks:
        block.norm1.register_forward_pre_hook(lambda module, args: fed.append(int(args[0].size(1))))
    tokens = learner("modern_cache.generate_modern")(model, idx, max_new_tokens, eos_id=eos_id)
    return {"tokens": tokens, "fed": fed}
