"""Exercises 15 and 16: one optimizer step with gradient accumulation and mixed precision, and
gradient checkpointing through the transformer blocks."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    max_norm: float | None = 1.0,
) -> tuple[float, float]:
    """One optimizer step over ``G = len(micro_batches)`` micro-batches (gradient accumulation).

    For each ``(inputs, targets)`` pair (``(b, T)`` int64 tensors on the model's device):
    the forward pass runs under ``torch.autocast(device_type=inputs.device.type,
    dtype=amp_dtype)`` when ``amp_dtype`` is given (``torch.bfloat16`` on a CPU; ``torch.float16``
    or ``torch.bfloat16`` on CUDA) and in full precision when it is None; the loss is
    ``F.cross_entropy`` of the logits (taken in float32) against the targets, divided by ``G``, so
    that the accumulated gradient is that of the mean loss over all ``G * b`` sequences; and it is
    backpropagated, through ``scaler.scale(loss)`` when a ``GradScaler`` is given.

    Then: with a scaler, the gradients are unscaled (``scaler.unscale_(optimizer)``) before
    anything reads them; their global norm is taken and, when ``max_norm`` is not None, clipped to
    it (``torch.nn.utils.clip_grad_norm_``); the optimizer steps (``scaler.step(optimizer)`` and
    ``scaler.update()`` with a scaler, which skip a step whose gradients hold an inf or NaN and
    lower the scale); and the gradients are cleared with ``optimizer.zero_grad(set_to_none=True)``.
    The parameters and their gradients stay in their own dtype (float32) throughout: autocast
    changes the dtype of the computation, not of the parameters.

    Returns:
        ``(loss, grad_norm)`` as Python floats: the mean loss over the micro-batches (not scaled),
        and the gradients' global L2 norm before clipping (unscaled; inf or NaN on a skipped step).

    Raises:
        ValueError: when ``micro_batches`` is empty.
    """
    raise NotImplementedError("exercise 15 (train_step), train_step: accumulate loss / G over the micro-batches under autocast, unscale, clip, step, zero_grad(set_to_none=True)")


def run_blocks(blocks: nn.Sequential, x: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
    """Run ``x`` through ``blocks`` in order: ``blocks(x)``, with or without gradient checkpointing.

    With ``checkpointing=True`` each block runs through ``torch.utils.checkpoint.checkpoint(block, x,
    use_reentrant=False)``: its activations are not kept for the backward pass but recomputed
    there, which trades one more forward per block for memory that no longer grows with the
    number of blocks. The random state is preserved across the recomputation (the default
    ``preserve_rng_state=True``), so with dropout the loss and the gradients are the same as
    without checkpointing. ``use_gradient_checkpointing`` (below) makes a ``GPTModel`` call this
    from its forward pass while it trains.
    """
    if not checkpointing:
        return blocks(x)
    raise NotImplementedError("exercise 16 (grad_checkpoint), run_blocks: each block through torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)")


class CheckpointedBlocks(nn.Sequential):
    """A ``GPTModel``'s blocks that run through ``run_blocks`` with checkpointing while training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        # a plain Sequential of the same blocks: run_blocks may call blocks(x) without recursing here
        return run_blocks(nn.Sequential(*self), x, checkpointing=True)


def use_gradient_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch gradient checkpointing on (or off) in a ``GPTModel``'s forward pass, in place.

    Its ``trf_blocks`` become ``CheckpointedBlocks`` holding the same blocks: the same parameters
    (an optimizer made before still holds them) and the same ``state_dict`` keys. ``GPTModel``
    itself (exercise 09) knows nothing of checkpointing. Returns ``model``.
    """
    model.trf_blocks = (CheckpointedBlocks if enabled else nn.Sequential)(*model.trf_blocks)
    return model
