"""Exercise 37: rollouts, a group of completions sampled for each prompt, with what GRPO needs of them.

GRPO (DeepSeekMath) learns from groups: for each problem it samples ``G`` completions from the
policy, scores them with the rewards of exercise 36, and compares each completion with the others
of its group. This exercise writes the sampling. ``sample_group`` returns, for each of the ``B*G``
completions:

- its token ids, the ``G`` completions of prompt ``b`` in rows ``b*G`` to ``b*G + G - 1`` (each
  prompt's rows side by side, as ``prompt_ids.repeat_interleave(G, dim=0)`` orders them, not
  ``prompt_ids.repeat(G, 1)``): GRPO takes a group's mean over adjacent rows, ``view(B, G)``;
- its mask: the tokens that belong to the completion, up to and including its first end-of-text
  token; what comes after was never part of the answer and must not be trained on;
- the sampling policy's log-probability of each token it sampled. GRPO's ratio is the policy's
  probability of a token now over its probability when the token was sampled; the second is this.
  It is the log-softmax of ``logits / temperature`` at the sampled token, over the whole
  vocabulary (trl's convention: ``top_k`` narrows what can be drawn, not the distribution the
  log-probabilities are read from).

The prompts go through the model once (the prefill, all ``B*G`` rows in one pass through
exercise 12's ``KVCache`` and ``gpt_cached``), then each step feeds one token per row. Choosing
the token is exercise 10's rule, written again here for a whole batch: divide by the temperature,
keep the ``top_k``, draw with ``torch.multinomial`` from a seeded generator. Greedy decoding has no
place here: its log-probabilities would not be those of any sampling, so ``temperature`` must be
positive.
"""

from typing import NamedTuple

import torch

from .kv_cache import KVCache, gpt_cached


class Rollout(NamedTuple):
    """What ``sample_group`` returns: plain tensors, on the prompt's device."""

    prompt_ids: torch.Tensor  # (B*G, T_p) int64: each prompt repeated G times, a group's rows adjacent
    completion_ids: torch.Tensor  # (B*G, T_new) int64: eos_id after a row's first eos_id
    mask: torch.Tensor  # (B*G, T_new) bool: True up to and including the first eos_id
    logprobs: torch.Tensor  # (B*G, T_new) float32: the sampling policy's, 0.0 where mask is False


def completion_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Which tokens of each completion count: those up to and including its first ``eos_id``.

    Args:
        ids: ``(N, T)`` integer token ids, N completions.
        eos_id: the end-of-text token id.

    Returns:
        ``(N, T)`` ``torch.bool``: ``mask[i, t]`` is True when no ``eos_id`` comes before position
        ``t`` in row ``i`` (so the first ``eos_id`` itself is True, everything after it False;
        a row without ``eos_id`` is True throughout).

    Raises:
        ValueError: when ``ids`` is not 2-D (the message gives its shape).
    """
    # BEGIN SOLUTION 37: True until the first eos, that eos included
    if ids.dim() != 2:
        raise ValueError(f"ids has shape {tuple(ids.shape)}; expected (N, T), one completion per row")
    is_eos = (ids == eos_id).long()  # (N, T)
    before = is_eos.cumsum(dim=1) - is_eos  # (N, T): how many eos come before each position
    return before == 0
    # END SOLUTION


def sample_group(
    model,
    prompt_ids: torch.Tensor,
    group_size: int,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample ``group_size`` completions of each prompt, all ``B*G`` rows at once.

    The steps, exactly (the checks repeat them with a generator seeded alike):

    1. ``prompts = prompt_ids.repeat_interleave(group_size, dim=0)``, ``(B*G, T_p)``.
    2. ``cache = KVCache.for_model(model, B*G)`` (exercise 12); the prefill:
       ``gpt_cached(model, prompts, cache)``, whose logits at the LAST position give the first
       step's distribution. Each later step feeds the tokens chosen last, ``(B*G, 1)``, through
       the same cache.
    3. At each step, for all ``B*G`` rows together: ``scaled = logits / temperature`` ``(B*G,
       vocab)``; the log-probabilities ``torch.log_softmax(scaled, dim=-1)``; with ``top_k``,
       the scaled logits below each row's k-th largest become ``-inf`` (those equal to it stay);
       then ONE draw for every row, ``torch.multinomial(torch.softmax(scaled, dim=-1), 1,
       generator=generator)``, rows that have already ended included (their draw is discarded:
       so the random numbers each row gets do not depend on when the others end).
    4. A row that has produced ``eos_id`` has ended: from the next step on its token is
       ``eos_id``, whatever was drawn. A token's log-probability is the log-probability (step 3,
       before ``top_k``) of the token drawn, or 0.0 where the row had ended before this step.
    5. Stop after ``max_new_tokens`` steps; or as soon as every row has ended (the completions
       are then shorter, ``T_new < max_new_tokens``); or when the sequences fill the model's
       context, ``T_p + T_new == context_length`` (``model.pos_emb.num_embeddings``): a prompt
       of ``context_length`` tokens gives ``T_new == 0``. The last token chosen is never fed to
       the model: ``T_new`` steps make ``T_new`` passes (the prefill, then ``T_new - 1`` single
       tokens).

    The model runs under ``torch.no_grad()``; its mode (train or eval) is left as it is.

    Args:
        model: a ``GPTModel`` (exercise 09).
        prompt_ids: ``(B, T_p)`` int64, B prompts of one length, ``1 <= T_p <= context_length``.
        group_size: G, the completions per prompt, at least 1.
        max_new_tokens: the most tokens per completion, at least 0.
        eos_id: the end-of-text token id, a token of the vocabulary.
        temperature: > 0.
        top_k: keep the ``top_k`` (at least 1) most likely tokens for the draw, or None for all.
        generator: the random source of ``torch.multinomial`` (None: PyTorch's global one).

    Returns:
        A ``Rollout``: ``prompt_ids`` ``(B*G, T_p)`` (step 1), ``completion_ids`` ``(B*G, T_new)``
        int64, ``mask`` ``(B*G, T_new)`` bool (``completion_mask(completion_ids, eos_id)``), and
        ``logprobs`` ``(B*G, T_new)`` float32 (step 4).

    Raises:
        ValueError: naming the argument, when ``prompt_ids`` is not ``(B, T_p)`` with ``B, T_p >=
            1`` or is longer than the context, ``group_size < 1``, ``max_new_tokens < 0``,
            ``temperature <= 0``, ``top_k < 1``, or ``eos_id`` is not in ``[0, vocab_size)``.
    """
    # BEGIN SOLUTION 37: check the arguments; repeat_interleave the prompts; prefill once, then one token per row per step; sample, log-probabilities, eos, early stop
    context_length, vocab_size = model.pos_emb.num_embeddings, model.tok_emb.num_embeddings
    if prompt_ids.dim() != 2 or prompt_ids.size(0) < 1 or prompt_ids.size(1) < 1:
        raise ValueError(f"prompt_ids has shape {tuple(prompt_ids.shape)}; expected (B, T_p) with at least one prompt and one token")
    if prompt_ids.size(1) > context_length:
        raise ValueError(f"prompt_ids holds {prompt_ids.size(1)} tokens per prompt, more than the model's context_length {context_length}")
    if group_size < 1:
        raise ValueError(f"group_size is {group_size}; expected at least 1 completion per prompt")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens is {max_new_tokens}; expected 0 or more")
    if not temperature > 0:
        raise ValueError(f"temperature is {temperature}; expected > 0: a rollout samples")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k is {top_k}; expected None or at least 1")
    if not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id is {eos_id}; expected a token id in [0, {vocab_size})")
    prompts = prompt_ids.repeat_interleave(group_size, dim=0)  # (B*G, T_p): rows b*G .. b*G+G-1 are prompt b
    rows = prompts.size(0)
    steps = min(max_new_tokens, context_length - prompts.size(1))  # the sequences must fit the context
    cache = KVCache.for_model(model, rows)
    ended = torch.zeros(rows, dtype=torch.bool, device=prompts.device)  # (B*G,)
    tokens, logprobs = [], []
    fed = prompts  # the prefill; then (B*G, 1), the tokens chosen last
    for _ in range(steps):
        with torch.no_grad():
            scaled = gpt_cached(model, fed, cache)[:, -1] / temperature  # (B*G, vocab): the last position predicts
        log_probs = torch.log_softmax(scaled, dim=-1)  # (B*G, vocab): the sampling policy, before top-k
        if top_k is not None:
            kth = torch.topk(scaled, min(top_k, vocab_size), dim=-1).values[:, -1:]  # (B*G, 1)
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        drawn = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)  # (B*G, 1)
        token = drawn.masked_fill(ended[:, None], eos_id)  # (B*G, 1): an ended row repeats eos
        logprob = log_probs.gather(-1, drawn).masked_fill(ended[:, None], 0.0)  # (B*G, 1)
        tokens.append(token)
        logprobs.append(logprob)
        ended = ended | (token[:, 0] == eos_id)
        if bool(ended.all()):
            break
        fed = token
    completion_ids = torch.cat(tokens, dim=1) if tokens else prompts.new_zeros(rows, 0)  # (B*G, T_new)
    logprobs = torch.cat(logprobs, dim=1).float() if tokens else torch.zeros(rows, 0, device=prompts.device)
    return Rollout(prompts, completion_ids, completion_mask(completion_ids, eos_id), logprobs)
    # END SOLUTION
