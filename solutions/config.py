"""The model's hyperparameters: ``GPTConfig`` and the four GPT-2 sizes (given, not an exercise).

The field names are those of the LLMs-from-scratch book's ``GPT_CONFIG_124M`` dictionary.
Every module that takes a ``cfg`` (``FeedForward``, ``TransformerBlock``, ``GPTModel``) accepts
a ``GPTConfig`` or a plain dict of its fields, through ``as_config``.
"""

from dataclasses import dataclass, fields, replace

# The GPT-2 sizes (Radford et al., 2019). All four share the vocabulary, the context length and
# a head size of 64; the names count parameters with the output head tied to the embedding.
PRESETS = {
    "124M": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "355M": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "774M": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "1558M": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}


@dataclass(frozen=True)
class GPTConfig:
    """A GPT's hyperparameters; the defaults are GPT-2 small (124M).

    Attributes:
        vocab_size: number of token ids (50257 for GPT-2's BPE).
        context_length: the most tokens the model reads at once (positions 0..context_length-1).
        emb_dim: width of the residual stream.
        n_heads: attention heads per block; ``emb_dim`` must be divisible by it.
        n_layers: number of transformer blocks.
        drop_rate: dropout probability (embeddings, attention weights, residual branches).
        qkv_bias: whether the query, key and value projections have a bias (GPT-2's do).
        tie_weights: whether the output head shares its weight with the token embedding (GPT-2's does).
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = True
    tie_weights: bool = True

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """One of the GPT-2 sizes, ``"124M"``, ``"355M"``, ``"774M"`` or ``"1558M"``, with
        any field overridden: ``GPTConfig.preset("124M", context_length=256, drop_rate=0.0)``."""
        if name not in PRESETS:
            raise ValueError(f"no preset {name!r}; the presets are {', '.join(PRESETS)}")
        return replace(cls(**PRESETS[name]), **overrides)


def as_config(cfg) -> GPTConfig:
    """``cfg`` as a ``GPTConfig``: a ``GPTConfig`` is returned as it is, a dict of its fields is
    converted (missing fields take their defaults; an unknown field is a ``TypeError``)."""
    if isinstance(cfg, GPTConfig):
        return cfg
    if isinstance(cfg, dict):
        unknown = set(cfg) - {f.name for f in fields(GPTConfig)}
        if unknown:
            raise TypeError(f"GPTConfig has no field(s) {', '.join(sorted(unknown))}")
        return GPTConfig(**cfg)
    raise TypeError(f"expected a GPTConfig or a dict of its fields, got {type(cfg).__name__}")
