"""Talk to the assistant that ``finetune.py`` made, in a terminal (glue, not an exercise: it runs
exercise 31's template and exercise 35's streaming over exercise 12's KV cache).

    nox -s chat                                   a conversation; /reset forgets it, /quit (or Ctrl-D) ends it
    nox -s chat -- "What does the pass statement do?"     one answer, then exit
    nox -s chat -- --temperature 0.7 --top-p 0.9 --checkpoint out/finetune/ckpt.pt

Each turn is written in Alpaca's template (``format_input({"instruction": turn})`` and the
response header); the earlier turns of the conversation, each in the template with its answer,
come before it, as many of the latest as fit the model's context with room for the answer. The
answer streams as its tokens come, and stops at the end-of-text token, at the template's next
section ("###"), or after ``--max-new-tokens``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .device import pick_device
from .instruct import format_input
from .stream import stream_text, stream_tokens
from .train import OneLineErrors, read_extra, stopped_at_stub, tokenizer_from_state, trained_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "out" / "finetune" / "ckpt.pt"
RESPONSE_HEADER = "\n\n### Response:\n"
STOP_STRINGS = ("\n\n###", "\n###", "###")
HELP = "type a question; /reset forgets the conversation, /quit (or Ctrl-D) ends it"


def build_parser() -> OneLineErrors:
    p = OneLineErrors(prog=f"python -m {__package__ or 'solutions'}.chat",
                      description="Chat with a GPT fine-tuned by finetune.py; answers stream as they are generated.")
    p.add_argument("prompt", nargs="?", help="answer this one prompt and exit (default: a conversation)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="a checkpoint of finetune.py (default: out/finetune/ckpt.pt)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranks", help="GPT-2's ranks (gpt2.tiktoken), for a model with GPT-2's tokenizer")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    return p


class Chat:
    """A conversation: the turns so far, and the model that answers the next."""

    def __init__(self, model, tok, eos_id: int, args, device):
        self.model, self.tok, self.eos_id, self.args, self.device = model, tok, eos_id, args, device
        self.generator = torch.Generator(device=device).manual_seed(args.seed)
        self.turns: list[str] = []  # each earlier turn: its prompt in the template and its answer

    def reset(self) -> None:
        self.turns = []

    def prompt_ids(self, user: str) -> list[int]:
        """This turn in the template, after as many of the latest earlier turns as fit."""
        room = self.model.cfg.context_length - self.args.max_new_tokens
        turn = format_input({"instruction": user}) + RESPONSE_HEADER
        ids = self.tok.encode(turn)
        for earlier in reversed(self.turns):
            more = self.tok.encode(earlier + "\n\n") + ids
            if len(more) > room:
                break
            ids = more
        return ids[-room:]  # a turn longer than the room keeps its end: the response header

    def answer(self, user: str, write) -> str:
        """Stream the answer to ``user`` through ``write`` and remember the turn."""
        ids = self.prompt_ids(user)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        tokens = stream_tokens(self.model, idx, self.args.max_new_tokens, eos_id=self.eos_id, temperature=self.args.temperature,
                               top_k=self.args.top_k, top_p=self.args.top_p, generator=self.generator)
        pieces = []
        for piece in stream_text(tokens, self.tok.decode, STOP_STRINGS):
            if not pieces:
                piece = piece.lstrip()  # the answer starts at its first visible character
                if not piece:
                    continue
            pieces.append(piece)
            write(piece)
        reply = "".join(pieces).strip()
        self.turns.append(format_input({"instruction": user}) + RESPONSE_HEADER + reply)
        return reply


def load(args, parser):
    path = Path(args.checkpoint)
    if not path.is_file():
        hint = " (make one with `nox -s finetune`)" if path.resolve() == DEFAULT_CHECKPOINT.resolve() else ""
        parser.error(f"no checkpoint at {path}{hint}, or pass --checkpoint PATH")
    try:
        extra = read_extra(path)
        tok = tokenizer_from_state(extra["tokenizer"], args.ranks)
        device = pick_device(args.device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    eos_id = (extra.get("assistant") or {}).get("eos_id", tok.special_tokens.get("<|endoftext|>"))
    if "assistant" not in extra:
        print(f"note: {path} was not fine-tuned by finetune.py; it will continue the template, not answer it", file=sys.stderr)
    return trained_model(path, extra).to(device).eval(), tok, eos_id, device


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args, parser)
    except NotImplementedError as e:  # the exercises/ tree, not finished yet: say which exercise, in one line
        raise stopped_at_stub(parser.prog, e) from None


def run(args, parser) -> None:
    if args.max_new_tokens < 1 or args.temperature < 0:
        parser.error("--max-new-tokens must be at least 1 and --temperature not negative")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error(f"--top-p {args.top_p}: expected a number in (0, 1]")
    model, tok, eos_id, device = load(args, parser)
    if model.cfg.context_length <= args.max_new_tokens:
        parser.error(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in a context of {model.cfg.context_length}")
    chat = Chat(model, tok, eos_id, args, device)

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.prompt is not None:
        if not args.prompt.strip():
            parser.error("the prompt is empty: ask something")
        chat.answer(args.prompt, write)
        write("\n")
        return
    print(HELP)
    while True:
        try:
            user = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not user:
            continue
        if user in ("/quit", "/exit"):
            return
        if user == "/reset":
            chat.reset()
            print("(the conversation is forgotten)")
            continue
        if user.startswith("/"):
            print(f"unknown command {user}: {HELP}")
            continue
        write("bot> ")
        chat.answer(user, write)
        write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
