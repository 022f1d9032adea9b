"""Exercise 13: cross-entropy, the loss of a batch and of a data loader, perplexity.

Oracles: ``F.cross_entropy`` on the flattened tensors (its value and, through autograd, its
gradient w.r.t. the logits) for ``cross_entropy``; for ``calc_loss_batch`` and
``calc_loss_loader``, ``F.cross_entropy`` of a trusted tiny model's logits (harness/parts/
loss_and_schedule.py: ``TinyLogits``, logits ``table[idx] + pos[:num_tokens]``, built in the worker from
the tensors sent) and PyTorch's autograd for the parameters' gradients; ``math.exp`` for
``perplexity``. Fresh shapes, logits, targets and ignored positions each run.
"""

import math

import torch
import torch.nn.functional as F
from harness.draw import n

from harness.compare import Mistake, assert_close, assert_true, expect_value_error
from harness.failures import Mismatch
from harness.impl import Part

EXERCISE = "13"

ALL_TOKENS = ("the mean over all tokens, ignored ones included",
              "Divide by the number of targets that are NOT ignore_index (keep.sum()), not by targets.numel(): ignored positions count for nothing.")
SUM = ("the sum instead of the mean", "cross_entropy is the MEAN loss over the kept targets: divide the sum by their number.")
NOT_FINITE = ("exp overflowed (no maximum subtracted), or a softmax underflowed to 0 before its log",
              "exp(1e4) is inf in float32, and log(0) is -inf. Compute logsumexp(logits) - logits[target] with torch.logsumexp, or subtract "
              "each row's maximum m yourself: m + log(sum(exp(logits - m))).")
AS_ZERO = ("the ignored positions were counted (as token 0)",
           "After replacing ignore_index by 0 for gather, weight those positions' loss by 0 (per_token * keep) before the sum.")
TOKEN_WEIGHTED = ("the loss weighted by tokens, not the mean of the batch means",
                  "Each batch counts once, whatever its size: add float(calc_loss_batch(...)) per batch and divide by the number of batches.")


def flat_ce(logits, targets, ignore_index=-100, reduction="mean"):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index, reduction=reduction)


def targets_with_ignored(gen, shape, vocab, ignore_index=-100, frac=0.3):
    """Random targets with some positions (at least one) set to ``ignore_index``, and at least two
    (one for fewer than three positions) not: the sum and the mean of the kept losses differ."""
    t = torch.randint(0, vocab, shape, generator=gen)
    if ignore_index in range(vocab):  # an in-vocabulary ignore_index: keep it out of the ordinary targets
        t = torch.where(t == ignore_index, (t + 1) % vocab, t)
    flat = t.view(-1)
    mask = torch.rand(flat.shape, generator=gen) < frac
    order = torch.randperm(flat.numel(), generator=gen)
    mask[order[0]] = True
    mask[order[1:3]] = False
    flat[mask] = ignore_index
    return t


def ce_mistakes(logits, targets, ignore_index=-100):
    logits = logits.float() if logits.dtype == torch.bfloat16 else logits
    per = flat_ce(logits, targets, ignore_index, reduction="none")
    kept = int((targets != ignore_index).sum())
    as_zero = flat_ce(logits, torch.where(targets == ignore_index, torch.zeros_like(targets), targets), reduction="none")
    return [Mistake(*ALL_TOKENS, lambda: per.sum() / per.numel()), Mistake(*SUM, lambda: per.sum()),
            Mistake(*AS_ZERO, lambda: as_zero.sum() / kept), Mistake(*AS_ZERO, lambda: as_zero.mean())]


def tensor_of(d, what, expect="a 0-dim tensor"):
    """The tensor a scenario described (``loss_and_schedule._describe``), or a Mismatch saying what came instead."""
    if not isinstance(d, dict) or "tensor" not in d:
        got = f"a {type(d).__name__} ({d!r})" if not isinstance(d, str) else d
        raise Mismatch(f"{what} returned {got}; expected {expect}")
    return d["tensor"].reshape(d["shape"])


def run_ce(impl, logits, targets, grad_output=None, **kwargs):
    return impl.scenario("loss_and_schedule.cross_entropy", logits, targets, grad_output=grad_output, **kwargs).out


def scalar_loss(d, what, want_dtype=torch.float32):
    got = tensor_of(d, what, f"a 0-dim {want_dtype} tensor")
    if got.shape != ():
        raise Mismatch(f"{what} has shape {tuple(got.shape)}; expected a 0-dim tensor (the mean over the kept targets)")
    if got.dtype != want_dtype:
        raise Mismatch(f"{what} returned dtype {got.dtype}; expected {want_dtype}: compute the loss in float32 (logits.float()) "
                       f"whatever the logits' dtype; float64 logits stay float64")
    return got


def check_ce(impl, logits, targets, what, ignore_index=None, mistakes=()):
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    want_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    got = scalar_loss(run_ce(impl, logits, targets, **kwargs)["out"], what, want_dtype)
    ii = -100 if ignore_index is None else ignore_index
    expected = flat_ce(logits.to(want_dtype), targets, ii)
    assert_close(got, expected, what, oracle="F.cross_entropy on the flattened tensors",
                 mistakes=[*ce_mistakes(logits, targets, ii), *mistakes])


# ----------------------------------------------------------------------------------- cross_entropy


def test_cross_entropy_3d_ignores_targets(impl, gen):
    b, t, v = n(gen, 1, 4), n(gen, 3, 12), n(gen, 3, 50)
    logits = torch.randn(b, t, v, generator=gen) * 2
    targets = targets_with_ignored(gen, (b, t), v)
    check_ce(impl, logits, targets, f"cross_entropy(<({b}, {t}, {v}) float32 logits>, <({b}, {t}) targets, {int((targets == -100).sum())} of them -100>)")


def test_cross_entropy_2d_custom_ignore_index(impl, gen):
    rows, v = n(gen, 3, 40), n(gen, 3, 30)
    dtype = (torch.float32, torch.float64)[n(gen, 0, 1)]
    ignore_index = n(gen, 1, v - 1)  # inside the vocabulary: only the argument says it is ignored (0 would look like another mistake)
    logits = (torch.randn(rows, v, generator=gen) * 2).to(dtype)
    targets = targets_with_ignored(gen, (rows,), v, ignore_index)
    logits[targets == ignore_index, ignore_index] -= 8  # an ignored position that counted would raise the loss clearly
    not_ignored = F.cross_entropy(logits, targets)
    check_ce(impl, logits, targets, f"cross_entropy(<({rows}, {v}) {str(dtype).removeprefix('torch.')} logits>, targets, ignore_index={ignore_index})",
             ignore_index=ignore_index,
             mistakes=[Mistake("ignore_index was not used (-100 hard-coded?)",
                               f"Skip the positions whose target equals the ignore_index argument ({ignore_index} here), whatever its value.",
                               lambda: not_ignored.to(torch.float64 if dtype == torch.float64 else torch.float32))])


def test_cross_entropy_bfloat16_logits_give_float32(impl, gen):
    b, t, v = n(gen, 1, 3), n(gen, 3, 10), n(gen, 3, 60)
    logits = (torch.randn(b, t, v, generator=gen) * 3 + 50).to(torch.bfloat16)  # far from zero, where bf16 steps are 0.25
    targets = targets_with_ignored(gen, (b, t), v)
    in_bf16 = flat_ce(logits, targets).float()
    check_ce(impl, logits, targets, f"cross_entropy(<({b}, {t}, {v}) bfloat16 logits>, targets)",
             mistakes=[Mistake("the loss computed in bfloat16", "Cast the logits to float32 first (logits.float()), then compute.", in_bf16)])


def test_cross_entropy_gradient_matches_autograd(impl, gen):
    b, t, v = n(gen, 1, 3), n(gen, 3, 10), n(gen, 3, 40)
    logits = torch.randn(b, t, v, generator=gen) * 2
    targets = targets_with_ignored(gen, (b, t), v)
    grad_output = float(torch.randn((), generator=gen)) * int((targets != -100).sum())  # gradients of order 1, not 1 / count
    what = f"cross_entropy(<({b}, {t}, {v}) logits>, targets)"
    out = run_ce(impl, logits, targets, grad_output=grad_output)
    scalar_loss(out["out"], what)
    if not out["out"]["requires_grad"]:
        raise Mismatch(f"{what} does not require grad: no gradient can flow back to the logits. "
                       "Do not use .detach(), .item(), .numpy() or torch.no_grad() on the way.")
    if out.get("grad") is None:
        raise Mismatch(f"{what}: backward gave the logits no gradient")

    def grad_of(loss_fn):
        x = logits.clone().requires_grad_(True)
        (loss_fn(x) * grad_output).backward()
        return x.grad

    expected = grad_of(lambda x: flat_ce(x, targets))
    per = lambda x: flat_ce(x, targets, reduction="none")  # noqa: E731
    assert_close(out["grad"], expected, f"the gradient of cross_entropy(<({b}, {t}, {v}) logits>, targets) w.r.t. the logits",
                 oracle="autograd through F.cross_entropy",
                 mistakes=[Mistake(*ALL_TOKENS, lambda: grad_of(lambda x: per(x).sum() / per(x).numel())),
                           Mistake(*SUM, lambda: grad_of(lambda x: per(x).sum())),
                           Mistake(*AS_ZERO, lambda: grad_of(lambda x: flat_ce(x, targets.clamp(min=0), reduction="sum") / int((targets != -100).sum())))])


def test_cross_entropy_stable_for_large_logits(impl, gen):
    b, t, v = n(gen, 1, 3), n(gen, 3, 8), n(gen, 5, 40)
    logits = torch.randn(b, t, v, generator=gen) * 1e4
    targets = targets_with_ignored(gen, (b, t), v, frac=0.1)
    what = f"cross_entropy(<({b}, {t}, {v}) logits of magnitude 1e4>, targets)"
    got = scalar_loss(run_ce(impl, logits, targets)["out"], what)
    expected = flat_ce(logits, targets)
    if not bool(torch.isfinite(got)):
        raise Mismatch(f"{what} is {float(got)}; expected {float(expected):.6g} (F.cross_entropy on the flattened tensors)\n"
                       f"This looks like: {NOT_FINITE[0]}. {NOT_FINITE[1]}")
    assert_close(got, expected, what, oracle="F.cross_entropy on the flattened tensors", mistakes=ce_mistakes(logits, targets))


def test_cross_entropy_all_targets_ignored_is_nan(impl, gen):
    b, t, v = n(gen, 1, 3), n(gen, 1, 6), n(gen, 3, 20)
    logits = torch.randn(b, t, v, generator=gen)
    targets = torch.full((b, t), -100)
    what = f"cross_entropy(<({b}, {t}, {v}) logits>, <every target -100>)"
    got = scalar_loss(run_ce(impl, logits, targets)["out"], what)
    if not bool(torch.isnan(got)):
        raise Mismatch(f"{what} is {float(got):g}; expected nan, as F.cross_entropy: the mean over no targets is 0 / 0. "
                       "Divide the sum by the number of kept targets without special-casing 0.")


def test_cross_entropy_rejects_mismatched_shapes(impl, gen):
    b, t, v = n(gen, 1, 3), n(gen, 2, 8), n(gen, 3, 20)
    logits = torch.randn(b, t, v, generator=gen)
    bad = [(b, t + n(gen, 1, 3)), (b * t,), (b, t, 1)][n(gen, 0, 2)]
    targets = torch.randint(0, v, bad, generator=gen)
    expect_value_error(lambda: impl.call("loss.cross_entropy", logits, targets, returns="data"),
                       f"cross_entropy(<({b}, {t}, {v}) logits>, <{bad} targets>)",
                       why=": the targets' shape must be the logits' shape without the last dimension. Check it before flattening.")


def test_cross_entropy_rejects_targets_outside_the_vocabulary(impl, gen):
    b, t, v = n(gen, 1, 3), n(gen, 2, 8), n(gen, 3, 20)
    logits = torch.randn(b, t, v, generator=gen)
    for bad_value in (v + n(gen, 0, 30), -n(gen, 1, 99)):
        targets = targets_with_ignored(gen, (b, t), v)
        flat = targets.view(-1)
        where = n(gen, 0, flat.numel() - 1)
        flat[where] = bad_value
        expect_value_error(lambda: impl.call("loss.cross_entropy", logits, targets, returns="data"),
                           f"cross_entropy(<({b}, {t}, {v}) logits>, <targets with {bad_value} at flat position {where}>)",
                           needles=[bad_value],
                           why=f": a target must be in 0 .. {v - 1} or equal ignore_index (-100); say which target is bad.")


# ----------------------------------------------------------------------------------- calc_loss_batch


def tiny_model(gen, v, context):
    table = torch.randn(v, v, generator=gen) * 2
    pos = torch.randn(context, v, generator=gen)
    return table, pos


def logits_of(table, pos, x):
    return table[x] + pos[: x.size(1)]


def test_calc_loss_batch_matches_and_gradients_flow(impl, gen):
    v, t, b = n(gen, 4, 30), n(gen, 2, 10), n(gen, 1, 5)
    table, pos = tiny_model(gen, v, t + n(gen, 0, 3))
    x, y = torch.randint(0, v, (b, t), generator=gen), torch.randint(0, v, (b, t), generator=gen)
    device_object = bool(n(gen, 0, 1))
    what = f"calc_loss_batch(<({b}, {t}) inputs>, <targets>, model, {'torch.device(' + repr('cpu') + ')' if device_object else repr('cpu')})"
    out = impl.scenario("loss_and_schedule.batch_loss", Part("loss_and_schedule.TinyLogits", table, pos), x, y, "cpu", device_object=device_object).out
    loss = scalar_loss(out["loss"], what)
    tab, ps = table.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    expected = F.cross_entropy(logits_of(tab, ps, x).reshape(-1, v), y.reshape(-1))
    swapped = F.cross_entropy(logits_of(table, pos, y).reshape(-1, v), x.reshape(-1))
    assert_close(loss, expected.detach(), what, oracle="F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())",
                 mistakes=[Mistake("inputs and targets swapped", "The model reads input_batch; target_batch holds the ids it should predict.", swapped)])
    assert_true(out["loss"]["requires_grad"], f"{what} does not require grad: no gradient can reach the model. Do not use torch.no_grad(), .detach() or .item() here.")
    expected.backward()
    for name, want in (("table", tab.grad), ("pos", ps.grad)):
        got = out["grads"][name]
        if got is None:
            raise Mismatch(f"after {what}.backward() the model's parameter `{name}` has no gradient")
        assert_close(got, want, f"the gradient of {what} w.r.t. the model's `{name}`", oracle="autograd through F.cross_entropy")


# ----------------------------------------------------------------------------------- calc_loss_loader


def make_batches(gen, table, pos, t, count):
    """``count`` batches of sizes that are not all equal (the last is smaller, as without drop_last).
    The last batch's targets are the model's own argmax, so its loss is far below the others': the
    mean of the batch means and the mean over all tokens differ clearly."""
    v = table.size(0)
    size = n(gen, 2, 5)
    sizes = [size] * (count - 1) + [n(gen, 1, size - 1)]
    batches = [(torch.randint(0, v, (s, t), generator=gen), torch.randint(0, v, (s, t), generator=gen)) for s in sizes]
    x = batches[-1][0]
    batches[-1] = (x, logits_of(table, pos, x).argmax(-1))
    return batches


def batch_losses(table, pos, batches):
    return [F.cross_entropy(logits_of(table, pos, x).reshape(-1, table.size(0)), y.reshape(-1)) for x, y in batches]


def token_weighted(table, pos, batches):
    tokens = sum(y.numel() for _, y in batches)
    return sum(loss * y.numel() for loss, (_, y) in zip(batch_losses(table, pos, batches), batches)) / tokens


def loader_case(gen, count):
    v, t = n(gen, 4, 30), n(gen, 2, 8)
    table, pos = tiny_model(gen, v, t)
    return table, pos, make_batches(gen, table, pos, t, count)


def run_loader(impl, table, pos, batches, num_batches="absent", train=False):
    loader = Part("loss_and_schedule.Batches", *[u for pair in batches for u in pair])
    return impl.scenario("loss_and_schedule.loader_loss", Part("loss_and_schedule.TinyLogits", table, pos), loader, "cpu", num_batches=num_batches, train=train).out


def check_loader(out, expected, what, train, mistakes=()):
    if type(out["value"]) is not float:
        got = out["value"] if isinstance(out["value"], str) else f"a {type(out['value']).__name__}" if not isinstance(out["value"], dict) else "a tensor"
        raise Mismatch(f"{what} returned {got}; expected a Python float (float(total) / count, or .item())")
    assert_close(torch.tensor(out["value"], dtype=torch.float64), torch.tensor(float(expected), dtype=torch.float64), what,
                 oracle="the mean of F.cross_entropy over the batches", rtol=1e-5, atol=1e-6, mistakes=list(mistakes))
    assert_true(out["forwards_with_grad"] == 0,
                f"{what} ran the model with autograd on in {out['forwards_with_grad']} of {out['forwards']} batches: "
                "evaluation needs no gradients, so run the loop under `with torch.no_grad():`")
    assert_true(not out["params_with_grad"], f"{what} left gradients on the model's parameters ({', '.join(out['params_with_grad'])}): do not call backward here")
    mode = "train" if train else "eval"
    assert_true(out["training_after"] == train,
                f"{what} left the model in {'train' if out['training_after'] else 'eval'} mode; it was in {mode} mode: leave the mode as it is "
                "(the caller switches it)")


def test_calc_loss_loader_is_the_mean_of_the_batch_means(impl, gen):
    count = n(gen, 2, 5)
    table, pos, batches = loader_case(gen, count)
    train = True  # the model must stay in train mode (the num_batches test starts it in eval mode)
    sizes = [x.size(0) for x, _ in batches]
    out = run_loader(impl, table, pos, batches, train=train)
    expected = torch.stack(batch_losses(table, pos, batches)).mean()
    check_loader(out, expected, f"calc_loss_loader(<{count} batches of sizes {sizes}>, model in {'train' if train else 'eval'} mode, 'cpu')", train,
                 mistakes=[Mistake(*TOKEN_WEIGHTED, lambda: token_weighted(table, pos, batches).double())])


def test_calc_loss_loader_num_batches(impl, gen):
    count = n(gen, 3, 6)
    table, pos, batches = loader_case(gen, count)
    losses = batch_losses(table, pos, batches)
    sizes = [x.size(0) for x, _ in batches]
    for num_batches in (n(gen, 1, count - 1), count + n(gen, 1, 5), None):
        used = count if num_batches is None else min(num_batches, count)
        expected = sum(losses[:used]) / used
        mistakes = [Mistake("divided by len(data_loader), not by the number of batches used",
                            "Average over the batches you added: min(num_batches, len(data_loader)) of them.",
                            lambda: torch.tensor(float(sum(losses[:used]) / count), dtype=torch.float64)),
                    Mistake(*TOKEN_WEIGHTED, lambda: token_weighted(table, pos, batches[:used]).double())]
        if num_batches is not None and num_batches > count:
            mistakes.append(Mistake("divided by num_batches although the loader has fewer batches",
                                    f"num_batches={num_batches} is more than the loader's {count} batches: use all of them and divide by {count}.",
                                    lambda: torch.tensor(float(sum(losses) / num_batches), dtype=torch.float64)))
        out = run_loader(impl, table, pos, batches, num_batches=num_batches)
        check_loader(out, expected, f"calc_loss_loader(<{count} batches of sizes {sizes}>, model, 'cpu', num_batches={num_batches})", False, mistakes)


def test_calc_loss_loader_rejects_no_batches(impl, gen):
    table, pos, batches = loader_case(gen, n(gen, 2, 4))
    model = Part("loss_and_schedule.TinyLogits", table, pos)
    expect_value_error(lambda: impl.call("loss.calc_loss_loader", Part("loss_and_schedule.Batches"), model, "cpu", returns="data"),
                       "calc_loss_loader(<a loader with no batches>, model, 'cpu')",
                       why=": the mean over no batches is undefined; say that the loader is empty (is the text shorter than one window?).")
    loader = Part("loss_and_schedule.Batches", *[u for pair in batches for u in pair])
    for bad in (0, -n(gen, 1, 5)):
        expect_value_error(lambda: impl.call("loss.calc_loss_loader", loader, model, "cpu", num_batches=bad, returns="data"),
                           f"calc_loss_loader(<{len(batches)} batches>, model, 'cpu', num_batches={bad})",
                           why=": num_batches must be at least 1 (None means all batches; 0 is not None).")


# ----------------------------------------------------------------------------------- perplexity


def test_perplexity(impl, gen):
    v = n(gen, 2, 50000)
    cases = [(math.log(v), None, f"log({v}) (a uniform guess over {v} tokens)"),
             (float(torch.rand((), generator=gen)) * 10, None, ""),
             (float(torch.rand((), generator=gen)) * 8, "float32", "a 0-dim float32 tensor"),
             (float(torch.rand((), generator=gen)) * 8, "float64", "a 0-dim float64 tensor"),
             (float(n(gen, 710, 5000)), None, "too large for exp"),
             (1e4, "float32", "a 0-dim float32 tensor too large for exp")]
    outs = impl.scenario("loss_and_schedule.perplexities", [[value, dtype] for value, dtype, _ in cases]).out
    for (value, dtype, note), got in zip(cases, outs):
        if dtype is not None:
            value = float(torch.tensor(value, dtype=getattr(torch, dtype)))
        what = f"perplexity({value:.6g}{' = ' + note if note else ''})"
        if type(got) is not float:
            got = got if isinstance(got, str) else "a tensor" if isinstance(got, dict) else f"a {type(got).__name__}"
            raise Mismatch(f"{what} returned {got}; expected a Python float (math.exp(float(loss)))")
        try:
            expected = math.exp(value)
        except OverflowError:
            expected = math.inf
        if expected == math.inf:
            if got != math.inf:
                raise Mismatch(f"{what} returned {got!r}; expected inf: exp overflows, and the perplexity is then inf "
                               "(catch the OverflowError of math.exp, or take torch.exp of the tensor)")
            continue
        if not math.isclose(got, expected, rel_tol=1e-5):
            hint = "\nThis looks like: the loss itself, not exp(loss)." if math.isclose(got, value, rel_tol=1e-5) else ""
            raise Mismatch(f"{what} returned {got!r}; expected exp(loss) = {expected!r}{hint}")
