"""OpenAI's GPT-2, through this package's model, loader and generate (given, not an exercise).

    python -m solutions.pretrained "Every effort moves you"         # or: nox -s gpt2 -- "..."
    python -m solutions.pretrained "Hello" --model 355M --temperature 0.8 --top-k 40 --seed 1

The weights come from the Hugging Face Hub (``huggingface_hub``, cached after the first
download) and are read with ``safetensors``; the text is encoded with this package's own
``Tokenizer`` (exercise 05) from GPT-2's ranks, a ``gpt2.tiktoken`` file given with ``--ranks``
(``nox -s gpt2`` finds it offline with ``reference/gpt2_encoding.py``).
"""

import argparse
import re
import socket
import sys
import urllib.parse

import torch

from .config import PRESETS, GPTConfig
from .device import pick_device
from .generate import generate
from .model import GPTModel
from .tokenizer import Tokenizer
from .weights import load_gpt2_weights

ENDOFTEXT_ID = 50256  # <|endoftext|>
REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}


def gpt2_config(state_dict: dict[str, torch.Tensor], n_heads: int | None = None) -> GPTConfig:
    """The ``GPTConfig`` of a checkpoint in Hugging Face's GPT-2 layout, read from its shapes.

    Shapes do not tell the number of heads: it defaults to ``emb_dim // 64`` (every GPT-2 size
    has heads of 64 features). Dropout is 0: the checkpoint is for inference.
    """
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    vocab_size, emb_dim = sd["wte.weight"].shape
    blocks = {int(m[1]) for k in sd if (m := re.match(r"h\.(\d+)\.", k))}
    return GPTConfig(
        vocab_size=vocab_size,
        context_length=sd["wpe.weight"].shape[0],
        emb_dim=emb_dim,
        n_heads=n_heads or max(emb_dim // 64, 1),
        n_layers=len(blocks),
        drop_rate=0.0,
        qkv_bias="h.0.attn.c_attn.bias" in sd,
        tie_weights=True,
    )


def from_state_dict(state_dict: dict[str, torch.Tensor], n_heads: int | None = None) -> GPTModel:
    """A ``GPTModel`` shaped like the checkpoint, its weights loaded, in eval mode."""
    model = GPTModel(gpt2_config(state_dict, n_heads))
    return load_gpt2_weights(model, state_dict).eval()


def load(path: str, n_heads: int | None = None) -> GPTModel:
    """``from_state_dict`` of a ``.safetensors`` file."""
    return from_state_dict(read_safetensors(path), n_heads)


def complete(state_dict: dict[str, torch.Tensor], idx: torch.Tensor, max_new_tokens: int, n_heads: int | None = None, **sampling) -> torch.Tensor:
    """``generate`` with the model of a checkpoint: ``idx`` followed by up to ``max_new_tokens`` tokens."""
    model = from_state_dict(state_dict, n_heads)
    return generate(model, idx, max_new_tokens, model.cfg.context_length, **sampling)


def download(size: str = "124M") -> str:
    """The path of ``model.safetensors`` for a GPT-2 size, downloaded once into the Hub's cache."""
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise SystemExit("downloading GPT-2 needs huggingface_hub: `pip install huggingface_hub safetensors` (nox -s gpt2 installs them)") from None
    repo = REPOS[size]
    cached = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(cached, str):
        return cached
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as e:  # no network: say so now rather than after the client's retries
        raise SystemExit(f"{repo}/model.safetensors is not in the Hugging Face cache and {host} cannot be reached ({e}).\n"
                         f"Run this once with a network connection (about 550 MB for 124M); later runs use the cache, offline too.") from None
    try:
        return hf_hub_download(repo, "model.safetensors")
    except Exception as e:  # a proxy, the Hub down, a full disk: say so in one line
        raise SystemExit(f"could not download {repo}/model.safetensors from the Hugging Face Hub: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise SystemExit("reading the weights needs safetensors: `pip install safetensors` (nox -s gpt2 installs it)") from None
    return load_file(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Complete a prompt with OpenAI's GPT-2, run by this package's model.")
    parser.add_argument("prompt", nargs="?", default="Every effort moves you")
    parser.add_argument("--model", choices=list(PRESETS), default="124M")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--ranks", required=True, help="GPT-2's ranks in tiktoken's format (gpt2.tiktoken)")
    args = parser.parse_args(argv)

    try:
        device = pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    enc = Tokenizer.from_gpt2(args.ranks)
    path = download(args.model)
    model = from_state_dict(read_safetensors(path), n_heads=PRESETS[args.model]["n_heads"]).to(device)
    idx = torch.tensor([enc.encode(args.prompt)], device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    out = generate(model, idx, args.max_new_tokens, model.cfg.context_length, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, eos_id=ENDOFTEXT_ID, generator=generator)
    print(enc.decode(out[0].tolist()))


if __name__ == "__main__":
    main(sys.argv[1:])
