"""Scenarios for exercise 37 (rollouts), run in the worker: trusted code builds the reference
``GPTModel`` (parts/model.py) with the weights the grader sent, calls the learner's
``sample_group`` with a generator seeded as the grader asks, and records what each pass made the
model do: hooks count the rows and tokens each pass feeds the first block, the positions each pass
reads from the position embedding, whether gradients were on, and each call of the model itself
(``model(...)``, not a cached step). The learner's ``rollouts.py`` imports the reference
``KVCache`` and ``gpt_cached`` (parts/kv_cache.py) in place of exercise 12's.
"""

import torch

from harness.worker.parts import load as load_part

_model = load_part("model")
FIELDS = ("prompt_ids", "completion_ids", "mask", "logprobs")


def _build(cfg, state, dtype, train):
    model = _model.GPTModel(cfg).to(getattr(torch, dtype))  # cast first: the weights load exactly
    model.load_state_dict(state, strict=False)  # a tied head is missing from state, and shared
    return model.train(train)


def group(learner, cfg, state, prompt_ids, group_size, max_new_tokens, eos_id, *, temperature=1.0, top_k=None, seed=None,
          dtype="float64", train=False):
    """``sample_group(model, prompt_ids, group_size, max_new_tokens, eos_id, temperature=...,
    top_k=..., generator=...)`` with ``generator = torch.Generator().manual_seed(seed)`` (None
    without a seed). Reports the returned fields (a tensor each, or its type's name), the passes
    (``{"rows", "fed", "positions", "grad"}`` for a pass through the first block, ``{"model": True}``
    for a call of the model), the model's mode afterwards, and whether the generator and torch's
    global generator were drawn from."""
    model = _build(cfg, state, dtype, train)
    passes = []
    model.pos_emb.register_forward_pre_hook(lambda module, args: passes.append({"positions": args[0].reshape(-1).tolist()}))
    model.trf_blocks[0].norm1.register_forward_pre_hook(lambda module, args: passes[-1].update(
        {"rows": int(args[0].size(0)), "fed": int(args[0].size(1)), "grad": torch.is_grad_enabled()}) if passes else None)
    model.register_forward_pre_hook(lambda module, args: passes.append({"model": True}))
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    before_gen = generator.get_state() if generator is not None else None
    global_before = torch.get_rng_state()
    with torch.enable_grad():  # the caller's mode, on
        out = learner("rollouts.sample_group")(model, prompt_ids, group_size, max_new_tokens, eos_id, temperature=temperature,
                                               top_k=top_k, generator=generator)
    report = {"returned": type(out).__name__, "passes": passes,
              "training_after": model.training,
              "generator_drawn": generator is not None and not torch.equal(generator.get_state(), before_gen),
              "global_drawn": not torch.equal(torch.get_rng_state(), global_before)}
    for name in FIELDS:
        value = getattr(out, name, None)
        report[name] = value.detach().cpu().clone() if isinstance(value, torch.Tensor) else type(value).__name__
    return report
