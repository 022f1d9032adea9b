"""Exercise 31: instruction data, the assistant track's first: prompts, token ids and batches.

Instruction tuning trains a pretrained GPT on examples of a task and its answer, each written out
in one template (Alpaca's) so that the model learns where the answer starts and where it stops::

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    Rewrite the sentence in the passive voice.

    ### Input:
    The cat chased the mouse.

    ### Response:
    The mouse was chased by the cat.

``format_input`` writes everything up to the response (the prompt), ``format_response`` the rest;
``InstructionDataset`` tokenizes each example once; ``collate`` pads a batch of them into
``(inputs, targets)`` for the next-token loss, with the padding (and, if asked, the prompt) left
out of it, as in the LLMs-from-scratch book's chapter 7.
"""

import torch
from torch.utils.data import Dataset

PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)


def format_input(entry: dict) -> str:
    """The prompt of an instruction ``entry`` (a dict with ``"instruction"``, ``"output"`` and
    maybe ``"input"``, all strings), in Alpaca's template. Exactly::

        PREAMBLE + "\\n\\n### Instruction:\\n" + entry["instruction"]
                 + "\\n\\n### Input:\\n" + entry["input"]       only when the input is non-empty

    where ``PREAMBLE`` is "Below is an instruction that describes a task. Write a response that
    appropriately completes the request." A missing ``"input"`` key or an empty string leaves the
    Input section out, blank line and header included. Nothing follows: the prompt ends with the
    instruction's (or the input's) last character.
    """
    # BEGIN SOLUTION 31: the preamble, the instruction, and the input section only for a non-empty input
    text = PREAMBLE + "\n\n### Instruction:\n" + entry["instruction"]
    if entry.get("input"):
        text += "\n\n### Input:\n" + entry["input"]
    return text
    # END SOLUTION


def format_response(entry: dict) -> str:
    """What follows the prompt in a training example: ``"\\n\\n### Response:\\n" + entry["output"]``.

    ``format_input(entry) + format_response(entry)`` is the whole example; at inference a model is
    given ``format_input(entry) + "\\n\\n### Response:\\n"`` and writes the rest.
    """
    # BEGIN SOLUTION 31: the response header and the output
    return "\n\n### Response:\n" + entry["output"]
    # END SOLUTION


class InstructionDataset(Dataset):
    """Instruction entries as token ids, tokenized once, in ``__init__``.

    For each entry, ``prompt_ids = tokenizer.encode(format_input(entry))`` and ``response_ids =
    tokenizer.encode(format_response(entry))``. The prompt and the response are encoded apart and
    concatenated, so that the first ``len(prompt_ids)`` ids are exactly the prompt's (encoding the
    whole text at once may merge the prompt's last characters and the response's first into one
    token, and the prompt's length would then be wrong) and the prompt's ids are the very ids a
    chat feeds the model at inference. So ``tokenizer.encode`` is called exactly twice per entry,
    all in ``__init__``; ``__getitem__`` only looks up what was stored.

    Args:
        data: a list of entries (dicts as ``format_input`` takes).
        tokenizer: any object with ``encode(text: str) -> list[int]`` (tiktoken's GPT-2 encoding,
            exercise 05's ``Tokenizer``, ...).

    ``len(dataset) == len(data)``; ``dataset[k]`` is ``(token_ids, prompt_length)`` for entry
    ``k``: ``token_ids = prompt_ids + response_ids`` (a list of ints) and ``prompt_length =
    len(prompt_ids)`` (an int), what ``collate`` takes.
    """

    def __init__(self, data: list[dict], tokenizer):
        # BEGIN SOLUTION 31: encode each entry's prompt and response once; keep the ids and the prompt's length
        self.examples = []
        for entry in data:
            prompt_ids = list(tokenizer.encode(format_input(entry)))
            response_ids = list(tokenizer.encode(format_response(entry)))
            self.examples.append((prompt_ids + response_ids, len(prompt_ids)))
        # END SOLUTION

    def __len__(self) -> int:
        # BEGIN SOLUTION 31: the number of entries
        return len(self.examples)
        # END SOLUTION

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        # BEGIN SOLUTION 31: entry index's (token_ids, prompt_length), as stored
        return self.examples[index]
        # END SOLUTION


def collate(
    batch: list[tuple[list[int] | torch.Tensor, int]],
    pad_token_id: int = 50256,
    ignore_index: int = -100,
    allowed_max_length: int | None = None,
    mask_prompt: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of examples into ``(inputs, targets)`` for the next-token loss (the book's
    ``custom_collate_fn``; pass it to a ``DataLoader`` as ``collate_fn=functools.partial(collate,
    ...)``).

    ``batch`` holds ``(token_ids, prompt_length)`` pairs, as ``InstructionDataset`` gives them:
    ``token_ids`` a non-empty list of ints (or a 1-D integer tensor), ``prompt_length`` an int in
    ``[0, len(token_ids)]``. With ``n = len(token_ids)`` and ``longest`` the largest ``n`` in THIS
    batch, row ``b`` is::

        seq = token_ids + [pad_token_id] * (longest + 1 - n)   one end-of-text token, then padding
        inputs[b]  = seq[:-1]                                   (longest tokens)
        targets[b] = seq[1:]                                    the same, one token later
        targets[b, j] = ignore_index  for j >= n                every pad after the first
        targets[b, j] = ignore_index  for j < prompt_length - 1 (only with mask_prompt)

    The target at ``j = n - 1`` is the first pad, the end-of-text token: it stays, so that the
    model learns to stop. Padding is found by position, never by value: a token equal to
    ``pad_token_id`` inside ``token_ids`` is text, and its target stays. Target ``j`` predicts
    token ``j + 1``, so with ``mask_prompt`` the targets ``j < prompt_length - 1`` are exactly
    those that predict a prompt token; the target at ``j = prompt_length - 1`` predicts the
    response's first token and stays. ``ignore_index`` is what ``F.cross_entropy`` leaves out
    (-100, its default).

    With ``allowed_max_length``, both are then cut to their first ``allowed_max_length`` columns:
    after the padding and the masks, so a sequence cut short has no end-of-text target (it did
    not end there).

    Returns:
        ``(inputs, targets)``, two ``torch.long`` tensors of shape ``(len(batch), width)`` on
        ``device``, where ``width = longest``, or ``min(longest, allowed_max_length)``.

    Raises:
        ValueError: for an empty batch, a sequence without tokens, a ``prompt_length`` outside
            ``[0, n]``, or an ``allowed_max_length`` below 1, saying what was expected.
    """
    # BEGIN SOLUTION 31: check the batch; per row the end-of-text token and padding, inputs and targets shifted by one, the masks; cut
    if len(batch) == 0:
        raise ValueError("the batch is empty; expected at least one (token_ids, prompt_length) pair")
    if allowed_max_length is not None and allowed_max_length < 1:
        raise ValueError(f"allowed_max_length is {allowed_max_length}; expected None or at least 1")
    rows = []
    for b, (token_ids, prompt_length) in enumerate(batch):
        ids = [int(t) for t in token_ids]
        if not ids:
            raise ValueError(f"sequence {b} of the batch has no tokens; expected at least one")
        if not 0 <= prompt_length <= len(ids):
            raise ValueError(f"sequence {b} has {len(ids)} tokens and prompt_length {prompt_length}; "
                             f"expected a prompt_length from 0 to {len(ids)}")
        rows.append((ids, int(prompt_length)))
    width = max(len(ids) for ids, _ in rows) + 1  # the longest sequence and its end-of-text token
    inputs, targets = [], []
    for ids, prompt_length in rows:
        n = len(ids)
        seq = ids + [pad_token_id] * (width - n)  # the end-of-text token, then padding
        x, y = seq[:-1], seq[1:]
        y = [ignore_index if j >= n else t for j, t in enumerate(y)]  # every pad after the first
        if mask_prompt:
            y = [ignore_index if j < prompt_length - 1 else t for j, t in enumerate(y)]
        inputs.append(x)
        targets.append(y)
    inputs = torch.tensor(inputs, dtype=torch.long, device=device)
    targets = torch.tensor(targets, dtype=torch.long, device=device)
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs, targets
    # END SOLUTION
