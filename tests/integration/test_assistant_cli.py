"""Ungraded: the assistant track's entry points end to end, as `nox -s finetune` and `nox -s chat`
run them, on a tiny model that `train.py` makes first.

`finetune.py` fine-tunes it for a few steps (every weight; then LoRA with a DPO stage), and must
write its checkpoint (an end-of-text token added to the BPE's vocabulary, LoRA merged into plain
weights), its loss curve, the table of test responses and the metrics; `chat.py` answers one
prompt from its command line, and holds a conversation through a pseudo-terminal (a turn, /reset,
/quit), streaming what the one-shot answer printed. Bad input is a one-line error. Each run is a
subprocess of the tree's own scripts (this process never imports the tree). Skipped while an
exercise the chain needs is a stub. About 40 seconds on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_cli import Runner, ok, read_checkpoint, skip_if_unfinished

pytest.importorskip("tqdm", reason="finetune.py needs tqdm (`nox -s tests` installs the train extra)")
pytest.importorskip("matplotlib", reason="finetune.py needs matplotlib (`nox -s tests` installs the train extra)")

# A base model whose context holds the template (its preamble alone is about 60 tokens of a
# 300-token BPE) and a short answer.
BASE = ["--max-chars", "20000", "--vocab-size", "300", "--context-length", "160", "--emb-dim", "32", "--n-layers", "1",
        "--n-heads", "2", "--batch-size", "4", "--warmup", "1", "--eval-every", "3", "--eval-batches", "1",
        "--sample-tokens", "0", "--save-every", "0", "--steps", "3"]
QUICK = ["--steps", "4", "--batch-size", "4", "--eval-every", "2", "--max-test", "3", "--max-new-tokens", "8"]
QUESTION = "What does the pass statement do?"


@pytest.fixture(scope="module")
def runner(kata, tmp_path_factory) -> Runner:
    return Runner(kata.tree, tmp_path_factory.mktemp("assistant_cli"))


@pytest.fixture(scope="module")
def base(runner) -> Path:
    out = runner.workdir / "base"
    ok(runner("train", *BASE, "--out", str(out)), "training the tiny base model")
    return out / "ckpt.pt"


@pytest.fixture(scope="module")
def tuned(runner, base) -> tuple[Path, str]:
    out = runner.workdir / "full"
    stdout = ok(runner("finetune", "--base", str(base), *QUICK, "--out", str(out)), "finetune.py (every weight)")
    return out, stdout


def _f1(response: str, reference: str) -> float:
    """SQuAD's token F1 (lowercase, punctuation and a/an/the dropped, words as multisets), written here as the oracle."""
    import collections
    import string

    def words(text):
        return [w for w in text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation))).split()
                if w not in ("a", "an", "the")]

    got, want = words(response), words(reference)
    if not got or not want:
        return float(got == want)
    common = sum((collections.Counter(got) & collections.Counter(want)).values())
    return 0.0 if common == 0 else 2 * common / (len(got) + len(want))


@pytest.fixture(scope="module")
def data(runner) -> dict:
    path = runner.workdir / "data.json"
    ok(runner("assistant_data", "--json", str(path)), "assistant_data.py --json")
    return json.loads(path.read_text(encoding="utf-8"))


def _split_of(source: str) -> str:  # the rule the data's docstring states, written again here
    import zlib

    bucket = zlib.crc32(source.encode("utf-8")) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def test_the_data_is_split_by_source_and_made_of_plain_questions(data):
    splits = data["splits"]
    sources = {name: {e["source"] for e in examples} for name, examples in splits.items()}
    assert all(len(splits[name]) >= 50 for name in ("train", "validation", "test")), {k: len(v) for k, v in splits.items()}
    assert not (sources["train"] & sources["test"]) and not (sources["train"] & sources["validation"]) \
        and not (sources["validation"] & sources["test"]), "a source is in two splits: test questions must come from unseen sources"
    for name, examples in splits.items():
        for e in examples:
            assert _split_of(e["source"]) == name, f"{e['source']} is in {name}, not where crc32 % 10 puts it"
            assert e["instruction"].strip() and e["output"].strip() and "\n" not in e["output"], e
    train_questions = {e["instruction"] for e in splits["train"]}
    assert not any(e["instruction"] in train_questions for e in splits["test"]), "a test question is asked in training too"
    for name, pairs in data["pairs"].items():
        outputs = {e["instruction"]: e["output"] for e in splits[name]}
        assert len(pairs) >= 0.9 * len(splits[name])
        for pair in pairs:
            assert pair["chosen"] == outputs[pair["instruction"]] and pair["rejected"] != pair["chosen"], pair
    for name, pairs in data["hard_pairs"].items():  # near misses, each checked against what it claims to be
        examples = {e["instruction"]: e for e in splits[name]}
        assert len(pairs) >= 0.9 * len(splits[name]) and {p["miss"] for p in pairs} >= {"sibling", "truncated"}, name
        for pair in pairs:
            e, rejected = examples[pair["instruction"]], pair["rejected"]
            assert pair["chosen"] == e["output"] and rejected != e["output"], pair
            if pair["miss"] == "sibling":  # another question's answer, of the same module or topic
                assert any(o["source"] == e["source"] and o["output"] == rejected for o in splits[name] if o is not e), pair
            elif pair["miss"] == "truncated":  # its first words, half of them or fewer
                words = e["output"].split()
                assert words[:len(rejected.split())] == rejected.split() and 3 <= len(rejected.split()) <= len(words) // 2, pair
            else:  # one number changed, everything else as it was
                assert pair["miss"] == "number", pair
                a, b = re.findall(r"\d+|\D+", e["output"]), re.findall(r"\d+|\D+", rejected)
                changed = [(x, y) for x, y in zip(a, b) if x != y]
                assert len(a) == len(b) and len(changed) == 1 and changed[0][0].isdigit() and changed[0][1].isdigit(), pair
    classes, paragraphs = data["classes"], data["paragraphs"]
    assert len(classes) >= 2 and all(0 <= e["label"] < len(classes) for split in paragraphs.values() for e in split)
    assert not ({e["source"] for e in paragraphs["train"]} & {e["source"] for e in paragraphs["test"]})


def test_full_finetuning_writes_its_checkpoint_plot_table_and_metrics(base, tuned):
    out, stdout = tuned
    for line in ("data: train", "base model on the test questions: token F1", "fine-tuned model on the test questions: token F1"):
        assert line in stdout, f"finetune.py's output lacks {line!r}:\n{stdout[-2000:]}"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no loss curve (loss.png)"
    table = (out / "responses.md").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("| question | reference | base | fine-tuned |") and len(table) == 2 + 3, table[:3]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_questions"] == 3 and metrics["mode"] == "full" and metrics["trainable_fraction"] == 1.0
    for key, column in (("base_f1", "base"), ("finetuned_f1", "fine-tuned")):
        answers = metrics["answers"]
        mine = sum(_f1(a[column], a["reference"]) for a in answers) / len(answers)
        assert len(answers) == 3 and abs(metrics[key] - mine) < 1e-9, f"{key} is {metrics[key]}; token F1 of its answers is {mine}"
    state, before = read_checkpoint(out / "ckpt.pt"), read_checkpoint(base)
    vocab = before["extra"]["config"]["vocab_size"]
    assert state["extra"]["config"]["vocab_size"] == vocab + 1, "the end-of-text token should be one more row of the vocabulary"
    tok = state["extra"]["tokenizer"]
    assert tok["special_tokens"] == ["<|endoftext|>"] and tok["vocab"][-1] == "<|endoftext|>" and len(tok["vocab"]) == vocab + 1
    assert state["extra"]["assistant"]["eos_id"] == vocab
    weights = state["model"]["tok_emb.weight"]
    assert weights.shape[0] == vocab + 1 and not torch.equal(weights[:vocab], before["model"]["tok_emb.weight"]), \
        "fine-tuning every weight should change the embedding"


def test_lora_with_dpo_trains_adapters_and_saves_plain_weights(runner, base):
    out = runner.workdir / "lora"
    stdout = ok(runner("finetune", "--base", str(base), *QUICK, "--lora", "2", "--dpo", "--dpo-steps", "2", "--skip-base-score",
                       "--out", str(out)), "finetune.py --lora 2 --dpo")
    assert "after DPO on other pairs: held-out reward margin" in stdout, stdout[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "lora 2" and 0 < metrics["trainable_fraction"] < 0.2, metrics
    assert 0.0 <= metrics["dpo_win_rate"] <= 1.0 and metrics["dpo_held_out_pairs"] > 0 and "base_f1" not in metrics, metrics
    state = read_checkpoint(out / "ckpt.pt")
    assert not any(".lora." in k or k.endswith((".A", ".B")) for k in state["model"]), "LoRA should be merged into the weights"
    assert "trf_blocks.0.att.W_query.weight" in state["model"]
    # the frozen base weights are the base's; only the linear layers' weights moved (merged LoRA)
    before = read_checkpoint(base)["model"]
    assert torch.equal(state["model"]["pos_emb.weight"], before["pos_emb.weight"]), "LoRA must leave the position embedding frozen"
    assert not torch.equal(state["model"]["trf_blocks.0.att.W_query.weight"], before["trf_blocks.0.att.W_query.weight"])
    # the head learned through LoRA too, and merging it must not leak into the embedding it was tied to
    vocab = before["tok_emb.weight"].shape[0]
    embedding = state["model"]["tok_emb.weight"]
    assert torch.equal(embedding[:vocab], before["tok_emb.weight"]), "the token embedding changed: LoRA merged into a head still tied to it?"
    assert torch.allclose(embedding[vocab], before["tok_emb.weight"].mean(dim=0), atol=1e-6), "the new end-of-text row should be the mean row"
    assert not torch.equal(state["model"]["out_head.weight"][:vocab], embedding[:vocab]) and not state["extra"]["config"]["tie_weights"]
    said = ok(runner("sample", str(out / "ckpt.pt"), "The ", "--max-new-tokens", "4"), "sample.py on a fine-tuned checkpoint")
    assert said.startswith("The "), said


def _block_linears(state: dict) -> dict[str, tuple[int, int]]:
    """The base's linear layers inside its blocks, as (in, out) by name, read from its weights."""
    return {k[: -len(".weight")]: (w.shape[1], w.shape[0]) for k, w in state.items()
            if k.startswith("trf_blocks.") and k.endswith(".weight") and w.dim() == 2}


def test_lora_on_the_attention_alone_leaves_the_feed_forward_as_it_was(runner, base):
    out = runner.workdir / "lora_attention"
    stdout = ok(runner("finetune", "--base", str(base), *QUICK, "--lora", "2", "--lora-layers", "attention", "--skip-base-score",
                       "--out", str(out)), "finetune.py --lora 2 --lora-layers attention")
    before = read_checkpoint(base)["model"]
    linears = _block_linears(before)
    attention = {k: v for k, v in linears.items() if ".att." in k}
    assert len(attention) == 4 * sum(k.endswith(".att.W_query") for k in linears), sorted(linears)
    vocab, emb = before["tok_emb.weight"].shape
    expected = sum(2 * (i + o) for i, o in attention.values()) + 2 * (emb + vocab + 1)  # and the head's, one row added
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == expected and metrics["lora_layers"] == "attention", (metrics, expected)
    assert f"{expected:,} of" in stdout, stdout[-2000:]
    state = read_checkpoint(out / "ckpt.pt")["model"]
    for name in linears:
        moved = not torch.equal(state[name + ".weight"], before[name + ".weight"])
        assert moved == (name in attention), f"{name}: {'moved' if moved else 'did not move'} with LoRA on the attention alone"


@pytest.mark.parametrize("lora", [False, True], ids=["last-block", "lora"])
def test_the_classification_demo_writes_its_accuracies(runner, base, lora):
    out = runner.workdir / f"classify_{lora}"
    extra = ["--lora", "2", "--lora-alpha", "4"] if lora else ["--trainable-blocks", "1"]
    stdout = ok(runner("finetune", "--base", str(base), "--classify", "--steps", "3", "--batch-size", "4", *extra,
                       "--out", str(out)), "finetune.py --classify " + " ".join(extra))
    result = json.loads((out / "classify.json").read_text())
    before = read_checkpoint(base)["model"]
    emb = before["tok_emb.weight"].shape[1]
    classes = len(result["classes"])
    head_and_norm = emb * classes + classes + 2 * emb
    if lora:
        expected = head_and_norm + sum(2 * (i + o) for i, o in _block_linears(before).values())
        assert result["trainable"].startswith("LoRA rank 2 (alpha 4)"), result
    else:
        last = max(int(k.split(".")[1]) for k in before if k.startswith("trf_blocks."))
        expected = head_and_norm + sum(w.numel() for k, w in before.items() if k.startswith(f"trf_blocks.{last}."))
    assert result["trainable_parameters"] == expected, (result, expected)
    assert classes >= 2 and result["majority_class"] in result["classes"] and result["steps"] == 3
    for split in ("train", "validation", "test"):
        assert 0.0 <= result[f"{split}_accuracy"] <= 1.0, result
    assert f"test {100 * result['test_accuracy']:.1f}%" in stdout, stdout[-2000:]


def test_dpo_alone_on_a_finetuned_checkpoint_keeps_its_vocabulary(runner, tuned):
    out, _ = tuned
    again = runner.workdir / "dpo_only"
    stdout = ok(runner("finetune", "--base", str(out / "ckpt.pt"), "--steps", "0", "--dpo", "--dpo-steps", "2", "--max-test", "2",
                       "--max-new-tokens", "8", "--dpo-pairs", "hard", "--out", str(again)), "finetune.py --steps 0 --dpo --dpo-pairs hard")
    assert "after DPO on hard pairs: held-out reward margin" in stdout and "fine-tuned model on the test" not in stdout, stdout[-2000:]
    metrics = json.loads((again / "metrics.json").read_text())
    assert metrics["dpo_pairs_kind"] == "hard" and metrics["dpo_margin"] == metrics["dpo_margin_hard"], metrics
    assert metrics["dpo_held_out_pairs_other"] > 0 and metrics["dpo_held_out_pairs_hard"] > 0, metrics
    before, after = read_checkpoint(out / "ckpt.pt"), read_checkpoint(again / "ckpt.pt")
    assert after["extra"]["config"]["vocab_size"] == before["extra"]["config"]["vocab_size"], "a second run must not add another end-of-text token"
    assert after["extra"]["tokenizer"] == before["extra"]["tokenizer"]
    assert not torch.equal(after["model"]["trf_blocks.0.att.W_query.weight"], before["model"]["trf_blocks.0.att.W_query.weight"]), "DPO changed nothing"


def test_chat_answers_one_prompt(runner, tuned):
    out, _ = tuned
    said = ok(runner("chat", QUESTION, "--checkpoint", str(out / "ckpt.pt"), "--max-new-tokens", "6"), "chat.py with a prompt")
    assert said.endswith("\n") and said.count("\n") >= 1 and "you>" not in said, said


def test_chat_says_when_the_answer_is_empty(runner, tuned):
    """A model that ends every answer at once: chat says so, on stderr, and stdout stays the empty answer.
    The checkpoint is edited as data: the final norm's scale zeroed and its shift a direction u, the
    end-of-text row of the (tied) embedding 100 u, so that greedy decoding picks end-of-text first."""
    out, _ = tuned
    state = read_checkpoint(out / "ckpt.pt")
    extra, weights = state["extra"], state["model"]
    eos = (extra.get("assistant") or {}).get("eos_id", extra["tokenizer"]["vocab"].index("<|endoftext|>"))
    direction = torch.randn(extra["config"]["emb_dim"], generator=torch.Generator().manual_seed(0))
    u = direction / direction.norm()
    weights["final_norm.scale"].zero_()
    weights["final_norm.shift"].copy_(u)
    for key in ("tok_emb.weight", "out_head.weight"):
        if key in weights:
            weights[key][eos] = 100 * u
    mute = runner.workdir / "mute.pt"
    torch.save(state, mute)
    res = runner("chat", QUESTION, "--checkpoint", str(mute), "--max-new-tokens", "6")
    said = ok(res, "chat.py with a model that answers nothing")
    assert said == "\n", f"stdout should be the empty answer alone, got {said!r}"
    assert "no answer" in res.stderr and "--temperature" in res.stderr, res.stderr[-2000:]


def _read_until(fd: int, marker: str, deadline: float, seen: list[str]) -> str:
    text = ""
    while marker not in text:
        if time.monotonic() > deadline:
            raise AssertionError(f"chat.py did not print {marker!r} in time; it printed:\n{''.join(seen) + text}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096).decode("utf-8", "replace")
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            text += chunk
    seen.append(text)
    return text


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_chat_holds_a_conversation_in_a_terminal(runner, tuned):
    import pty

    out, _ = tuned
    one_shot = ok(runner("chat", QUESTION, "--checkpoint", str(out / "ckpt.pt"), "--max-new-tokens", "6"), "chat.py with a prompt").strip()
    primary, secondary = pty.openpty()
    cmd = [sys.executable, str(runner.launcher), str(runner.tree), "chat", "--checkpoint", str(out / "ckpt.pt"), "--max-new-tokens", "6"]
    # stderr on the terminal too, as in a real one: input() writes its prompt there when readline is not loaded
    proc = subprocess.Popen(cmd, cwd=runner.workdir, env=runner.env, stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        try:
            _read_until(primary, "you> ", deadline, seen)
        except AssertionError:
            skip_if_unfinished(subprocess.CompletedProcess(cmd, proc.poll() or 1, "", "".join(seen)))
            raise
        os.write(primary, (QUESTION + "\n").encode())
        turn = _read_until(primary, "you> ", deadline, seen)
        answer = turn.split("bot> ", 1)[-1].rsplit("you> ", 1)[0].replace("\r", "").strip()
        assert "bot> " in turn and answer == one_shot, f"the conversation's first answer {answer!r} should be the one-shot answer {one_shot!r}"
        os.write(primary, b"/reset\n")
        assert "forgotten" in _read_until(primary, "you> ", deadline, seen)
        os.write(primary, b"/quit\n")
        assert proc.wait(timeout=30) == 0, f"chat.py exited with {proc.returncode} on /quit"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("finetune", ["--base", "no-such-checkpoint.pt"], "no such checkpoint"),
        ("finetune", ["--steps", "0"], "--steps"),
        ("finetune", ["--lora", "0"], "--lora"),
        ("finetune", ["--lora-layers", "attention"], "--lora-layers"),
        ("finetune", ["--lora", "2", "--lora-layers", "heads"], "--lora-layers"),
        ("finetune", ["--trainable-blocks", "1"], "--trainable-blocks"),
        ("finetune", ["--classify", "--lora", "2", "--trainable-blocks", "1"], "--trainable-blocks"),
        ("finetune", ["--classify", "--dpo"], "--dpo"),
        ("chat", ["--checkpoint", "no-such-checkpoint.pt"], "no checkpoint at"),
        ("chat", ["--top-p", "1.5"], "--top-p"),
    ],
    ids=["finetune-missing-base", "finetune-no-steps", "finetune-lora-rank-0", "finetune-lora-layers-without-lora",
         "finetune-lora-layers-unknown", "finetune-trainable-blocks-without-classify", "finetune-classify-lora-blocks",
         "finetune-classify-dpo", "chat-missing-checkpoint", "chat-top-p"],
)
def test_bad_input_is_a_one_line_error(runner, module, args, message):
    res = runner(module, *args)
    skip_if_unfinished(res)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, f"expected exit status 2 (a usage error), got {res.returncode}:\n{res.stderr[-2000:]}"
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], f"expected one line naming {message!r}, got:\n{res.stderr}"
