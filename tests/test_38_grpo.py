"""Exercise 38: GRPO, the reasoning track's loss: group-relative advantages, and the clipped
policy loss with a KL penalty to a frozen reference, averaged three ways.

Oracles, written here and never from solutions/: the advantages as their formula in float64
(``torch.std``'s unbiased standard deviation of each group); the loss as its formula in float64,
with autograd through it for the gradient; and Hugging Face trl's own loss (GRPOTrainer's, trl
1.16.0) on fixed tensors, committed in reference/38_grpo.npz by ``nox -s reference``, with trl's
unbiased group standard deviation. Fresh inputs each run: groups of rewards (ties, a group whose
rewards are all equal, groups of one), per-token log-probabilities whose ratios fall inside and
outside the clip range, advantages of both signs and zero, ragged masks (a completion with no
counted token, one with every token counted), and the committed trl cases with their rows shuffled
and masked garbage columns added.

Named mistakes are the formula with one thing changed, given only when that variant alone
explains every loss of the check.
"""

import math

import torch

from harness.compare import Mistake, assert_close, assert_close_alone, assert_true, expect_value_error
from harness.draw import n
from harness.failures import LOOKS_LIKE, Mismatch
from harness.reference import load_reference

EXERCISE = "38"
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")

BATCH_STD = ("the standard deviation of the whole batch instead of each group's",
             "Each completion is compared with its own group only: grouped = rewards.view(-1, group_size), then the mean and "
             "grouped.std(dim=1, keepdim=True) of each row.")
BIASED_STD = ("the biased standard deviation (divided by G) where the unbiased one (G - 1) is asked",
              "torch.std's default, grouped.std(dim=1), divides the squared deviations by G - 1, as trl does; "
              "unbiased=False or a hand-written mean of squares divides by G.")
NO_EPS = ("no eps in the denominator: a group whose rewards are all equal gives 0 / 0 = NaN",
          "Divide by (std + eps): a group of equal rewards has std 0 and advantages 0, not NaN.")
STRIDED = ("the groups read as every B-th reward instead of G adjacent ones",
           "The G completions of one prompt are adjacent: rewards.view(-1, group_size) (B rows of G), not "
           "rewards.view(group_size, -1) and a mean over dim 0.")
BATCH_MEAN = ("the mean of the whole batch subtracted instead of each group's",
              "Subtract each group's own mean: grouped - grouped.mean(dim=1, keepdim=True).")
QUOTIENT = ("the ratio as logprobs / old_logprobs: a quotient of log-probabilities",
            "The probability ratio is pi / pi_old = exp(logprobs - old_logprobs): a difference of logs, then exp.")
NO_EXP = ("the ratio without exp: logprobs - old_logprobs used as the ratio",
          "ratio = torch.exp(logprobs - old_logprobs): the difference of log-probabilities is the ratio's log.")
MAX = ("max instead of min: the clip taken on the wrong side",
       "objective = torch.min(ratio * A, clipped * A): the pessimistic of the two, so the clip only ever removes an incentive.")
CLIP_ONLY = ("the clipped term alone, without the unclipped ratio * A",
             "objective = min(ratio * A, clamp(ratio, 1 - clip_eps, 1 + clip_eps) * A): both terms, the smaller kept.")
KL_REVERSED = ("k3 of logprobs - ref instead of ref - logprobs: the KL estimator the other way round",
               "kl = exp(ref - logprobs) - (ref - logprobs) - 1, with the reference's log-probabilities first.")
KL_LOG_RATIO = ("the plain log-ratio logprobs - ref used as the KL instead of k3",
                "Schulman's k3, exp(ref - logprobs) - (ref - logprobs) - 1, is never negative and its gradient pulls the policy "
                "back to the reference from either side; the plain log-ratio is neither.")
KL_SIGN = ("the KL penalty's sign flipped: beta * kl added to the objective, so the loss rewards leaving the reference",
           "loss_t = -(objective - beta * kl) = -objective + beta * kl: the penalty raises the loss.")
MASKED_COUNTED = ("the masked tokens counted in the mean: divided by T instead of the number of counted tokens",
                  "Count only the tokens the mask keeps: mask.sum(dim=1) per completion ('grpo'), mask.sum() for the batch ('bnpo').")
MASK_NOT_APPLIED = ("the masked tokens' losses added in: the mask not applied to the per-token loss",
                    "Zero the per-token loss where the mask is False before summing: per_token.masked_fill(~mask, 0.0).")
TOKEN_FOR_SEQUENCE = ("the per-token mean over the batch ('bnpo') where loss_type 'grpo' asks for the mean per sequence",
                      "'grpo': each completion's loss is the mean over ITS tokens, then the mean over the completions: "
                      "(per_token.sum(1) / counts.clamp(min=1)).mean(). A long completion weighs no more than a short one.")
SEQUENCE_FOR_TOKEN = ("the mean per sequence ('grpo') where loss_type 'bnpo' asks for one mean over every token of the batch",
                      "'bnpo': per_token.sum() / mask.sum().clamp(min=1), every counted token of the batch weighing the same.")
WIDTH_FOR_MAX = ("T (the width of the tensors) used where Dr. GRPO divides by max_completion_length",
                 "'dr_grpo': per_token.sum() / (N * max_completion_length), the constant given (T only when it is None).")
TIMES_MASK = ("the mask applied by multiplying (x * mask): inf * 0 and NaN * 0 are NaN",
              "Replace what is masked instead: logprobs.masked_fill(~mask, 0.0) (and old, ref) BEFORE exp, then the per-token "
              "loss's masked positions with masked_fill too, so that nothing computed at a masked position is ever used.")
WHERE_AFTER = ("the mask applied after exp: a masked inf still reaches the gradient (0 * inf is NaN in backward)",
               "torch.where's unchosen branch gets a zero gradient, and exp's backward multiplies it by exp(inf) = inf: NaN. "
               "Mask the INPUTS first (logprobs.masked_fill(~mask, 0.0), old and ref too), then compute.")
ADVANTAGES_ATTACHED = ("the advantages not detached: the loss's gradient reaches them",
                       "The advantages are constants of the loss: adv = advantages.detach().")
OLD_ATTACHED = ("old_logprobs not detached: the loss's gradient flows through the old policy's log-probabilities",
                "old_logprobs are constants (the policy that sampled the batch): old_logprobs.detach(). Without it, when "
                "old_logprobs is logprobs itself (the first pass over a batch) the ratio is exp(0) = 1 with gradient 0.")
REF_ATTACHED = ("ref_logprobs not detached: the loss's gradient reaches the frozen reference",
                "The reference is frozen: ref_logprobs.detach() before the KL.")


# ------------------------------------------------------------------------------------ the oracles


def advantages_formula(rewards, group_size, eps=1e-4, scale=True, variant=""):
    """``group_advantages`` in float64; ``variant`` makes a known mistake."""
    r = rewards.double()
    grouped = r.view(group_size, -1).T if variant == "strided" else r.view(-1, group_size)  # (B, G)
    mean = r.mean().expand_as(grouped) if variant == "batch_mean" else grouped.mean(dim=1, keepdim=True)
    centered = grouped - mean
    if scale:
        if variant == "batch_std":
            std = r.std() if r.numel() > 1 else torch.zeros(())
        elif group_size == 1:
            std = torch.zeros(grouped.size(0), 1, dtype=torch.float64)
        else:
            std = grouped.std(dim=1, keepdim=True, correction=0 if variant == "biased" else 1)
        centered = centered / (std if variant == "no_eps" else std + eps)
    return (centered.T if variant == "strided" else centered).reshape(-1)


def grpo_formula(lp, old, ref, adv, mask, clip_eps=0.2, beta=0.04, loss_type="grpo", max_len=None, variant=""):
    """``(loss, kl, clip_fraction)`` of ``grpo_loss`` in float64 (autograd reaches ``lp`` when it
    requires gradients); what the masked positions hold is never read. ``variant`` makes a known
    mistake."""
    keep = mask != 0
    width = lp.size(1) if max_len is None or variant == "width_for_max" else max_len
    lp = torch.where(keep, lp.double(), 0.0)
    old = torch.where(keep, old.double(), 0.0)
    a = adv.double()[:, None]
    if variant == "quotient":
        ratio = torch.where(keep, lp / torch.where(keep, old, 1.0), 1.0)
    elif variant == "no_exp":
        ratio = lp - old
    else:
        ratio = torch.exp(lp - old)
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
    objective = {"max": torch.max(ratio * a, clipped * a), "clip_only": clipped * a}.get(variant, torch.min(ratio * a, clipped * a))
    per_token = -objective
    kl = torch.zeros_like(lp)
    if beta != 0:
        d = torch.where(keep, ref.double(), 0.0) - lp
        kl = {"kl_reversed": torch.exp(-d) + d - 1, "kl_log_ratio": -d}.get(variant, torch.exp(d) - d - 1)
        per_token = per_token - beta * kl if variant == "kl_sign" else per_token + beta * kl
    if variant != "mask_not_applied":
        per_token = torch.where(keep, per_token, 0.0)
    counts = keep.sum(dim=1).double()
    if variant == "masked_counted":
        counts = torch.full_like(counts, lp.size(1))
    kind = {("token_for_sequence", "grpo"): "bnpo", ("sequence_for_token", "bnpo"): "grpo"}.get((variant, loss_type), loss_type)
    if kind == "grpo":
        loss = (per_token.sum(dim=1) / counts.clamp(min=1)).mean()
    elif kind == "bnpo":
        loss = per_token.sum() / counts.sum().clamp(min=1)
    else:
        loss = per_token.sum() / (lp.size(0) * width)
    total = keep.sum().clamp(min=1).double()
    region = ((ratio > 1 + clip_eps) & (a > 0)) | ((ratio < 1 - clip_eps) & (a < 0))
    return loss, torch.where(keep, kl, 0.0).sum().detach() / total, (region & keep).sum().double() / total


LOSS_MISTAKES = {"quotient": QUOTIENT, "no_exp": NO_EXP, "max": MAX, "clip_only": CLIP_ONLY, "kl_reversed": KL_REVERSED,
                 "kl_log_ratio": KL_LOG_RATIO, "kl_sign": KL_SIGN, "masked_counted": MASKED_COUNTED,
                 "mask_not_applied": MASK_NOT_APPLIED, "token_for_sequence": TOKEN_FOR_SEQUENCE,
                 "sequence_for_token": SEQUENCE_FOR_TOKEN, "width_for_max": WIDTH_FOR_MAX}


# ------------------------------------------------------------------------------------ random inputs


def fresh_rewards(gen, groups, size):
    """``(groups * size,)`` rewards: group 0's all equal (a multiple of 1/4, so its mean is exact),
    group 1 (when there is one) of ties (0 and 1 only, both present), the others random."""
    rows = []
    for g in range(groups):
        if g == 0:
            rows.append(torch.full((size,), n(gen, -4, 8) / 4.0))
        elif g == 1 and size > 1:
            row = torch.randint(0, 2, (size,), generator=gen).float()
            row[:2] = torch.tensor([0.0, 1.0])
            rows.append(row[torch.randperm(size, generator=gen)])
        else:
            rows.append(torch.randn(size, generator=gen) * 2 + 1)
    order = torch.randperm(groups, generator=gen)  # the equal group and the ties anywhere in the batch
    return torch.cat([rows[int(k)] for k in order])


def fresh_batch(gen, dtype):
    """The inputs of ``grpo_loss``: ``N`` completions of ``T`` tokens, the log-probabilities of the
    old policy and the reference near the policy's (ratios inside and outside any clip range),
    advantages of both signs with one 0, a mask with a prefix counted per row (one row none, one
    row all). The masked positions hold log-probabilities like any other (finite garbage)."""
    size, width = n(gen, 4, 10), n(gen, 3, 9)
    lp = -(torch.rand(size, width, generator=gen) * 4 + 0.05)
    old = lp + 0.35 * torch.randn(size, width, generator=gen)
    ref = lp + 0.5 * torch.randn(size, width, generator=gen)
    adv = torch.randn(size, generator=gen)
    lengths = torch.randint(1, width + 1, (size,), generator=gen)
    empty, full, still = torch.randperm(size, generator=gen)[:3].tolist()
    lengths[empty], lengths[full] = 0, width
    adv[still] = 0.0
    mask = torch.arange(width) < lengths[:, None]
    return [t.to(dtype) for t in (lp, old, ref, adv)] + [mask]


def describe(options, batch):
    lp, mask = batch[0], batch[4]
    shown = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:.4g}" for k, v in options.items())
    return (f"grpo_loss on {lp.size(0)} completions of {lp.size(1)} tokens ({lp.dtype}, {mask.sum(1).tolist()} counted per row)"
            + (f", {shown}" if shown else ", the defaults"))


# ------------------------------------------------------------------------------------ group_advantages


def test_group_advantages_match_the_formula(impl, gen):
    cases = [(torch.float32, {}), (torch.float64, {"eps": float(torch.empty(()).uniform_(1e-3, 1e-2, generator=gen))}),
             (torch.float32, {"scale": False})]
    for dtype, options in cases:
        groups, size = n(gen, 3, 6), n(gen, 2, 6)
        rewards = fresh_rewards(gen, groups, size).to(dtype)
        got = impl.call("grpo.group_advantages", rewards, size, **options).out
        what = (f"group_advantages(rewards of {groups} groups of {size}, {dtype}, one group all equal, one of ties"
                + "".join(f", {k}={v:.4g}" if isinstance(v, float) else f", {k}={v}" for k, v in options.items()) + ")")
        want = advantages_formula(rewards, size, **options)
        variants = {"batch_std": BATCH_STD, "biased": BIASED_STD, "no_eps": NO_EPS, "strided": STRIDED, "batch_mean": BATCH_MEAN}
        if options.get("scale") is False:
            variants = {k: v for k, v in variants.items() if k in ("strided", "batch_mean")}
        mistakes = [Mistake(*words, advantages_formula(rewards, size, **options, variant=v).to(dtype)) for v, words in variants.items()]
        assert_close_alone(got, want.to(dtype), what, oracle="(r - the group's mean) / (the group's unbiased std + eps)",
                           atol=1e-5, rtol=1e-4, mistakes=mistakes)


def test_group_advantages_of_equal_rewards_and_of_groups_of_one(impl, gen):
    size = n(gen, 2, 6)
    equal = torch.full((size * n(gen, 2, 4),), n(gen, -8, 8) / 4.0)
    got = impl.call("grpo.group_advantages", equal, size).out
    what = f"group_advantages on {equal.numel()} equal rewards ({equal[0]:g}) in groups of {size}"
    if got.shape == equal.shape and bool(torch.isnan(got).all()):  # every group 0 / 0: the one thing eps is there for
        raise Mismatch(f"{what} is NaN everywhere; expected 0 everywhere\n{LOOKS_LIKE}{NO_EPS[0]}. {NO_EPS[1]}")
    assert_close(got, torch.zeros_like(equal), what, oracle="0 for a group with nothing to tell its completions apart", atol=1e-6)
    for options in ({}, {"scale": False}):
        rewards = torch.randn(n(gen, 2, 7), generator=gen)
        got = impl.call("grpo.group_advantages", rewards, 1, **options).out
        assert_close(got, torch.zeros_like(rewards), f"group_advantages(rewards of shape {tuple(rewards.shape)}, group_size=1"
                     + (", scale=False)" if options else ")"), oracle="0: a group of one has nothing to be compared with (its "
                     "std taken as 0, where the unbiased formula gives 0 / 0)", atol=1e-6)


def test_group_advantages_match_trl(impl, gen):
    """trl's advantages (GRPOTrainer's, with its unbiased nanstd), committed: the groups in a fresh
    order each run, and each group's completions too, so the expected values move with them."""
    ref = {k: torch.from_numpy(v) for k, v in load_reference("38_grpo").items()}
    size = int(ref["advantages/group_size"].reshape(()))
    rewards, want = ref["advantages/rewards"].view(-1, size), ref["advantages/advantages"].view(-1, size)
    groups = torch.randperm(rewards.size(0), generator=gen)
    members = torch.stack([torch.randperm(size, generator=gen) for _ in range(rewards.size(0))])
    rewards = torch.gather(rewards[groups], 1, members).reshape(-1)
    want = torch.gather(want[groups], 1, members).reshape(-1)
    got = impl.call("grpo.group_advantages", rewards, size).out
    mistakes = [Mistake(*words, advantages_formula(rewards, size, variant=v)) for v, words in
                (("batch_std", BATCH_STD), ("biased", BIASED_STD), ("no_eps", NO_EPS), ("strided", STRIDED), ("batch_mean", BATCH_MEAN))]
    assert_close_alone(got, want, f"group_advantages(trl's rewards {[float(r) for r in rewards]}, group_size={size})",
                       oracle="trl's GRPOTrainer", atol=1e-6, rtol=1e-5, mistakes=mistakes)


def test_group_advantages_refuse_bad_shapes(impl, gen):
    groups, size = n(gen, 2, 4), n(gen, 2, 5)
    rewards = torch.randn(groups * size + n(gen, 1, size - 1), generator=gen)
    expect_value_error(lambda: impl.call("grpo.group_advantages", rewards, size),
                       f"group_advantages(rewards of shape ({rewards.numel()},), group_size={size})", [rewards.numel(), size],
                       why=f": {rewards.numel()} rewards do not split into groups of {size}")
    square = torch.randn(groups, size, generator=gen)
    expect_value_error(lambda: impl.call("grpo.group_advantages", square, size),
                       f"group_advantages(rewards of shape {tuple(square.shape)}, group_size={size})", [groups, size],
                       why=": rewards must be 1-D, (B * G,)")
    expect_value_error(lambda: impl.call("grpo.group_advantages", torch.randn(size), 0),
                       "group_advantages(rewards, group_size=0)", [0], why=": a group has at least one completion")


# ------------------------------------------------------------------------------------ grpo_loss


def run_loss(impl, batch, options, same_old=False):
    lp, old, ref, adv, mask = batch
    got = impl.scenario("grpo_run.loss", lp, old, ref, adv, mask, options, same_old=same_old).out
    what = describe(options, batch)
    if not got["ok"]:
        raise Mismatch(f"{what} returned a {got['type']}" + (f" of {got['length']} items" if got.get("length") is not None else "")
                       + "; expected a tuple (loss, stats)")
    assert_true(got["loss"]["tensor"] is not None, f"{what}: the loss is a {got['loss']['type']}; expected a tensor")
    t = got["loss"]["tensor"]
    assert_true(t.dim() == 0, f"{what}: the loss has shape {tuple(t.shape)}; expected a 0-d tensor")
    assert_true(t.dtype == lp.dtype, f"{what}: the loss has dtype {t.dtype}; expected {lp.dtype}, logprobs' dtype")
    assert_true(got["stats_type"] == "dict", f"{what}: stats is a {got['stats_type']}; expected a dict")
    assert_true(got["loss"]["requires_grad"] and got["grads"] is not None,
                f"{what}: the loss has no autograd graph; expected one that backpropagates into logprobs "
                "(no torch.no_grad(), no .detach() or .item() on the loss)")
    return got, what


def check_constants(got, what):
    """Only logprobs gets a gradient: old_logprobs, ref_logprobs and the advantages are constants."""
    for name, words in (("advantages", ADVANTAGES_ATTACHED), ("old_logprobs", OLD_ATTACHED), ("ref_logprobs", REF_ATTACHED)):
        g = got["grads"].get(name)
        if g is not None and bool((g != 0).any()):
            raise Mismatch(f"{what}: after loss.backward(), {name} has a gradient (largest {float(g.abs().max()):.4g}); expected "
                           f"none\n{LOOKS_LIKE}{words[0]}. {words[1]}")


def check_stats(got, what, kl, clip_fraction, beta):
    stats = got["stats"]
    for key in ("kl", "clip_fraction"):
        assert_true(key in stats, f"{what}: stats has keys {sorted(stats)}; expected 'kl' and 'clip_fraction'")
    if beta == 0:
        assert_true(stats["kl"]["type"] == "NoneType", f"{what}: stats['kl'] is a {stats['kl']['type']}; expected None, since "
                                                       "beta == 0 leaves the reference out")
    for key, want in (("kl", kl), ("clip_fraction", clip_fraction)):
        if key == "kl" and beta == 0:
            continue
        s = stats[key]
        assert_true(s["tensor"] is not None and s["tensor"].dim() == 0, f"{what}: stats[{key!r}] is a {s['type']} of shape "
                    f"{tuple(s['tensor'].shape) if s['tensor'] is not None else '-'}; expected a 0-d tensor")
        assert_true(not s["requires_grad"], f"{what}: stats[{key!r}] requires gradients; expected it detached (a logged value)")
        assert_close(s["tensor"].double(), want.double(), f"{what}: stats[{key!r}]", atol=1e-6, rtol=1e-5, check_dtype=False,
                     oracle="the mean of kl_t over the counted tokens" if key == "kl" else
                     "the fraction of counted tokens whose ratio is clipped on their advantage's side")


def test_grpo_loss_matches_the_formula_for_each_loss_type(impl, gen):
    calls = []
    for k, loss_type in enumerate(LOSS_TYPES * 2):
        dtype = torch.float32 if k < 3 else torch.float64
        batch = fresh_batch(gen, dtype)
        options = {"clip_eps": float(torch.empty(()).uniform_(0.1, 0.3, generator=gen)),
                   "beta": float(torch.empty(()).uniform_(0.02, 0.3, generator=gen)), "loss_type": loss_type}
        if loss_type == "dr_grpo":
            options["max_completion_length"] = batch[0].size(1) + n(gen, 1, 8)
        got, what = run_loss(impl, batch, options)
        calls.append((batch, options, what, got))

    def variant_losses(v):
        return torch.stack([grpo_formula(*b, **rename(o), variant=v)[0] for b, o, _, _ in calls])

    # the losses first, all calls at once: a mistake is named only when it explains every one of them
    mistakes = [Mistake(*words, (lambda v=v: variant_losses(v))) for v, words in LOSS_MISTAKES.items()]
    listing = "\n".join(f"  [{i}] {w}" for i, (_, _, w, _) in enumerate(calls))
    assert_close_alone(torch.stack([got["loss"]["tensor"].double() for *_, got in calls]), variant_losses(""),
                       "the loss of each call below", oracle="the formula in float64", atol=1e-6, rtol=1e-4, check_dtype=False,
                       mistakes=mistakes, context="the calls:\n" + listing)
    for batch, options, what, got in calls:
        check_constants(got, what)
        leaf = batch[0].double().requires_grad_(True)
        loss, kl, clip_fraction = grpo_formula(leaf, *batch[1:], **rename(options))
        loss.backward()
        assert_close(got["grads"]["logprobs"], leaf.grad.to(batch[0].dtype), f"{what}: the gradient of the loss with respect to "
                     "logprobs", oracle="autograd through the formula", atol=1e-6, rtol=1e-4)
        check_stats(got, what, kl, clip_fraction, options["beta"])


def rename(options):
    """``grpo_loss``'s keyword arguments as ``grpo_formula``'s."""
    out = {k: v for k, v in options.items() if k != "max_completion_length"}
    if "max_completion_length" in options:
        out["max_len"] = options["max_completion_length"]
    return out


def test_grpo_loss_matches_trl(impl, gen):
    ref = {k: torch.from_numpy(v) for k, v in load_reference("38_grpo").items()}
    for case in ("grpo", "bnpo", "dr_grpo", "no_kl"):
        c = {k.split("/", 1)[1]: v for k, v in ref.items() if k.startswith(case + "/")}
        c.update({k: c[k].reshape(()) for k in ("loss", "kl", "clip_fraction") if k in c})  # written as (1,)
        loss_type = bytes(c["loss_type"].numpy().astype("uint8")).decode()
        beta, max_len = float(c["beta"]), int(c["max_completion_length"])
        size, width = c["logprobs"].shape
        # fresh each run: the rows shuffled, masked columns of garbage added (within max_completion_length), the dtype
        order = torch.randperm(size, generator=gen)
        extra = n(gen, 0, max_len - width) if loss_type == "dr_grpo" else n(gen, 0, 3)
        dtype = (torch.float32, torch.float64)[n(gen, 0, 1)]

        def widened(t, order=order, extra=extra):
            return torch.cat([t[order], -torch.rand(size, extra, generator=gen, dtype=torch.float64) * 5], dim=1)

        mask = torch.cat([c["mask"][order], torch.zeros(size, extra, dtype=torch.bool)], dim=1)
        batch = [widened(c["logprobs"]).to(dtype), widened(c["old_logprobs"]).to(dtype),
                 None if beta == 0 else widened(c["ref_logprobs"]).to(dtype), c["advantages"][order].to(dtype), mask]
        options = {} if case == "grpo" else {"clip_eps": float(c["clip_eps"]), "beta": beta, "loss_type": loss_type}
        if loss_type == "dr_grpo":
            options["max_completion_length"] = max_len
        if case == "grpo":
            assert float(c["clip_eps"]) == 0.2 and beta == 0.04 and max_len == width  # the defaults, left to grpo_loss
        got, what = run_loss(impl, batch, options)
        what += f" (trl's case {case!r}, its rows shuffled, {extra} masked column(s) added)"
        tol = {"atol": 1e-6, "rtol": 1e-4} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-3}
        assert_close(got["loss"]["tensor"].double(), c["loss"], f"{what}: the loss", oracle="trl's GRPOTrainer", check_dtype=False,
                     **tol)
        grad = torch.cat([c["grad"][order], torch.zeros(size, extra, dtype=torch.float64)], dim=1)
        assert_close(got["grads"]["logprobs"].double(), grad, f"{what}: the gradient with respect to logprobs", check_dtype=False,
                     oracle="autograd through trl's GRPOTrainer loss", **tol)
        check_stats(got, what, c["kl"] if beta else None, c["clip_fraction"], beta)


def test_grpo_loss_ignores_what_is_masked(impl, gen):
    for loss_type in LOSS_TYPES:
        batch = fresh_batch(gen, torch.float32)
        options = {"loss_type": loss_type, "beta": float(torch.empty(()).uniform_(0.02, 0.3, generator=gen))}
        leaf = batch[0].double().requires_grad_(True)
        want = grpo_formula(leaf, *batch[1:], **options)[0]
        want.backward()
        masked = ~batch[4]
        # garbage where the mask is False: inf, -inf, NaN and huge values, different in each input
        poisoned = []
        for t in batch[:3]:
            pick = torch.randint(0, 4, t.shape, generator=gen)
            junk = torch.tensor([math.inf, -math.inf, math.nan, 1e30])[pick]
            poisoned.append(torch.where(masked, junk, t))
        got, what = run_loss(impl, poisoned + batch[3:], options)
        what += " with inf, -inf, NaN and 1e30 at the masked positions of logprobs, old_logprobs and ref_logprobs"
        loss, grad = got["loss"]["tensor"], got["grads"]["logprobs"]
        if not bool(torch.isfinite(loss)):
            clean, _ = run_loss(impl, batch, options)
            fits = torch.allclose(clean["loss"]["tensor"].double(), want.detach(), rtol=1e-4, atol=1e-6)
            raise Mismatch(f"{what}: the loss is {float(loss)}; expected {float(want.detach()):.6g}, as with any finite values "
                           "there: what is masked must not matter" + (f"\n{LOOKS_LIKE}{TIMES_MASK[0]}. {TIMES_MASK[1]}" if fits else ""))
        assert_close(loss.double(), want.detach(), f"{what}: the loss", oracle="the formula on the counted tokens alone",
                     atol=1e-5, rtol=1e-4, check_dtype=False)
        if not bool(torch.isfinite(grad).all()):
            where = (~torch.isfinite(grad)).nonzero()[0].tolist()
            raise Mismatch(f"{what}: the gradient with respect to logprobs is {float(grad[tuple(where)])} at {tuple(where)}, a masked "
                           f"position; expected 0 there (and the loss is right)\n{LOOKS_LIKE}{WHERE_AFTER[0]}. {WHERE_AFTER[1]}")
        assert_close(grad.double(), leaf.grad, f"{what}: the gradient with respect to logprobs", check_dtype=False,
                     oracle="autograd through the formula (0 at every masked position)", atol=1e-6, rtol=1e-4)


def test_grpo_loss_trains_only_the_policy(impl, gen):
    """The gradient reaches logprobs alone, also when old_logprobs IS logprobs (the first pass over
    a batch: every ratio 1, and its gradient the policy gradient's)."""
    for loss_type in ("grpo", "bnpo"):
        lp, _, ref, adv, mask = fresh_batch(gen, torch.float64)
        options = {"loss_type": loss_type}
        got, what = run_loss(impl, [lp, lp, ref, adv, mask], options, same_old=True)
        what += ", old_logprobs being logprobs itself (the same tensor)"
        check_constants(got, what)
        leaf = lp.clone().requires_grad_(True)
        want = grpo_formula(leaf, lp, ref, adv, mask, **options)[0]
        want.backward()
        grad = got["grads"]["logprobs"]
        assert_close(got["loss"]["tensor"], want.detach(), f"{what}: the loss", oracle="the formula (every ratio 1)", atol=1e-6)
        ratio_frozen = policy_term_frozen_grad(lp, ref, adv, mask, loss_type)
        named = [Mistake(*OLD_ATTACHED, ratio_frozen)]
        assert_close(grad, leaf.grad, f"{what}: the gradient with respect to logprobs",
                     oracle="autograd through the formula (old_logprobs a constant)", atol=1e-6, rtol=1e-4, mistakes=named)


def policy_term_frozen_grad(lp, ref, adv, mask, loss_type, beta=0.04):
    """The gradient when the ratio exp(logprobs - logprobs) carries none: the KL term's alone."""
    leaf = lp.clone().requires_grad_(True)
    keep = mask
    d = torch.where(keep, ref, 0.0) - torch.where(keep, leaf, 0.0)
    per_token = torch.where(keep, -adv[:, None] + beta * (torch.exp(d) - d - 1), 0.0)
    counts = keep.sum(1).double()
    loss = (per_token.sum(1) / counts.clamp(min=1)).mean() if loss_type == "grpo" else per_token.sum() / counts.sum().clamp(min=1)
    loss.backward()
    return leaf.grad


def test_grpo_loss_without_kl_never_reads_the_reference(impl, gen):
    lp, old, ref, adv, mask = fresh_batch(gen, torch.float32)
    options = {"beta": 0.0, "loss_type": LOSS_TYPES[n(gen, 0, 2)]}
    leaf = lp.double().requires_grad_(True)
    want = grpo_formula(leaf, old, ref, adv, mask, **options)[0]
    want.backward()
    for reference, words in ((None, "ref_logprobs=None"), (torch.full_like(lp, math.nan), "ref_logprobs all NaN")):
        got, what = run_loss(impl, [lp, old, reference, adv, mask], options)
        what += f", {words}"
        assert_close(got["loss"]["tensor"].double(), want.detach(), f"{what}: the loss", check_dtype=False,
                     oracle="the clipped objective alone (beta 0: no KL term, the reference not read)", atol=1e-6, rtol=1e-4)
        assert_close(got["grads"]["logprobs"].double(), leaf.grad, f"{what}: the gradient with respect to logprobs",
                     check_dtype=False, oracle="autograd through the formula", atol=1e-6, rtol=1e-4)
        assert_true(got["stats"].get("kl", {}).get("type") == "NoneType",
                    f"{what}: stats['kl'] is not None; expected None, since beta == 0 leaves the reference out")


def test_grpo_loss_refuses_bad_arguments(impl, gen):
    lp, old, ref, adv, mask = fresh_batch(gen, torch.float32)
    bad = ("token", "dapo", "GRPO")[n(gen, 0, 2)]
    expect_value_error(lambda: impl.call("grpo.grpo_loss", lp, old, ref, adv, mask, loss_type=bad, returns="data"),
                       f"grpo_loss(..., loss_type={bad!r})", LOSS_TYPES, why=": the message should name the loss types there are")
    short = adv[:-1]
    expect_value_error(lambda: impl.call("grpo.grpo_loss", lp, old, ref, short, mask, returns="data"),
                       f"grpo_loss with logprobs of shape {tuple(lp.shape)} and advantages of shape {tuple(short.shape)}",
                       [lp.size(0), short.numel()], why=": one advantage per completion")
    narrow = old[:, :-1]
    expect_value_error(lambda: impl.call("grpo.grpo_loss", lp, narrow, ref, adv, mask, returns="data"),
                       f"grpo_loss with logprobs of shape {tuple(lp.shape)} and old_logprobs of shape {tuple(narrow.shape)}",
                       [lp.size(1), narrow.size(1)], why=": every per-token tensor has logprobs' shape")
    expect_value_error(lambda: impl.call("grpo.grpo_loss", lp, old, None, adv, mask, beta=0.1, returns="data"),
                       "grpo_loss(..., ref_logprobs=None, beta=0.1)", why=": the KL penalty needs the reference")
