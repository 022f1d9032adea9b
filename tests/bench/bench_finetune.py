"""The assistant track, measured: what fine-tuning, LoRA and DPO do to the model of `nox -s train`.

On the held-out test questions of ``assistant_data`` (topics and modules never fine-tuned on),
each model answers greedily in the template and its answers are scored by token F1 against the
references:

1. the base model, prompted with the template;
2. after fine-tuning every weight (``nox -s finetune``); target: at least twice the base's score;
3. after LoRA (``--lora RANK``, ``KATA_LORA_RANK``, default 4): its share of trainable parameters
   (target at most 5%), its score against full fine-tuning's (target at least 90%) and its time;
4. after a DPO stage on the fully fine-tuned model (``--dpo``): the reward margin and the win rate
   of chosen over rejected on held-out pairs, and the score again;
5. the classification demo (``--classify``): validation and test accuracy against the majority
   class.

The base checkpoint is ``KATA_FINETUNE_BASE``, else ``out/train/ckpt.pt``, else one trained here
with `nox -s train`'s defaults first (about 8 minutes). Run it alone: times on a busy 2-core
machine are worth nothing. ``KATA_BENCH_ONLY=full|lora|classify`` runs one part.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from solutions import finetune, train  # noqa: E402


def base_checkpoint(scratch: Path) -> Path:
    given = os.environ.get("KATA_FINETUNE_BASE")
    if given:
        return Path(given)
    default = ROOT / "out" / "train" / "ckpt.pt"
    if default.is_file():
        return default
    print("no out/train/ckpt.pt: training the default model first (nox -s train's defaults)")
    train.main(["--out", str(scratch / "base")])
    return scratch / "base" / "ckpt.pt"


def run(args: list[str], out: Path) -> dict:
    start = time.perf_counter()
    finetune.main([*args, "--out", str(out)])
    metrics = json.loads((out / ("classify.json" if "--classify" in args else "metrics.json")).read_text())
    metrics["wall_seconds"] = time.perf_counter() - start
    return metrics


def main() -> None:
    only = os.environ.get("KATA_BENCH_ONLY")
    rank = int(os.environ.get("KATA_LORA_RANK", "4"))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        base = base_checkpoint(scratch)
        results = {}
        if only in (None, "full"):
            results["full"] = run(["--base", str(base), "--dpo"], scratch / "full")
        if only in (None, "lora"):
            results["lora"] = run(["--base", str(base), "--lora", str(rank)], scratch / "lora")
        if only in (None, "classify"):
            results["classify"] = run(["--base", str(base), "--classify", "--steps", "300"], scratch / "classify")
    print("\n## measured (test questions: token F1, greedy answers)\n")
    print("| model | token F1 | trainable parameters | fine-tuning time | notes |")
    print("|---|---|---|---|---|")
    full, lora = results.get("full"), results.get("lora")
    ref = full or lora
    if ref and "base_f1" in ref:
        print(f"| base, prompted with the template | {ref['base_f1']:.3f} | | | |")
    if full:
        ratio = full["finetuned_f1"] / full["base_f1"] if full.get("base_f1") else float("nan")
        print(f"| fine-tuned, every weight | {full['finetuned_f1']:.3f} | {full['trainable_parameters']:,} (100%) | "
              f"{full['finetune_seconds']:.0f} s | {ratio:.1f}x the base (target 2x) |")
    if lora:
        share = lora["finetuned_f1"] / full["finetuned_f1"] if full else float("nan")
        time_ratio = lora["finetune_seconds"] / full["finetune_seconds"] if full else float("nan")
        print(f"| LoRA rank {rank} | {lora['finetuned_f1']:.3f} | {lora['trainable_parameters']:,} "
              f"({100 * lora['trainable_fraction']:.1f}%) | {lora['finetune_seconds']:.0f} s ({time_ratio:.2f}x) | "
              f"{100 * share:.0f}% of full fine-tuning (target 90%, with at most 5% trainable) |")
    if full and "dpo_f1" in full:
        print(f"| fine-tuned, then DPO | {full['dpo_f1']:.3f} | {full['trainable_parameters']:,} | {full['dpo_seconds']:.0f} s | "
              f"held-out reward margin {full['dpo_margin']:.2f}, win rate {100 * full['dpo_win_rate']:.0f}% "
              f"of {full['dpo_held_out_pairs']} pairs |")
    cls = results.get("classify")
    if cls:
        print(f"\nclassification ({', '.join(cls['classes'])}): validation {100 * cls['validation_accuracy']:.1f}% "
              f"(majority class {100 * cls['validation_majority_baseline']:.1f}%), test {100 * cls['test_accuracy']:.1f}% "
              f"(majority {100 * cls['test_majority_baseline']:.1f}%), {cls['seconds']:.0f} s")
    print("\n" + json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
