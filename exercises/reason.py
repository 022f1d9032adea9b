"""Teach a small GPT to add and subtract with its working shown: a base model, supervised
fine-tuning on a few worked examples, then GRPO on problems with their answers alone (glue, not an
exercise: it runs exercises 36-38 on exercise 09's model, with 12's KV cache and 14's schedule).

    nox -s reason                          the three stages, offline, about 9 minutes on 2 CPU cores
    nox -s reason -- --grpo-steps 100      a shorter GRPO stage
    nox -s chat -- --checkpoint out/reason/ckpt.pt "347+285"

(``python -m solutions.reason --help`` lists every option.) The task is made on the fly: sums and
differences of two 3-digit numbers. A worked example writes each column from the right, then the
answer in the format of exercise 36::

    Q: 632-285            the prompt
    12-5=7                units: 2 < 5, so a ten is borrowed
    13-8-1=4              tens: the borrowed 1 paid back
    6-2-1=3
    Answer: 347

(a difference below zero starts with the line ``-(285-632)``, the larger number first, and ends with
``Answer: -347``). The problems whose first number lies in ``HELD_OUT`` (500 to 549) are never
trained on: the held-out split is set by that range, not drawn by chance.

The stages, each timed:

1. **base**: a GPT trained from scratch by this command on problems written with their answer
   alone (``Q: 632-285\\nAnswer: 347``), the way arithmetic appears in web text.
2. **SFT**: fine-tuned on worked examples (``--sft-examples``, 20,000 drawn once) until it writes
   the columns. With a few hundred it learns them by heart and not the method: 300 examples gave
   0.8% held out where 20,000 gave 44% (measured with 600 steps).
3. **GRPO**: exercise 37 samples a group of completions of each training problem, exercise 36's
   rewards score them (correctness, plus a small weight on the format), and exercise 38's loss
   trains on them, against a frozen copy of the SFT model; these problems need an answer only.

Each stage's model answers the held-out problems greedily (exercise 37 with ``top_k=1``) and is
scored by exercise 36's ``correctness_reward``: the exact-match accuracy. It prints a progress bar
and writes, under ``--out`` (``out/reason``): ``ckpt.pt`` (the model after GRPO, which ``nox -s
chat`` loads), ``reward.png`` (the mean reward of the rollouts and the held-out accuracy against
GRPO's steps), ``metrics.json`` (each stage's accuracy, mean completion length and seconds, and
every held-out answer) and ``answers.md`` (the held-out problems and each stage's answer).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import GPTConfig
from .device import pick_device
from .grpo import LOSS_TYPES, group_advantages, grpo_loss
from .model import GPTModel
from .resume import save_checkpoint
from .rewards import correctness_reward, format_reward
from .rollouts import sample_group
from .schedule import clip_grad_norm, learning_rate
from .threads import add_threads_option, use_threads
from .tokenizer import Tokenizer
from .train import OneLineErrors, make_optimizer, run_script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "out" / "reason"
EOS = "<|endoftext|>"
TEMPLATE = "reason"  # what chat reads in the checkpoint's "assistant" entry: prompts are "Q: <problem>\n"
LOW, HIGH = 100, 999  # the operands: every 3-digit number
HELD_OUT = range(500, 550)  # a first operand here: a held-out problem, never trained on
CHARACTERS = "0123456789+-=()Q: \nAnswer"  # every character of a prompt or a worked example


# --- the task ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Problem:
    a: int
    op: str  # "+" or "-"
    b: int

    @property
    def text(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b


def prompt(problem: str) -> str:
    """What the model reads before it answers: ``Q: 347+285`` and a newline."""
    return f"Q: {problem}\n"


def worked(p: Problem) -> str:
    """The completion of a worked example: the columns from the right, then the Answer line."""
    lines, top, bottom, sign = [], p.a, p.b, ""
    if p.op == "-" and p.a < p.b:  # the larger number first, the sign in front
        top, bottom, sign = p.b, p.a, "-"
        lines.append(f"-({top}-{bottom})")
    carry = 0
    for column in range(len(str(max(top, bottom)))):
        t, u = top // 10 ** column % 10, bottom // 10 ** column % 10
        if p.op == "+":
            total = t + u + carry
            lines.append(f"{t}+{u}" + (f"+{carry}" if carry else "") + f"={total}")
            carry = total // 10
        else:
            borrow = 1 if t - u - carry < 0 else 0
            lines.append(f"{t + 10 * borrow}-{u}" + (f"-{carry}" if carry else "") + f"={t + 10 * borrow - u - carry}")
            carry = borrow
    return "\n".join(lines) + f"\nAnswer: {sign}{abs(p.answer)}"


def direct(p: Problem) -> str:
    """The completion of a base-model example: the Answer line alone."""
    return f"Answer: {p.answer}"


PROMPT_TOKENS = len(prompt(f"{HIGH}-{HIGH}"))  # every prompt's: "Q: ", two 3-digit numbers, the operator, a newline
# The longest worked example, 47 characters (every problem of the task enumerated once): a negative
# difference, its sign line, and its two lower columns borrowing (10-9=1, 10-9-1=0).
LONGEST_WORKED = len(worked(Problem(199, "-", 900)))


def is_held_out(p: Problem) -> bool:
    return p.a in HELD_OUT


def draw(rng: random.Random, held_out: bool) -> Problem:
    """A random problem of one split: its first operand in ``HELD_OUT`` or outside it."""
    while True:
        p = Problem(rng.randint(LOW, HIGH), rng.choice("+-"), rng.randint(LOW, HIGH))
        if is_held_out(p) == held_out:
            return p


def problems(n: int, seed: int, held_out: bool) -> list[Problem]:
    """``n`` distinct problems of one split, drawn with ``seed``."""
    rng, seen = random.Random(seed), {}
    while len(seen) < n:
        p = draw(rng, held_out)
        seen.setdefault(p.text, p)
    return list(seen.values())


def char_tokenizer() -> tuple[Tokenizer, dict]:
    """A tokenizer of one token per character of ``CHARACTERS`` and ``EOS``, and the state a
    checkpoint keeps of it (a BPE with no merges, as ``train.tokenizer_from_state`` reads)."""
    from .train import tokenizer_from_state

    state = {"kind": "bpe", "vocab": sorted(set(CHARACTERS)) + [EOS], "merges": [], "special_tokens": [EOS]}
    return tokenizer_from_state(state), state


def encode_prompt(tok: Tokenizer, problem: str) -> list[int]:
    """The prompt's ids for a problem such as ``347+285`` (spaces dropped); ValueError when it is
    not a sum or difference of two whole numbers, saying what is expected."""
    written, problem = problem, "".join(problem.split())
    if not re.fullmatch(r"[0-9]+[+-][0-9]+", problem):
        raise ValueError(f"{written!r} is not a problem this model reads: expected a sum or a difference of two whole "
                         f"numbers, such as 347+285 or 632-285 (it was trained on 3-digit numbers)")
    return tok.encode(prompt(problem))


# --- training on text --------------------------------------------------------------------------

def text_batch(tok: Tokenizer, pairs: list[tuple[str, str]], eos_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for (prompt, completion) pairs: the loss on the completion and its
    end-of-text only (-100 on the prompt and on the padding)."""
    rows = [(tok.encode(p), tok.encode(c) + [eos_id]) for p, c in pairs]
    width = max(len(p) + len(c) for p, c in rows) - 1
    x = torch.full((len(rows), width), eos_id, dtype=torch.long)
    y = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        seq = p + c
        x[i, :len(seq) - 1] = torch.tensor(seq[:-1])
        y[i, len(p) - 1:len(seq) - 1] = torch.tensor(c)
    return x.to(device), y.to(device)


def train_text(model, tok, make_pairs, steps: int, lr: float, batch_size: int, eos_id: int, device, desc: str, seed: int) -> list[float]:
    """Next-token training on the completions of ``make_pairs(rng, batch_size)``; the losses."""
    from tqdm import tqdm

    optimizer = make_optimizer(model, lr, 0.1, device)
    rng, losses = random.Random(seed), []
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, max_lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 20), total_steps=steps)
        x, y = text_batch(tok, make_pairs(rng, batch_size), eos_id, device)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


# --- answering and scoring ---------------------------------------------------------------------

def complete(model, tok, texts: list[str], eos_id: int, max_new_tokens: int, device, batch_size: int = 256) -> list[str]:
    """The model's greedy completions of the problems ``texts`` (exercise 37 with top_k=1), cut
    at the end-of-text token."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        ids = torch.tensor([encode_prompt(tok, t) for t in texts[i:i + batch_size]], device=device)
        roll = sample_group(model, ids, 1, max_new_tokens, eos_id, temperature=1.0, top_k=1)
        out += [decode_completion(tok, row, mask, eos_id) for row, mask in zip(roll.completion_ids.tolist(), roll.mask.tolist())]
    return out


def decode_completion(tok, ids: list[int], mask: list[bool], eos_id: int) -> str:
    """The text of one completion: its counted tokens, the end-of-text left out."""
    return tok.decode([t for t, keep in zip(ids, mask) if keep and t != eos_id])


def accuracy(completions: list[str], held: list[Problem]) -> float:
    """The exact-match accuracy: exercise 36's correctness reward, averaged."""
    return sum(correctness_reward(c, str(p.answer)) for c, p in zip(completions, held)) / max(len(held), 1)


def mean_length(tok, completions: list[str]) -> float:
    """The mean number of tokens of the completions (the end-of-text not counted)."""
    return sum(len(tok.encode(c)) for c in completions) / max(len(completions), 1)


# --- GRPO --------------------------------------------------------------------------------------

def token_logprobs(model, prompts: torch.Tensor, completions: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(N, T_new)``: each completion token's log-probability under ``model``, read as the
    rollout read it (``log_softmax(logits / temperature)``)."""
    seq = torch.cat([prompts, completions], dim=1)
    logits = model(seq[:, :-1])[:, prompts.size(1) - 1:]  # the positions that predict the completion
    return torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, completions[..., None])[..., 0]


def run_grpo(model, tok, eos_id: int, args, device, on_eval) -> dict:
    """GRPO on training problems; ``on_eval(step)`` scores the held-out split every ``--eval-every``."""
    from tqdm import tqdm

    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.grpo_lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = random.Random(args.seed + 2)
    generator = torch.Generator(device=device).manual_seed(args.seed + 3)
    log = {"step": [], "reward": [], "correct": [], "solved_groups": [], "mixed_groups": [], "kl": [], "length": []}
    model.eval()  # no dropout: the sampling policy and the trained one are the same function
    bar = tqdm(range(1, args.grpo_steps + 1), desc="GRPO", unit="step")
    for step in bar:
        batch = [draw(rng, held_out=False) for _ in range(args.prompts)]
        ids = torch.tensor([encode_prompt(tok, p.text) for p in batch], device=device)
        roll = sample_group(model, ids, args.group_size, args.max_new_tokens, eos_id, temperature=args.temperature,
                            generator=generator)
        texts = [decode_completion(tok, r, m, eos_id) for r, m in zip(roll.completion_ids.tolist(), roll.mask.tolist())]
        answers = [str(p.answer) for p in batch for _ in range(args.group_size)]
        correct = torch.tensor([correctness_reward(t, a) for t, a in zip(texts, answers)])
        formatted = torch.tensor([format_reward(t) for t in texts])
        reward = (correct + args.format_weight * formatted).to(device)
        advantages = group_advantages(reward, args.group_size)
        with torch.no_grad():
            ref = token_logprobs(reference, roll.prompt_ids, roll.completion_ids, args.temperature)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, max_lr=args.grpo_lr, min_lr=args.grpo_lr / 10, warmup_steps=max(1, args.grpo_steps // 20),
                                        total_steps=args.grpo_steps)
        for _ in range(args.grpo_iterations):  # the first pass: the ratio is 1, old = the sampler's
            logp = token_logprobs(model, roll.prompt_ids, roll.completion_ids, args.temperature)
            loss, stats = grpo_loss(logp, roll.logprobs, ref, advantages, roll.mask, clip_eps=0.2, beta=args.beta,
                                    loss_type=args.loss_type, max_completion_length=args.max_new_tokens)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(params, 1.0)
            optimizer.step()
        log["step"].append(step)
        log["reward"].append(reward.mean().item())
        log["correct"].append(correct.mean().item())
        solved = correct.view(-1, args.group_size).sum(dim=1)  # (prompts,): right answers in each group
        log["solved_groups"].append((solved > 0).float().mean().item())  # pass@G on these problems
        log["mixed_groups"].append(((solved > 0) & (solved < args.group_size)).float().mean().item())  # the groups with a signal
        log["kl"].append(0.0 if stats["kl"] is None else stats["kl"].item())
        log["length"].append(roll.mask.sum(dim=1).float().mean().item())
        bar.set_postfix(reward=f"{log['reward'][-1]:.2f}", kl=f"{log['kl'][-1]:.3f}")
        if step % args.eval_every == 0 or step == args.grpo_steps:
            on_eval(step)
    return log


# --- the run -----------------------------------------------------------------------------------

def build_parser() -> OneLineErrors:
    p = OneLineErrors(prog=f"python -m {__package__ or 'solutions'}.reason",
                      description="Train a small GPT to add and subtract 3-digit numbers with its working shown: a base model, "
                                  "supervised fine-tuning on worked examples, then GRPO with verifiable rewards; offline.")
    p.add_argument("--base-steps", type=int, default=300, help="steps of the base model's training (answers alone)")
    p.add_argument("--sft-steps", type=int, default=600, help="steps of supervised fine-tuning on worked examples")
    p.add_argument("--sft-examples", type=int, default=20000, help="how many worked examples SFT sees (drawn once)")
    p.add_argument("--grpo-steps", type=int, default=300, help="GRPO steps")
    p.add_argument("--prompts", type=int, default=16, help="GRPO: problems per step")
    p.add_argument("--group-size", type=int, default=8, help="GRPO: completions sampled per problem (G)")
    p.add_argument("--temperature", type=float, default=1.0, help="GRPO: the rollouts' temperature")
    p.add_argument("--beta", type=float, default=0.04, help="GRPO: the KL penalty's weight")
    p.add_argument("--loss-type", choices=LOSS_TYPES, default="grpo", help="GRPO: how the tokens' losses are averaged (exercise 38)")
    p.add_argument("--grpo-iterations", type=int, default=1, help="GRPO: gradient steps on each batch of rollouts")
    p.add_argument("--format-weight", type=float, default=0.1, help="GRPO: the format reward's weight beside correctness (1)")
    p.add_argument("--lr", type=float, default=3e-3, help="the base model's peak learning rate")
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--grpo-lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=64, help="the base model's and SFT's examples per step")
    p.add_argument("--emb-dim", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--held-out", type=int, default=256, help="held-out problems scored after each stage")
    p.add_argument("--max-new-tokens", type=int, default=64, help="the most tokens of a completion")
    p.add_argument("--eval-every", type=int, default=25, help="GRPO steps between held-out scores")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the checkpoint, plot and tables go")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    add_threads_option(p)
    return p


def main(argv: list[str] | None = None) -> None:
    run_script(build_parser(), run, argv)


def check_args(args, parser) -> None:
    for name in ("sft_examples", "prompts", "group_size", "held_out", "max_new_tokens", "eval_every", "batch_size", "grpo_iterations",
                 "emb_dim", "n_layers", "n_heads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; expected at least 1")
    for name in ("base_steps", "sft_steps", "grpo_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; expected 0 or more")
    if args.group_size < 2:
        parser.error(f"--group-size is {args.group_size}; GRPO compares a completion with the others of its group: expected at least 2")
    if not args.temperature > 0 or args.beta < 0 or args.format_weight < 0:
        parser.error("--temperature must be above 0, --beta and --format-weight 0 or more")
    if args.emb_dim % args.n_heads:
        parser.error(f"--emb-dim {args.emb_dim} is not divisible by --n-heads {args.n_heads}")
    if args.max_new_tokens < LONGEST_WORKED + 1:
        parser.error(f"--max-new-tokens {args.max_new_tokens} is shorter than the longest worked example "
                     f"({LONGEST_WORKED + 1} tokens with its end-of-text)")


def run(args, parser) -> None:
    check_args(args, parser)
    wall = time.perf_counter()
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    use_threads(args.threads)
    tok, tok_state = char_tokenizer()
    eos_id = tok.special_tokens[EOS]
    cfg = GPTConfig(vocab_size=len(tok_state["vocab"]), context_length=PROMPT_TOKENS + args.max_new_tokens, emb_dim=args.emb_dim,
                    n_heads=args.n_heads, n_layers=args.n_layers, drop_rate=0.0, qkv_bias=False)
    model = GPTModel(cfg).to(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held = problems(args.held_out, args.seed + 100, held_out=True)
    sft_set = problems(args.sft_examples, args.seed + 200, held_out=False)
    print(f"task: 3-digit sums and differences; held out: first number {HELD_OUT.start} to {HELD_OUT.stop - 1} "
          f"({len(held)} problems scored); {len(sft_set)} worked examples for SFT")
    print(f"model: {model.num_parameters():,} parameters, {cfg.n_layers} layers of {cfg.emb_dim}, vocabulary {cfg.vocab_size}, "
          f"context {cfg.context_length}; on {device}")

    metrics = {"task": {"operands": [LOW, HIGH], "held_out_first_operand": [HELD_OUT.start, HELD_OUT.stop - 1],
                        "held_out_problems": len(held), "sft_examples": len(sft_set)},
               "args": {k: v for k, v in vars(args).items() if k not in ("out",)}, "stages": {}}
    columns: dict[str, list[str]] = {}
    texts = [p.text for p in held]

    def held_answers() -> list[str]:
        return complete(model, tok, texts, eos_id, args.max_new_tokens, device)

    def score(stage: str, seconds: float, answers: list[str] | None = None) -> None:
        """The stage's held-out scores (``answers``: the model's, when they were just made)."""
        answers = held_answers() if answers is None else answers
        columns[stage] = answers
        metrics["stages"][stage] = {"accuracy": accuracy(answers, held), "mean_completion_tokens": mean_length(tok, answers),
                                    "format": sum(format_reward(a) for a in answers) / len(answers), "seconds": seconds}
        s = metrics["stages"][stage]
        print(f"{stage}: held-out accuracy {100 * s['accuracy']:.1f}%, format {100 * s['format']:.0f}%, "
              f"{s['mean_completion_tokens']:.1f} tokens per completion; {seconds:.0f} s")

    start = time.perf_counter()
    train_text(model, tok, lambda rng, n: [(prompt(p.text), direct(p)) for p in (draw(rng, False) for _ in range(n))],
               args.base_steps, args.lr, args.batch_size, eos_id, device, "base", args.seed)
    score("base", time.perf_counter() - start)

    start = time.perf_counter()
    train_text(model, tok, lambda rng, n: [(prompt(p.text), worked(p)) for p in rng.sample(sft_set, min(n, len(sft_set)))],
               args.sft_steps, args.sft_lr, args.batch_size, eos_id, device, "SFT", args.seed + 1)
    score("sft", time.perf_counter() - start)

    curve = {"step": [0], "accuracy": [metrics["stages"]["sft"]["accuracy"]]}

    latest: list[str] | None = None  # the held-out answers of the last evaluation: GRPO's last step ends with one

    def on_eval(step: int) -> None:
        nonlocal latest
        latest = held_answers()
        curve["step"].append(step)
        curve["accuracy"].append(accuracy(latest, held))

    start = time.perf_counter()
    log = run_grpo(model, tok, eos_id, args, device, on_eval) if args.grpo_steps else None
    score("grpo", time.perf_counter() - start, latest)
    if log:
        def mean(key: str, part: slice) -> float:
            values = log[key][part]
            return sum(values) / len(values)

        first, last = slice(0, 20), slice(-20, None)
        metrics["rollouts"] = {f"{k}_{name}": mean(k, part) for k in ("correct", "solved_groups", "mixed_groups")
                               for name, part in (("first_20_steps", first), ("last_20_steps", last))}
        r = metrics["rollouts"]
        print(f"GRPO's rollouts (first 20 steps, last 20): right {100 * r['correct_first_20_steps']:.0f}% -> "
              f"{100 * r['correct_last_20_steps']:.0f}%; groups with a right answer (pass@{args.group_size}) "
              f"{100 * r['solved_groups_first_20_steps']:.0f}% -> {100 * r['solved_groups_last_20_steps']:.0f}%; groups with "
              f"right and wrong answers (the only ones with a signal) {100 * r['mixed_groups_first_20_steps']:.0f}% -> "
              f"{100 * r['mixed_groups_last_20_steps']:.0f}%")
    metrics["grpo_log"] = log
    metrics["held_out_curve"] = curve
    metrics["answers"] = [{"problem": p.text, "reference": str(p.answer), **{k: v[i] for k, v in columns.items()}}
                          for i, p in enumerate(held)]
    model.eval()
    extra = {"config": dataclasses.asdict(cfg), "arch": "gpt2", "tokenizer": tok_state,
             "assistant": {"eos_id": eos_id, "template": TEMPLATE, "base": "from scratch (reason.py)"},
             "metrics": {k: v for k, v in metrics.items() if k not in ("answers", "grpo_log")}}
    save_checkpoint(out / "ckpt.pt", model=model, optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.0), step=args.grpo_steps, extra=extra)
    plot_rewards(out / "reward.png", log, curve, metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_answers(out / "answers.md", held, columns)
    st = metrics["stages"]
    print(f"held-out accuracy: base {100 * st['base']['accuracy']:.1f}%, SFT {100 * st['sft']['accuracy']:.1f}%, "
          f"GRPO {100 * st['grpo']['accuracy']:.1f}%")
    print(f"wrote {out / 'ckpt.pt'}, {out / 'reward.png'}, {out / 'metrics.json'} and {out / 'answers.md'} in "
          f"{time.perf_counter() - wall:.0f} s; ask it with `nox -s chat -- --checkpoint {out / 'ckpt.pt'} 347+285`")


def plot_rewards(path: Path, log: dict | None, curve: dict, metrics: dict) -> None:
    """The rollouts' mean reward (each step, and a running mean) and the held-out accuracy
    against GRPO's steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if log and log["step"]:
        ax.plot(log["step"], log["correct"], color="tab:blue", alpha=0.25, lw=0.8, label="rollouts: correct (each step)")
        window = 10
        smooth = [sum(log["correct"][max(0, i - window + 1):i + 1]) / len(log["correct"][max(0, i - window + 1):i + 1])
                  for i in range(len(log["correct"]))]
        ax.plot(log["step"], smooth, color="tab:blue", lw=1.5, label=f"rollouts: correct (mean of {window} steps)")
    ax.plot(curve["step"], curve["accuracy"], "o-", color="tab:orange", ms=3, label="held-out accuracy (greedy)")
    ax.axhline(metrics["stages"]["base"]["accuracy"], color="gray", ls=":", lw=1, label="base model, held out")
    ax.set_xlabel("GRPO steps (step 0: after SFT)")
    ax.set_ylabel("fraction correct")
    ax.set_ylim(0, 1)
    ax.set_title("GRPO on 3-digit sums and differences: " + ", ".join(
        f"{k} {100 * v['accuracy']:.0f}%" for k, v in metrics["stages"].items()) + " held out", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_answers(path: Path, held: list[Problem], columns: dict[str, list[str]]) -> None:
    """The held-out problems, their answers and each stage's completion, as a Markdown table."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " / ")

    lines = ["| problem | answer | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for i, p in enumerate(held):
        lines.append(f"| {p.text} | {p.answer} | " + " | ".join(cell(v[i]) for v in columns.values()) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
