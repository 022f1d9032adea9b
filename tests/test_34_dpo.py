"""Exercise 34: direct preference optimization: each answer's summed log-probability, the DPO loss
and its rewards, and a batch's loss with the policy and a frozen reference (the assistant track's
fourth).

Oracles, written here: the log-probabilities as ``F.log_softmax`` in float64, each target picked
with ``torch.take_along_dim`` and the counted ones summed; the loss as Rafailov et al.'s formula in
float64 (``F.logsigmoid``), with autograd through it; for a batch, the model of
``tests/gpt_oracle.py`` (the GPT written with PyTorch's functions, no dropout) in float64 for both
models, and for training, ``torch.optim.AdamW`` on the oracle's parameters. Fresh logits, ragged
ignore masks (a row with none counted, ignore indices other than -100), logits far apart, betas,
configurations, weights and preference batches each run. The learner's functions run on the
reference ``GPTModel`` (harness/parts/model.py), so a mistake in exercise 09 costs nothing here;
the reference model is handed over with dropout on and in training mode, as a copy of a model in
training is.
"""

import math

import torch
import torch.nn.functional as F
from gpt_oracle import gpt, gpt_params, random_config

from harness.compare import Mistake, assert_close, assert_true
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "34"
PARTS = ("model",)  # the learner's dpo.py may import GPTModel: it gets the reference one

IGNORED_COUNTED = ("the ignored targets counted: the prompt's and the padding's positions summed too",
                   "Sum only where targets != ignore_index (the ignore_index argument, not -100 written out): gather at a valid "
                   "index there (targets.masked_fill(targets == ignore_index, 0)), then zero those positions before the sum.")
MEAN = ("a mean over the tokens instead of their sum", "An answer's log-probability is the SUM of its tokens' (log p(a b) = "
        "log p(a) + log p(b | a)): .sum(dim=-1) over the counted positions, no division.")
LOG_OF_SOFTMAX = ("the log of the softmax: a probability that underflows to 0 gives -inf (or an exp that overflows, NaN)",
                  "torch.log_softmax(logits, dim=-1) computes logits - logsumexp(logits) without ever forming a probability; "
                  "in float32 any probability below ~1e-45 (a logit 104 below the largest) is 0, and log(0) = -inf.")
LOG_OF_SIGMOID = ("log(sigmoid(margin)) where logsigmoid is meant: a margin far below zero underflows sigmoid to 0, and log(0) is -inf",
                  "-F.logsigmoid(margin) computes -log(sigmoid(margin)) without forming the sigmoid (log(1 + exp(-x)), stably).")
SIGN_FLIPPED = ("the margin's sign flipped: rejected minus chosen",
                "loss = -logsigmoid(chosen_rewards - rejected_rewards): the loss falls as the CHOSEN answer's reward rises above "
                "the rejected one's. (The same holds for the log-ratios: policy's minus reference's.)")
NO_BETA = ("beta left out, of the rewards and of the loss", "chosen_rewards = beta * (policy_chosen - reference_chosen), the "
           "same for the rejected; the loss is -logsigmoid of their difference, beta inside.")
REWARDS_NO_BETA = ("beta missing from the rewards returned", "Return the rewards with beta in them: chosen_rewards = beta * "
                   "(policy_chosen - reference_chosen), the same for the rejected; the loss is -logsigmoid(chosen_rewards - "
                   "rejected_rewards) of those very rewards.")
LOSS_NO_BETA = ("beta missing from the loss (the rewards have it)", "The loss is -logsigmoid(chosen_rewards - rejected_rewards) "
                "of the rewards with beta in them: beta * ((pc - rc) - (pr - rr)), not the log-ratios' difference alone.")
REFERENCE_MINUS_POLICY = ("the log-ratio subtracted the wrong way: reference minus policy",
                          "A reward is beta * (policy - reference): positive when the policy makes the answer MORE likely than "
                          "the reference does.")
RATIOS_ADDED = ("the reference's log-ratio added instead of subtracted",
                "The margin is (pc - pr) - (rc - rr) = (pc - rc) - (pr - rr): the reference's log-ratio is subtracted.")
NO_MINUS = ("the loss without its minus sign: logsigmoid(margin), not -logsigmoid(margin)",
            "loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean(): logsigmoid is at most 0, the loss at least 0.")
BETA_TWICE = ("beta applied twice in the loss: beta * (chosen_rewards - rejected_rewards)",
              "The rewards already hold beta: loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean().")
WRONG_AXIS = ("log_softmax over the positions (dim=1), not over the vocabulary", "torch.log_softmax(logits, dim=-1): each "
              "position's distribution is over the vocabulary, the last dimension.")
SHIFTED_AGAIN = ("the targets shifted again: logits[:, :-1] read at targets[:, 1:]", "The targets are already the next tokens "
                 "(collate made targets[j] = token j + 1): read position j's logits at targets[:, j], with no shift.")
SUMMED = ("the sum over the batch, not the mean", "Average the per-pair losses: .mean().")
NOT_DETACHED = ("the rewards not detached", "Return chosen_rewards.detach() and rejected_rewards.detach(): they are for "
                "logging, and a logged value with a graph keeps the whole batch's activations alive.")
NOT_FROZEN = ("the reference not frozen: the loss's gradients reach it",
              "Run the reference under torch.no_grad(): with torch.no_grad(): reference_chosen = sequence_logprobs(reference(...), ...).")
REFERENCE_TRAINING = ("the reference not in eval mode: its dropout is on",
                      "Call reference.eval() before running it: in training mode its dropout zeroes activations at random, so its "
                      "log-probabilities change from call to call and are not the reference model's.")
NO_REFERENCE = ("the policy used as its own reference: every reward is 0",
                "The reference's log-probabilities come from reference(inputs), the other model.")


# ------------------------------------------------------------------------------------ the oracles


def summed_logprobs(logits, targets, ignore_index=-100, variant=""):
    """``(batch,)`` float64: each row's log-probabilities of its counted targets, summed.
    ``variant``: ``ignored_counted`` (the ignored positions read at id 0 and summed too), ``mean``
    (over the counted positions; an empty row 0), ``mean_nan`` (the same, an empty row 0 / 0),
    ``mean_all`` (over every position), ``wrong_axis`` (log_softmax over the positions),
    ``shifted_again`` (position j's logits read at target j + 1)."""
    if variant == "shifted_again":
        return summed_logprobs(logits[:, :-1], targets[:, 1:], ignore_index)
    table = F.log_softmax(logits.double(), dim=1 if variant == "wrong_axis" else -1)
    keep = targets != ignore_index
    per_token = torch.take_along_dim(table, torch.where(keep, targets, torch.zeros_like(targets))[..., None], dim=-1)[..., 0]
    if variant == "ignored_counted":
        return per_token.sum(-1)
    per_token = torch.where(keep, per_token, torch.zeros_like(per_token))
    total, count = per_token.sum(-1), keep.sum(-1).double()
    if variant == "mean":
        return total / count.clamp(min=1)
    if variant == "mean_nan":
        return total / count
    if variant == "mean_all":
        return total / targets.size(-1)
    return total


def dpo_formula(pc, pr, rc, rr, beta, variant=""):
    """``(loss, chosen_rewards, rejected_rewards)`` in float64; ``variant`` makes a known mistake."""
    pc, pr, rc, rr = (t.double() for t in (pc, pr, rc, rr))
    scale = 1.0 if variant == "no_beta" else beta
    if variant == "reference_minus_policy":
        chosen, rejected = scale * (rc - pc), scale * (rr - pr)
    elif variant == "no_reference":
        chosen, rejected = torch.zeros_like(pc), torch.zeros_like(pr)
    else:
        chosen, rejected = scale * (pc - rc), scale * (pr - rr)
    margin = {"sign": rejected - chosen, "ratios_added": scale * ((pc - pr) + (rc - rr)),
              "beta_twice": beta * (chosen - rejected)}.get(variant, chosen - rejected)
    per_pair = F.logsigmoid(margin) if variant == "no_minus" else -F.logsigmoid(margin)
    if variant == "log_of_sigmoid":  # in float32, as the inputs the test gives it in: the sigmoid underflows
        per_pair = -torch.log(torch.sigmoid(margin.float())).double()
    return (per_pair.sum() if variant == "summed" else per_pair.mean()), chosen, rejected


def batch_logprobs(params, cfg, batch, variant=""):
    """The summed log-probabilities ``[chosen, rejected]`` of ``params``' model on ``batch``, in float64."""
    p = {k: v.double() for k, v in params.items()}
    return [summed_logprobs(gpt(batch[f"{side}_inputs"], p, cfg), batch[f"{side}_targets"], variant=variant)
            for side in ("chosen", "rejected")]


def batch_oracle(policy, reference, cfg, batch, beta, variant=""):
    """``dpo_batch_loss``'s three outputs in float64, the reference without dropout."""
    seq = variant if variant in ("ignored_counted", "mean", "wrong_axis", "shifted_again") else ""
    pc, pr = batch_logprobs(policy, cfg, batch, seq)
    rc, rr = batch_logprobs(reference, cfg, batch, seq)
    return dpo_formula(pc, pr, rc, rr, beta, "" if seq else variant)


# The known mistakes of dpo_formula's ``variant``s, and those of them that change a reward too
VARIANTS = {"sign": SIGN_FLIPPED, "no_beta": NO_BETA, "reference_minus_policy": REFERENCE_MINUS_POLICY, "ratios_added": RATIOS_ADDED,
            "summed": SUMMED, "no_reference": NO_REFERENCE, "ignored_counted": IGNORED_COUNTED, "mean": MEAN, "no_minus": NO_MINUS,
            "beta_twice": BETA_TWICE, "wrong_axis": WRONG_AXIS, "shifted_again": SHIFTED_AGAIN, "log_of_sigmoid": LOG_OF_SIGMOID}
IN_REWARDS = ("no_beta", "reference_minus_policy", "no_reference", "ignored_counted", "mean", "wrong_axis", "shifted_again")


def loss_mistakes(fn, index):
    """The known mistakes of the loss (``index`` 0) or a reward (1, 2): ``fn(variant)`` -> the three outputs."""
    named = {k: VARIANTS[k] for k in IN_REWARDS} if index else VARIANTS
    return [Mistake(*words, (lambda v=variant: fn(v)[index].float())) for variant, words in named.items()]


# ------------------------------------------------------------------------------------ random inputs


def ignore_mask(gen, batch, width):
    """``(batch, width)`` bool, True where a target is ignored: per row a prompt prefix and a padding
    suffix of random lengths; one row has none ignored, one row all."""
    rows = []
    full, empty = torch.randperm(batch, generator=gen)[:2].tolist()
    for b in range(batch):
        if b == full:
            rows.append(torch.zeros(width, dtype=torch.bool))
            continue
        if b == empty:
            rows.append(torch.ones(width, dtype=torch.bool))
            continue
        start = n(gen, 0, width - 1)
        stop = n(gen, start + 1, width)
        j = torch.arange(width)
        rows.append((j < start) | (j >= stop))
    return torch.stack(rows)


def random_targets(gen, batch, width, vocab, ignore_index):
    targets = torch.randint(0, vocab, (batch, width), generator=gen)
    return targets.masked_fill(ignore_mask(gen, batch, width), ignore_index)


def padded(rows, pad, ignore_index=-100):
    """``(inputs, targets)`` for ``(token_ids, prompt_length)`` rows, as exercise 31's ``collate``
    with ``mask_prompt=True`` makes them: each row, then one end-of-text token and padding (all
    ``pad``); target ``j`` the token at ``j + 1``; ignored: the prompt's targets (``j <
    prompt_length - 1``) and every pad after the first."""
    longest = max(len(ids) for ids, _ in rows)
    inputs = torch.full((len(rows), longest), pad, dtype=torch.long)
    targets = torch.full((len(rows), longest), ignore_index, dtype=torch.long)
    for b, (ids, prompt) in enumerate(rows):
        seq = torch.tensor(ids + [pad])
        inputs[b, : len(ids)] = seq[:-1]
        targets[b, : len(ids)] = seq[1:]
        targets[b, : max(prompt - 1, 0)] = ignore_index
    return inputs, targets


def preference_batch(gen, cfg, rows=(2, 4)):
    """A batch as ``collate_preferences`` makes it: per pair one prompt and two answers of their own
    lengths, the chosen and the rejected sequences padded apart (the pad a random id); the first
    chosen sequence exactly context_length tokens long."""
    limit, vocab = cfg["context_length"], cfg["vocab_size"]
    pad = n(gen, 0, vocab - 1)
    sides = {"chosen": [], "rejected": []}
    for pair in range(n(gen, *rows)):
        prompt = torch.randint(0, vocab, (n(gen, 1, limit - 2),), generator=gen).tolist()
        for side, rows_of_side in sides.items():
            room = limit - len(prompt)  # the first pair's chosen sequence fills the context exactly, whatever the draw
            length = room if pair == 0 and side == "chosen" else n(gen, 1, room)
            answer = torch.randint(0, vocab, (length,), generator=gen).tolist()
            rows_of_side.append((prompt + answer, len(prompt)))
    batch = {}
    for side, rows_of_side in sides.items():
        batch[f"{side}_inputs"], batch[f"{side}_targets"] = padded(rows_of_side, pad)
    return batch


def model_case(gen, **fixed):
    """A small GPT configuration and two sets of weights, the policy's and the reference's (the
    reference the policy with noise added: near it, as after some training, but not equal)."""
    heads = n(gen, 1, 2)
    cfg = random_config(gen, **{"context_length": n(gen, 6, 12), "n_heads": heads, "emb_dim": heads * n(gen, 4, 6),
                                "n_layers": n(gen, 1, 2), "vocab_size": n(gen, 10, 40), **fixed})
    policy = gpt_params(gen, cfg)
    reference = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in policy.items()}
    return cfg, policy, reference


def short(t):
    return "[" + ", ".join(f"{float(x):.4g}" for x in t.flatten()) + "]"


def describe_model(cfg):
    return f"GPTModel(vocab_size={cfg['vocab_size']}, emb_dim={cfg['emb_dim']}, n_layers={cfg['n_layers']})"


def describe_batch(batch):
    return (f"a batch of {batch['chosen_inputs'].size(0)} preference pairs (chosen {tuple(batch['chosen_inputs'].shape)}, "
            f"rejected {tuple(batch['rejected_inputs'].shape)})")


# ------------------------------------------------------------------------------------ sequence_logprobs


def test_sequence_logprobs_sums_the_counted_targets(impl, gen):
    for dtype, ignore_index in ((torch.float32, None), (torch.float64, -n(gen, 1, 99))):
        batch, width, vocab = n(gen, 3, 6), n(gen, 3, 12), n(gen, 5, 50)
        logits = (torch.randn(batch, width, vocab, generator=gen) * 2).to(dtype)
        ii = -100 if ignore_index is None else ignore_index
        targets = random_targets(gen, batch, width, vocab, ii)
        g = torch.randn(batch, generator=gen, dtype=dtype)
        kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
        res = impl.call("dpo.sequence_logprobs", logits, targets, grad_output=g, grad_wrt=(0,), substitute=PARTS, **kwargs)
        counted = (targets != ii).sum(-1).tolist()
        what = (f"sequence_logprobs(logits of shape {tuple(logits.shape)}, {dtype}, targets with {counted} counted per row"
                + (f", ignore_index={ignore_index})" if kwargs else ")"))
        leaf = logits.double().requires_grad_(True)
        want = summed_logprobs(leaf, targets, ii)
        want.backward(g.double())
        mistakes = [Mistake(*IGNORED_COUNTED, summed_logprobs(logits, targets, ii, "ignored_counted").to(dtype))]
        mistakes += [Mistake(*MEAN, summed_logprobs(logits, targets, ii, v).to(dtype)) for v in ("mean", "mean_nan", "mean_all")]
        mistakes += [Mistake(*WRONG_AXIS, summed_logprobs(logits, targets, ii, "wrong_axis").to(dtype)),
                     Mistake(*SHIFTED_AGAIN, summed_logprobs(logits, targets, ii, "shifted_again").to(dtype))]
        assert_close(res.out, want.detach().to(dtype), what, oracle="the sum of log_softmax(logits)[target] over the counted targets, "
                     "in float64", mistakes=mistakes)
        assert_close(res.grad(0), leaf.grad.to(dtype), f"the gradient of {what} with respect to logits",
                     oracle="autograd through the oracle", atol=1e-5, rtol=1e-4)


def test_sequence_logprobs_is_stable_on_logits_far_apart(impl, gen):
    batch, width, vocab = n(gen, 2, 4), n(gen, 4, 10), n(gen, 8, 40)
    logits = torch.randn(batch, width, vocab, generator=gen) * 3
    sign = torch.randint(0, 2, (batch, 1, 1), generator=gen) * 2 - 1
    logits += sign * torch.empty(batch, 1, 1).uniform_(200, 400, generator=gen)  # an offset per row: exp() of it over- or underflows
    targets = random_targets(gen, batch, width, vocab, -100)
    counted = (targets != -100).nonzero().tolist()
    far = [counted[i] for i in torch.randperm(len(counted), generator=gen)[: max(1, len(counted) // 2)].tolist()]
    # each far target's logit 150 to 1,000 below its position's largest: its probability underflows (the first's in float64 too)
    for k, (b, j) in enumerate(far):
        gap = float(torch.empty(()).uniform_(800 if k == 0 else 150, 1000, generator=gen))
        logits[b, j, targets[b, j]] = logits[b, j].max() - gap
    res = impl.call("dpo.sequence_logprobs", logits, targets, substitute=PARTS)
    want = summed_logprobs(logits, targets)
    what = (f"sequence_logprobs(float32 logits of shape {tuple(logits.shape)}, offsets of ±200 to 400 per row, {len(far)} target(s) "
            "150 to 1,000 below their position's largest logit)")
    assert_true(isinstance(res.out, torch.Tensor) and res.out.shape == want.shape, f"{what} has shape {tuple(res.out.shape)}; expected "
                f"{tuple(want.shape)}, one log-probability per row")
    bad = ~torch.isfinite(res.out)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise Mismatch(f"{what} is {float(res.out[b])} in row {b}, where the log-probability is {float(want[b]):.6g}; expected finite "
                       f"values everywhere\nThis looks like: {LOG_OF_SOFTMAX[0]}. {LOG_OF_SOFTMAX[1]}")
    assert_close(res.out, want.float(), what, oracle="log_softmax in float64, the counted targets summed", atol=1e-3, rtol=1e-5)


# ------------------------------------------------------------------------------------ dpo_loss


def logprob_quadruple(gen, size, beta, dtype):
    """The policy's and the reference's log-probabilities of ``size`` chosen and rejected answers:
    sums of tens of tokens, the rewards beta * (policy - reference) of order 1."""
    pc = -torch.empty(size).uniform_(5, 80, generator=gen)
    pr = -torch.empty(size).uniform_(5, 80, generator=gen)
    rc = pc - torch.randn(size, generator=gen) * 1.5 / beta
    rr = pr - torch.randn(size, generator=gen) * 1.5 / beta
    return [t.to(dtype) for t in (pc, pr, rc, rr)]


def check_triple(got, what):
    """The structure of a ``(loss, chosen_rewards, rejected_rewards)`` return."""
    if not got["ok"]:
        raise Mismatch(f"{what} returned a {got['type']}" + (f" of {got['length']} items" if got.get("length") is not None else "")
                       + "; expected a tuple (loss, chosen_rewards, rejected_rewards)")
    for name in ("loss", "chosen", "rejected"):
        assert_true(got[name]["tensor"] is not None, f"{what}: {'the loss' if name == 'loss' else name + '_rewards'} is a "
                                                     f"{got[name]['type']}; expected a tensor")


def in_dtype_of(t, want, mistakes):
    """``want`` and the mistakes' outputs in ``t``'s dtype (float32 when ``t`` is not floating)."""
    dtype = t.dtype if t.is_floating_point() else torch.float32
    return want.to(dtype), [Mistake(m.name, m.fix, (lambda m=m: m.output().to(dtype))) for m in mistakes]


def where_beta_is_missing(mistakes, loss, loss_mistakes, words):
    """The mistakes with "beta left out" named ``words`` instead, unless ``loss`` (the learner's)
    is the loss without beta too: a reward or a loss without beta shows where beta is missing, not
    that it is missing everywhere."""
    no_beta = [m for m in loss_mistakes if m.name == NO_BETA[0]]
    if no_beta and loss is not None and loss.shape == () and no_beta[0].matches(loss, 1e-3, 1e-5):
        return mistakes
    return [Mistake(*words, m.output) if m.name == NO_BETA[0] else m for m in mistakes]


LOGPROBS = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")


def pairing_mistakes(quad, beta, index):
    """A reward (``index`` 1: the chosen, 2: the rejected) computed from the wrong pair of the four
    log-probabilities ``quad`` (in ``dpo_loss``'s order), each pair named by what it took. The
    reference minus the policy of the right answer has a name of its own."""
    side = "chosen" if index == 1 else "rejected"
    right = (0, 2) if index == 1 else (1, 3)
    out = []
    for a in range(4):
        for b in range(4):
            if a != b and (a, b) not in (right, right[::-1]):
                out.append(Mistake(f"{side}_rewards computed as beta * ({LOGPROBS[a]} - {LOGPROBS[b]}): the log-probabilities paired "
                                   "wrongly", f"{side}_rewards = beta * ({LOGPROBS[right[0]]} - {LOGPROBS[right[1]]}), with the "
                                   "arguments in dpo_loss's order (policy_chosen, policy_rejected, reference_chosen, "
                                   "reference_rejected).", (lambda a=a, b=b: beta * (quad[a].double() - quad[b].double()))))
    return out


def which_reward_lacks_beta(mistakes, got, want, mistakes_of, other, atol, rtol):
    """A reward without beta is named by what the other reward (``other``: 1 chosen, 2 rejected)
    shows: when it lacks beta too, the names above stand (the rewards, or the rewards and the loss);
    when it has beta, beta is missing from this one alone; when it shows neither, only that this
    one lacks it."""
    side, other_side = ("rejected", "chosen") if other == 1 else ("chosen", "rejected")
    t = got[other_side]["tensor"]
    if t is None or not t.is_floating_point() or tuple(t.shape) != tuple(want[other].shape):
        return mistakes
    t = t.double()
    no_beta = [m for m in mistakes_of(other) if m.name == NO_BETA[0]]
    if no_beta and no_beta[0].matches(t, rtol, atol):
        return mistakes
    if torch.allclose(t, want[other].double(), rtol=rtol, atol=atol):
        words = (f"beta missing from {side}_rewards only ({other_side}_rewards have it)",
                 f"{side}_rewards = beta * (policy_{side} - reference_{side}), as {other_side}_rewards; the loss is "
                 "-logsigmoid(chosen_rewards - rejected_rewards) of those rewards.")
    else:
        words = (f"beta missing from {side}_rewards", f"{side}_rewards = beta * (policy_{side} - reference_{side}).")
    return [Mistake(*words, m.output) if m.name in (NO_BETA[0], REWARDS_NO_BETA[0]) else m for m in mistakes]


def check_rewards(got, want, what, mistakes_of, size, atol=1e-5, rtol=1e-4):
    for index, name in ((1, "chosen"), (2, "rejected")):
        t = got[name]["tensor"]
        assert_true(tuple(t.shape) == (size,), f"{what}: {name}_rewards has shape {tuple(t.shape)}; expected ({size},), one per pair")
        loss = got["loss"]["tensor"]
        loss = loss.double() if loss.is_floating_point() else None
        named = where_beta_is_missing(mistakes_of(index), loss, mistakes_of(0), REWARDS_NO_BETA)
        named = which_reward_lacks_beta(named, got, want, mistakes_of, 3 - index, atol, rtol)
        expected, mistakes = in_dtype_of(t, want[index], named)
        assert_close(t, expected, f"{what}: {name}_rewards", oracle=f"beta * (policy_{name} - reference_{name})", atol=atol,
                     rtol=rtol, mistakes=mistakes)


def check_loss(got, want, what, mistakes_of, atol=1e-5, rtol=1e-4):
    t = got["loss"]["tensor"]
    assert_true(t.dim() == 0, f"{what}: the loss has shape {tuple(t.shape)}; expected a 0-d tensor, the mean over the batch")
    # checked after the rewards, which were right: they have beta, so a loss without it is missing it alone, and no
    # mistake that changes a reward (the reference minus the policy, which flips the loss's margin as its sign does) fits
    in_rewards = {VARIANTS[k][0] for k in IN_REWARDS if k != "no_beta"}
    named = [Mistake(*LOSS_NO_BETA, m.output) if m.name == NO_BETA[0] else m for m in mistakes_of(0) if m.name not in in_rewards]
    expected, mistakes = in_dtype_of(t, want[0], named)
    assert_close(t, expected, f"{what}: the loss", oracle="the mean of -logsigmoid(chosen_rewards - rejected_rewards)", atol=atol,
                 rtol=rtol, mistakes=mistakes)


def check_detached(got, what):
    attached = [name for name in ("chosen", "rejected") if got[name]["requires_grad"]]
    if attached:
        verb = "requires" if len(attached) == 1 else "require"
        raise Mismatch(f"{what}: {' and '.join(n + '_rewards' for n in attached)} {verb} gradients (a graph comes with them); expected "
                       f"them detached\nThis looks like: {NOT_DETACHED[0]}. {NOT_DETACHED[1]}")


def test_dpo_loss_matches_the_formula(impl, gen):
    # the third: one pair's margin -150, whose sigmoid underflows to 0 in float32 (the loss stays finite: logsigmoid)
    for beta, dtype, far in ((float(torch.empty(()).uniform_(0.02, 0.8, generator=gen)), torch.float32, False), (None, torch.float64, False),
                             (float(torch.empty(()).uniform_(0.02, 0.8, generator=gen)), torch.float32, True)):
        b = 0.1 if beta is None else beta
        size = n(gen, 2, 8)
        inputs = logprob_quadruple(gen, size, b, dtype)
        if far:
            j = n(gen, 0, size - 1)
            inputs[2][j] = inputs[0][j] + 75 / b  # the chosen reward -75, the rejected +75
            inputs[3][j] = inputs[1][j] - 75 / b
        got = impl.scenario("dpo_run.loss", *inputs, beta=beta, substitute=PARTS).out
        what = (f"dpo_loss on {size} pairs of {dtype} log-probabilities"
                + (" with the default beta (0.1)" if beta is None else f", beta={beta:.4g}")
                + (f", pair {j}'s reward margin -150 (far below zero)" if far else ""))
        check_triple(got, what)
        leaves = [t.double().requires_grad_(True) for t in inputs]
        want = dpo_formula(*leaves, b)
        want[0].backward()
        detached = [w.detach() for w in want]

        def mistakes_of(index, inputs=inputs, b=b):
            pairs = pairing_mistakes(inputs, b, index) if index else []
            return loss_mistakes(lambda v: dpo_formula(*inputs, b, v), index) + pairs

        check_rewards(got, detached, what, mistakes_of, size)
        check_detached(got, what)
        check_loss(got, detached, what, mistakes_of)
        assert_true(got["loss"]["requires_grad"] and got["grads"] is not None,
                    f"{what}: the loss has no autograd graph; expected one that backpropagates into the policy's log-probabilities "
                    "(no torch.no_grad(), no .detach(), no .item() on the loss)")
        for k, name in enumerate(("policy_chosen_logprobs", "policy_rejected_logprobs")):  # the reference's may be detached
            assert_true(got["grads"][k] is not None, f"{what}: after loss.backward(), {name} has no gradient; expected one")
            assert_close(got["grads"][k], leaves[k].grad.to(dtype), f"{what}: the gradient of the loss with respect to {name}",
                         oracle="autograd through the formula", atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------ dpo_batch_loss


def test_dpo_batch_loss_runs_the_reference_frozen_and_in_eval_mode(impl, gen):
    # the policy in training mode without dropout, then in eval mode with dropout: either way, the mode the caller chose
    for policy_drop, policy_training in ((0.0, True), (float(torch.empty(()).uniform_(0.2, 0.5, generator=gen)), False)):
        cfg, policy, reference = model_case(gen)
        batch = preference_batch(gen, cfg)
        beta = float(torch.empty(()).uniform_(0.05, 0.5, generator=gen))
        reference_drop = float(torch.empty(()).uniform_(0.3, 0.6, generator=gen))
        got = impl.scenario("dpo_run.batch_loss", cfg, policy, reference, policy_drop, policy_training, reference_drop, batch, beta,
                            substitute=PARTS).out
        what = (f"dpo_batch_loss(policy, reference, batch, beta={beta:.4g}) with {describe_model(cfg)} as policy (in "
                f"{'training' if policy_training else 'eval'} mode, drop_rate={policy_drop:.2g}) and as reference (other weights, "
                f"drop_rate={reference_drop:.2g}, handed over in training mode), on {describe_batch(batch)}")
        for call in got["calls"]:
            check_triple(call, what)
        size = batch["chosen_inputs"].size(0)
        leaves = {k: v.double().requires_grad_(True) for k, v in policy.items()}
        want = batch_oracle(leaves, reference, cfg, batch, beta)
        want[0].backward()
        detached = [w.detach() for w in want]
        first_call, second_call = got["calls"][0], got["calls"][1]

        if not got["reference_seen"]:
            raise Mismatch(f"{what}: the reference model never ran; expected its log-probabilities of the chosen and the rejected "
                           f"answers\nThis looks like: {NO_REFERENCE[0]}. {NO_REFERENCE[1]}")
        changed = [t for t, _ in got["policy_seen"] if t != policy_training]
        assert_true(not changed and got["policy_training"] == policy_training,
                    f"{what}: the policy ran in {'eval' if policy_training else 'training'} mode; expected the mode the caller left "
                    f"it in, {'training' if policy_training else 'eval'}: dpo_batch_loss does not call policy.train() or policy.eval()")
        assert_true(all(g for _, g in got["policy_seen"]), f"{what}: the policy ran with gradients off; expected its log-probabilities "
                                                           "with gradients, for the loss to train it")
        # the reference's dropout: it ran in training mode, its outputs off the eval-mode oracle and different at each call
        off = not torch.allclose(first_call["chosen"]["tensor"].double(), detached[1], atol=1e-4, rtol=1e-3)
        varies = not all(torch.equal(first_call[k]["tensor"], second_call[k]["tensor"]) for k in ("loss", "chosen", "rejected"))
        in_training = sum(t for t, _ in got["reference_seen"])
        if in_training or off and varies:
            raise Mismatch(f"{what}: chosen_rewards is {short(first_call['chosen']['tensor'])} at the first call and "
                           f"{short(second_call['chosen']['tensor'])} at the second; expected {short(detached[1])} both "
                           f"times, the reference without dropout (the reference model ran {in_training} of "
                           f"{len(got['reference_seen'])} time(s) in training mode)"
                           f"\nThis looks like: {REFERENCE_TRAINING[0]}. {REFERENCE_TRAINING[1]}")
        assert_true(not got["reference_training"], f"{what} left the reference model in training mode; expected it left in eval mode "
                                                   "(reference.eval(), and no .train() after it)")
        if got["reference_grads"]:
            raise Mismatch(f"{what}: after loss.backward(), {len(got['reference_grads'])} parameter(s) of the reference model have a "
                           f"gradient ({', '.join(got['reference_grads'][:4])}); expected none\n"
                           f"This looks like: {NOT_FROZEN[0]}. {NOT_FROZEN[1]}")
        with_grad = sum(g for _, g in got["reference_seen"])
        assert_true(not with_grad, f"{what}: the reference model ran {with_grad} time(s) with gradients on; expected it under "
                                   "torch.no_grad(): it never trains, so no graph is needed (and none is kept)")

        quad = batch_logprobs(policy, cfg, batch) + batch_logprobs(reference, cfg, batch)

        def mistakes_of(index, quad=quad):
            pairs = pairing_mistakes(quad, beta, index) if index else []
            return loss_mistakes(lambda v: batch_oracle(policy, reference, cfg, batch, beta, v), index) + pairs

        check_rewards(first_call, detached, what, mistakes_of, size, atol=1e-4, rtol=1e-4)
        check_detached(first_call, what)
        check_loss(first_call, detached, what, mistakes_of, atol=1e-5, rtol=1e-4)
        assert_true(got["backward"], f"{what}: the loss has no autograd graph; expected one that backpropagates into the policy")
        missing = sorted(set(leaves) - set(got["policy_grads"]))
        assert_true(not missing, f"{what}: after loss.backward(), {len(missing)} of the policy's parameters have no gradient "
                                 f"({', '.join(missing[:4])}); expected every one")
        for name, leaf in leaves.items():
            assert_close(got["policy_grads"][name], leaf.grad.float(), f"{what}: the gradient of the loss with respect to the policy's "
                         f"{name}", oracle="autograd through the oracle", atol=1e-4, rtol=1e-3)


def train_oracle(cfg, state, batch, beta, lr, eps, steps, variant=""):
    """The training run of parts/dpo_run.py's ``train``, on the oracle's parameters in float64:
    each call's three outputs (``variant`` in the loss)."""
    params = {k: v.double().clone().requires_grad_(True) for k, v in state.items()}
    opt = torch.optim.AdamW(params.values(), lr=lr, eps=eps, weight_decay=0.0)
    out = []
    for step in range(steps + 1):
        opt.zero_grad()
        loss, chosen, rejected = batch_oracle(params, state, cfg, batch, beta, variant)
        out.append([loss.detach(), chosen.detach(), rejected.detach()])
        if step < steps:
            loss.backward()
            opt.step()
    return out


def test_two_adamw_steps_raise_the_chosen_reward_above_the_rejected(impl, gen):
    cfg, state, _ = model_case(gen)
    batch = preference_batch(gen, cfg, rows=(3, 5))
    beta, lr, eps, steps = float(torch.empty(()).uniform_(0.1, 0.5, generator=gen)), 0.02, 1e-6, 2
    got = impl.scenario("dpo_run.train", cfg, state, 0.5, batch, beta, lr, eps, steps, substitute=PARTS).out
    what = (f"{steps} steps of torch.optim.AdamW(lr={lr}, eps={eps:g}) on dpo_batch_loss(policy, reference, batch, "
            f"beta={beta:.4g}), the policy and the reference both {describe_model(cfg)} with the same weights at the start (the "
            f"reference with dropout 0.5, handed over in training mode), on {describe_batch(batch)}")
    want = train_oracle(cfg, state, batch, beta, lr, eps, steps)
    assert_true(len(got["calls"]) == steps + 1, f"{what}: the run stopped after {len(got['calls'])} call(s); expected {steps + 1}")
    size = batch["chosen_inputs"].size(0)
    for k, (call, w) in enumerate(zip(got["calls"], want)):
        when = f"{what}: the call after step {k}" if k else f"{what}: the first call (policy = reference, so every reward is 0)"
        check_triple(call, when)

        def mistakes_of(index, k=k):
            return [Mistake(*SIGN_FLIPPED, lambda: train_oracle(cfg, state, batch, beta, lr, eps, steps, "sign")[k][index].float()),
                    Mistake(*NO_BETA, lambda: train_oracle(cfg, state, batch, beta, lr, eps, steps, "no_beta")[k][index].float())]

        check_rewards(call, w, when, mistakes_of, size, atol=1e-3, rtol=1e-3)
        check_loss(call, w, when, mistakes_of, atol=1e-4, rtol=1e-3)
    assert_true(not got["reference_grads"] and not got["reference_changed"],
                f"{what}: the reference model's {', '.join((got['reference_grads'] or got['reference_changed'])[:4])} got a gradient or "
                "changed; expected the reference untouched")
    last = got["calls"][-1]
    margin, final = float((last["chosen"]["tensor"] - last["rejected"]["tensor"]).mean()), float(last["loss"]["tensor"])
    assert_true(margin > 0 and final < math.log(2),
                f"{what}: after the steps the mean reward margin is {margin:.4g} and the loss {final:.4g}; expected the chosen answers' "
                f"rewards above the rejected ones' and the loss below log 2 = {math.log(2):.4g}, its value at the start")
