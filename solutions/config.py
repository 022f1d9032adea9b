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
        fused: the fast path (exercise 30): where a model is made from a config (``train.make_model``,
            so ``nox -s train -- --fused`` and ``sample.py`` on its checkpoints), a ``FastGPT`` on
            PyTorch's fused kernels with the vocabulary padded to a multiple of 64, instead of a
            ``GPTModel``; the other modules ignore it.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = True
    tie_weights: bool = True
    fused: bool = False

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
    return _as(GPTConfig, cfg)


def _as(cls, cfg):
    """``cfg`` as a ``cls`` (a config dataclass): itself, or built from a dict of its fields."""
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, dict):
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        return cls(**cfg)
    raise TypeError(f"expected a {cls.__name__} or a dict of its fields, got {type(cfg).__name__}")


# The modern decoders of the modern-architecture track (19-24), from each model's published
# config.json (the Hugging Face hub): the names count parameters with the head tied.
MODERN_PRESETS = {
    # meta-llama/Llama-3.2-1B, whose RoPE slows its low frequencies ("rope_scaling": llama3) to
    # reach 131,072 tokens from a training context of 8,192.
    "llama3.2-1b": {"vocab_size": 128_256, "context_length": 131_072, "emb_dim": 2048, "n_heads": 32, "n_kv_heads": 8,
                    "n_layers": 16, "hidden_dim": 8192, "head_dim": 64, "qk_norm": False, "theta": 500_000.0, "eps": 1e-5,
                    "tie_weights": True, "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 8192}},
    # Qwen/Qwen3-0.6B: QK-norm, and heads of 128 features although 16 x 128 != 1024.
    "qwen3-0.6b": {"vocab_size": 151_936, "context_length": 40_960, "emb_dim": 1024, "n_heads": 16, "n_kv_heads": 8,
                   "n_layers": 28, "hidden_dim": 3072, "head_dim": 128, "qk_norm": True, "theta": 1_000_000.0, "eps": 1e-6,
                   "tie_weights": True},
}


@dataclass(frozen=True)
class ModernConfig:
    """A Llama/Qwen3-style decoder's hyperparameters (exercises 23 and 24); the defaults are a
    small model that trains on a CPU.

    Attributes:
        vocab_size: number of token ids.
        context_length: the most tokens the model reads at once (RoPE has no table to outgrow;
            the limit is what the model was trained on).
        emb_dim: width of the residual stream.
        n_heads: query heads per block.
        n_kv_heads: key/value heads per block; ``n_heads`` is a multiple of it (grouped-query
            attention; ``n_kv_heads == n_heads`` is plain multi-head attention).
        n_layers: number of blocks.
        hidden_dim: width of SwiGLU's gated hidden layer.
        head_dim: features per head, or None for ``emb_dim // n_heads`` (Qwen3 sets it apart).
        qk_norm: RMSNorm of each head's queries and keys before RoPE (Qwen3).
        window: a sliding attention window (Mistral), or None for full causal attention.
        theta: RoPE's base.
        eps: every RMSNorm's eps.
        tie_weights: whether the output head shares its weight with the token embedding.
        rope_scaling: Llama 3.1's RoPE frequency scaling (``rope.llama3_frequencies``' keyword
            arguments), or None.
    """

    vocab_size: int = 50257
    context_length: int = 256
    emb_dim: int = 256
    n_heads: int = 8
    n_kv_heads: int = 2
    n_layers: int = 4
    hidden_dim: int = 688
    head_dim: int | None = None
    qk_norm: bool = False
    window: int | None = None
    theta: float = 10_000.0
    eps: float = 1e-5
    tie_weights: bool = True
    rope_scaling: dict | None = None

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModernConfig":
        """A published model's sizes, ``"llama3.2-1b"`` or ``"qwen3-0.6b"``, with any field
        overridden: ``ModernConfig.preset("qwen3-0.6b", n_layers=2)``."""
        if name not in MODERN_PRESETS:
            raise ValueError(f"no preset {name!r}; the presets are {', '.join(MODERN_PRESETS)}")
        return replace(cls(**MODERN_PRESETS[name]), **overrides)


def as_modern_config(cfg) -> ModernConfig:
    """``cfg`` as a ``ModernConfig``: one is returned as it is, a dict of its fields is converted
    (missing fields take their defaults; an unknown field is a ``TypeError``)."""
    return _as(ModernConfig, cfg)
