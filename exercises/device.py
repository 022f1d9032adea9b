"""The device to run on: ``pick_device("auto")`` takes a GPU where there is one (given code)."""

import torch


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if there is a GPU, else Apple's MPS if there is one, else the CPU.

    Raises:
        ValueError: for ``cuda`` or ``mps`` where that device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but CUDA is not available here")
    if name == "mps" and not _mps_available():
        raise ValueError("--device mps, but MPS is not available here")
    return torch.device(name)
