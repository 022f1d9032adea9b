"""Exercise 10: text generation, one token at a time: greedy, temperature, top-k, top-p."""

import torch


def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_size: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend each row of ``idx`` by up to ``max_new_tokens`` tokens.

    At each step the model reads the last ``context_size`` tokens, ``idx[:, -context_size:]``,
    and the next token of each row is chosen from the logits at the last position:

    - ``temperature == 0`` (the default): greedy, ``argmax`` of the logits (``top_k`` and
      ``top_p`` change nothing then);
    - ``temperature > 0``: the logits are divided by ``temperature``; with ``top_k``, all but the
      ``top_k`` largest become ``-inf`` (logits equal to the k-th largest are kept); then, with
      ``top_p``, only the smallest set of most probable tokens whose probabilities (after the
      steps before) add up to at least ``top_p`` is kept: the token that crosses ``top_p`` is
      kept, and the most probable token always is. The token is drawn from the softmax of what
      remains with ``torch.multinomial(probs, 1, generator=generator)``, so a ``torch.Generator``
      seeded the same way gives the same tokens.

    With ``eos_id``, a row that has produced ``eos_id`` is finished: its later tokens are
    ``eos_id`` too, and generation stops as soon as every row is finished, so the result may be
    shorter than ``num_tokens + max_new_tokens``. The model runs under ``torch.no_grad()``; put
    it in eval mode first (``generate`` does not change its mode).

    Args:
        model: maps int64 token ids ``(batch, n)``, ``n <= context_size``, to logits
            ``(batch, n, vocab_size)``.
        idx: ``(batch, num_tokens)`` int64 token ids, the prompt.
        max_new_tokens: the most tokens to add.
        context_size: the most tokens the model may read at once.
        temperature: 0 for greedy decoding, or > 0 to sample.
        top_k: keep only the ``top_k`` most likely tokens (sampling only).
        top_p: keep only the most likely tokens that cover ``top_p`` of the probability (sampling only).
        eos_id: the end-of-text token id, or None to always add ``max_new_tokens``.
        generator: the random source for sampling (None: PyTorch's global one).

    Returns:
        ``(batch, num_tokens + n_new)`` int64: ``idx`` followed by the new tokens.
    """
    # BEGIN SOLUTION 10: crop to the context, pick each next token (greedy or sampled), append, stop at eos
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (batch,)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            # The model reads at most context_size tokens: crop to the last ones
            logits = model(idx[:, -context_size:])  # (batch, num_tokens, vocab_size)
        logits = logits[:, -1, :]  # (batch, vocab_size): only the last position predicts the next token
        if temperature == 0:
            idx_next = logits.argmax(dim=-1, keepdim=True)  # (batch, 1)
        else:
            logits = logits / temperature  # below 1 sharpens the distribution, above 1 flattens it
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (batch, 1): the k-th largest
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p is not None:
                sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (batch, vocab_size) each
                probs = torch.softmax(sorted_logits, dim=-1)
                before = probs.cumsum(dim=-1) - probs  # the mass of the more probable tokens
                sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
                logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
            probs = torch.softmax(logits, dim=-1)  # (batch, vocab_size); -inf logits get probability 0
            idx_next = torch.multinomial(probs, 1, generator=generator)  # (batch, 1)
        # A finished row keeps emitting eos, so all rows stay the same length
        if eos_id is not None:
            idx_next = idx_next.masked_fill(finished[:, None], eos_id)
            finished |= idx_next[:, 0] == eos_id
        idx = torch.cat([idx, idx_next], dim=1)  # (batch, num_tokens + 1)
        if eos_id is not None and bool(finished.all()):
            break
    return idx
    # END SOLUTION
