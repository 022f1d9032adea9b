"""Exercise 37: rollouts, G completions sampled per prompt through the KV cache, with their mask and
the sampling policy's log-probability of each token.

Oracles, written here from the docstrings' contract: for ``completion_mask``, a loop that walks each
row to its first eos; for ``sample_group``, sampling that runs ``gpt_oracle.gpt`` (the model written
with PyTorch's functions) on the WHOLE sequences at every step, in float64, with the contract's
steps written out below (``torch.multinomial`` with a generator seeded as the learner's); and, for
the log-probabilities, a float64 recomputation of the whole sequence the learner returned, read at
each token it sampled. The learner's ``sample_group`` runs on the reference ``GPTModel``
(parts/model.py) in float64, through the reference ``KVCache`` and ``gpt_cached``
(parts/kv_cache.py) in place of exercise 12's, and chooses its tokens itself, so a mistake in 09,
10 or 12 costs nothing here. The trusted scenario ``harness/parts/rollouts_run.py`` records what
each pass fed the model (rows, tokens, positions). Fresh configurations, weights, prompts, group
sizes, seeds, temperatures and end-of-text tokens each run; named mistakes come from the same
oracles with the mistake in them.
"""

import torch
from gpt_oracle import gpt, gpt_params, one_thread, random_config

from harness.compare import Mistake, assert_close_alone, expect_value_error
from harness.draw import n
from harness.failures import LearnerError, Mismatch

EXERCISE = "37"
PARTS = ("kv_cache",)  # the learner's rollouts.py imports KVCache and gpt_cached: it gets the reference ones
ORACLE = "the model run on the whole sequences at every step, in float64"
FIELDS = {"prompt_ids": torch.int64, "completion_ids": torch.int64, "mask": torch.bool, "logprobs": torch.float32}

# ------------------------------------------------------------------------------------ named mistakes

EOS_UNCOUNTED = ("the end-of-text token itself masked out", "The first eos_id belongs to the completion (the model must "
                 "learn to end): mask[i, t] is True when NO eos_id comes before t, so the first eos_id is True.")
LAST_EOS = ("the mask ended at the last eos_id, not the first", "Everything after the FIRST eos_id is False, later eos_ids "
            "included: count the eos_ids before each position (cumsum minus the position's own) and keep the positions "
            "where that count is 0.")
ONLY_EOS = ("only the eos_id tokens masked (ids != eos_id): the tokens after the first eos_id kept",
            "A completion ends at its first eos_id: every position after it is False, whatever its token; the first eos_id "
            "itself is True.")
ALL_KEPT = ("every token kept: the mask not ended at the first eos_id", "mask = completion_mask(completion_ids, eos_id): "
            "the tokens after a row's first eos_id were never part of its answer.")
NO_TEMPERATURE_LOGPROBS = ("log-probabilities without the temperature", "The tokens were drawn from softmax(logits / "
                           "temperature): take torch.log_softmax(logits / temperature, dim=-1) at the drawn token.")
PROBABILITIES = ("probabilities instead of log-probabilities", "Use torch.log_softmax(logits / temperature, dim=-1), not "
                 "the softmax (GRPO's ratio is exp(new logprob - old logprob)).")
ARGMAX_LOGPROB = ("the log-probability of the most likely token, not of the sampled one", "Gather the log-probabilities "
                  "at the token drawn, log_probs.gather(-1, drawn), not their max.")
OFF_BY_ONE = ("the log-probabilities off by one step: a token read from the distribution of the step before or after the "
              "one that drew it", "Read each token's log-probability from the same step's logits that it was drawn from.")
AFTER_TOP_K = ("log-probabilities read after top-k (renormalised over the k tokens kept)", "Take torch.log_softmax(logits "
               "/ temperature) BEFORE top-k sets logits to -inf: the log-probabilities are the full vocabulary's.")
NOT_ZEROED = ("log-probabilities left where the mask is False", "Set the log-probability to 0.0 where the row had already "
              "ended (after its first eos_id): those tokens are not the policy's.")
REPEATED_WHOLE = ("the prompts repeated as a whole batch (prompt_ids.repeat(G, 1)), not group-wise", "Use "
                  "prompt_ids.repeat_interleave(group_size, dim=0): the G completions of one prompt are adjacent rows, as "
                  "GRPO's view(B, G) expects.")
NO_TEMPERATURE_DRAW = ("the temperature has no effect on the draw", "Divide the logits by temperature BEFORE top-k and the "
                       "softmax the tokens are drawn from.")
TOP_K_IGNORED = ("top_k not applied", "With top_k, set every scaled logit below the row's k-th largest to -inf before the "
                 "softmax the tokens are drawn from.")
RUNNING_ONLY = ("tokens drawn only for the rows that had not ended", "Draw for EVERY row at every step, one "
                "torch.multinomial(probs, 1, generator=generator) on all B*G rows, and overwrite the ended rows with eos_id: "
                "so the random numbers a row gets do not depend on when the others end.")
GENERATOR_IGNORED = ("the generator ignored: torch's global generator was drawn from",
                     "Pass it on: torch.multinomial(probs, 1, generator=generator).")
NOT_FILLED = ("the tokens after a row's first eos_id not set to eos_id", "Once a row has produced eos_id it has ended: its "
              "later tokens are eos_id, whatever was drawn.")
NO_EARLY_STOP = ("generation went on after every row had ended", "Stop as soon as every row has produced eos_id: the "
                 "completions are then shorter than max_new_tokens.")
NO_CACHE = ("the whole sequence re-fed each step (no KV cache)", "Feed the prompts once, then only the tokens chosen "
            "last, (B*G, 1), through gpt_cached(model, tokens, cache) with the cache the prompts went into.")
MODEL_CALLED = ("the model called on the sequence, model(...), not the cached step", "Feed the prompts once, then one "
                "token per row per step, through gpt_cached(model, ..., cache).")
FED_ALONE = ("each new token run without the cached prefix (a new KVCache every step): it sat at position 0",
             "Make one cache before the loop; prefill it with the prompts, then feed each step's tokens through THAT cache.")
PROMPT_INCLUDED = ("the prompts included in completion_ids", "completion_ids holds only the new tokens, (B*G, T_new): "
                   "the prompts are returned apart, in prompt_ids.")
ONE_SHORT = ("generation stopped one token before the context was full", "Run min(max_new_tokens, context_length - T_p) "
             "steps: the last token makes T_p + T_new == context_length, and it is returned (it is never fed, so it needs no "
             "position).")
CONTEXT = ("the context limit not checked", "Run at most min(max_new_tokens, context_length - T_p) steps, context_length = "
           "model.pos_emb.num_embeddings.")


# ------------------------------------------------------------------------------------ the oracles


def mask_of(ids, eos_id):
    """``completion_mask`` by its contract: each row walked to its first eos_id."""
    out = torch.zeros(ids.shape, dtype=torch.bool)
    for i, row in enumerate(ids.tolist()):
        for t, token in enumerate(row):
            out[i, t] = True
            if token == eos_id:
                break
    return out


def mask_variant(ids, eos_id, variant):
    if variant == "eos_uncounted":
        return mask_of(ids, eos_id) & (ids != eos_id)
    if variant == "last_eos":
        last = [max([t for t, x in enumerate(row) if x == eos_id], default=len(row)) for row in ids.tolist()]
        return torch.arange(ids.size(1))[None, :] <= torch.tensor(last)[:, None]
    return ids != eos_id  # only_eos


@one_thread()
def rollout(params, cfg, prompts, group_size, max_new_tokens, eos_id, temperature, top_k=None, seed=0, variant=""):
    """The contract's steps with the whole sequences through ``gpt`` at every step, in float64:
    ``(completion_ids, steps)``. ``eos_id`` -1 ends no row. ``variant``: ``repeat`` (the prompts
    repeated as a batch), ``no_temperature``, ``no_top_k``, ``running_only``, ``no_early_stop``,
    ``not_filled`` (an ended row's tokens as drawn, not eos_id)."""
    generator = torch.Generator().manual_seed(seed)
    rows = prompts.repeat(group_size, 1) if variant == "repeat" else prompts.repeat_interleave(group_size, dim=0)
    steps = min(max_new_tokens, cfg["context_length"] - rows.size(1))
    seq, ended, out = rows.clone(), torch.zeros(rows.size(0), dtype=torch.bool), []
    for _ in range(max(steps, 0)):
        scaled = gpt(seq, params, cfg)[:, -1] / (1.0 if variant == "no_temperature" else temperature)  # (N, vocab)
        if top_k is not None and variant != "no_top_k":
            kth = torch.sort(scaled, dim=-1, descending=True).values[:, min(top_k, scaled.size(-1)) - 1:][:, :1]
            scaled = torch.where(scaled >= kth, scaled, torch.tensor(float("-inf"), dtype=scaled.dtype))
        probs = torch.softmax(scaled, dim=-1)
        if variant == "running_only":
            drawn = torch.full((rows.size(0),), eos_id, dtype=torch.long)
            if bool((~ended).any()):
                drawn[~ended] = torch.multinomial(probs[~ended], 1, generator=generator)[:, 0]
        else:
            drawn = torch.multinomial(probs, 1, generator=generator)[:, 0]
        token = drawn if variant == "not_filled" else torch.where(ended, torch.full_like(drawn, eos_id), drawn)
        out.append(token)
        ended = ended | (token == eos_id)
        if bool(ended.all()) and variant != "no_early_stop":
            break
        seq = torch.cat([seq, token[:, None]], dim=1)
    return (torch.stack(out, dim=1) if out else torch.zeros(rows.size(0), 0, dtype=torch.long)), len(out)


@one_thread()
def logprob_table(params, cfg, prompt_rows, completion, temperature, variant="", top_k=None):
    """(N, T_new) float64: each sampled token's log-probability, from the WHOLE sequence the learner
    returned run once through ``gpt``. ``variant``: ``no_temperature``, ``probabilities``,
    ``argmax``, ``previous`` (a token read from the step before's distribution; the first one
    right), ``next`` (from the step after's), ``after_top_k``."""
    t_p, t_new = prompt_rows.size(1), completion.size(1)
    logits = gpt(torch.cat([prompt_rows, completion], dim=1), params, cfg)  # (N, T_p + T_new, vocab)
    scaled = logits / (1.0 if variant == "no_temperature" else temperature)
    if variant == "after_top_k":
        kth = torch.sort(scaled, dim=-1, descending=True).values[..., min(top_k, scaled.size(-1)) - 1:][..., :1]
        scaled = torch.where(scaled >= kth, scaled, torch.tensor(float("-inf"), dtype=scaled.dtype))
    log_probs = torch.log_softmax(scaled, dim=-1)
    where = torch.arange(t_new) + t_p - 1  # position t_p - 1 + t predicts token t
    if variant == "previous":
        where = torch.clamp(where - 1, min=t_p - 1)
    elif variant == "next":
        where = where + 1
    table = log_probs[:, where]  # (N, T_new, vocab)
    if variant == "argmax":
        return table.max(dim=-1).values
    picked = table.gather(-1, completion[..., None])[..., 0]  # (N, T_new)
    return picked.exp() if variant == "probabilities" else picked


# ------------------------------------------------------------------------------------ cases


def case(gen, context=(16, 24), vocab=(16, 40)):
    """A GPT configuration and float64 weights (drawn in float32)."""
    heads = n(gen, 1, 2)
    cfg = random_config(gen, context_length=n(gen, *context), n_heads=heads, emb_dim=heads * n(gen, 4, 8),
                        vocab_size=n(gen, *vocab))
    return cfg, {k: v.double() for k, v in gpt_params(gen, cfg).items()}


def prompts_of(gen, cfg, batch, length):
    """``batch`` distinct prompts of ``length`` tokens."""
    while True:
        ids = torch.randint(0, cfg["vocab_size"], (batch, length), generator=gen)
        if len({tuple(r) for r in ids.tolist()}) == batch:
            return ids


def head_of(params, cfg):
    return params["tok_emb.weight"] if cfg["tie_weights"] else params["out_head.weight"]


def eos_bias(params, cfg, eos_id, beta):
    """The weights with the final LayerNorm's shift moved along eos_id's row of the output head, so
    that eos_id's logit moves by ``beta`` at every position, and token v's by ``beta`` times
    ``head[v] . head[eos_id] / |head[eos_id]|^2``: with beta < 0 eos_id falls below every token
    whose row points away from its own (a model that never ends); with beta > 0 it rises above
    every other when its row is the longest (``longest_row``: a model that ends often)."""
    w = head_of(params, cfg)[eos_id]
    return {**params, "final_norm.shift": params["final_norm.shift"] + beta * w / w.dot(w)}


def longest_row(params, cfg):
    """The token whose row of the output head is the longest: moving along it raises its logit
    more than any other's (head[v] . w <= |head[v]| |w| < |w|^2)."""
    return int(head_of(params, cfg).norm(dim=1).argmax())


def temperature_of(gen):
    """A temperature away from 1 (below or above), so that one without it shows."""
    t = 0.55 + 0.3 * float(torch.rand(1, generator=gen))
    return t if n(gen, 0, 1) else 1.0 / t + 0.3


def eos_in_the_middle(gen, params, cfg, prompts, group_size, max_new_tokens, temperature, top_k, seed):
    """An eos_id that some row draws after its first token while other rows go on: a token the
    no-eos sampling draws in the middle of a row."""
    drawn, _ = rollout(params, cfg, prompts, group_size, max_new_tokens, -1, temperature, top_k, seed)
    cols = drawn.size(1)
    candidates = [int(drawn[r, c]) for r in range(drawn.size(0)) for c in range(1, max(cols - 1, 2)) if c < cols]
    firsts = set(drawn[:, 0].tolist())
    better = [t for t in candidates if t not in firsts and not all(t in row for row in drawn.tolist())]
    pool = better or candidates or list(range(cfg["vocab_size"]))
    return pool[n(gen, 0, len(pool) - 1)]


def run(impl, cfg, params, prompts, group_size, max_new_tokens, eos_id, **kw):
    return impl.scenario("rollouts_run.group", cfg, params, prompts, group_size, max_new_tokens, eos_id, substitute=PARTS,
                         **kw).out


def describe(cfg, prompts, group_size, max_new_tokens, eos_id, temperature=1.0, top_k=None, seed=None):
    settings = f", temperature={temperature:.3f}" + (f", top_k={top_k}" if top_k is not None else "")
    settings += f", generator=torch.Generator().manual_seed({seed})" if seed is not None else ""
    return (f"sample_group(GPTModel(context_length={cfg['context_length']}, vocab_size={cfg['vocab_size']}), prompt_ids of "
            f"shape {tuple(prompts.shape)}, group_size={group_size}, max_new_tokens={max_new_tokens}, eos_id={eos_id}"
            f"{settings})")


def fields(got, what, rows, t_p, t_new=None):
    """The returned tensors, their types, dtypes and shapes checked; ``t_new`` None: any length."""
    for name, dtype in FIELDS.items():
        value = got[name]
        if not isinstance(value, torch.Tensor):
            raise Mismatch(f"{what} returned a {got['returned']} whose {name} is {value}; expected a Rollout (or any object "
                           f"with the attributes {', '.join(FIELDS)}) of tensors")
        if value.dtype != dtype:
            raise Mismatch(f"{what}: {name} has dtype {value.dtype}; expected {dtype}")
    if tuple(got["prompt_ids"].shape) != (rows, t_p):
        raise Mismatch(f"{what}: prompt_ids has shape {tuple(got['prompt_ids'].shape)}; expected ({rows}, {t_p}), each prompt "
                       "repeated group_size times")
    shape = tuple(got["completion_ids"].shape)
    if (len(shape) == 2 and shape[1] >= t_p and tuple(got["logprobs"].shape) == (rows, shape[1] - t_p)
            and torch.equal(got["completion_ids"][:, :t_p], got["prompt_ids"])):
        raise Mismatch(f"{what}: completion_ids has shape {shape} and begins with the prompts, while logprobs has shape "
                       f"{tuple(got['logprobs'].shape)}; expected the new tokens only\nThis looks like: {PROMPT_INCLUDED[0]}. "
                       f"{PROMPT_INCLUDED[1]}")
    if len(shape) != 2 or shape[0] != rows or (t_new is not None and shape[1] != t_new):
        raise Mismatch(f"{what}: completion_ids has shape {shape}; expected ({rows}, {'T_new' if t_new is None else t_new})")
    for name in ("mask", "logprobs"):
        if tuple(got[name].shape) != shape:
            raise Mismatch(f"{what}: {name} has shape {tuple(got[name].shape)}; expected {shape}, that of completion_ids")
    return got["prompt_ids"], got["completion_ids"], got["mask"], got["logprobs"]


def check_prompts(got_prompts, prompts, group_size, what):
    want = prompts.repeat_interleave(group_size, dim=0)
    if torch.equal(got_prompts, want):
        return
    message = (f"{what}: prompt_ids rows are {got_prompts.tolist()}; expected {want.tolist()}: prompt b in rows "
               f"b*{group_size} to b*{group_size}+{group_size - 1}")
    if torch.equal(got_prompts, prompts.repeat(group_size, 1)):
        message += f"\nThis looks like: {REPEATED_WHOLE[0]}. {REPEATED_WHOLE[1]}"
    raise Mismatch(message)


def check_ids(got_ids, want, what, mistakes=(), oracle=ORACLE):
    """``completion_ids`` equal ``want``; ``mistakes``: (name, fix, the ids that mistake gives or a
    function that computes them, called only on a mismatch)."""
    if torch.equal(got_ids, want):
        return
    if got_ids.shape != want.shape:
        message = f"{what}: completion_ids has shape {tuple(got_ids.shape)}; expected {tuple(want.shape)} ({oracle})"
    else:
        r, t = (got_ids != want).nonzero()[0].tolist()
        message = (f"{what}: completion_ids[{r}, {t}] is {int(got_ids[r, t])}, expected {int(want[r, t])} ({oracle}); row {r} "
                   f"is {got_ids[r].tolist()}, expected {want[r].tolist()}")
    for name, fix, output in mistakes:
        output = output() if callable(output) else output
        if torch.equal(got_ids, output) and not torch.equal(output, want):
            message += f"\nThis looks like: {name}. {fix}"
            break
    raise Mismatch(message)


# ------------------------------------------------------------------------------------ completion_mask


def mask_case(gen):
    """(ids, eos_id): rows without eos, with eos first, with several, with eos last, and random ones."""
    vocab, length = n(gen, 6, 30), n(gen, 5, 12)
    eos = n(gen, 0, vocab - 1)
    others = [t for t in range(vocab) if t != eos]

    def row(eos_at=()):
        out = [others[n(gen, 0, len(others) - 1)] for _ in range(length)]
        for t in eos_at:
            out[t] = eos
        return out

    several = sorted(torch.randperm(length - 1, generator=gen)[: n(gen, 2, 3)].tolist())
    rows = [row(), row([0]), row(several), row([length - 1]), row([0, n(gen, 2, length - 1)]),
            row([n(gen, 1, length - 3), length - 1])]
    rows += [row(sorted(set(torch.randint(0, length, (n(gen, 0, 3),), generator=gen).tolist()))) for _ in range(n(gen, 2, 5))]
    order = torch.randperm(len(rows), generator=gen).tolist()
    return torch.tensor([rows[i] for i in order]), eos


def test_completion_mask_ends_at_the_first_eos(impl, gen):
    for _ in range(2):
        ids, eos = mask_case(gen)
        got = impl.call("rollouts.completion_mask", ids, eos, substitute=PARTS).out
        what = f"completion_mask(ids of shape {tuple(ids.shape)}, eos_id={eos})"
        want = mask_of(ids, eos)
        if not isinstance(got, torch.Tensor):
            raise Mismatch(f"{what} returned {type(got).__name__}; expected a bool tensor of shape {tuple(ids.shape)}")
        if got.dtype != torch.bool or got.shape != want.shape:
            raise Mismatch(f"{what} returned dtype {got.dtype}, shape {tuple(got.shape)}; expected torch.bool, "
                           f"{tuple(want.shape)}")
        if torch.equal(got, want):
            continue
        r = int((got != want).any(dim=1).nonzero()[0])
        message = (f"{what}: row {r}, ids {ids[r].tolist()}, gives {got[r].int().tolist()}; expected {want[r].int().tolist()} "
                   "(True up to and including the first eos_id)")
        fits = [m for m, v in ((EOS_UNCOUNTED, "eos_uncounted"), (LAST_EOS, "last_eos"), (ONLY_EOS, "only_eos"))
                if torch.equal(got, mask_variant(ids, eos, v))]
        if len(fits) == 1:
            message += f"\nThis looks like: {fits[0][0]}. {fits[0][1]}"
        raise Mismatch(message)
    expect_value_error(lambda: impl.call("rollouts.completion_mask", ids[0], eos, substitute=PARTS), f"completion_mask(ids of shape "
                       f"{tuple(ids[0].shape)}, eos_id={eos})", why=": ids must be (N, T), one completion per row")


# ------------------------------------------------------------------------------------ sample_group: tokens


def test_tokens_equal_the_oracle_with_the_same_seed(impl, gen):
    """Two runs, without and with top_k; an eos_id that ends some rows in the middle."""
    cfg, params = case(gen)
    for top_k in (None, n(gen, 2, 4)):  # a small k at a high temperature: k + 1 tokens kept, or all, soon show
        prompts = prompts_of(gen, cfg, n(gen, 2, 3), n(gen, 2, 5))
        group_size, steps = n(gen, 2, 3), n(gen, 6, 10)
        temperature = temperature_of(gen) if top_k is None else 1.5 + float(torch.rand(1, generator=gen))
        seed = n(gen, 0, 2**31 - 1)
        eos = eos_in_the_middle(gen, params, cfg, prompts, group_size, steps, temperature, top_k, seed)
        kw = {"temperature": temperature, "top_k": top_k, "seed": seed}
        got = run(impl, cfg, params, prompts, group_size, steps, eos, **kw)
        what = describe(cfg, prompts, group_size, steps, eos, **kw)
        rows = prompts.size(0) * group_size
        got_prompts, got_ids, _, _ = fields(got, what, rows, prompts.size(1))
        check_prompts(got_prompts, prompts, group_size, what)
        want, _ = rollout(params, cfg, prompts, group_size, steps, eos, temperature, top_k, seed)
        mistakes = [(*REPEATED_WHOLE, lambda: rollout(params, cfg, prompts, group_size, steps, eos, temperature, top_k, seed,
                                                       "repeat")[0])]
        for mistake, variant in ((NO_TEMPERATURE_DRAW, "no_temperature"), (RUNNING_ONLY, "running_only")) + (
                ((TOP_K_IGNORED, "no_top_k"),) if top_k else ()):
            mistakes.append((*mistake, lambda v=variant: rollout(params, cfg, prompts, group_size, steps, eos, temperature,
                                                                 top_k, seed, v)[0]))
        if not got["generator_drawn"] and got["global_drawn"] and not torch.equal(got_ids, want):
            mistakes.insert(0, (*GENERATOR_IGNORED, got_ids))
        check_ids(got_ids, want, what, mistakes,
                  oracle=f"{ORACLE}, torch.multinomial(probs, 1, generator=...) seeded alike on all rows at each step")


# ------------------------------------------------------------------------------------ sample_group: log-probabilities


def test_logprobs_against_a_float64_recomputation(impl, gen):
    """The log-probabilities of the tokens the learner returned, from its own sequences run once
    through the whole model; without and with top_k (which changes what is drawn, not them)."""
    cfg, params = case(gen)
    for top_k in (None, n(gen, 2, cfg["vocab_size"] // 3)):
        prompts = prompts_of(gen, cfg, n(gen, 1, 3), n(gen, 2, 5))
        group_size, steps = n(gen, 2, 4), n(gen, 6, 10)
        temperature, seed = temperature_of(gen), n(gen, 0, 2**31 - 1)
        eos = eos_in_the_middle(gen, params, cfg, prompts, group_size, steps, temperature, top_k, seed)
        kw = {"temperature": temperature, "top_k": top_k, "seed": seed}
        got = run(impl, cfg, params, prompts, group_size, steps, eos, **kw)
        what = describe(cfg, prompts, group_size, steps, eos, **kw)
        rows = prompts.size(0) * group_size
        got_prompts, got_ids, _, logprobs = fields(got, what, rows, prompts.size(1))
        if bool(((got_ids < 0) | (got_ids >= cfg["vocab_size"])).any()):
            raise Mismatch(f"{what}: completion_ids holds {got_ids.tolist()}; expected token ids in [0, {cfg['vocab_size']})")
        mask = mask_of(got_ids, eos)  # of the learner's own ids: its mask is checked elsewhere

        def table(variant=""):
            return logprob_table(params, cfg, got_prompts, got_ids, temperature, variant, top_k).masked_fill(~mask, 0.0)

        want = table()
        kept = logprobs.double().masked_fill(~mask, 0.0)
        off_mask = logprobs.masked_select(~mask)
        if bool(torch.allclose(kept, want, rtol=1e-4, atol=1e-5)) and bool((off_mask != 0).any()):
            r, t = ((logprobs != 0) & ~mask).nonzero()[0].tolist()
            raise Mismatch(f"{what}: logprobs[{r}, {t}] is {float(logprobs[r, t]):.6g} where the mask is False (row {r} ended "
                           f"before token {t}); expected 0.0\nThis looks like: {NOT_ZEROED[0]}. {NOT_ZEROED[1]}")
        mistakes = [Mistake(*NO_TEMPERATURE_LOGPROBS, lambda: table("no_temperature")),
                    Mistake(*PROBABILITIES, lambda: table("probabilities")), Mistake(*ARGMAX_LOGPROB, lambda: table("argmax")),
                    Mistake(*OFF_BY_ONE, lambda: table("previous")), Mistake(*OFF_BY_ONE, lambda: table("next"))]
        if top_k is not None:
            mistakes.append(Mistake(*AFTER_TOP_K, lambda: table("after_top_k")))
        assert_close_alone(kept, want, f"{what}: logprobs (where the mask is True)", check_dtype=False,
                           oracle="log_softmax(logits / temperature) at each returned token, over the whole vocabulary, "
                           "from the returned sequences run once through the model in float64", mistakes=mistakes)
        if bool((off_mask != 0).any()):
            r, t = ((logprobs != 0) & ~mask).nonzero()[0].tolist()
            raise Mismatch(f"{what}: logprobs[{r}, {t}] is {float(logprobs[r, t]):.6g} where the mask is False; expected 0.0")


# ------------------------------------------------------------------------------------ sample_group: the cache


def test_each_step_feeds_one_token_per_row_through_the_cache(impl, gen):
    cfg, params = case(gen)
    prompts = prompts_of(gen, cfg, n(gen, 1, 3), n(gen, 2, 6))
    group_size, steps = n(gen, 2, 3), n(gen, 4, 8)
    temperature, seed = temperature_of(gen), n(gen, 0, 2**31 - 1)
    eos = n(gen, 0, cfg["vocab_size"] - 1)
    biased = eos_bias(params, cfg, eos, -40.0)  # no row ends: every step runs
    kw = {"temperature": temperature, "seed": seed}
    got = run(impl, cfg, biased, prompts, group_size, steps, eos, train=True, **kw)  # drop_rate 0: the same logits
    what = describe(cfg, prompts, group_size, steps, eos, **kw) + " on a model in training mode"
    rows, t_p = prompts.size(0) * group_size, prompts.size(1)
    want, t_new = rollout(biased, cfg, prompts, group_size, steps, eos, temperature, seed=seed)
    fields(got, what, rows, t_p, t_new)
    expected = [{"rows": rows, "fed": t_p, "positions": list(range(t_p))}] + [
        {"rows": rows, "fed": 1, "positions": [t_p + i]} for i in range(t_new - 1)]
    passes = got["passes"]
    counted = "(hooks on the model counted the rows, tokens and positions of each pass)"
    for i in range(max(len(passes), len(expected))):
        have = passes[i] if i < len(passes) else None
        need = expected[i] if i < len(expected) else None
        if have is not None and need is not None and not have.get("model") and all(have.get(k) == v for k, v in need.items()):
            continue
        nth = "the prefill" if i == 0 else f"pass {i + 1}"
        said = ("nothing" if have is None else "a call of model(...)" + (f" on {have.get('fed')} token(s)" if "fed" in have else "")
                if have.get("model") else f"{have.get('rows')} rows of {have.get('fed')} token(s) at positions {have.get('positions')}")
        wanted = ("no pass: the last token chosen is never fed" if need is None else
                  f"{need['rows']} rows of {need['fed']} token(s) at positions {need['positions']}")
        message = (f"{what}: {nth} fed the model {said} {counted}; expected {wanted} ({t_new} passes in all: the prompts "
                   f"once, repeated group-wise, then {t_new - 1} times the {rows} tokens chosen last, one per row)")
        named = None
        if have is not None and have.get("model"):
            named = MODEL_CALLED
        elif have is not None and i and have.get("fed") == t_p + i and have.get("positions") == list(range(t_p + i)):
            named = NO_CACHE
        elif have is not None and i and have.get("fed") == 1 and have.get("positions") == [0]:
            named = FED_ALONE
        raise Mismatch(message + (f"\nThis looks like: {named[0]}. {named[1]}" if named else ""))
    if any(p.get("grad") for p in passes):
        raise Mismatch(f"{what} ran the model with gradients on; expected it under torch.no_grad(): sampling needs no graph")
    if not got["training_after"]:
        raise Mismatch(f"{what} left the model in eval mode; expected the mode as the caller set it (no model.eval(): the "
                       "caller chooses)")
    check_ids(got["completion_ids"], want, what)


# ------------------------------------------------------------------------------------ sample_group: where it stops


def test_stops_early_when_every_row_has_ended(impl, gen):
    cfg, params = case(gen)
    prompts = prompts_of(gen, cfg, n(gen, 1, 2), n(gen, 2, 4))
    group_size, steps = n(gen, 2, 3), n(gen, 10, 12)
    eos = longest_row(params, cfg)
    beta = 2.5
    for _ in range(60):  # weights under which every row ends before the last step, some earlier than others
        biased = eos_bias(params, cfg, eos, beta)
        temperature, seed = temperature_of(gen), n(gen, 0, 2**31 - 1)
        want, t_new = rollout(biased, cfg, prompts, group_size, steps, eos, temperature, seed=seed)
        ends = [row.index(eos) for row in want.tolist() if eos in row]
        if t_new < steps and len(set(ends)) > 1 and not torch.equal(
                rollout(biased, cfg, prompts, group_size, steps, eos, temperature, seed=seed, variant="not_filled")[0], want):
            break  # and a row drew something other than eos_id after its end, which must become eos_id
        beta = beta * 1.3 if t_new == steps else beta / 1.15  # some row never ended / every row ended at once
    kw = {"temperature": temperature, "seed": seed}
    got = run(impl, cfg, biased, prompts, group_size, steps, eos, **kw)
    what = describe(cfg, prompts, group_size, steps, eos, **kw) + ", on weights that favour eos_id"
    rows = prompts.size(0) * group_size
    _, got_ids, got_mask, _ = fields(got, what, rows, prompts.size(1))
    mask = mask_of(want, eos)
    mistakes = [(*NO_EARLY_STOP, lambda: rollout(biased, cfg, prompts, group_size, steps, eos, temperature, seed=seed,
                                                 variant="no_early_stop")[0])]
    if got_ids.shape == want.shape and torch.equal(got_ids.masked_fill(~mask, -1), want.masked_fill(~mask, -1)):
        mistakes.insert(0, (*NOT_FILLED, got_ids))
    check_ids(got_ids, want, what + f" (every row has ended after {t_new} tokens)", mistakes)
    if not torch.equal(got_mask, mask):
        r = int((got_mask != mask).any(dim=1).nonzero()[0])
        # after the first eos every token is eos_id: ids != eos_id is the eos masked out here (one name for both), and
        # a mask to the last eos is every token kept
        fits = [EOS_UNCOUNTED] if torch.equal(got_mask, mask_variant(want, eos, "eos_uncounted")) else []
        fits += [ALL_KEPT] if bool(got_mask.all()) else []
        raise Mismatch(f"{what}: mask row {r} is {got_mask[r].int().tolist()} for completion_ids {want[r].tolist()}; expected "
                       f"{mask[r].int().tolist()} (completion_mask of completion_ids)"
                       + (f"\nThis looks like: {fits[0][0]}. {fits[0][1]}" if len(fits) == 1 else ""))
    if len(got["passes"]) != t_new:
        raise Mismatch(f"{what} made {len(got['passes'])} passes through the model; expected {t_new}: the prefill and one per "
                       "token after the first, none after every row has ended")


def test_never_runs_past_the_context(impl, gen):
    cfg, params = case(gen, context=(10, 14))
    ctx = cfg["context_length"]
    eos = n(gen, 0, cfg["vocab_size"] - 1)
    biased = eos_bias(params, cfg, eos, -40.0)  # no row ends: the context does
    for length in (n(gen, 2, ctx - 3), ctx - 1, ctx):  # room for some tokens, for exactly one, for none
        prompts = prompts_of(gen, cfg, n(gen, 1, 2), length)
        group_size, steps = n(gen, 1, 3), ctx - length + n(gen, 2, 5)
        kw = {"temperature": temperature_of(gen), "seed": n(gen, 0, 2**31 - 1)}
        what = describe(cfg, prompts, group_size, steps, eos, **kw)
        try:
            got = run(impl, cfg, biased, prompts, group_size, steps, eos, **kw)
        except LearnerError as e:
            if not e.message.startswith("ValueError"):
                raise
            name = ""
            if "cached and" in e.message:  # the reference gpt_cached refusing a position past the context
                name = f"\nThis looks like: {CONTEXT[0]}. {CONTEXT[1]}"
            raise Mismatch(f"{what} raised {e.message}; expected {ctx - length} tokens per row and no error: the sequences "
                           f"fill the context ({length} + {ctx - length} = {ctx} tokens){name}") from None
        want, t_new = rollout(biased, cfg, prompts, group_size, steps, eos, kw["temperature"], seed=kw["seed"])
        fields(got, what, prompts.size(0) * group_size, length)
        check_ids(got["completion_ids"], want, what + f" (the context holds {ctx - length} more tokens)",
                  [(*ONE_SHORT, want[:, :-1])] if t_new else [])


# ------------------------------------------------------------------------------------ sample_group: bad arguments


def test_bad_arguments_raise_value_errors_naming_them(impl, gen):
    cfg, params = case(gen, context=(10, 14))
    ctx, vocab = cfg["context_length"], cfg["vocab_size"]
    prompts = prompts_of(gen, cfg, n(gen, 1, 2), n(gen, 2, 5))
    eos = n(gen, 0, vocab - 1)
    good = {"group_size": n(gen, 1, 3), "max_new_tokens": n(gen, 1, 4), "temperature": 0.8, "top_k": None}
    bad = [("group_size", 0), ("group_size", -n(gen, 1, 2)), ("max_new_tokens", -n(gen, 1, 3)), ("temperature", 0.0),
           ("temperature", -0.5), ("top_k", 0), ("eos_id", vocab + n(gen, 0, 3)), ("eos_id", -1),
           ("prompt_ids", prompts[0]), ("prompt_ids", prompts_of(gen, cfg, 1, ctx + n(gen, 1, 3)))]
    for name, value in bad:
        args = {**good, "eos_id": eos, "prompt_ids": prompts, name: value}
        shown = (f"prompt_ids of shape {tuple(value.shape)}" if name == "prompt_ids" else f"{name}={value}")
        what = f"sample_group(GPTModel(context_length={ctx}, vocab_size={vocab}), ..., {shown})"
        expect_value_error(lambda a=args: run(impl, cfg, params, a["prompt_ids"], a["group_size"], a["max_new_tokens"],
                                              a["eos_id"], temperature=a["temperature"], top_k=a["top_k"]),
                           what, needles=(name,), why=f": say which argument is wrong, {name}")
