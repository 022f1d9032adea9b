"""Exercise 17: save a training run and resume it exactly where it stopped."""

import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = "gpt-kata-checkpoint-1"


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    scaler: torch.amp.GradScaler | None = None,
    data_state: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Write everything a run needs to continue as if it had never stopped, with ``torch.save``.

    The file holds a dict with ``"format": FORMAT`` and: the model's and the optimizer's
    ``state_dict()``, the scaler's when one is given, ``step`` (the number of optimizer steps
    taken, so the learning-rate schedule resumes at the right point), ``data_state`` (where the
    data stream is: a position, a generator's state; any dict of tensors, numbers and strings), the
    random states (``"rng"``: torch's CPU generator, every CUDA device's when CUDA is available,
    Python's ``random`` and numpy's global generator, so that dropout and sampling continue the
    same sequence), and ``extra`` (the model's configuration, the tokenizer: whatever the caller
    wants back). Everything in it loads with ``torch.load(path, weights_only=True)``: tensors,
    numbers, strings, lists, tuples and dicts, no pickled objects (numpy's state is stored as a
    tensor).

    The file is written next to ``path`` first and then renamed onto it (``os.replace``), so a run
    killed while saving leaves the previous checkpoint whole. Parent directories are created.
    """
    raise NotImplementedError("exercise 17 (resume), save_checkpoint: model, optimizer, scaler, step, data state and every RNG state in one dict; write a temporary file, then os.replace")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Restore what ``save_checkpoint`` wrote: the model's parameters and buffers, the optimizer's
    and the scaler's states when they are given, and every random state saved (the CUDA ones
    only where CUDA is available). Reads with ``torch.load(path, map_location=map_location,
    weights_only=True)``.

    Returns:
        ``{"step": int, "data_state": ..., "extra": ...}`` as saved.

    Raises:
        FileNotFoundError: when ``path`` does not exist (the message names it).
        ValueError: when the file is not a checkpoint written by ``save_checkpoint``, or a scaler
            is given and the checkpoint has no scaler state.
    """
    raise NotImplementedError("exercise 17 (resume), load_checkpoint: torch.load with weights_only=True, load the states given, restore every RNG, return step, data_state and extra")
