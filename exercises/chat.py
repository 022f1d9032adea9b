"""Talk to the assistant that ``finetune.py`` made, in a terminal (glue, not an exercise: it runs
exercise 31's template and exercise 35's streaming over exercise 12's KV cache).

    nox -s chat                                   a conversation; /reset forgets it, /quit (or Ctrl-D) ends it
    nox -s chat -- "What does the pass statement do?"     one answer, then exit
    nox -s chat -- --temperature 0.7 --top-p 0.9 --checkpoint out/finetune/ckpt.pt
    nox -s chat -- --checkpoint out/reason/ckpt.pt "347+285"     the arithmetic model of ``reason.py``

Each turn is written in Alpaca's template (``format_input({"instruction": turn})`` and the
response header); the earlier turns of the conversation, each in the template with its answer,
come before it, as many of the latest as fit the model's context with room for the answer. The
answer streams as its tokens come, and stops at the end-of-text token, at the template's next
section ("###"), or after ``--max-new-tokens``. An answer the model ends before any text is
not left blank: chat says so (on stderr for one prompt, after ``bot>`` in a conversation).
Like ``train``, it first says on stderr how many threads it uses (``--threads N`` to choose).

A checkpoint of ``reason.py`` (its template is ``"reason"``) is asked one problem at a time, as it
was trained: each turn is ``Q: <problem>`` and a newline, with no earlier turns, and a turn with a
character the model does not know is refused with a message that says which.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from .device import pick_device
from .instruct import format_input
from .stream import stream_text, stream_tokens
from .threads import add_threads_option, use_threads
from .train import OneLineErrors, read_extra, run_script, tokenizer_from_state, trained_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "out" / "finetune" / "ckpt.pt"
EOS = "<|endoftext|>"
RESPONSE_HEADER = "\n\n### Response:\n"
STOP_STRINGS = ("\n\n###", "\n###", "###")  # the template's next section: an answer ends before it
HELP = "type a question; /reset forgets the conversation, /quit (or Ctrl-D) ends it"
# what chat says when the answer is empty: the model ended it (end-of-text, or the template's next section) at once
NO_ANSWER = ("(no answer: the model ended its reply before any text; ask in other words, or sample with "
             "--temperature 0.7)")


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
    add_threads_option(p)
    return p


def stream_answer(model, tok, prompt_ids: list[int], eos_id: int, max_new_tokens: int, device, temperature: float = 0.0,
                  top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None) -> Iterator[str]:
    """The model's answer to a prompt that ends with the response header, in pieces as they become
    final (exercise 35): up to end-of-text, the template's next section or ``max_new_tokens``,
    from its first visible character. What ``chat`` shows and ``finetune`` scores (greedy)."""
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    tokens = stream_tokens(model, idx, max_new_tokens, eos_id=eos_id, temperature=temperature, top_k=top_k, top_p=top_p,
                           generator=generator)
    started = False
    for piece in stream_text(tokens, tok.decode, STOP_STRINGS):
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        yield piece


class Chat:
    """A conversation: the turns so far, and the model that answers the next."""

    def __init__(self, model, tok, eos_id: int, args, device, template: str = "alpaca"):
        self.model, self.tok, self.eos_id, self.args, self.device = model, tok, eos_id, args, device
        self.template = template
        self.generator = torch.Generator(device=device).manual_seed(args.seed)
        self.turns: list[list[int]] = []  # each earlier turn's ids: its prompt in the template, its answer, a blank line

    def reset(self) -> None:
        self.turns = []

    def prompt_ids(self, user: str) -> list[int]:
        """This turn in the template, after as many of the latest earlier turns as fit (reason's
        template: the problem alone; ValueError when it has a character the model does not know)."""
        if self.template == "reason":
            from .reason import encode_prompt

            return encode_prompt(self.tok, user)
        room = self.model.cfg.context_length - self.args.max_new_tokens
        turn = format_input({"instruction": user}) + RESPONSE_HEADER
        ids = self.tok.encode(turn)
        for earlier in reversed(self.turns):
            more = earlier + ids
            if len(more) > room:
                break
            ids = more
        return ids[-room:]  # a turn longer than the room keeps its end: the response header

    def answer(self, user: str, write) -> str:
        """Stream the answer to ``user`` through ``write`` and remember the turn."""
        args, pieces = self.args, []
        for piece in stream_answer(self.model, self.tok, self.prompt_ids(user), self.eos_id, args.max_new_tokens, self.device,
                                   args.temperature, args.top_k, args.top_p, self.generator):
            pieces.append(piece)
            write(piece)
        reply = "".join(pieces).strip()
        if self.template != "reason":  # reason's model answers each problem on its own
            self.turns.append(self.tok.encode(format_input({"instruction": user}) + RESPONSE_HEADER + reply + "\n\n"))
        return reply


def load(args, parser):
    path = Path(args.checkpoint)
    if not path.is_file():
        made_by = {DEFAULT_CHECKPOINT.resolve(): "finetune", (ROOT / "out" / "reason" / "ckpt.pt").resolve(): "reason"}
        hint = f" (make one with `nox -s {made_by[path.resolve()]}`)" if path.resolve() in made_by else ""
        parser.error(f"no checkpoint at {path}{hint}, or pass --checkpoint PATH")
    try:
        extra = read_extra(path)
        tok = tokenizer_from_state(extra["tokenizer"], args.ranks)
        device = pick_device(args.device)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    assistant = extra.get("assistant") or {}
    eos_id = assistant.get("eos_id", tok.special_tokens.get(EOS))
    if "assistant" not in extra:
        print(f"note: {path} was not fine-tuned by finetune.py; it will continue the template, not answer it", file=sys.stderr)
    return trained_model(path, extra).to(device).eval(), tok, eos_id, device, assistant.get("template", "alpaca")


def main(argv: list[str] | None = None) -> None:
    run_script(build_parser(), run, argv)


def run(args, parser) -> None:
    if args.max_new_tokens < 1 or args.temperature < 0:
        parser.error("--max-new-tokens must be at least 1 and --temperature not negative")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error(f"--top-p {args.top_p}: expected a number in (0, 1]")
    model, tok, eos_id, device, template = load(args, parser)
    if model.cfg.context_length <= args.max_new_tokens:
        parser.error(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in a context of {model.cfg.context_length}")
    chat = Chat(model, tok, eos_id, args, device, template)
    if args.prompt is not None:
        if not args.prompt.strip():
            parser.error("the prompt is empty: ask something")
        try:
            chat.prompt_ids(args.prompt)
        except ValueError as e:
            parser.error(str(e))
    use_threads(args.threads)  # on stderr, once the options are known good: stdout is the answers alone

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.prompt is not None:
        if not chat.answer(args.prompt, write):
            print(NO_ANSWER, file=sys.stderr)  # stdout stays the answer alone: here, an empty line
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
        try:
            chat.prompt_ids(user)
        except ValueError as e:
            print(e)
            continue
        write("bot> ")
        if not chat.answer(user, write):
            write(NO_ANSWER)
        write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
