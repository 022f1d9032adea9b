"""Exercise 32: classification fine-tuning, the assistant track's second (the LLMs-from-scratch
book's chapter 6).

A pretrained GPT becomes a classifier (spam or not, a sentiment, a topic) by changing its last
layer and training a few of its parameters:

1. ``add_classification_head``: the language-model head (``emb_dim -> vocab_size``) gives way to a
   small one, ``emb_dim -> num_classes``, a weight of its own (never the embedding's) and a bias.
2. ``freeze_for_classification``: every parameter frozen, then the last few transformer blocks,
   the final norm and the new head trainable again; cheap to train, and the rest of what the
   model learned in pretraining stays as it was.
3. ``last_token_logits``: which position's output classifies a text. With causal attention only
   the LAST token has seen the whole text, so it is the one; in a right-padded batch that is each
   row's last real token, at ``lengths[b] - 1``, not the batch's last column ``[:, -1]`` (a pad,
   for every row shorter than the longest).
4. ``classification_loss`` and ``classification_accuracy`` on a batch.

The functions take any ``GPTModel`` (exercise 09) or a module with the same attributes:
``tok_emb``, ``trf_blocks`` (an ``nn.Sequential`` of blocks), ``final_norm`` and ``out_head`` (an
``nn.Linear``), whose forward maps ``(batch, num_tokens)`` token ids to ``(batch, num_tokens,
out_head.out_features)`` logits.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _count(value, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ValueError(f"{name} is {value!r}; expected an int of at least {low}{upper}")
    return value


def add_classification_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace ``model.out_head`` with ``nn.Linear(emb_dim, num_classes, bias=True)`` and return
    ``model`` (the same object, changed in place).

    ``emb_dim`` is the width the old head read, ``model.out_head.in_features``. The new head has a
    weight ``(num_classes, emb_dim)`` of its own, untied from ``tok_emb`` (GPT-2 ties its LM head to
    the embedding; a class head is not a token table), and a bias ``(num_classes,)``, as the book's
    ``torch.nn.Linear(in_features=768, out_features=num_classes)`` has by default. It starts as
    ``nn.Linear`` starts it, on the old head's device and dtype. The model's forward then gives
    ``(batch, num_tokens, num_classes)``; ``named_parameters()`` lists ``out_head.weight`` and
    ``out_head.bias`` (and ``tok_emb.weight``, which a tied model shared with the old head, stays).

    Raises:
        ValueError: when ``num_classes`` is not an int of at least 2 (cross-entropy over a single
            class is always 0), naming it.
    """
    # BEGIN SOLUTION 32: a new nn.Linear(emb_dim, num_classes) with a bias, untied, in place of out_head
    num_classes = _count(num_classes, "num_classes", 2)
    old = model.out_head
    model.out_head = nn.Linear(old.in_features, num_classes, bias=True).to(device=old.weight.device, dtype=old.weight.dtype)
    return model
    # END SOLUTION


def freeze_for_classification(model: nn.Module, trainable_blocks: int = 1) -> int:
    """Freeze the model but for its last ``trainable_blocks`` transformer blocks, its final norm and
    its head; return how many numbers stay trainable.

    Sets ``requires_grad = False`` on every parameter, then ``True`` on every parameter of
    ``model.trf_blocks[-trainable_blocks:]`` (none with 0), of ``model.final_norm`` and of
    ``model.out_head`` (call it after ``add_classification_head``). The embeddings (``tok_emb``,
    ``pos_emb``) and the earlier blocks stay frozen. Returns ``sum(p.numel() for p in
    model.parameters() if p.requires_grad)``, a shared parameter counted once (what an optimizer
    given ``model.parameters()`` would update).

    Raises:
        ValueError: when ``trainable_blocks`` is not an int from 0 to ``len(model.trf_blocks)``,
            naming it and the number of blocks.
    """
    # BEGIN SOLUTION 32: freeze everything, then the last blocks, the final norm and the head trainable; count
    n_blocks = len(model.trf_blocks)
    if isinstance(trainable_blocks, bool) or not isinstance(trainable_blocks, int) or not 0 <= trainable_blocks <= n_blocks:
        raise ValueError(f"trainable_blocks is {trainable_blocks!r}; expected an int from 0 to {n_blocks}, "
                         f"the model's number of blocks")
    for p in model.parameters():
        p.requires_grad_(False)
    last = list(model.trf_blocks)[n_blocks - trainable_blocks:]
    for module in [*last, model.final_norm, model.out_head]:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
    # END SOLUTION


def last_token_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's logits at its last real token, in a right-padded batch.

    Args:
        logits: ``(batch, num_tokens, num_classes)``, a model's output.
        lengths: ``(batch,)`` integer tensor (or a list of ints): row ``b`` holds ``lengths[b]``
            real tokens at positions ``0 .. lengths[b] - 1``, then padding. Padding is given by
            these lengths, never by a token's value (a pad id may also occur in a text).

    Returns:
        ``(batch, num_classes)``: ``out[b] = logits[b, lengths[b] - 1]``, differentiable with
        respect to ``logits`` (its gradient is zero everywhere else), on ``logits``' device and
        in its dtype. Only with no padding at all is this ``logits[:, -1]``.

    Raises:
        ValueError: when ``lengths`` does not hold one length per row, or a length is outside
            ``[1, num_tokens]``, saying which row and its length.
    """
    # BEGIN SOLUTION 32: check the lengths; gather position lengths[b] - 1 of each row
    batch, num_tokens = logits.shape[0], logits.shape[1]
    lengths = torch.as_tensor(lengths).to(device=logits.device)
    if lengths.shape != (batch,) or lengths.is_floating_point():
        raise ValueError(f"lengths has shape {tuple(lengths.shape)} and dtype {lengths.dtype}; "
                         f"expected one integer length per row, shape ({batch},)")
    bad = ((lengths < 1) | (lengths > num_tokens)).nonzero()
    if len(bad):
        b = int(bad[0])
        raise ValueError(f"row {b} has length {int(lengths[b])}; expected a length from 1 to {num_tokens}, the batch's width")
    rows = torch.arange(batch, device=logits.device)
    return logits[rows, lengths.long() - 1]  # (batch, num_classes): the last real token of each row
    # END SOLUTION


def classification_loss(model: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of ``model``'s class logits at each row's last real token.

    ``input_ids`` ``(batch, num_tokens)`` int64, right-padded, ``lengths`` as in
    ``last_token_logits``, ``labels`` ``(batch,)`` int64 class indices in ``[0, num_classes)``.
    Returns ``F.cross_entropy(last_token_logits(model(input_ids), lengths), labels)``, a 0-d tensor
    that backpropagates into the model's trainable parameters.
    """
    # BEGIN SOLUTION 32: the model's logits, each row's last real token, cross-entropy against the labels
    return F.cross_entropy(last_token_logits(model(input_ids), lengths), labels)
    # END SOLUTION


def classification_accuracy(model: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of rows whose predicted class, the argmax of the logits at the row's last real
    token, equals its label: a Python ``float`` in ``[0, 1]``.

    Arguments as in ``classification_loss``. Runs under ``torch.no_grad()`` and leaves the model's
    mode as it is (call ``model.eval()`` first for a score without dropout).
    """
    # BEGIN SOLUTION 32: without gradients, the argmax of each row's last real token against the labels
    with torch.no_grad():
        predicted = last_token_logits(model(input_ids), lengths).argmax(dim=-1)
        return (predicted == labels.to(predicted.device)).float().mean().item()
    # END SOLUTION
