"""Exercise 06: batches of training data for a GPT: inputs and the targets they predict.

A GPT learns to predict the next token at every position, so a training example is a window of
``max_length`` token ids and its target is the same window shifted one token to the right:

    ids:     [464, 3290, 318, 845, 1049, 13]
    input:   [464, 3290, 318, 845]
    target:  [3290, 318, 845, 1049]          (max_length 4, the first window)

``GPTDataset`` and ``create_dataloader`` serve such windows from a list of ids, as in the
LLMs-from-scratch book; ``get_batch`` samples random windows from a token array as large as the
disk, as nanoGPT does.
"""

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class GPTDataset(Dataset):
    """Sliding windows over ``token_ids``: ``(input, target)`` pairs shifted by one token.

    Window ``k`` starts at ``i = k * stride``: ``input = token_ids[i : i + max_length]`` and
    ``target = token_ids[i + 1 : i + max_length + 1]``. There is a window for every start ``i``
    with ``i + max_length < len(token_ids)`` (its target must fit), so
    ``len(dataset) == ceil((len(token_ids) - max_length) / stride)``. A ``stride`` equal to
    ``max_length`` gives windows that do not overlap; a smaller one, windows that do.

    Args:
        token_ids: a list of ints or a 1-D integer tensor.
        max_length: the length of each window (the context length), at least 1.
        stride: how far each window starts after the previous one, at least 1.

    ``dataset[k]`` is ``(input, target)``, two ``torch.long`` tensors of shape ``(max_length,)``.

    Raises:
        ValueError: if there are fewer than ``max_length + 1`` token ids (the message gives both
            numbers), or if ``max_length`` or ``stride`` is below 1.
    """

    def __init__(self, token_ids: list[int] | torch.Tensor, max_length: int, stride: int):
        raise NotImplementedError("exercise 06 (dataloader), GPTDataset.__init__: check the lengths, then cut (input, target) windows shifted by one")

    def __len__(self) -> int:
        raise NotImplementedError("exercise 06 (dataloader), GPTDataset.__len__: the number of windows")

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("exercise 06 (dataloader), GPTDataset.__getitem__: window idx as (input, target)")


def create_dataloader(
    token_ids: list[int] | torch.Tensor,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """A ``DataLoader`` of ``GPTDataset(token_ids, max_length, stride)``.

    Each batch is ``[inputs, targets]``, two ``torch.long`` tensors of shape
    ``(batch_size, max_length)`` (the last one smaller unless ``drop_last``).

    With ``shuffle=True`` and a ``seed``, the order is reproducible: the order of
    ``DataLoader(dataset, shuffle=True, generator=torch.Generator().manual_seed(seed))``, the same
    each time the function is called. Without a seed the order is random; with
    ``shuffle=False`` it is the windows' own order.
    """
    raise NotImplementedError("exercise 06 (dataloader), create_dataloader: the dataset, and a DataLoader with a seeded generator when shuffling")


def get_batch(
    data: torch.Tensor | np.ndarray | str | os.PathLike,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of windows from a long array of token ids, as nanoGPT's ``get_batch``.

    The starts are ``ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)``
    (exactly this call, so that a seeded generator gives a known batch); row ``b`` of ``x`` is
    ``data[ix[b] : ix[b] + block_size]`` and row ``b`` of ``y`` is the same window one token
    further on, ``data[ix[b] + 1 : ix[b] + 1 + block_size]``.

    Only the windows drawn are read, so ``data`` may be far larger than memory: pass an
    ``np.memmap`` or the path of a file of ``uint16`` token ids (nanoGPT's ``train.bin``), which
    is opened with ``np.memmap(path, dtype=np.uint16, mode="r")``.

    Args:
        data: 1-D token ids: a tensor, a numpy array (a ``np.memmap`` too) of any integer
            dtype, or a path as above.
        batch_size: the number of windows.
        block_size: the length of each window.
        generator: a ``torch.Generator``, or an int to seed a new one, or None (torch's global
            random state).

    Returns:
        ``(x, y)``, two ``torch.long`` tensors of shape ``(batch_size, block_size)``.

    Raises:
        ValueError: if ``data`` has fewer than ``block_size + 1`` tokens (the message gives both
            numbers).
    """
    if isinstance(data, (str, os.PathLike)):
        data = np.memmap(data, dtype=np.uint16, mode="r")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    raise NotImplementedError("exercise 06 (dataloader), get_batch: draw the starts with torch.randint, stack the windows and the windows one further on")
