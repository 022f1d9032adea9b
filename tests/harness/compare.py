"""Comparisons that say what is wrong: which output, where, by how much, and which known
mistake the numbers fit.

``assert_close(actual, expected, name, mistakes=...)`` raises ``Mismatch``. ``mistakes`` is a list
of ``Mistake``: a wrong variant's output on the same inputs; when the learner's output matches
it, the message names the mistake and how to fix it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from .failures import LOOKS_LIKE, LearnerError, Mismatch


@dataclass
class Mistake:
    name: str
    fix: str
    output: torch.Tensor | Callable[[], torch.Tensor]

    def distance(self, actual: torch.Tensor) -> float:
        """Largest difference between the learner's output and this mistake's (inf if unlike)."""
        out = self.output() if callable(self.output) else self.output
        if out.shape != actual.shape:
            return float("inf")
        out, act = out.double(), actual.double()
        if not bool((torch.isnan(out) == torch.isnan(act)).all()):
            return float("inf")
        keep = ~torch.isnan(out)
        if not bool(keep.any()):  # NaN everywhere: many mistakes give it, so it names none
            return float("inf")
        a, o = act[keep], out[keep]
        same_inf = torch.isinf(a) & torch.isinf(o) & (a == o)
        return float((a - o).abs().masked_fill(same_inf, 0.0).max())

    def matches(self, actual: torch.Tensor, rtol: float, atol: float) -> bool:
        out = self.output() if callable(self.output) else self.output
        if out.shape != actual.shape:
            return False
        out, act = out.double(), actual.double()
        if not bool((torch.isnan(out) == torch.isnan(act)).all()):
            return False
        keep = ~torch.isnan(out)
        if not bool(keep.any()):  # NaN everywhere: many mistakes give it, so it names none
            return False
        return bool(torch.allclose(act[keep], out[keep], rtol=rtol, atol=atol, equal_nan=False))


def diagnose(actual: torch.Tensor, expected: torch.Tensor, mistakes: list[Mistake], rtol: float, atol: float) -> Mistake | None:
    """The known mistake whose output the learner's is closest to, among those it matches and
    that the inputs can tell apart from the correct output; none when two mistakes of different
    names both match (the inputs cannot tell them apart, so the evidence fits neither alone)."""
    best, best_d, names = None, float("inf"), set()
    for m in mistakes:
        try:
            if not m.matches(actual, rtol, atol) or m.matches(expected, rtol, atol):
                continue
            d = m.distance(actual)
        except (RuntimeError, ValueError, TypeError):
            continue
        names.add(m.name)
        if d < best_d:
            best, best_d = m, d
    return best if len(names) == 1 else None


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    name: str,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    check_dtype: bool = True,
    oracle: str = "the reference",
    mistakes: list[Mistake] | None = None,
    context: str = "",
) -> None:
    """Raise ``Mismatch`` unless ``actual`` equals ``expected`` within ``atol + rtol * |expected|``."""
    suffix = f"\n{context}" if context else ""
    if actual.shape != expected.shape:
        raise Mismatch(
            f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)} (as {oracle} returns){suffix}"
        )
    if check_dtype and actual.dtype != expected.dtype:
        raise Mismatch(f"{name} has dtype {actual.dtype}, expected {expected.dtype}: keep the input's dtype{suffix}")
    act, exp = actual.double(), expected.double()
    bad_nan = torch.isnan(act) & ~torch.isnan(exp)
    bad_inf = torch.isinf(act) & ~torch.isinf(exp)
    if bool(bad_nan.any() | bad_inf.any()):
        where = (bad_nan | bad_inf).nonzero()[0].tolist()
        kind = "NaN" if bool(bad_nan.any()) else "inf"
        count = int((bad_nan | bad_inf).sum())
        m = diagnose(actual, expected, mistakes or [], rtol, atol)
        hint = f"\n{LOOKS_LIKE}{m.name}. {m.fix}" if m else ""
        raise Mismatch(
            f"{name} has {count} {kind} value(s) where {oracle} is finite, the first at index {tuple(where)}; "
            f"expected {_fmt(float(exp[tuple(where)]))}{hint}{suffix}"
        )
    missing_nan = torch.isnan(exp) & ~torch.isnan(act)
    if bool(missing_nan.any()):
        where = missing_nan.nonzero()[0].tolist()
        raise Mismatch(
            f"{name} has {int(missing_nan.sum())} value(s) where {oracle} gives NaN, the first at index {tuple(where)}: "
            f"got {_fmt(float(act[tuple(where)]))}, expected NaN{suffix}"
        )
    both_nan = torch.isnan(act) & torch.isnan(exp)
    diff = (act - exp).abs().masked_fill(both_nan, 0.0)
    same_inf = torch.isinf(act) & torch.isinf(exp) & (act == exp)
    diff = diff.masked_fill(same_inf, 0.0)
    limit = atol + rtol * exp.abs().masked_fill(torch.isinf(exp), 0.0)
    wrong = diff > limit
    if not bool(wrong.any()):
        return
    worst = tuple(int(i) for i in torch.unravel_index(torch.argmax(diff.masked_fill(~wrong, -1.0)), diff.shape))
    count, total = int(wrong.sum()), wrong.numel()
    exact = not (expected.dtype.is_floating_point or expected.dtype.is_complex)
    tolerance = "" if exact else f" (tolerance: atol={atol:g}, rtol={rtol:g})"
    if total == 1:  # a scalar: no element counts, no index
        message = f"{name} is {_fmt(float(act[worst]))}, expected {_fmt(float(exp[worst]))} (as {oracle} gives){tolerance}"
    else:
        message = (
            f"{name} differs from {oracle} at {count} of {total} elements ({100.0 * count / total:.3g}%); "
            f"the largest difference is at index {worst}: got {_fmt(float(act[worst]))}, "
            f"expected {_fmt(float(exp[worst]))}{tolerance}"
        )
    m = diagnose(actual, expected, mistakes or [], max(rtol, 1e-3), max(atol, 1e-4))
    if m is not None:
        message += f"\n{LOOKS_LIKE}{m.name}. {m.fix}"
    raise Mismatch(message + suffix)


def assert_true(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def autograd_through(oracle: Callable, x: torch.Tensor, params: dict, grad_output: torch.Tensor):
    """Backward through a functional oracle ``oracle(x, params)`` with ``grad_output``: its output
    and the gradients of ``x`` and of each parameter, for ``assert_gradients_close``."""
    xx = x.clone().requires_grad_(True)
    pp = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out = oracle(xx, pp)
    out.backward(grad_output)
    return out.detach(), xx.grad, {k: p.grad for k, p in pp.items()}


def assert_gradients_close(res, x_grad: torch.Tensor, param_grads: dict, atol: float = 1e-4, rtol: float = 1e-3) -> None:
    """The learner's gradients (``res``: a module call with ``grad_wrt=(0,)``) against autograd's."""
    oracle = "autograd through the oracle"
    assert_close(res.grad(0), x_grad, "the gradient with respect to x", oracle=oracle, atol=atol, rtol=rtol)
    for name, g in param_grads.items():
        assert_close(res.param_grads[name], g, f"the gradient with respect to {name}", oracle=oracle, atol=atol, rtol=rtol)


def assert_parameter_shapes(got: dict, want: dict, what: str, shapes_what: str, *, tie: bool | None = None,
                            explain: Callable[[list[str], list[str]], str] | None = None) -> None:
    """A module's parameters (``got``, name -> shape) are exactly ``want``'s, each of its shape.
    ``what`` names the module in the message about names, ``shapes_what`` in the one about shapes.
    With ``tie``, a head tied or untied against the config is named; ``explain(missing, extra)``
    names other known mistakes ("" for none)."""
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        named = ""
        if tie and extra == ["out_head.weight"] and not missing:
            named = ("the output head is not tied to the token embedding. With tie_weights, share the parameter: "
                     "self.out_head.weight = self.tok_emb.weight (named_parameters() then lists it once).")
        elif tie is False and missing == ["out_head.weight"] and not extra:
            named = "the output head is tied although tie_weights is False. Tie it only when cfg.tie_weights is set."
        elif not extra and (shared := _one_module_repeated(want, missing)):
            named = (f"one module object repeated through {shared} (nn.Sequential(*[Block(cfg)] * n), or the same "
                     "instance appended n times): every layer shares its weights, so named_parameters() lists them once, "
                     "under 0. Build a new one for each layer: [Block(cfg) for _ in range(n)].")
        elif explain is not None:
            named = explain(missing, extra)
        raise Mismatch(f"{what}'s parameters differ from the docstring's: "
                       + (f"missing {', '.join(missing[:6])}" if missing else "")
                       + ("; " if missing and extra else "") + (f"unexpected {', '.join(extra[:6])}" if extra else "")
                       + (f"\n{LOOKS_LIKE}{named}" if named else ""))
    wrong = [f"{k} is {got[k]}, expected {want[k]}" for k in want if got[k] != want[k]]
    assert_true(not wrong, f"{shapes_what}: " + "; ".join(wrong[:4]))


def _one_module_repeated(want, missing) -> str:
    """The list (``trf_blocks``) whose entries 1, 2, ... are missing whole while entry 0 is there:
    what one module put in a list n times gives (its parameters are listed once, under 0); "" else."""
    for prefix in sorted({re.match(r"(.*?\.)\d+\.", k).group(1) for k in want if re.match(r".*?\.\d+\.", k)}):
        entries = {}
        for k in want:
            m = re.match(re.escape(prefix) + r"(\d+)\.(.*)", k)
            if m:
                entries.setdefault(int(m.group(1)), set()).add(k)
        later = set().union(*(keys for i, keys in entries.items() if i > 0)) if len(entries) > 1 else set()
        if later and set(missing) == later and not entries.get(0, set()) & set(missing):
            return prefix.rstrip(".")
    return ""


def expect_value_error(call: Callable, what: str, needles=(), why: str = "", missing: str = "") -> None:
    """``call()`` (an ``impl`` call) must raise a ValueError whose message gives each of
    ``needles`` (numbers match whole); ``why`` ends each failure (": because ..."), ``missing``
    follows a message that lacks a needle."""
    try:
        res = call()
    except LearnerError as e:
        if e.kind == "forbidden":
            raise  # that message says it all
        if e.kind == "bad_output":  # it returned, with something the grader cannot read
            raise Mismatch(f"{what} did not raise; expected a ValueError{why}") from None
        if not e.message.startswith("ValueError"):
            raise Mismatch(f"{what} raised {e.message.split(':')[0]}; expected a ValueError{why}\n{e.message}") from None
        lacking = [str(x) for x in needles if not re.search(rf"(?<![\d-]){re.escape(str(x))}(?!\d)", e.message)]
        if lacking:
            raise Mismatch(f"{what} raised a ValueError whose message does not name {', '.join(lacking)}: {e.message}{why}"
                           f"{missing}") from None
        return
    out = getattr(res, "out", res)  # an impl call's Result, or what a helper made of it
    shown = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else repr(out)
    raise Mismatch(f"{what} did not raise (it returned {shown[:80] + '…' if len(shown) > 80 else shown}); expected a ValueError{why}")


STARTED = {"below": "one still running, or ended and not waited for", "orphans": "one left to the grader (a double fork)",
           "reaped": "one it waited for", "sigchld_ignored": "SIGCHLD ignored, so that ended ones leave no trace"}


def check_resources(resources: dict | None, what: str, scale: str, growth: int) -> None:
    """The verdict on what a measured scenario (``impl.scenario(..., measure=True)``) used, from
    the numbers the kernel gave the process that started the worker (``Runner.probe``), never
    from the worker itself: no process started since the worker was forked (a double-forked
    grandchild, a background process, one already waited for), and a peak resident memory at most
    ``growth`` bytes above what it held at the start (the tree's import, its threads and NumPy
    included). Threads are not a verdict of their own (NumPy starts some): what they hold is in
    the peak. ``scale`` says what the cheap way costs; ``growth`` is a fraction of it, large
    enough for the tiled way's inputs, outputs, tiles and the worker's own costs on any machine
    (no timing is involved).

    Where nothing outside the worker can read these (``--in-process``; macOS and Windows, where
    ``resources["source"]`` is None) the check has only the scenario's own numbers, which a
    hostile tree can change: weaker, and said so in ``tests/harness/__init__.py``."""
    if not resources or resources.get("source") is None:
        why = (resources or {}).get("why", "")
        if "did not answer" in why:
            raise Mismatch(f"{what}: the grader could not measure this check's process ({why})")
        return
    if not resources.get("readable"):
        raise Mismatch(f"{what}: the grader could not read this check's process from outside it")
    found = resources.get("processes", {})
    if resources.get("started"):
        how = "; ".join(words for key, words in STARTED.items() if found.get(key))
        raise Mismatch(f"{what} started another process ({how}): compute attention in this one, tile by tile (the "
                       "memory of another process is out of this check's sight, so the check cannot pass on it)")
    peak = resources.get("peak_growth")
    if peak is None:
        raise Mismatch(f"{what}: the grader could not reset this check's peak memory, so it cannot be measured")
    if peak > growth:
        threads = resources.get("threads_started") or 0
        raise Mismatch(f"{what}: the process's peak resident memory rose by {peak / 2**20:.1f} MiB during the check"
                       + (f", and it started {threads} thread(s)" if threads > 0 else "") + " "
                       f"(allowed: {growth / 2**20:.0f} MiB; {scale}). Memory made outside PyTorch (NumPy, lists), "
                       "on another thread or at import counts too: compute one block_q x block_k tile at a time.")


# ------------------------------------------------------------ naming mistakes of 19-24, and the softmax's axis (issue 25)


def softmax_axis_mistakes(variant: Callable[[int | None, bool], torch.Tensor], sizes: tuple[int, ...], right: int, over: str,
                          fix: str) -> list[Mistake]:
    """The softmax taken over a wrong axis, for a computation whose softmax normalises a tensor of
    shape ``sizes`` over the axis ``right``: ``variant(axis, zeros)`` computes the output with the
    softmax over ``axis`` instead (None: over every element at once), where a slice of -inf only
    gives zeros (the course's softmax) or, with ``zeros`` False, NaN (``torch.softmax``). Every
    wrong axis gets the one name "softmax over the wrong axis", so that axes whose outputs coincide
    do not make the name ambiguous; axes of size 1 coincide and give one. ``over`` says what the
    right axis holds ("the keys"), ``fix`` how to take it."""
    right = right % len(sizes)
    out, seen_one = [], False
    for axis, size in enumerate(sizes):
        if axis == right or (size == 1 and seen_one):
            continue
        seen_one = seen_one or size == 1
        where = f"an axis of size 1 (dim={axis}), so every weight is 1" if size == 1 else f"dim={axis} (of size {size})"
        for zeros in (True, False):
            out.append(Mistake("softmax over the wrong axis", f"The output is what a softmax over {where} gives, not one over "
                               f"{over}: {fix}", lambda axis=axis, zeros=zeros: variant(axis, zeros)))
    if sum(s > 1 for i, s in enumerate(sizes) if i != right):
        for zeros in (True, False):
            out.append(Mistake("softmax over the wrong axis: over every element at once",
                               f"The output is what one softmax over the whole tensor gives, not one over {over}: {fix}",
                               lambda zeros=zeros: variant(None, zeros)))
    return out


def softmax_over(x: torch.Tensor, axis: int | None, zeros: bool = True) -> torch.Tensor:
    """``torch.softmax`` over ``axis``, or over every element at once with None; an all -inf slice
    gives zeros, or with ``zeros`` False NaN, as ``torch.softmax`` does."""
    out = torch.softmax(x.flatten(), 0).view_as(x) if axis is None else torch.softmax(x, axis)
    return torch.nan_to_num(out) if zeros else out


@dataclass
class Alone(Mistake):
    """A mistake that fits only where no mistake of another name in its ``group`` fits the output
    about as closely (within twice its distance): where the evidence fits two, none is named."""
    group: list = field(default_factory=list, repr=False)

    def matches(self, actual: torch.Tensor, rtol: float, atol: float) -> bool:
        if not Mistake.matches(self, actual, rtol, atol):
            return False
        mine = self.distance(actual)
        for other in self.group:
            try:
                if (other.name != self.name and Mistake.matches(other, actual, rtol, atol)
                        and other.distance(actual) <= 2 * mine + 1e-12):
                    return False
            except (RuntimeError, ValueError, TypeError):
                continue
        return True


def alone(mistakes: list[Mistake]) -> list[Mistake]:
    """``mistakes`` as ``Alone`` ones of one group, each output computed once: a name is given only
    when the learner's output fits that mistake and no mistake of another name fits as well."""
    group: list[Mistake] = []
    for m in mistakes:
        group.append(Alone(m.name, m.fix, functools.cache(m.output) if callable(m.output) else m.output, group))
    return group


def assert_close_alone(actual: torch.Tensor, expected: torch.Tensor, name: str, *, mistakes: list[Mistake] | None = None,
                       **kwargs) -> None:
    """``assert_close`` where a mistake is named only when the evidence fits it alone (``alone``)."""
    assert_close(actual, expected, name, mistakes=alone(mistakes or []), **kwargs)


# ------------------------------------------------------------------ naming mistakes 25-30 (issue 25)


class Imprecise(Mistake):
    """A mistake that shows as rounding, not as another formula: part of the work done in a half
    precision (``dtype``) where the contract keeps it in float32. ``output`` is the exact answer;
    the learner's matches when it is off somewhere by more than the check allows, yet everywhere
    within ``ulps`` of ``dtype``'s rounding steps of it (``ulps * eps * (|exact| + 1)``): the
    size of error that rounding to ``dtype`` leaves, far below what a wrong formula leaves."""

    def __init__(self, name: str, fix: str, output, dtype: torch.dtype, ulps: float = 8.0):
        super().__init__(name, fix, output)
        self.dtype, self.ulps = dtype, ulps

    def _diff(self, actual: torch.Tensor):
        out = (self.output() if callable(self.output) else self.output).double()
        if out.shape != actual.shape or not bool(torch.isfinite(out).all() and torch.isfinite(actual).all()):
            return None, None
        return (actual.double() - out).abs(), out.abs()

    def distance(self, actual: torch.Tensor) -> float:
        diff, _ = self._diff(actual)
        return float("inf") if diff is None else float(diff.max())

    def matches(self, actual: torch.Tensor, rtol: float, atol: float) -> bool:
        diff, size = self._diff(actual)
        if diff is None:
            return False
        band = self.ulps * torch.finfo(self.dtype).eps * (size + 1)
        return bool((diff <= band).all()) and bool((diff > atol + rtol * size).any())


# ------------------------------------------------------------------ names for 31-35 (issue #25): a name only when it fits alone


def fitting_alone(actual: torch.Tensor, expected: torch.Tensor, mistakes: list[Mistake], rtol: float = 1e-3,
                  atol: float = 1e-4) -> list[Mistake]:
    """The one mistake whose output ``actual`` matches (and the correct output does not), as a
    list of at most one: empty when none fits, or when mistakes under different names fit alike
    (the evidence does not tell them apart, so neither is named). Pass the result to
    ``assert_close(..., mistakes=...)``."""
    fits = []
    for m in mistakes:
        try:
            if m.matches(actual, rtol, atol) and not m.matches(expected, rtol, atol):
                fits.append(m)
        except (RuntimeError, ValueError, TypeError):
            continue
    return fits[:1] if len({m.name for m in fits}) == 1 else []
