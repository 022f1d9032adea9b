"""A Llama or Qwen3 checkpoint from the Hugging Face Hub, through this package's modern model,
loader and KV cache (given, not an exercise).

    python -m solutions.hf_complete Qwen/Qwen3-0.6B "The capital of France is"    # or: nox -s hf -- ...
    python -m solutions.hf_complete meta-llama/Llama-3.2-1B "Once upon a time" --max-new-tokens 60

``MODEL`` is a Hub repository (found in the Hugging Face cache, else downloaded once where the Hub
can be reached) or a local directory, holding ``config.json``, the weights (``model.safetensors``
or shards listed in ``model.safetensors.index.json``) and ``tokenizer.json``. The configuration
goes through ``config_from_hf`` (24), the weights through ``load_hf_weights`` (24) into a
``ModernModel`` (23), and greedy decoding through ``generate_modern`` and the cache of 25
(sampling, ``--temperature`` above 0, through ``generate`` of 10). Only the text's tokenizer is
Hugging Face's own (the ``tokenizers`` library): the model is yours.

Qwen3's checkpoints and Llama's (Llama 3.1 and 3.2 with their RoPE scaling, SmolLM2, TinyLlama)
run; other RoPE scalings, biases or activations are refused by ``config_from_hf`` with a message.
"""

import argparse
import json
import socket
import sys
import urllib.parse
from pathlib import Path

import torch

from .device import pick_device
from .generate import generate
from .hf_weights import config_from_hf, load_hf_weights
from .modern import ModernModel
from .modern_cache import generate_modern

FILES = ["config.json", "tokenizer.json", "*.safetensors", "model.safetensors.index.json"]


def locate(model: str) -> Path:
    """The directory of ``model``: a local directory as it is, else the Hub repository's snapshot
    in the cache, downloaded first when it is not there and the Hub can be reached."""
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise SystemExit("reading the Hub's cache needs huggingface_hub: `pip install huggingface_hub safetensors tokenizers` "
                         "(nox -s hf installs them)") from None
    try:
        return Path(snapshot_download(model, allow_patterns=FILES, local_files_only=True))
    except Exception:  # not in the cache (or only part of it)
        pass
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        if constants.HF_HUB_OFFLINE:
            raise OSError("HF_HUB_OFFLINE is set")
        socket.getaddrinfo(host, 443)
    except OSError as e:  # no network: say so now rather than after the client's retries
        raise SystemExit(f"{model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {host} cannot be reached "
                         f"({e}).\nDownload it once with a network connection (Qwen/Qwen3-0.6B is about 1.5 GB), or give a local "
                         "directory with config.json, tokenizer.json and the .safetensors weights.") from None
    try:
        return Path(snapshot_download(model, allow_patterns=FILES))
    except Exception as e:  # a proxy, a gated repository, a full disk: say so in one line
        raise SystemExit(f"could not download {model} from the Hugging Face Hub: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's ``.safetensors`` files (one file, or the shards of an index)."""
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in sorted(directory.glob("*.safetensors"))]
    if not files:
        raise SystemExit(f"{directory} holds no .safetensors weights")
    state = {}
    for name in files:
        state.update(load_file(directory / name))
    return state


def load_model(directory: Path, dtype: torch.dtype = torch.float32) -> ModernModel:
    """The ``ModernModel`` of a checkpoint directory, its weights loaded, in eval mode."""
    try:
        cfg = config_from_hf(json.loads((directory / "config.json").read_text()))
    except FileNotFoundError:
        raise SystemExit(f"{directory} has no config.json") from None
    except ValueError as e:
        raise SystemExit(f"{directory.name}: this checkpoint is not one the course's modern model can run: {e}") from None
    with torch.device("meta"):  # no random weights drawn for a model about to be overwritten
        model = ModernModel(cfg)
    model = model.to_empty(device="cpu").to(dtype)
    return load_hf_weights(model, read_weights(directory)).eval()


def eos_ids(directory: Path) -> list[int]:
    """The end-of-sequence ids of ``config.json`` (an id or a list)."""
    eos = json.loads((directory / "config.json").read_text()).get("eos_token_id")
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__package__ or 'solutions'}.hf_complete",
                                     description="Complete a prompt with a Llama or Qwen3 checkpoint, run by this package's modern model.")
    parser.add_argument("model", help="a Hub repository (Qwen/Qwen3-0.6B) or a local directory")
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy through the KV cache (the default)")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0 or args.temperature < 0:
        parser.error("--max-new-tokens and --temperature must not be negative")
    try:
        device = pick_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    directory = locate(args.model)
    if not (directory / "tokenizer.json").is_file():
        raise SystemExit(f"{directory} has no tokenizer.json")
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(str(directory / "tokenizer.json"))
    model = load_model(directory, getattr(torch, args.dtype)).to(device)
    ids = tok.encode(args.prompt, add_special_tokens=False).ids
    if not ids:
        parser.error("the prompt is empty: give some text to continue")
    idx = torch.tensor([ids], device=device)
    eos = eos_ids(directory)
    if args.temperature == 0:
        out = generate_modern(model, idx, args.max_new_tokens, eos_id=eos[0] if eos else None)
    else:
        generator = torch.Generator(device=device).manual_seed(args.seed)
        out = generate(model, idx, args.max_new_tokens, model.cfg.context_length, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, eos_id=eos[0] if eos else None, generator=generator)
    tokens = out[0].tolist()
    if eos and len(tokens) > len(ids) and tokens[-1] in eos:
        tokens = tokens[:-1]  # the end of the text, not part of it
    print(tok.decode(tokens))


if __name__ == "__main__":
    main(sys.argv[1:])
