"""Trusted scenarios for exercise 17 (save a run and resume it bit for bit).

A tiny training run that depends on every source of state a resume must bring back: a GPT
(``parts/model.py``) with dropout in train mode (torch's global RNG), AdamW (its moments), a
``GradScaler("cpu")`` (its scale grows every ``GROWTH_INTERVAL`` steps), a learning rate set from
the step, and batches whose rows start at a data cursor plus offsets drawn from numpy's global RNG
and Python's ``random``, with tokens replaced from torch's global RNG and rows shuffled by a
private generator (whose state travels in ``data_state``).

Each scenario calls the learner's ``resume.save_checkpoint`` / ``resume.load_checkpoint`` and
returns plain data: parameters, losses, and snapshots of every state taken right before the save
and right after the load, so that the grader can say which state was not brought back. The global
random states of the process are put back as they were when a scenario ends.
"""

from __future__ import annotations

import math
import random
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.worker.parts import load as load_part

_model = load_part("model")

GROWTH_INTERVAL = 2  # the scaler doubles its scale every 2 steps without inf/NaN gradients
SCRAMBLE = 7919  # added to the seed for everything built after the save


# ----------------------------------------------------------------------------- the training run


def lr_at(step: int) -> float:
    """The trusted learning-rate schedule: warmup over 2 steps, then a cosine-like decay."""
    return 3e-3 * min(1.0, (step + 1) / 2) * (0.5 + 0.5 * math.cos(0.3 * step))


class Data:
    """Batches of ``(x, y)`` windows from ``tokens``; its position is ``cursor`` and ``gen``."""

    def __init__(self, tokens: torch.Tensor, batch: int, ctx: int, vocab: int, seed: int):
        self.tokens, self.batch, self.ctx, self.vocab = tokens, batch, ctx, vocab
        self.cursor = 0
        self.gen = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        span = len(self.tokens) - self.ctx - 1
        jitter = random.randrange(5)  # Python's random
        offsets = torch.from_numpy(np.random.randint(0, 7, size=self.batch).astype(np.int64))  # numpy's
        starts = (self.cursor + jitter + offsets * 3) % span
        rows = torch.randperm(self.batch, generator=self.gen)  # the data's own generator
        starts = starts[rows]
        x = torch.stack([self.tokens[s : s + self.ctx] for s in starts.tolist()])
        y = torch.stack([self.tokens[s + 1 : s + self.ctx + 1] for s in starts.tolist()])
        noise = torch.rand(x.shape) < 0.15  # torch's global RNG
        x = torch.where(noise, torch.randint(0, self.vocab, x.shape), x)
        self.cursor = (self.cursor + self.batch * self.ctx // 2 + 1) % span
        return x, y

    def state(self) -> dict:
        return {"cursor": self.cursor, "generator": self.gen.get_state(), "source": "tokens"}

    def restore(self, state) -> bool:
        """Put back a ``state()``; False (and nothing changed) when it is not one."""
        try:
            cursor, gen_state = int(state["cursor"]), state["generator"]
            self.gen.set_state(gen_state)
        except Exception:
            return False
        self.cursor = cursor
        return True


def build(cfg: dict, seed: int, init_scale: float):
    """Model, AdamW and GradScaler, all from ``seed`` (which also seeds the global RNGs)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    model = _model.GPTModel(cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_at(0), weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=GROWTH_INTERVAL)
    return model, optimizer, scaler


def train_step(model, optimizer, scaler, x, y, step: int) -> torch.Tensor:
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step)
    logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def params(model) -> dict:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def snapshot(model, optimizer, scaler) -> dict:
    """Every state a resume must bring back, as plain data."""
    opt = {}
    for key, state in optimizer.state_dict()["state"].items():
        opt[str(key)] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else float(v)) for k, v in state.items()}
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "params": params(model),
        "optimizer": opt,
        "scale": float(scaler.get_scale()),
        "growth_tracker": int(scaler.state_dict()["_growth_tracker"]),
        "torch_rng": torch.get_rng_state(),
        "python_rng": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy_rng": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached": float(cached)},
    }


@contextmanager
def _sandbox():
    """A temporary directory, and the process's global random states put back afterwards."""
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    where = Path(tempfile.mkdtemp(prefix="kata-resume-"))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])


def _raised(call) -> dict:
    """``{"raised": None}`` when ``call()`` returns, else the exception's type names and message.
    A stub's NotImplementedError passes through, so an unstarted exercise reads as not started."""
    try:
        call()
    except NotImplementedError:
        raise
    except Exception as e:
        names = [c.__name__ for c in type(e).__mro__]
        return {"raised": type(e).__name__, "types": names, "message": str(e)}
    return {"raised": None}


# ----------------------------------------------------------------------------- scenarios


def bit_for_bit(learner, cfg, tokens, seed, batch, before, after):
    """Run A: ``before + after`` steps in one go. Run B: ``before`` steps, ``save_checkpoint``,
    every RNG reseeded, a fresh model, optimizer, scaler and data stream built from another seed,
    ``load_checkpoint``, then ``after`` more steps from the returned step and data state."""
    save, load = learner("resume.save_checkpoint"), learner("resume.load_checkpoint")
    ctx, vocab = cfg["context_length"], cfg["vocab_size"]
    with _sandbox() as tmp:
        model, opt, scaler = build(cfg, seed, 2.0**10)
        data = Data(tokens, batch, ctx, vocab, seed)
        losses_a = []
        for step in range(before + after):
            losses_a.append(train_step(model, opt, scaler, *data.next(), step))
        run_a = {"losses": torch.stack(losses_a), "params": params(model)}

        model, opt, scaler = build(cfg, seed, 2.0**10)
        data = Data(tokens, batch, ctx, vocab, seed)
        losses_b = []
        for step in range(before):
            losses_b.append(train_step(model, opt, scaler, *data.next(), step))
        saved = snapshot(model, opt, scaler)
        saved_data = data.state()
        path = tmp / "run" / "ckpt.pt"
        save(path, model=model, optimizer=opt, step=before, scaler=scaler, data_state=data.state(), extra={"cfg": dict(cfg)})

        model, opt, scaler = build(cfg, seed + SCRAMBLE, 2.0**3)  # other weights, other RNG states
        data = Data(tokens, batch, ctx, vocab, seed + SCRAMBLE)
        returned = load(path, model=model, optimizer=opt, scaler=scaler)
        loaded = snapshot(model, opt, scaler)
        ok = isinstance(returned, dict)
        step = returned.get("step") if ok else None
        data_ok = data.restore(returned.get("data_state")) if ok else False
        start = step if type(step) is int else before
        for i in range(after):
            losses_b.append(train_step(model, opt, scaler, *data.next(), start + i))
        run_b = {"losses": torch.stack(losses_b), "params": params(model)}
    return {
        "a": run_a, "b": run_b, "saved": saved, "loaded": loaded,
        "returned_type": type(returned).__name__,
        "returned_step": step if type(step) in (int, float, bool) else repr(step)[:200],
        "data_restored": data_ok, "saved_data": saved_data,
        "returned_cursor": _cursor(returned.get("data_state")) if ok else None,
    }


def _cursor(state):
    try:
        return int(state["cursor"])
    except Exception:
        return None


def round_trip(learner, cfg, seed, step, data_state, extra):
    """Save after two steps, then: what ``torch.load(path, weights_only=True)`` makes of the file
    (the top-level keys, or the error), and what ``load_checkpoint`` returns into a fresh model."""
    save, load = learner("resume.save_checkpoint"), learner("resume.load_checkpoint")
    with _sandbox() as tmp:
        model, opt, scaler = build(cfg, seed, 2.0**8)
        tokens = torch.randint(0, cfg["vocab_size"], (64,))
        data = Data(tokens, 2, cfg["context_length"], cfg["vocab_size"], seed)
        for s in range(2):
            train_step(model, opt, scaler, *data.next(), s)
        saved = params(model)
        path = tmp / "ckpt.pt"
        save(path, model=model, optimizer=opt, step=step, scaler=scaler, data_state=data_state, extra=extra)
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            weights_only = {"ok": True, "type": type(raw).__name__,
                            "keys": sorted(str(k) for k in raw) if isinstance(raw, dict) else []}
        except Exception as e:
            return {"weights_only": {"ok": False, "error": _short_error(e)}}
        model, opt, scaler = build(cfg, seed + SCRAMBLE, 2.0**3)
        returned = load(path, model=model, optimizer=opt, scaler=scaler)
        return {"weights_only": weights_only, "returned": returned, "saved": saved, "loaded": params(model)}


def scaler_state(learner, cfg, seed, steps):
    """Train ``steps`` steps (the scale doubles every GROWTH_INTERVAL), save, load into a fresh
    scaler built with another initial scale: the scales and growth trackers before and after."""
    save, load = learner("resume.save_checkpoint"), learner("resume.load_checkpoint")
    with _sandbox() as tmp:
        model, opt, scaler = build(cfg, seed, 2.0**4)
        tokens = torch.randint(0, cfg["vocab_size"], (64,))
        data = Data(tokens, 2, cfg["context_length"], cfg["vocab_size"], seed)
        for s in range(steps):
            train_step(model, opt, scaler, *data.next(), s)
        before = scaler.state_dict()
        path = tmp / "ckpt.pt"
        save(path, model=model, optimizer=opt, step=steps, scaler=scaler)
        model, opt, fresh = build(cfg, seed + SCRAMBLE, 2.0**12)
        fresh_scale = float(fresh.get_scale())
        load(path, model=model, optimizer=opt, scaler=fresh)
        after = fresh.state_dict()
    return {"saved": {"scale": float(before["scale"]), "growth_tracker": int(before["_growth_tracker"])},
            "fresh_scale": fresh_scale,
            "loaded": {"scale": float(after["scale"]), "growth_tracker": int(after["_growth_tracker"])}}


def parent_directories(learner, cfg, seed, parts):
    """``save_checkpoint`` to ``tmp/<parts...>/ckpt.pt`` whose directories do not exist yet."""
    save, load = learner("resume.save_checkpoint"), learner("resume.load_checkpoint")
    with _sandbox() as tmp:
        model, opt, _ = build(cfg, seed, 2.0**8)
        path = tmp.joinpath(*parts, "ckpt.pt")
        outcome = _raised(lambda: save(str(path), model=model, optimizer=opt, step=3))
        if outcome["raised"] is not None:
            return {"save": outcome, "exists": False}
        exists = path.is_file()
        returned = load(str(path), model=_model.GPTModel(cfg)) if exists else None
        return {"save": outcome, "exists": exists, "step": returned.get("step") if isinstance(returned, dict) else None}


def _short_error(e: Exception) -> str:
    """The part of a ``torch.load`` error that says what it refused (its advice is about loading
    untrusted files with weights_only=False, which is not the fix here)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    at = text.find("WeightsUnpickler error")
    return f"{type(e).__name__}: {(text[at:] if at >= 0 else text).strip().split(chr(10) * 2)[0][:500]}"


class _Unpicklable:
    """What a crash halfway through ``torch.save`` looks like: pickling stops here, with the file
    already opened and partly written."""

    def __reduce_ex__(self, protocol):
        raise RuntimeError("simulated crash while writing the checkpoint")


def crash_while_saving(learner, cfg, seed, first_step, second_step):
    """A good save at ``first_step``; a second save to the same path at ``second_step`` that dies
    halfway through writing; then what ``load_checkpoint`` (and ``torch.load``) find at the path."""
    save, load = learner("resume.save_checkpoint"), learner("resume.load_checkpoint")
    with _sandbox() as tmp:
        model, opt, _ = build(cfg, seed, 2.0**8)
        path = tmp / "ckpt.pt"
        save(path, model=model, optimizer=opt, step=first_step, extra={"which": "first"})
        first = params(model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        crash = _raised(lambda: save(path, model=model, optimizer=opt, step=second_step,
                                     extra={"which": "second", "crash": _Unpicklable()}))
        files = sorted(p.name for p in tmp.iterdir())
        try:
            torch.load(path, map_location="cpu", weights_only=True)
            readable = ""
        except Exception as e:
            readable = f"{type(e).__name__}: {str(e)[:300]}"
        fresh = _model.GPTModel(cfg)
        got = {}
        after = _raised(lambda: got.setdefault("returned", load(path, model=fresh)))
        returned = got.get("returned")
        return {"crash": crash, "files": files, "readable": readable, "load": after,
                "step": returned.get("step") if isinstance(returned, dict) else None,
                "same_params": all(torch.equal(first[k], v) for k, v in params(fresh).items())}


def errors(learner, cfg, seed):
    """What ``load_checkpoint`` raises for a missing file, files that are not checkpoints, and a
    checkpoint without a scaler state when a scaler is given."""
    save, load = learner("resume.save_checkpoint"), learner("resume.load_checkpoint")
    with _sandbox() as tmp:
        model, opt, scaler = build(cfg, seed, 2.0**8)
        missing = tmp / "nowhere" / f"ckpt-{seed}.pt"
        out = {"missing_path": str(missing), "missing": _raised(lambda: load(missing, model=model))}
        plain_dict = tmp / "plain.pt"
        torch.save({"a": 1}, plain_dict)
        out["plain_dict"] = _raised(lambda: load(plain_dict, model=model, optimizer=opt))
        bare = tmp / "tensor.pt"
        torch.save(torch.zeros(3), bare)
        out["tensor"] = _raised(lambda: load(bare, model=model, optimizer=opt))
        no_scaler = tmp / "no-scaler.pt"
        save(no_scaler, model=model, optimizer=opt, step=1)
        out["no_scaler"] = _raised(lambda: load(no_scaler, model=model, optimizer=opt, scaler=scaler))
        return out
