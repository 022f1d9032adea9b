"""Exercise 17: save a training run and resume it bit for bit.

Oracle: the uninterrupted run itself. The trusted scenarios in ``harness/parts/resume_run.py``
train a tiny GPT with dropout, AdamW, a CPU ``GradScaler``, a learning rate set from the step and
batches drawn from torch's, Python's and numpy's global RNGs and a data cursor; run B stops,
saves with the learner's ``save_checkpoint``, scrambles every RNG, builds fresh objects from
another seed, loads with the learner's ``load_checkpoint`` and continues. Its losses and
parameters must equal run A's (``N + M`` steps without stopping) exactly (``torch.equal``).
Snapshots of every state taken right before the save and right after the load say which one was
not brought back. Other checks read the file with ``torch.load(weights_only=True)``, crash a save
halfway (an object in ``extra`` that cannot be pickled stops ``torch.save`` with the file already
opened) and ask for the documented errors.
"""

import torch
from gpt_oracle import random_config

from harness.compare import assert_true
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "17"


def config(gen):
    cfg = random_config(gen, context_length=n(gen, 4, 8), vocab_size=n(gen, 12, 40))
    cfg["n_layers"] = min(cfg["n_layers"], 2)
    cfg["drop_rate"] = round(0.1 + 0.3 * float(torch.rand(1, generator=gen)), 3)  # dropout: torch's RNG matters
    return cfg


def seed_of(gen):
    return n(gen, 0, 2**30)


# ----------------------------------------------------------------------------- what was not restored


def _first_unequal(saved: dict, loaded: dict) -> list[str]:
    return [k for k in saved if k not in loaded or not torch.equal(saved[k], loaded[k])]


def _optimizer_problem(saved: dict, loaded: dict) -> str:
    if not loaded and saved:
        return ("the optimizer state was not restored: after load_checkpoint AdamW has no state at all, so its moments "
                "(exp_avg, exp_avg_sq) and its step count start again from zero. Save optimizer.state_dict() and give "
                "it back with optimizer.load_state_dict(...)")
    wrong = []
    for key, state in saved.items():
        got = loaded.get(key, {})
        for name, value in state.items():
            other = got.get(name)
            same = (isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor) and torch.equal(value, other)) or value == other
            if not same:
                wrong.append(f"state[{key}]['{name}']")
    if not wrong:
        return ""
    return (f"the optimizer state was not restored: {len(wrong)} entries of AdamW's state differ from the saved ones "
            f"(e.g. {', '.join(wrong[:3])}), so its moments (exp_avg, exp_avg_sq) are not those of the run that was "
            "saved. Save optimizer.state_dict() and load it with optimizer.load_state_dict(...)")


def unrestored(out: dict, before: int) -> list[str]:
    """What ``load_checkpoint`` did not bring back, from the snapshots taken at the save and the load."""
    problems = []
    saved, loaded = out["saved"], out["loaded"]
    if out["returned_type"] != "dict":
        problems.append(f"load_checkpoint returned a {out['returned_type']}, expected the dict "
                        "{'step': ..., 'data_state': ..., 'extra': ...}")
    elif out["returned_step"] != before:
        problems.append(f"the step was not restored: load_checkpoint returned step {out['returned_step']!r}, but the "
                        f"checkpoint was saved after {before} steps (save_checkpoint(..., step={before})); the "
                        "learning-rate schedule resumes from the step it returns")
    cursor = out["saved_data"]["cursor"]
    if out["returned_type"] == "dict" and (not out["data_restored"] or out["returned_cursor"] != cursor):
        problems.append(f"the data position was not restored: load_checkpoint returned a data_state that is not the "
                        f"one saved ({{'cursor': {cursor}, 'generator': <a uint8 tensor>, 'source': 'tokens'}}), so the "
                        "resumed run reads other batches. Save data_state as given and return it")
    wrong = _first_unequal(saved["params"], loaded["params"])
    if wrong:
        problems.append(f"the model's parameters were not restored: {len(wrong)} of {len(saved['params'])} tensors "
                        f"differ from the saved ones after load_checkpoint (e.g. {', '.join(wrong[:3])}); save "
                        "model.state_dict() and load it with model.load_state_dict(...)")
    opt = _optimizer_problem(saved["optimizer"], loaded["optimizer"])
    if opt:
        problems.append(opt)
    if (saved["scale"], saved["growth_tracker"]) != (loaded["scale"], loaded["growth_tracker"]):
        problems.append(f"the GradScaler state was not restored: after load_checkpoint its scale is {loaded['scale']:g} "
                        f"(growth tracker {loaded['growth_tracker']}), saved {saved['scale']:g} "
                        f"(growth tracker {saved['growth_tracker']}); save scaler.state_dict() and load it with "
                        "scaler.load_state_dict(...)")
    if not torch.equal(saved["torch_rng"], loaded["torch_rng"]):
        problems.append("torch's random state was not restored: after the resume, dropout (and anything drawn with "
                        "torch.rand/randint) draws other numbers than the uninterrupted run; save torch.get_rng_state() "
                        "and give it back with torch.set_rng_state(...)")
    py_s, py_l = saved["python_rng"], loaded["python_rng"]
    if py_s["version"] != py_l["version"] or py_s["gauss"] != py_l["gauss"] or not torch.equal(py_s["internal"], py_l["internal"]):
        problems.append("Python's random state was not restored: random.randrange draws other numbers after the "
                        "resume; save random.getstate() and give it back with random.setstate(...) (its middle item "
                        "comes back from torch.load as a list: make it a tuple again)")
    np_s, np_l = saved["numpy_rng"], loaded["numpy_rng"]
    if not torch.equal(np_s["keys"], np_l["keys"]) or [np_s[k] for k in ("pos", "has_gauss", "cached")] != [np_l[k] for k in ("pos", "has_gauss", "cached")]:
        problems.append("numpy's random state was not restored: np.random draws other numbers after the resume; save "
                        "np.random.get_state() (its key array as a torch tensor) and give it back with "
                        "np.random.set_state(...)")
    return problems


def divergence(out: dict, before: int, after: int) -> str:
    """Where run B (save, load, continue) first leaves run A (no stop), or ''."""
    la, lb = out["a"]["losses"], out["b"]["losses"]
    diff_steps = [i for i in range(len(la)) if not torch.equal(la[i], lb[i])]
    pa, pb = out["a"]["params"], out["b"]["params"]
    diff_params = [k for k in pa if not torch.equal(pa[k], pb[k])]
    if not diff_steps and not diff_params:
        return ""
    parts = []
    if diff_steps:
        k = diff_steps[0]
        when = ("the first step after the resume" if k == before else
                f"{k - before} step{'s' if k - before > 1 else ''} after the first step after the resume" if k > before else "before the save")
        parts.append(f"the loss first differs at step {k} ({when}): {float(lb[k]):.9g}, uninterrupted {float(la[k]):.9g}")
        if k == before:
            parts.append("a difference at the very first resumed step means that the model, the data position or a "
                         "random state (dropout masks, sampled batches) was not what it was when the run was saved")
        elif k > before:
            parts.append("the first resumed step matches but a later one does not: the optimizer's state, the "
                         "step (learning rate) or the scaler was not what it was when the run was saved")
    if diff_params:
        k = diff_params[0]
        worst = float((pa[k].double() - pb[k].double()).abs().max())
        parts.append(f"after the last step, {len(diff_params)} of {len(pa)} parameter tensors differ (e.g. {k}, by up to {worst:.3g})")
    return "; ".join(parts)


def test_resume_is_bit_for_bit(impl, gen):
    cfg = config(gen)
    tokens = torch.randint(0, cfg["vocab_size"], (n(gen, 60, 120),), generator=gen)
    before, after, batch = n(gen, 2, 4), n(gen, 2, 4), n(gen, 2, 4)
    out = impl.scenario("resume_run.bit_for_bit", cfg, tokens, seed_of(gen), batch, before, after).out
    problems = unrestored(out, before)
    diverged = divergence(out, before, after)
    if not problems and not diverged:
        return
    head = (f"A run that trains {before} steps, saves with save_checkpoint, builds a fresh model, AdamW and GradScaler "
            f"(other weights, every random generator reseeded), loads with load_checkpoint and trains {after} more steps "
            f"should equal, bit for bit, a run of {before + after} steps that never stopped (tiny GPT with "
            f"drop_rate={cfg['drop_rate']}, batches drawn with torch's, Python's and numpy's random generators from a "
            "data cursor).")
    body = f"\nIt does not: {diverged}." if diverged else "\nThe runs end alike, but not everything was brought back."
    if problems:
        body += "\nWhat load_checkpoint did not bring back:\n" + "\n".join(f"  - {p}." for p in problems)
        body += "\nThis looks like: " + "; ".join(p.split(":")[0] for p in problems) + "."
    else:
        body += ("\nEvery state checked (model, optimizer, scaler, step, data_state, torch/Python/numpy random states) "
                 "came back as saved; look for something else your load_checkpoint changes.")
    raise Mismatch(head + body)


# ----------------------------------------------------------------------------- the file and what load returns


def test_load_returns_step_data_state_and_extra_as_saved(impl, gen):
    cfg = config(gen)
    step = n(gen, 1, 10_000)
    data_state = {"position": n(gen, 0, 10**6), "shard": "train-00", "generator": torch.randint(0, 256, (16,), generator=gen, dtype=torch.uint8)}
    extra = {"cfg": cfg, "tokenizer": "gpt2", "history": [float(x) for x in torch.rand(3, generator=gen)], "pair": (n(gen, 0, 9), "x")}
    out = impl.scenario("resume_run.round_trip", cfg, seed_of(gen), step, data_state, extra).out
    wo = out["weights_only"]
    if not wo["ok"]:
        raise Mismatch("the checkpoint does not load with torch.load(path, weights_only=True): "
                       f"{wo['error']}\nStore only tensors, numbers, strings, lists, tuples and dicts: numpy's state "
                       "as a tensor (torch.from_numpy(keys.astype(np.int64))), no numpy arrays or other objects.")
    assert_true(wo["type"] == "dict", f"torch.load(path, weights_only=True) of the checkpoint gives a {wo['type']}, "
                                      "expected the dict save_checkpoint wrote")
    returned = out["returned"]
    assert_true(isinstance(returned, dict) and {"step", "data_state", "extra"} <= set(returned),
                f"load_checkpoint should return {{'step': ..., 'data_state': ..., 'extra': ...}}, got "
                f"{type(returned).__name__}{' with keys ' + str(sorted(returned)) if isinstance(returned, dict) else ''}")
    assert_true(type(returned["step"]) is int and returned["step"] == step,
                f"load_checkpoint returned step {returned['step']!r} ({type(returned['step']).__name__}), saved with "
                f"step={step}: return it as the int that was saved")
    got = returned["data_state"]
    same = (isinstance(got, dict) and set(got) == set(data_state)
            and got["position"] == data_state["position"] and got["shard"] == data_state["shard"]
            and isinstance(got["generator"], torch.Tensor) and torch.equal(got["generator"], data_state["generator"]))
    assert_true(same, f"load_checkpoint returned data_state {got!r}, saved {data_state!r}: return the dict that was "
                      "saved (its tensors too)")
    assert_true(returned["extra"] == extra, f"load_checkpoint returned extra {returned['extra']!r}, saved {extra!r}")
    wrong = _first_unequal(out["saved"], out["loaded"])
    assert_true(not wrong, f"after load_checkpoint into a fresh model, {len(wrong)} parameter tensors differ from the "
                           f"saved model's (e.g. {', '.join(wrong[:3])})")


def test_scaler_state_is_restored(impl, gen):
    cfg = config(gen)
    steps = n(gen, 3, 6)
    out = impl.scenario("resume_run.scaler_state", cfg, seed_of(gen), steps).out
    saved, loaded = out["saved"], out["loaded"]
    assert_true(saved == loaded,
                f"a GradScaler that trained {steps} steps (scale {saved['scale']:g}, growth tracker "
                f"{saved['growth_tracker']}) was saved and loaded into a fresh one (scale {out['fresh_scale']:g}): "
                f"it has scale {loaded['scale']:g}, growth tracker {loaded['growth_tracker']}. Save scaler.state_dict() "
                "and give it to scaler.load_state_dict(...) when a scaler is passed to load_checkpoint.")


def test_parent_directories_are_created(impl, gen):
    cfg = config(gen)
    parts = [f"run-{n(gen, 0, 999)}", "checkpoints", f"step-{n(gen, 0, 99)}"]
    out = impl.scenario("resume_run.parent_directories", cfg, seed_of(gen), parts).out
    where = "/".join(parts) + "/ckpt.pt"
    if out["save"]["raised"] is not None:
        raise Mismatch(f"save_checkpoint to {where}, whose directories do not exist yet, raised "
                       f"{out['save']['raised']}: {out['save']['message']}\nCreate them first: "
                       "Path(path).parent.mkdir(parents=True, exist_ok=True).")
    assert_true(out["exists"], f"save_checkpoint to {where} returned, but there is no file at that path")
    assert_true(out["step"] == 3, f"the checkpoint saved at {where} with step=3 loads with step {out['step']!r}")


def test_a_crash_while_saving_keeps_the_previous_checkpoint(impl, gen):
    cfg = config(gen)
    first, second = n(gen, 1, 50), n(gen, 51, 100)
    out = impl.scenario("resume_run.crash_while_saving", cfg, seed_of(gen), first, second).out
    if out["crash"]["raised"] is None:
        raise Mismatch("save_checkpoint(..., extra={'crash': <an object that cannot be pickled>}) returned without an "
                       "error: torch.save should have failed on it (do not drop or catch what cannot be saved)")
    if out["load"]["raised"] is not None or out["step"] != first or not out["same_params"]:
        found = (f"load_checkpoint raised {out['load']['raised']}: {out['load']['message'][:300]}" if out["load"]["raised"]
                 else f"it holds step {out['step']!r}" + ("" if out["same_params"] else " and other parameters"))
        raise Mismatch(
            f"The write is not atomic: a checkpoint saved at step {first}, then a second save to the same path that "
            f"died halfway through writing (torch.save raised {out['crash']['raised']}, as a killed run would stop), "
            f"and the checkpoint at the path is no longer the first one: {found}.\n"
            "Write to a temporary file next to it (path + '.tmp') and only then os.replace(tmp, path): a crash while "
            f"saving must leave the previous checkpoint whole. Files in the directory: {out['files']}")


def test_missing_file_raises_file_not_found(impl, gen):
    out = impl.scenario("resume_run.errors", config(gen), seed_of(gen)).out
    got, path = out["missing"], out["missing_path"]
    assert_true(got["raised"] is not None and "FileNotFoundError" in got["types"],
                f"load_checkpoint('{path}') of a file that does not exist "
                + (f"raised {got['raised']}: {got['message'][:300]}" if got["raised"] else "returned")
                + "; expected FileNotFoundError")
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    assert_true(name in got["message"], f"load_checkpoint of a missing file raised FileNotFoundError({got['message']!r}): "
                                        f"the message should name the path ({path})")


def test_not_a_checkpoint_raises_value_error(impl, gen):
    out = impl.scenario("resume_run.errors", config(gen), seed_of(gen)).out
    cases = [("plain_dict", "a file written with torch.save({'a': 1}, path)"),
             ("tensor", "a file written with torch.save(torch.zeros(3), path)"),
             ("no_scaler", "a checkpoint saved without a scaler, loaded with scaler=GradScaler(...)")]
    for key, what in cases:
        got = out[key]
        assert_true(got["raised"] is not None and "ValueError" in got["types"],
                    f"load_checkpoint of {what} "
                    + (f"raised {got['raised']}: {got['message'][:300]}" if got["raised"] else "returned without an error")
                    + "; expected ValueError (check that the file holds the dict save_checkpoint writes, with its "
                      "format tag, and that it has a scaler state when a scaler is given)")
