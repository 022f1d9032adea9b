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
        # BEGIN SOLUTION 26: check top_k, the router and the experts
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be between 1 and num_experts ({num_experts}), got {top_k}")
        self.num_experts, self.top_k, self.norm_topk_prob = num_experts, top_k, norm_topk_prob
        self.router = nn.Linear(emb_dim, num_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(emb_dim, hidden_dim) for _ in range(num_experts))
        self.router_logits = None
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION 26: route (softmax, top-k, renormalise), then run each chosen expert on its own tokens
        tokens = x.reshape(-1, x.size(-1))  # (tokens, emb_dim)
        logits = self.router(tokens)  # (tokens, num_experts)
        self.router_logits = logits
        probs = torch.softmax(logits.float(), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (tokens, top_k) each
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(tokens)
        for e in chosen.unique().tolist():  # only the experts some token chose
            token_idx, slot = torch.where(chosen == e)  # which tokens, and in which of their top_k slots
            y = self.experts[e](tokens[token_idx]) * weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y)
        return out.reshape(x.shape)
        # END SOLUTION


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
    # BEGIN SOLUTION 26: the probabilities, the top-k choices counted per expert, and the product of their means
    probs = torch.softmax(router_logits.float(), dim=-1)  # (tokens, num_experts)
    chosen = probs.topk(top_k, dim=-1).indices  # (tokens, top_k)
    f = F.one_hot(chosen, num_experts).float().sum(dim=1).mean(dim=0)  # (num_experts,): choices per token
    p = probs.mean(dim=0)  # (num_experts,): mean probability
    return num_experts * (f * p).sum()
    # END SOLUTION
