"""Fresh random sizes for the graded checks: every run draws new shapes from the check's generator."""

import torch


def n(gen: torch.Generator, low: int, high: int) -> int:
    """A random int in ``[low, high]`` (both included), drawn from ``gen``."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))
