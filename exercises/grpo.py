"""Exercise 38: group relative policy optimization (GRPO), the reasoning track's loss (Shao et al.
2024, DeepSeekMath; DeepSeek-R1; Hugging Face trl's ``GRPOTrainer``).

For each prompt the model samples a group of ``G`` completions, and exercise 36's rewards score
them. GRPO needs no value model: a completion's advantage is how much better it did than the
other completions of its own group::

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)

The policy is then pushed towards the completions with positive advantage and away from the
others, token by token, with PPO's clipped objective (so one batch of samples can be trained on a
few times without the policy running off), and a KL penalty keeps it near a frozen reference (as
34's DPO keeps one)::

    ratio_t     = exp(logp_t - old_logp_t)                 pi_theta / pi_old at token t
    objective_t = min(ratio_t * A, clip(ratio_t, 1 - clip_eps, 1 + clip_eps) * A)
    kl_t        = exp(ref_t - logp_t) - (ref_t - logp_t) - 1     Schulman's k3: >= 0, unbiased for KL(pi || ref)
    loss_t      = -(objective_t - beta * kl_t)

and the per-token losses are averaged over the completions' tokens in one of three ways, each a
``loss_type`` named as trl names it. ``old_logp`` is what the policy gave when the completions
were sampled, ``ref_logp`` what the frozen reference gives: both are constants of the loss, as the
advantages are, so its gradient reaches ``logprobs`` alone.

The layout is trl's: a batch of ``B`` prompts with ``G`` completions each is ``B * G`` rows, the
``G`` completions of one prompt in adjacent rows; every per-token tensor is ``(B * G, T)``,
padded to ``T`` tokens, with a mask that is True on the completion's own tokens.
"""

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")  # trl's names for the three ways to average the tokens' losses


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """Each completion's reward relative to its group's (GRPO's outcome advantage).

    Args:
        rewards: ``(B * G,)`` float tensor, one reward per completion, the ``G = group_size``
            completions of one prompt in adjacent entries: ``rewards[g * G:(g + 1) * G]`` is
            group ``g``.
        group_size: ``G``, an int >= 1 that divides ``len(rewards)``.
        eps: added to the standard deviation, so that a group whose rewards are all equal (its
            standard deviation 0: nothing to learn from it) gives advantages 0, never 0 / 0.
        scale: divide by the group's standard deviation (GRPO). ``False`` is Dr. GRPO's (Liu et
            al. 2025): the difference from the mean alone, since dividing by the standard
            deviation weights the groups that are nearly all right or all wrong the most.

    Returns:
        ``(B * G,)`` in ``rewards``' dtype: ``(r - mean) / (std + eps)`` with the mean and the
        standard deviation of the reward's own group; the standard deviation is the UNBIASED one
        (divided by ``G - 1``: ``torch.std``'s default, as trl computes it). A group of one
        (``G = 1``) has nothing to be compared with: its advantage is 0 (its standard deviation
        taken as 0, where the unbiased formula gives 0 / 0). With ``scale=False``: ``r - mean``.

    Raises:
        ValueError: ``rewards`` not 1-D, ``group_size`` not an int >= 1, or ``len(rewards)`` not a
            multiple of it (the message names the shape and the group size).
    """
    raise NotImplementedError("exercise 38 (grpo), group_advantages: refuse bad shapes; each group's mean and unbiased std (0 for a group of one), (r - mean) / (std + eps)")


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.04,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """The GRPO loss of a batch of completions, from their per-token log-probabilities.

    Args:
        logprobs: ``(N, T)`` float, ``log pi_theta`` of each completion token under the policy
            being trained (``N = B * G`` completions padded to ``T`` tokens), with gradients.
        old_logprobs: ``(N, T)``, the same under the policy that sampled them (before this round
            of updates; it may be ``logprobs`` itself, the first time a batch is used).
        ref_logprobs: ``(N, T)``, the same under the frozen reference; may be None when
            ``beta == 0`` (then it is not read at all).
        advantages: ``(N,)``, ``group_advantages``' output: one per completion, shared by its tokens.
        mask: ``(N, T)`` bool (or 0/1 numbers), True on the tokens that count (the completion's,
            not its padding). What the other tensors hold where it is False must not matter, not
            even inf or NaN: nothing computed there may reach the loss or its gradient
            (``x * mask`` does not do that: ``inf * 0`` is NaN).
        clip_eps: the ratio is clipped to ``[1 - clip_eps, 1 + clip_eps]``.
        beta: the KL penalty's weight; 0 leaves the reference out.
        loss_type: how the per-token losses ``loss_t`` (zero where masked) become one number:

            - ``"grpo"`` (the paper's): each completion's mean over its own tokens, then the mean
              over the ``N`` completions (a completion with no token counts as 0);
            - ``"bnpo"``: the mean over every counted token of the batch (a long completion
              weighs more);
            - ``"dr_grpo"`` (Dr. GRPO's): the sum over every counted token divided by the
              constant ``N * max_completion_length``.

            The counts in the first two denominators are clamped to at least 1 (trl's).
        max_completion_length: Dr. GRPO's constant; None means ``T``. An int >= ``T``.

    Returns:
        ``(loss, stats)``: ``loss`` a 0-d tensor in ``logprobs``' dtype whose gradient reaches
        ``logprobs`` only (``old_logprobs``, ``ref_logprobs`` and ``advantages`` are constants:
        detach them); ``stats`` a dict of detached 0-d tensors for logging: ``"kl"``, the mean of
        ``kl_t`` over the counted tokens (None when ``beta == 0``), and ``"clip_fraction"``, the
        fraction of the counted tokens whose objective the clip changed (``ratio > 1 + clip_eps``
        with ``A > 0``, or ``ratio < 1 - clip_eps`` with ``A < 0``). Both 0 with no counted token.

    Raises:
        ValueError: an unknown ``loss_type`` (the message lists ``LOSS_TYPES``), shapes that do
            not agree (named), ``ref_logprobs`` None with ``beta != 0``, or a
            ``max_completion_length`` below ``T``.
    """
    raise NotImplementedError("exercise 38 (grpo), grpo_loss: check the arguments; zero the masked inputs; ratio, clipped objective, k3 KL; average; stats")
