"""Complete a prompt with a model that ``train.py`` trained (glue, not an exercise).

    nox -s sample -- 'The "if" statement'
    nox -s sample -- "x = " --temperature 0 --max-new-tokens 30 --checkpoint out/train/ckpt.pt

(in the kata's environment, ``python -m exercises.sample CHECKPOINT PROMPT`` runs it directly, or
``solutions.sample`` for the instructors' tree).

The checkpoint holds everything: its ``extra`` gives the model's configuration and the tokenizer
(read with ``torch.load(..., weights_only=True)``), and ``resume.load_checkpoint`` loads the
weights. A model trained with GPT-2's tokenizer needs GPT-2's ranks (``--ranks``, else the path
recorded at training time). Generation reads at most the model's context length of tokens at
once: longer prompts and continuations are cropped to their last ``context_length`` tokens, as
``generate`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .device import pick_device
from .generate import generate
from .threads import add_threads_option, use_threads
from .train import OneLineErrors, read_extra, tokenizer_from_state, trained_model


def main(argv: list[str] | None = None) -> None:
    parser = OneLineErrors(prog=f"python -m {__package__ or 'solutions'}.sample",
                                     description="Complete a prompt with a GPT trained by train.py.")
    parser.add_argument("checkpoint", help="a checkpoint written by train.py (e.g. out/train/ckpt.pt)")
    parser.add_argument("prompt", nargs="?", default="The ", help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    parser.add_argument("--ranks", help="GPT-2's ranks (gpt2.tiktoken), for a model trained with --tokenizer gpt2")
    add_threads_option(parser)
    args = parser.parse_args(argv)

    if not Path(args.checkpoint).is_file():
        parser.error(f"{args.checkpoint}: no such checkpoint (train one with `python -m {__package__}.train`)")
    if args.max_new_tokens < 0 or args.temperature < 0:
        parser.error("--max-new-tokens and --temperature must not be negative")
    try:
        extra = read_extra(args.checkpoint)
        tok = tokenizer_from_state(extra["tokenizer"], args.ranks)
        device = pick_device(args.device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    model = trained_model(args.checkpoint, extra).to(device).eval()
    cfg = model.cfg

    ids = tok.encode(args.prompt)
    if not ids:
        parser.error("the prompt is empty: give some text to continue")
    use_threads(args.threads)  # on stderr, once the options are known good: stdout is the completion alone
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    out = generate(model, idx, args.max_new_tokens, cfg.context_length, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, generator=generator)
    print(tok.decode(out[0].tolist()))


if __name__ == "__main__":
    main(sys.argv[1:])
