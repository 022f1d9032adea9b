"""Exercise 26: a sparse mixture-of-experts feed-forward layer, as Qwen3-MoE and Mixtral route
tokens (the modern-architecture track)."""

import torch
import torch.nn.functional as F
from torch import nn

from .swiglu import SwiGLU


class MoEFeedForward(nn.Module):
    """``num_experts`` SwiGLU feed-forward networks, of which each token uses ``top_k``.

    ``forward(x)``: ``x`` is ``(..., emb_dim)``; returns the same shape. For each token:

    1. the router scores every expert: ``logits = router(x)``, ``(tokens, num_experts)``, and
       ``probs = softmax(logits)`` over the experts, in float32;
    2. the ``top_k`` experts of highest probability are chosen; with ``norm_topk_prob`` (Qwen3-MoE,
       Mixtral) their probabilities are renormalised to sum to 1 over the chosen ``top_k``,
       else they are used as they are (they sum to less than 1);
    3. the output is the sum over the chosen experts of ``weight * expert(x)``.

    Tokens are dispatched: each expert runs once, on the tokens that chose it (gathered by
    index, the results added back with ``index_add_``), and an expert no token chose does not run.
    Running every expert on every token and zeroing the unchosen ones gives the same numbers at
    ``num_experts / top_k`` times the work (64x for Qwen3-30B-A3B's 128 experts, 8 per token).

    ``forward`` also keeps ``router_logits``, the last call's ``(tokens, num_experts)`` logits
    (``x``'s leading dimensions flattened), for ``load_balancing_loss``.

    Args:
        emb_dim: features in and out.
        hidden_dim: each expert's SwiGLU width.
        num_experts, top_k: experts in all, experts per token (``1 <= top_k <= num_experts``).
        norm_topk_prob: renormalise the chosen probabilities (default True).

    Raises:
        ValueError: when ``top_k`` is not between 1 and ``num_experts``.

    Attributes (graded by name):
        router: ``nn.Linear(emb_dim, num_experts, bias=False)``.
        experts: ``nn.ModuleList`` of ``num_experts`` ``SwiGLU(emb_dim, hidden_dim)``.
        num_experts, top_k, norm_topk_prob: as given.
        router_logits: None until the first forward.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, num_experts: int, top_k: int, norm_topk_prob: bool = True):
        super().__init__()
        raise NotImplementedError("exercise 26 (moe), MoEFeedForward.__init__: check top_k, the router and the experts")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("exercise 26 (moe), MoEFeedForward.forward: route (softmax, top-k, renormalise), then run each chosen expert on its own tokens")


def load_balancing_loss(router_logits: torch.Tensor, num_experts: int, top_k: int) -> torch.Tensor:
    """The auxiliary loss that pushes a router to spread tokens over the experts (Switch
    Transformer's, as transformers computes it for Qwen3-MoE and Mixtral)::

        loss = num_experts * sum_e f_e * P_e

    where ``f_e`` is how many times expert ``e`` is among the ``top_k`` chosen, per token
    (the ``f_e`` sum to ``top_k``), and ``P_e`` is the mean over the tokens of the router's
    softmax probability of ``e``. A router that sends every token everywhere evenly scores
    ``top_k``; one that favours a few experts scores more. ``f_e`` counts choices, which carry no
    gradient: the gradient flows through ``P_e``.

    Args:
        router_logits: ``(tokens, num_experts)``, e.g. a layer's ``router_logits``.
        num_experts, top_k: as the layer's.

    Returns:
        A float32 scalar.
    """
    raise NotImplementedError("exercise 26 (moe), load_balancing_loss: the probabilities, the top-k choices counted per expert, and the product of their means")
