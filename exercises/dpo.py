"""Exercise 34: direct preference optimization (DPO), the assistant track's fourth (Rafailov et al.
2023; the LLMs-from-scratch book's DPO notebook).

Instruction tuning shows a model good answers; preference tuning also shows it worse ones. Each
example is a prompt and two answers, one ``chosen`` and one ``rejected`` (by people, or by a
stronger model). DPO trains the policy (the model being tuned) so that, relative to a frozen
reference (a copy of the model as instruction tuning left it), the chosen answer becomes more
likely and the rejected one less::

    reward(answer) = beta * (log p_policy(answer | prompt) - log p_reference(answer | prompt))
    loss           = -log sigmoid(reward(chosen) - reward(rejected))      averaged over the batch

No reward model, no sampling: a classification loss on the two answers' log-probabilities.
``beta`` sets how far the policy may move from the reference (small: far). The reference only
anchors: it runs without gradients and without dropout, and never changes.

``sequence_logprobs`` sums an answer's token log-probabilities from a model's logits;
``dpo_loss`` is the formula above; ``dpo_batch_loss`` runs the policy and the reference on a batch
of ``PreferenceDataset`` examples padded by ``collate_preferences`` (exercise 31's template and
``collate``, the prompt masked, so only the answers' tokens count).
"""

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Each row's summed log-probability of its targets: ``log p(answer | prompt)``.

    Args:
        logits: ``(batch, num_tokens, vocab_size)``, a model's output (float32 or float64).
        targets: ``(batch, num_tokens)`` int64, as exercise 31's ``collate`` gives them: target
            ``j`` is the token after position ``j``; ``ignore_index`` marks the targets that do
            not count (the prompt's, with ``mask_prompt=True``, and the padding's).
        ignore_index: the value of the targets left out (-100 by default, as ``collate``'s and
            ``F.cross_entropy``'s).

    Returns:
        ``(batch,)`` in ``logits``' dtype: for row ``b``, the SUM over the positions ``j`` with
        ``targets[b, j] != ignore_index`` of ``log_softmax(logits[b, j])[targets[b, j]]``; 0 for
        a row with no counted target. A sum, not a mean: it is the log-probability of the whole
        answer, and a longer answer is less likely. Computed with ``log_softmax`` (the logits
        minus their logsumexp), never as the log of the probabilities: a probability below
        ~1e-45 is 0 in float32, and its log ``-inf``. Differentiable with respect to ``logits``.
    """
    raise NotImplementedError("exercise 34 (dpo), sequence_logprobs: log_softmax over the vocabulary, each position's target gathered, the counted positions summed per row")


def dpo_loss(
    policy_chosen_logprobs: torch.Tensor,
    policy_rejected_logprobs: torch.Tensor,
    reference_chosen_logprobs: torch.Tensor,
    reference_rejected_logprobs: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of a batch from its four ``(batch,)`` log-probabilities (``sequence_logprobs``
    of the chosen and the rejected answers under the policy and under the reference).

    With ``pc, pr, rc, rr`` the four tensors in the order of the arguments::

        chosen_rewards   = beta * (pc - rc)       how much more likely the policy makes the chosen answer
        rejected_rewards = beta * (pr - rr)       ... and the rejected one
        loss = mean over the batch of -logsigmoid(chosen_rewards - rejected_rewards)

    (``-logsigmoid``, ``F.logsigmoid``, is ``log(1 + exp(-x))`` computed stably.) The loss falls as
    the chosen reward rises above the rejected one.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: ``loss`` a 0-d tensor that backpropagates
        into the policy's log-probabilities; the rewards ``(batch,)`` and DETACHED
        (``requires_grad`` False): they are for logging (the reward margin, how often the chosen
        answer wins), and a graph kept alive by a logged value holds the whole batch's
        activations.
    """
    raise NotImplementedError("exercise 34 (dpo), dpo_loss: the rewards, beta * (policy - reference); -logsigmoid of their margin, averaged; the rewards detached")


def dpo_batch_loss(
    policy: torch.nn.Module, reference: torch.nn.Module, batch: dict, beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dpo_loss`` on a batch: the policy's and the reference's log-probabilities of the chosen
    and the rejected answers.

    Args:
        policy: the model being tuned: any module mapping ``(batch, num_tokens)`` token ids to
            ``(batch, num_tokens, vocab_size)`` logits (a ``GPTModel``). It runs in whatever mode
            the caller left it (``train()`` while training: dropout is the caller's choice), with
            gradients.
        reference: the frozen model it is compared with, the same kind of module. Call
            ``reference.eval()`` (it is left in eval mode: no dropout, so its log-probabilities
            are the same at every call) and run it under ``torch.no_grad()``: no gradient ever
            reaches it, and no graph is kept for it.
        batch: a dict of four ``torch.long`` tensors, as ``collate_preferences`` makes them:
            ``"chosen_inputs"``, ``"chosen_targets"`` (``(batch, chosen_width)``) and
            ``"rejected_inputs"``, ``"rejected_targets"`` (``(batch, rejected_width)``), the
            targets -100 on the prompt and the padding.
        beta: as in ``dpo_loss``.

    Returns:
        ``dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)``,
        each of the four ``sequence_logprobs(model(inputs), targets)``: the loss backpropagates
        into the policy's parameters, and into nothing of the reference.
    """
    raise NotImplementedError("exercise 34 (dpo), dpo_batch_loss: the policy's log-probabilities with gradients; the reference's in eval mode, under no_grad; dpo_loss")


# The data (given: no exercise). Exercise 31's functions are imported where they are used, not at
# the top, so that dpo.py imports whatever state instruct.py is in: a mistake there costs 31's
# points, never this exercise's.


class PreferenceDataset(Dataset):
    """Preference entries as token ids, tokenized once, in ``__init__``.

    An entry is a dict with ``"instruction"``, maybe ``"input"`` (as exercise 31's entries), and
    two answers, ``"chosen"`` and ``"rejected"`` (strings). Its prompt is ``format_input(entry)``
    and each answer is written as a response, ``format_response({"output": answer})``; the prompt
    and each answer are encoded apart (as ``InstructionDataset`` does, so that the prompt's ids
    are exactly the first ``prompt_length``), the prompt once for both.

    ``dataset[k]`` is ``((chosen_ids, prompt_length), (rejected_ids, prompt_length))`` for entry
    ``k``: two ``(token_ids, prompt_length)`` pairs, what exercise 31's ``collate`` takes, with the
    same prompt ids in front of each answer.
    """

    def __init__(self, data: list[dict], tokenizer):
        from .instruct import format_input, format_response

        self.pairs = []
        for item in data:
            prompt = list(tokenizer.encode(format_input(item)))
            answers = {key: list(tokenizer.encode(format_response({"output": item[key]}))) for key in ("chosen", "rejected")}
            # two (token_ids, prompt_length) pairs: the same prompt ids in front of each answer's
            self.pairs.append(((prompt + answers["chosen"], len(prompt)), (prompt + answers["rejected"], len(prompt))))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int):
        return self.pairs[k]


def collate_preferences(
    batch: list,
    pad_token_id: int = 50256,
    ignore_index: int = -100,
    allowed_max_length: int | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Pad a batch of ``PreferenceDataset`` items into the dict ``dpo_batch_loss`` takes (pass it
    to a ``DataLoader`` as ``collate_fn``, with ``functools.partial`` for the options).

    The chosen answers and the rejected ones are padded apart, each with exercise 31's
    ``collate(..., mask_prompt=True)`` and the options given, so the two halves may have different
    widths. Returns ``{"chosen_inputs", "chosen_targets", "rejected_inputs",
    "rejected_targets"}``: ``torch.long`` tensors of shape ``(len(batch), width)`` on ``device``,
    the targets ``ignore_index`` on the prompt and the padding.
    """
    from .instruct import collate

    out = {}
    for side, name in enumerate(("chosen", "rejected")):
        inputs, targets = collate([item[side] for item in batch], pad_token_id=pad_token_id, ignore_index=ignore_index,
                                  allowed_max_length=allowed_max_length, mask_prompt=True, device=device)
        out[name + "_inputs"], out[name + "_targets"] = inputs, targets  # (len(batch), width) each
    return out
