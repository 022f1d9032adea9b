"""Exercise 13: the training loss: cross-entropy, the mean loss over a data loader, perplexity."""

import math

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The mean cross-entropy of ``logits`` against ``targets``, as ``F.cross_entropy`` on the
    flattened tensors.

    ``logits`` is ``(..., vocab_size)`` (a GPT's ``(batch, num_tokens, vocab_size)``) and
    ``targets`` has the same leading shape with int64 class ids. The loss of one position is
    ``logsumexp(logits) - logits[target]``, computed stably (no overflow for logits of 1e4) in
    float32 or wider, whatever the logits' dtype; positions whose target is ``ignore_index`` count
    for nothing, and the result is the mean over the others: a 0-dim float32 tensor (float64 for
    float64 logits) that gradients flow through. When every target is ignored the mean is over
    nothing and the result is NaN, as PyTorch's.

    Raises:
        ValueError: when the leading shapes differ, or a target (other than ``ignore_index``)
            is outside ``0 .. vocab_size - 1``; the message names the first bad one.
    """
    # BEGIN SOLUTION 13: log-sum-exp minus the target's logit, averaged over the targets that are not ignored
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits of shape {tuple(logits.shape)} need targets of shape {tuple(logits.shape[:-1])}, "
                         f"got {tuple(targets.shape)}")
    vocab = logits.size(-1)
    logits = logits.reshape(-1, vocab)  # (n, vocab_size): one row per predicted token
    targets = targets.reshape(-1)  # (n,)
    keep = targets != ignore_index  # (n,) bool
    bad = keep & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ValueError(f"target {int(targets[bad][0])} is not a token id of a vocabulary of {vocab} "
                         f"(nor ignore_index={ignore_index})")
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    safe = torch.where(keep, targets, torch.zeros_like(targets))  # any valid index where ignored
    # -log softmax(logits)[target] = logsumexp(logits) - logits[target], without forming the softmax
    per_token = torch.logsumexp(logits, dim=-1) - logits.gather(-1, safe[:, None]).squeeze(-1)  # (n,)
    return (per_token * keep).sum() / keep.sum()  # the mean over the targets that count
    # END SOLUTION


def calc_loss_batch(input_batch: torch.Tensor, target_batch: torch.Tensor, model, device) -> torch.Tensor:
    """The loss of ``model`` on one batch: both tensors moved to ``device``, the logits
    ``model(input_batch)`` (``(batch, num_tokens, vocab_size)``) against ``target_batch``
    (``(batch, num_tokens)``) through ``cross_entropy``. Gradients flow through it."""
    # BEGIN SOLUTION 13: move the batch to the device, run the model, cross_entropy of its logits
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    return cross_entropy(model(input_batch), target_batch)
    # END SOLUTION


def calc_loss_loader(data_loader, model, device, num_batches: int | None = None) -> float:
    """The mean of ``calc_loss_batch`` over the batches of ``data_loader`` (an iterable of
    ``(input_batch, target_batch)`` pairs with a ``len``): over its first ``num_batches`` when
    given (all of them when ``num_batches`` is None or larger than ``len(data_loader)``). Each batch
    counts once, whatever its size (the mean of the batch means, as the LLMs-from-scratch book
    computes it). Runs under ``torch.no_grad()``; the model's train/eval mode is left as it is.
    Returns a Python float.

    Raises:
        ValueError: when the loader has no batches, or ``num_batches`` is less than 1.
    """
    # BEGIN SOLUTION 13: sum the batch losses under no_grad over the first num_batches batches, divide by their number
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be at least 1, got {num_batches}")
    if len(data_loader) == 0:
        raise ValueError("the data loader has no batches: is the text shorter than one window (max_length + 1 tokens)?")
    limit = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    with torch.no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= limit:
                break
            total += float(calc_loss_batch(input_batch, target_batch, model, device))
    return total / limit
    # END SOLUTION


def perplexity(loss: float | torch.Tensor) -> float:
    """The perplexity of a mean cross-entropy ``loss`` in nats: ``exp(loss)``, a Python float
    (``inf`` where it overflows; a uniform guess over V tokens has perplexity V)."""
    # BEGIN SOLUTION 13: the exponential of the loss
    if isinstance(loss, torch.Tensor):
        loss = loss.detach()
    try:
        return math.exp(float(loss))
    except OverflowError:
        return math.inf
    # END SOLUTION
