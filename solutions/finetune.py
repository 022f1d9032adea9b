"""Turn the GPT of ``nox -s train`` into a small assistant: instruction fine-tuning, LoRA, DPO
(glue, not an exercise: it runs exercises 31-35 with 09-14's model, loss and schedule).

    nox -s finetune                      all weights, on the checkpoint of `nox -s train`
    nox -s finetune -- --lora 4          LoRA of rank 4 instead (the base weights frozen)
    nox -s finetune -- --lora 4 --lora-layers attention    LoRA on the attention and the head only
    nox -s finetune -- --classify        the classification demo (exercise 32; with --lora, as the book's appendix E)
    nox -s finetune -- --dpo             then a DPO stage on preference pairs
    nox -s finetune -- --base gpt2       OpenAI's GPT-2 124M, where it is in the Hugging Face cache

(``python -m solutions.finetune --help`` lists every option). The data is ``assistant_data``'s:
questions about Python made from the text every CPython ships, split by source into train,
validation and test, so the test questions come from topics and modules the model was never
fine-tuned on. The model answers in Alpaca's template (exercise 31) and learns to stop with an
end-of-text token; a model trained with this course's BPE has none, so one is added to its
vocabulary (a new row of the tied embedding, the mean of the others, and ``"<|endoftext|>"``
among the tokenizer's special tokens).

It prints a progress bar and writes, under ``--out`` (``out/finetune``): ``ckpt.pt`` (a plain
``GPTModel`` checkpoint, LoRA merged, that ``nox -s chat`` and ``nox -s sample`` read),
``loss.png``, ``responses.md`` (the test questions with the reference answer, the base model's
and the fine-tuned model's) and ``metrics.json`` (the scores: token F1 on the test questions,
before and after; for DPO the reward margin and the win rate on held-out pairs; and every answer).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from .assistant_data import PAIR_KINDS, make_dataset, preference_pairs, summary, token_f1
from .chat import EOS, RESPONSE_HEADER, stream_answer
from .config import GPTConfig
from .device import pick_device
from .instruct import InstructionDataset, collate, format_input
from .loss import calc_loss_batch, calc_loss_loader
from .model import GPTModel
from .resume import save_checkpoint
from .schedule import clip_grad_norm, learning_rate
from .threads import add_threads_option, use_threads
from .train import OneLineErrors, make_optimizer, plot_losses, read_extra, run_script, tokenizer_from_state, trained_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE = ROOT / "out" / "train" / "ckpt.pt"
DEFAULT_OUT = ROOT / "out" / "finetune"
# Where --lora puts its adapters (the head's is what lets a model with a new end-of-text token learn
# when to stop: with the head frozen, that token's row is the mean of the others and stays so).
LORA_LAYERS = {
    "all": "every linear layer and the head (the default)",
    "blocks": "every linear layer of the blocks, the head frozen",
    "attention": "the attention's four projections and the head",
    "feedforward": "the feed-forward's two layers and the head",
}


def build_parser() -> OneLineErrors:
    p = OneLineErrors(prog=f"python -m {__package__ or 'solutions'}.finetune",
                      description="Fine-tune a GPT to follow instructions (full, or LoRA), then optionally DPO; "
                                  "offline, on questions about Python made from CPython's own documentation.")
    p.add_argument("--base", default=str(DEFAULT_BASE),
                   help="a checkpoint of `nox -s train` (default: out/train/ckpt.pt), or gpt2 (OpenAI's 124M, from the Hugging Face cache)")
    p.add_argument("--ranks", help="GPT-2's ranks (gpt2.tiktoken), for --base gpt2 or a model trained with --tokenizer gpt2")
    p.add_argument("--lora", type=int, metavar="RANK", help="train LoRA adapters of this rank instead of every weight")
    p.add_argument("--lora-alpha", type=float, help="LoRA's alpha (default: twice the rank)")
    p.add_argument("--lora-layers", choices=LORA_LAYERS, default="all",
                   help="which linear layers get LoRA: " + "; ".join(f"{k}: {v}" for k, v in LORA_LAYERS.items()))
    p.add_argument("--steps", type=int, default=400, help="fine-tuning steps (0 with --dpo: DPO alone, on a fine-tuned --base)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3; 5e-3 with --lora but not --classify; 1e-4 for --base gpt2)")
    p.add_argument("--dropout", type=float, default=0.1, help="the model's dropout while fine-tuning")
    p.add_argument("--no-mask-prompt", action="store_true", help="train on the prompt's tokens too (default: the response's only)")
    p.add_argument("--dpo", action="store_true", help="after fine-tuning, a DPO stage on preference pairs")
    p.add_argument("--classify", action="store_true",
                   help="instead: the classification demo (exercise 32): which part of the language reference a paragraph comes from")
    p.add_argument("--trainable-blocks", type=int,
                   help="--classify: the last blocks that learn, with the final norm and the head (default 1; "
                        "with --lora, LoRA on every block's linear layers instead)")
    p.add_argument("--dpo-steps", type=int, default=150)
    p.add_argument("--dpo-lr", type=float, help="DPO's learning rate (default: a tenth of --lr)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    p.add_argument("--dpo-pairs", choices=PAIR_KINDS, default="other",
                   help="DPO's rejected answers: another question's (other), or near misses of the right one (hard)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation losses")
    p.add_argument("--max-new-tokens", type=int, default=48, help="the most tokens of an answer when scoring")
    p.add_argument("--max-test", type=int, help="score only the first N test questions (quick runs)")
    p.add_argument("--skip-base-score", action="store_true", help="do not score the base model (saves a minute)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the checkpoint, plot and tables go")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    add_threads_option(p)
    return p


# --- the base model and its tokenizer ---------------------------------------------------------

@dataclasses.dataclass
class Base:
    model: GPTModel
    tok: object
    tok_state: dict
    eos_id: int
    name: str


def load_base(args, parser) -> Base:
    """The model to fine-tune, its tokenizer and its end-of-text id (added to a BPE that has none)."""
    if args.base == "gpt2":
        return load_gpt2(args, parser)
    path = Path(args.base)
    if not path.is_file():
        hint = " (train one with `nox -s train`)" if path.resolve() == DEFAULT_BASE.resolve() else ""
        parser.error(f"--base {args.base}: no such checkpoint{hint}; or pass --base gpt2")
    try:
        extra = read_extra(path)
        tok_state = dict(extra["tokenizer"])
        tok = tokenizer_from_state(tok_state, args.ranks)
    except (ValueError, FileNotFoundError, KeyError) as e:
        parser.error(f"--base {args.base}: {e}")
    if extra.get("arch", "gpt2") != "gpt2":
        parser.error(f"--base {args.base}: a {extra.get('arch')} model; the assistant track fine-tunes GPTModel (train with --arch gpt2)")
    model = trained_model(path, extra)
    if extra["config"].get("fused"):  # the fast path's padded vocabulary back to GPTModel's
        from .fast import unpad_state_dict

        state = {k: v for k, v in model.state_dict().items() if k != "logit_mask"}
        config = dict(extra["config"], fused=False)
        model = GPTModel(GPTConfig(**config))
        model.load_state_dict(unpad_state_dict(state, config["vocab_size"]))
    if EOS in tok.special_tokens:
        eos_id = tok.special_tokens[EOS]
    elif tok_state["kind"] == "bpe":
        model, tok_state = add_eos_token(model, tok_state)
        tok = tokenizer_from_state(tok_state)
        eos_id = tok.special_tokens[EOS]
    else:
        parser.error(f"--base {args.base}: its tokenizer has no {EOS} token")
    return Base(with_dropout(model, args.dropout), tok, tok_state, eos_id, str(path))


def load_gpt2(args, parser) -> Base:
    from . import pretrained
    from .tokenizer import Tokenizer
    from .train import tokenizer_state

    if not args.ranks:
        parser.error("--base gpt2 needs GPT-2's ranks: --ranks FILE (`nox -s finetune` finds them)")
    model = pretrained.load(pretrained.download("124M"))  # says in one line when the weights are absent offline
    tok = Tokenizer.from_gpt2(args.ranks)
    return Base(with_dropout(model, args.dropout), tok, tokenizer_state(ranks=args.ranks), tok.special_tokens[EOS], "gpt2 (124M)")


def add_eos_token(model: GPTModel, tok_state: dict) -> tuple[GPTModel, dict]:
    """``model`` with one more token (its embedding the mean of the others; the head is tied to it,
    or gets the mean row too) and the tokenizer's state with ``EOS`` as that token."""
    cfg = dataclasses.replace(model.cfg, vocab_size=model.cfg.vocab_size + 1)
    grown = GPTModel(cfg)
    state = model.state_dict()
    for key in ("tok_emb.weight", "out_head.weight"):
        if key in state:
            rows = state[key]
            state[key] = torch.cat([rows, rows.mean(dim=0, keepdim=True)])
    grown.load_state_dict(state)
    tok_state = dict(tok_state, vocab=list(tok_state["vocab"]) + [EOS], special_tokens=[EOS])
    return grown, tok_state


def with_dropout(model: GPTModel, rate: float) -> GPTModel:
    """The same weights in a model whose every dropout has probability ``rate``."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
    model.cfg = dataclasses.replace(model.cfg, drop_rate=rate)
    return model


def add_lora(model: GPTModel, rank: int, alpha: float, layers: str = "all") -> int:
    """Exercise 33's LoRA on the layers ``layers`` names (a key of ``LORA_LAYERS``), every other
    parameter frozen; returns the number of trainable parameters."""
    from .lora import LinearWithLoRA, replace_linear_with_lora

    if layers in ("all", "blocks"):
        return replace_linear_with_lora(model, rank, alpha, include_head=layers == "all")
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.trf_blocks:
        replace_linear_with_lora(block.att if layers == "attention" else block.ff, rank, alpha)
    model.out_head = LinearWithLoRA(model.out_head, rank, alpha)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def untie_head(model: GPTModel) -> None:
    """Give the output head (or the linear layer inside its LoRA wrapper) a weight of its own,
    a copy of the embedding it was tied to, so that merging LoRA into the head leaves the
    embedding as it is; the configuration says the weights are untied from now on."""
    head = model.out_head
    linear = getattr(head, "linear", head)
    if linear.weight is model.tok_emb.weight:
        linear.weight = torch.nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
    model.cfg = dataclasses.replace(model.cfg, tie_weights=False)


# --- data --------------------------------------------------------------------------------------

def batches(dataset, batch_size: int, generator: torch.Generator):
    """Batches of dataset items in a fresh random order each pass, for ever."""
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [dataset[j] for j in order[i:i + batch_size]]


def answer(model, tok, entry: dict, eos_id: int, max_new_tokens: int, device) -> str:
    """The model's greedy answer to ``entry`` in the template, as ``nox -s chat`` would stream it."""
    prompt = tok.encode(format_input(entry) + RESPONSE_HEADER)
    room = model.cfg.context_length - max_new_tokens
    return "".join(stream_answer(model, tok, prompt[-room:], eos_id, max_new_tokens, device)).strip()


def score(model, tok, examples: list[dict], eos_id: int, max_new_tokens: int, device, desc: str) -> tuple[float, list[str]]:
    """Mean token F1 of the model's answers against the references, and the answers."""
    from tqdm import tqdm

    model.eval()
    answers = [answer(model, tok, e, eos_id, max_new_tokens, device) for e in tqdm(examples, desc=desc, unit="q", leave=False)]
    f1 = sum(token_f1(a, e["output"]) for a, e in zip(answers, examples)) / max(len(examples), 1)
    return f1, answers


# --- the run -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    run_script(build_parser(), run, argv)


def run(args, parser) -> None:
    if args.steps < (0 if args.dpo else 1):
        parser.error(f"--steps is {args.steps}; expected at least 1 (or 0 with --dpo: DPO alone, on a fine-tuned --base)")
    for name in ("batch_size", "eval_every", "max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; expected at least 1")
    if args.lora is not None and args.lora < 1:
        parser.error(f"--lora {args.lora}: expected a rank of at least 1")
    if args.dpo_steps < 1 or args.beta <= 0:
        parser.error("--dpo-steps must be at least 1 and --beta above 0")
    if args.classify and args.dpo:
        parser.error("--classify is a demo of its own: without --dpo")
    if args.trainable_blocks is not None and not args.classify:
        parser.error("--trainable-blocks is an option of --classify")
    if args.classify and args.lora and args.trainable_blocks is not None:
        parser.error("--classify --lora adapts every block and trains the final norm and the head: without --trainable-blocks")
    if args.lora_layers != "all" and (not args.lora or args.classify):
        parser.error(f"--lora-layers {args.lora_layers} is for fine-tuning with --lora (not --classify)")
    wall = time.perf_counter()
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    base = load_base(args, parser)
    model, tok, eos_id = base.model.to(device), base.tok, base.eos_id
    ctx = model.cfg.context_length
    if ctx <= args.max_new_tokens + 16:
        parser.error(f"--max-new-tokens {args.max_new_tokens} leaves no room for a prompt in a context of {ctx} tokens")
    use_threads(args.threads)  # the first line, once the options are known good: the threads, and how to change them
    # (the classification demo's new head learns at this rate too: LoRA's 5e-3 made it diverge at rank 16)
    lr = args.lr or (1e-4 if args.base == "gpt2" else 5e-3 if args.lora and not args.classify else 1e-3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.classify:
        return classify_demo(model, tok, eos_id, args, lr, device, out, parser)

    splits = make_dataset(seed=args.seed)
    test = splits["test"][: args.max_test] if args.max_test else splits["test"]
    print(f"data: {summary(splits)}; scoring {len(test)} test questions")
    print(f"base: {base.name}, {model.num_parameters():,} parameters, vocabulary {model.cfg.vocab_size:,}, context {ctx}; on {device}")

    metrics = {"base": base.name, "test_questions": len(test), "mode": f"lora {args.lora}" if args.lora else "full"}
    if args.lora:
        metrics["lora_layers"] = args.lora_layers
    base_answers = None
    if not args.skip_base_score:
        metrics["base_f1"], base_answers = score(model, tok, test, eos_id, args.max_new_tokens, device, "score base")
        print(f"base model on the test questions: token F1 {metrics['base_f1']:.3f}")

    total = sum(p.numel() for p in model.parameters())
    if args.lora:
        from .lora import merge_lora

        trainable = add_lora(model, args.lora, args.lora_alpha or 2.0 * args.lora, args.lora_layers)
        model.to(device)
    else:
        trainable = total
    metrics.update(trainable_parameters=trainable, total_parameters=total, trainable_fraction=trainable / total)
    print(f"fine-tuning {f'LoRA rank {args.lora} on {LORA_LAYERS[args.lora_layers]}' if args.lora else 'every weight'}: {trainable:,} of {total:,} "
          f"parameters trainable ({100 * trainable / total:.2f}%), {args.steps} steps of {args.batch_size}, peak lr {lr:g}")

    if args.steps:
        sft_seconds, history, evals = finetune(model, tok, splits, eos_id, args, lr, device)
        metrics.update(finetune_seconds=sft_seconds, val_loss=evals[-1]["val_loss"])
        metrics["finetuned_f1"], answers = score(model, tok, test, eos_id, args.max_new_tokens, device, "score fine-tuned")
        print(f"fine-tuned model on the test questions: token F1 {metrics['finetuned_f1']:.3f}"
              + (f" (base {metrics['base_f1']:.3f})" if "base_f1" in metrics else "") + f"; {sft_seconds:.0f} s of fine-tuning")
        columns = {"base": base_answers, "fine-tuned": answers}
    else:  # --steps 0 --dpo: DPO alone, on a model fine-tuned before
        history, evals, columns = {"step": [], "loss": []}, [], {"base": base_answers}

    if args.dpo:
        dpo_metrics = run_dpo(model, tok, splits, eos_id, args, (args.dpo_lr or lr / 10), device)
        metrics.update(dpo_metrics)
        metrics["dpo_f1"], columns["after DPO"] = score(model, tok, test, eos_id, args.max_new_tokens, device, "score after DPO")
        print(f"after DPO on {args.dpo_pairs} pairs: held-out reward margin {metrics['dpo_margin']:.3f}, win rate "
              f"{100 * metrics['dpo_win_rate']:.1f}% (chosen over rejected); token F1 {metrics['dpo_f1']:.3f}; on held-out pairs of "
              + ", ".join(f"{k}: margin {metrics[f'dpo_margin_{k}']:.3f}, win rate {100 * metrics[f'dpo_win_rate_{k}']:.1f}%"
                          for k in PAIR_KINDS))

    if args.lora:
        untie_head(model)  # the head's update must not change the embedding it shares a tensor with
        merge_lora(model)  # a plain GPTModel again: what chat and sample read
    model.eval()
    extra = {"config": dataclasses.asdict(model.cfg), "arch": "gpt2", "tokenizer": base.tok_state,
             "assistant": {"eos_id": eos_id, "template": "alpaca", "base": base.name, "lora": args.lora, "dpo": args.dpo},
             "metrics": metrics}
    save_checkpoint(out / "ckpt.pt", model=model, optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.0), step=args.steps, extra=extra)
    plot_losses(out / "loss.png", history, evals, args.batch_size, f"fine-tuning {base.name}: "
                + (f"LoRA rank {args.lora}" if args.lora else "every weight") + f", {args.batch_size} examples per step", unit="examples",
                train_label="train (mean of the last 20 steps)")
    metrics["answers"] = [{"instruction": e["instruction"], "reference": e["output"], **{k: v[i] for k, v in columns.items() if v is not None}}
                          for i, e in enumerate(test)]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_table(out / "responses.md", test, columns)
    print(f"wrote {out / 'ckpt.pt'}, {out / 'loss.png'}, {out / 'responses.md'} and {out / 'metrics.json'} "
          f"in {time.perf_counter() - wall:.0f} s; talk to it with `nox -s chat`" + ("" if out.resolve() == DEFAULT_OUT.resolve()
                                                                                   else f" -- --checkpoint {out / 'ckpt.pt'}"))
    print_table(test, columns, rows=5)


def finetune(model, tok, splits, eos_id: int, args, lr: float, device) -> tuple[float, dict, list[dict]]:
    """Supervised fine-tuning: next-token loss on the responses; returns the seconds it took, the
    per-step losses and the validation estimates."""
    from tqdm import tqdm

    ctx = model.cfg.context_length
    mask = not args.no_mask_prompt

    def to_batch(items):
        return collate(items, pad_token_id=eos_id, allowed_max_length=ctx, mask_prompt=mask, device=device)

    train = InstructionDataset(splits["train"], tok)
    val = InstructionDataset(splits["validation"], tok)
    val_batches = [to_batch([val[j] for j in range(i, min(i + args.batch_size, len(val)))]) for i in range(0, len(val), args.batch_size)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, lr, 0.0 if args.lora else 0.1, device)  # train.py's: decay on the 2-D weights only
    generator = torch.Generator().manual_seed(args.seed)
    stream = batches(train, args.batch_size, generator)
    history, evals = {"step": [], "loss": []}, []
    warmup = max(1, args.steps // 20)
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc="fine-tune", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, max_lr=lr, min_lr=lr / 10, warmup_steps=warmup, total_steps=args.steps)
        x, y = to_batch(next(stream))
        loss = calc_loss_batch(x, y, model, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(params, 1.0)
        optimizer.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            val_loss = calc_loss_loader(val_batches, model, device)
            model.train()
            evals.append({"tokens": step * args.batch_size, "step": step, "train_loss": sum(history["loss"][-20:]) / len(history["loss"][-20:]),
                          "val_loss": val_loss})
            tqdm.write(f"step {step:5d} | train {evals[-1]['train_loss']:.3f} | val {val_loss:.3f}")
    return time.perf_counter() - start, history, evals


def run_dpo(model, tok, splits, eos_id: int, args, lr: float, device) -> dict:
    """DPO (exercise 34) against a frozen copy of the fine-tuned model, on pairs of ``--dpo-pairs``;
    the held-out margin and win rate on held-out pairs of that kind (and of each kind, by name)."""
    from tqdm import tqdm

    from .dpo import PreferenceDataset, collate_preferences, dpo_batch_loss

    ctx = model.cfg.context_length
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    train = PreferenceDataset(preference_pairs(splits["train"], seed=args.seed, kind=args.dpo_pairs), tok)
    held_out_of = {kind: PreferenceDataset(preference_pairs(splits["test"], seed=args.seed, kind=kind), tok) for kind in PAIR_KINDS}

    def to_batch(items):
        return collate_preferences(items, pad_token_id=eos_id, allowed_max_length=ctx, device=device)

    def held_out_rewards(held_out) -> tuple[float, float]:
        margins = []
        with torch.no_grad():
            for i in range(0, len(held_out), args.batch_size):
                batch = to_batch([held_out[j] for j in range(i, min(i + args.batch_size, len(held_out)))])
                _, chosen, rejected = dpo_batch_loss(model, reference, batch, args.beta)
                margins += (chosen - rejected).tolist()
        return sum(margins) / len(margins), sum(m > 0 for m in margins) / len(margins)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    stream = batches(train, max(1, args.batch_size // 2), torch.Generator().manual_seed(args.seed + 1))
    model.eval()  # no dropout: the policy starts equal to the reference, every reward 0
    start = time.perf_counter()
    bar = tqdm(range(1, args.dpo_steps + 1), desc="DPO", unit="step")
    for step in bar:
        loss, chosen, rejected = dpo_batch_loss(model, reference, to_batch(next(stream)), args.beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(params, 1.0)
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", margin=f"{(chosen - rejected).mean().item():.2f}")
    seconds = time.perf_counter() - start
    result = {"dpo_seconds": seconds, "dpo_pairs_kind": args.dpo_pairs, "dpo_pairs": len(train)}
    for kind, held_out in held_out_of.items():
        margin, win_rate = held_out_rewards(held_out)
        result.update({f"dpo_margin_{kind}": margin, f"dpo_win_rate_{kind}": win_rate, f"dpo_held_out_pairs_{kind}": len(held_out)})
    for name in ("margin", "win_rate", "held_out_pairs"):  # on held-out pairs of the kind trained on
        result[f"dpo_{name}"] = result[f"dpo_{name}_{args.dpo_pairs}"]
    return result


def classify_demo(model, tok, eos_id: int, args, lr: float, device, out: Path, parser) -> None:
    """Exercise 32 on data every CPython has: which part of the language reference (statements,
    expressions, data model and types, execution model) a paragraph of ``pydoc_data.topics`` comes
    from, with topics split as the questions are. Prints and writes (``classify.json``) the
    accuracy against the majority class of the training paragraphs."""
    from tqdm import tqdm

    from .assistant_data import classification_data
    from .classify import add_classification_head, classification_accuracy, classification_loss, freeze_for_classification

    names, splits = classification_data()
    ctx = model.cfg.context_length
    blocks = 1 if args.trainable_blocks is None else args.trainable_blocks
    if not 0 <= blocks <= len(model.trf_blocks):
        parser.error(f"--trainable-blocks {blocks}: expected 0 to {len(model.trf_blocks)}, the model's blocks")

    def encode(examples):
        rows = [tok.encode(e["text"])[:ctx] for e in examples]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [eos_id] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
        return ids, torch.tensor([len(r) for r in rows], device=device), torch.tensor([e["label"] for e in examples], device=device)

    def accuracy(examples) -> float:
        model.eval()
        hits = 0.0
        with torch.no_grad():
            for i in range(0, len(examples), args.batch_size):
                part = examples[i:i + args.batch_size]
                hits += classification_accuracy(model, *encode(part)) * len(part)
        model.train()
        return hits / max(len(examples), 1)

    counts = [sum(e["label"] == k for e in splits["train"]) for k in range(len(names))]
    majority = max(range(len(names)), key=counts.__getitem__)
    baseline = {s: sum(e["label"] == majority for e in splits[s]) / max(len(splits[s]), 1) for s in ("validation", "test")}
    add_classification_head(model, len(names))
    model.to(device)
    if args.lora:  # as the book's appendix E: adapters on every block's linear layers; the new head learns in full
        from .lora import replace_linear_with_lora

        freeze_for_classification(model, 0)
        alpha = args.lora_alpha or 2.0 * args.lora
        replace_linear_with_lora(model.trf_blocks, args.lora, alpha)
        model.to(device)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        what = f"LoRA rank {args.lora} (alpha {alpha:g}) on every block's linear layers, the final norm and the new head"
    else:
        trainable = freeze_for_classification(model, blocks)
        what = f"the last {blocks} block(s), the final norm and the new head"
    total = sum(p.numel() for p in model.parameters())
    print(f"classes: {', '.join(names)}; paragraphs: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items()))
    print(f"trainable: {what}: {trainable:,} of {total:,} parameters")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    stream = batches(splits["train"], args.batch_size, torch.Generator().manual_seed(args.seed))
    model.train()
    start = time.perf_counter()
    for step in tqdm(range(1, args.steps + 1), desc="classify", unit="step"):
        loss = classification_loss(model, *encode(next(stream)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    result = {"classes": names, "steps": args.steps, "seconds": time.perf_counter() - start, "trainable_parameters": trainable,
              "trainable": what, "majority_class": names[majority]}
    for split in ("train", "validation", "test"):
        result[f"{split}_accuracy"] = accuracy(splits[split])
    result.update({f"{s}_majority_baseline": v for s, v in baseline.items()})
    (out / "classify.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"accuracy: train {result['train_accuracy']:.1%}, validation {result['validation_accuracy']:.1%} "
          f"(majority class '{names[majority]}': {baseline['validation']:.1%}), test {result['test_accuracy']:.1%} "
          f"(majority: {baseline['test']:.1%}); wrote {out / 'classify.json'}")


def _cell(text: str | None) -> str:
    return "" if text is None else text.replace("|", "\\|").replace("\n", " ")


def write_table(path: Path, examples: list[dict], columns: dict[str, list[str] | None]) -> None:
    """The test questions, the reference answers and each model's, as a Markdown table."""
    shown = {k: v for k, v in columns.items() if v is not None}
    lines = ["| question | reference | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for i, e in enumerate(examples):
        lines.append(f"| {_cell(e['instruction'])} | {_cell(e['output'])} | " + " | ".join(_cell(v[i]) for v in shown.values()) + " |")
    path.write_text("\n".join(lines) + "\n")


def print_table(examples: list[dict], columns: dict[str, list[str] | None], rows: int) -> None:
    for i, e in enumerate(examples[:rows]):
        print(f"\n{e['instruction']}\n  reference:  {e['output']}")
        for name, values in columns.items():
            if values is not None:
                print(f"  {name + ':':11s} {values[i]}")


if __name__ == "__main__":
    main(sys.argv[1:])
