"""Exercise 18: data-parallel training with PyTorch's own engine (``torch.distributed`` and
``DistributedDataParallel``), run under ``torchrun``: gloo on CPUs, nccl on CUDA GPUs."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its ``rank`` among ``world_size`` processes, its
    ``local_rank`` on this machine, and the ``device`` it computes on."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs, plots and saves."""
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` set up, or run alone.

    ``torchrun`` gives each process the environment variables ``RANK``, ``LOCAL_RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. When ``WORLD_SIZE`` is set (even to 1):
    ``torch.distributed.init_process_group`` with the backend ``"nccl"`` when the device is CUDA
    and ``"gloo"`` otherwise; the device is ``cuda:LOCAL_RANK`` (made current with
    ``torch.cuda.set_device``) for CUDA, else the CPU. Without ``WORLD_SIZE``: no process group,
    ``DistInfo(0, 0, 1, device)``.

    ``device`` is ``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: for another ``device``, or ``"cuda"`` without CUDA.
    """
    raise NotImplementedError("exercise 18 (ddp), setup_distributed: read RANK, LOCAL_RANK and WORLD_SIZE; init_process_group with gloo or nccl; pick the device")


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` (already on ``info.device``) wrapped in ``DistributedDataParallel`` when there is a
    process group, so that ``backward`` averages the gradients over the processes; the model itself
    when running alone. On CUDA, ``device_ids=[info.local_rank]``; on the CPU, no device ids."""
    raise NotImplementedError("exercise 18 (ddp), wrap_model: DistributedDataParallel when a process group exists, the model otherwise")


def shard(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This process's share of a global batch that every process drew alike: the contiguous
    rows ``rank * n .. (rank + 1) * n - 1`` with ``n = len(batch) // world_size``. Together the
    processes cover the batch once, with no row twice.

    Raises:
        ValueError: when ``len(batch)`` is not a multiple of ``world_size`` (the message gives both).
    """
    raise NotImplementedError("exercise 18 (ddp), shard: the rank-th of world_size equal slices along the first dimension")


def mean_over_processes(value: float, info: DistInfo) -> float:
    """The mean of ``value`` over all processes (``all_reduce`` of a tensor on ``info.device``,
    then divided by ``world_size``), for logging one loss for the whole run; ``value`` itself when
    running alone. Every process must call it, or the others wait forever."""
    raise NotImplementedError("exercise 18 (ddp), mean_over_processes: all_reduce a one-element tensor with SUM, divide by world_size")


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
