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
    # BEGIN SOLUTION 17: model, optimizer, scaler, step, data state and every RNG state in one dict; write a temporary file, then os.replace
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    rng = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": int(step),
        "data_state": data_state,
        "rng": rng,
        "extra": extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    # END SOLUTION


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
    # BEGIN SOLUTION 17: torch.load with weights_only=True, load the states given, restore every RNG, return step, data_state and extra
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint (no format {FORMAT!r})")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scaler is not None:
        if state.get("scaler") is None:
            raise ValueError(f"{path} holds no GradScaler state, but a scaler was given")
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = rng["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return {"step": state["step"], "data_state": state["data_state"], "extra": state.get("extra")}
    # END SOLUTION
