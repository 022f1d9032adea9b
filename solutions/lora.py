"""Exercise 33: LoRA, low-rank adaptation (the assistant track's third; Hu et al. 2021, the
LLMs-from-scratch book's appendix E).

Fine-tuning every weight of a GPT costs an optimizer state per weight. LoRA freezes the
pretrained weights and learns, beside each ``nn.Linear`` of weight ``W`` (``out x in``), a
low-rank update: two small matrices ``A`` (``in x rank``) and ``B`` (``rank x out``), so that
the layer computes::

    linear(x) + (alpha / rank) * (x @ A @ B)

``B`` starts at zero, so a fresh LoRA model computes exactly what the pretrained one did;
training moves only ``A`` and ``B`` (``rank * (in + out)`` numbers instead of ``in * out``).
After training, ``merge_lora`` folds the update into ``W`` (``W + (alpha / rank) * (A @ B)^T``)
and the model is a plain one again, as fast as before.

The scaling is ``alpha / rank`` as in the paper, in Hugging Face's ``peft`` and in the current
notebook of the book's appendix E, so that changing the rank does not change how large the update
starts out; the book's printed appendix E multiplied by ``alpha`` alone (its ``alpha`` is this
one's ``alpha / rank``).
"""

import math

import torch
from torch import nn


class LoRALayer(nn.Module):
    """The low-rank update alone: ``forward(x) = scaling * (x @ A @ B)``, ``scaling = alpha / rank``.

    Args:
        in_dim, out_dim: the features of the linear layer it sits beside.
        rank: the rank of the update, an int of at least 1.
        alpha: the update's scale, a float (``scaling = alpha / rank``).

    Attributes (graded by name):
        A: ``nn.Parameter`` of shape ``(in_dim, rank)``, drawn as ``nn.Linear`` draws a weight:
            ``nn.init.kaiming_uniform_(A, a=math.sqrt(5))`` (values within ``±1 / sqrt(rank)``;
            ``peft``'s ``±1 / sqrt(in_dim)``, drawn on its ``(rank, in_dim)`` layout, is fine too).
        B: ``nn.Parameter`` of shape ``(rank, out_dim)``, zeros: a fresh update adds nothing.
        rank, alpha: as given; scaling: ``alpha / rank``, a float.

    ``x`` is ``(..., in_dim)``; the output ``(..., out_dim)``, in ``x``'s dtype.

    Raises:
        ValueError: when ``rank`` is not an int of at least 1, naming it.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        # BEGIN SOLUTION 33: check the rank; A drawn like a Linear's weight, B zeros, the scaling alpha / rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank is {rank!r}; expected an int of at least 1")
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.A = nn.Parameter(torch.empty(in_dim, rank))  # (in_dim, rank)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))  # (rank, out_dim)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 33: the scaled low-rank product
        return self.scaling * (x @ self.A @ self.B)  # (..., in_dim) -> (..., rank) -> (..., out_dim)
        # END SOLUTION


class LinearWithLoRA(nn.Module):
    """An ``nn.Linear`` and a ``LoRALayer`` beside it: ``forward(x) = linear(x) + lora(x)``.

    Args:
        linear: the ``nn.Linear`` to adapt (kept as it is, not copied).
        rank, alpha: the ``LoRALayer``'s.

    Attributes (graded by name):
        linear: the layer given.
        lora: ``LoRALayer(linear.in_features, linear.out_features, rank, alpha)``, moved to the
            device and dtype of ``linear.weight``: a float64 or bfloat16 layer gets A and B of its
            own dtype, and ``x`` in that dtype goes through both.

    Raises:
        ValueError: as ``LoRALayer`` does.
    """

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        # BEGIN SOLUTION 33: keep the linear layer; a LoRALayer of its sizes, on its device and in its dtype
        self.linear = linear
        lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)
        self.lora = lora.to(device=linear.weight.device, dtype=linear.weight.dtype)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 33: the frozen layer plus the update
        return self.linear(x) + self.lora(x)  # (..., in_dim) -> (..., out_dim), both terms
        # END SOLUTION


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float, include_head: bool = False) -> int:
    """Put LoRA on a model, in place, for fine-tuning: every ``nn.Linear`` inside ``model``, at
    any depth (in ``nn.Sequential``, ``nn.ModuleList``, blocks...), is replaced by
    ``LinearWithLoRA(that_linear, rank, alpha)``, then every parameter but the LoRA ones
    (``A`` and ``B``) is frozen (``requires_grad = False``): weights, biases, embeddings, norms.

    The output head, ``model.out_head`` (the course's ``GPTModel``'s), is replaced only with
    ``include_head=True``; otherwise it is left as it is, frozen. (A new classification head
    that should learn in full is unfrozen by the caller afterwards.) A model without
    ``out_head`` has no head.

    Returns:
        The number of trainable parameters afterwards (elements, as ``p.numel()`` counts them):
        ``sum(rank * (in + out))`` over the replaced layers.

    Raises:
        ValueError: when ``rank`` is not an int of at least 1, naming it (before anything changes).
    """
    # BEGIN SOLUTION 33: check the rank; freeze everything; replace the linear layers (the head only when asked); count
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank is {rank!r}; expected an int of at least 1")
    for p in model.parameters():
        p.requires_grad_(False)
    head = getattr(model, "out_head", None)

    def replace(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                if child is not head or include_head:
                    setattr(module, name, LinearWithLoRA(child, rank, alpha))
            else:
                replace(child)

    replace(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
    # END SOLUTION


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold each ``LinearWithLoRA`` inside ``model`` into its linear layer and put that plain
    ``nn.Linear`` back in its place, in place: its weight becomes
    ``W + scaling * (A @ B).T`` (``W`` is ``out x in``, ``A @ B`` is ``in x out``); the bias is
    unchanged. The merged model computes what the LoRA model did (within float rounding) without
    the extra matrix products. Returns ``model``.

    The merged weight is a new ``nn.Parameter`` (with the old one's ``requires_grad``), never the
    old tensor changed in place: a head tied to the token embedding (GPT-2's ``out_head.weight is
    tok_emb.weight``) is untied by the merge, the head getting the merged weight and the embedding
    keeping the weight it had, as in the LoRA model; an update added in place would change the
    embedding too.
    """
    # BEGIN SOLUTION 33: at every depth, a new weight W + scaled transposed update (nothing shared changes); put the linear back
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, LinearWithLoRA):
                with torch.no_grad():
                    lora, weight = child.lora, child.linear.weight
                    merged = weight + lora.scaling * (lora.A @ lora.B).T.to(weight.dtype)  # (out_dim, in_dim), as W
                child.linear.weight = nn.Parameter(merged, requires_grad=weight.requires_grad)
                setattr(module, name, child.linear)
    return model
    # END SOLUTION
