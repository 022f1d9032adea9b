"""Exercise 35: streaming: tokens one at a time through the KV cache, text cut at stop strings.

Oracles, written here from the docstrings' contract: for ``stream_tokens``, generation that runs
``gpt_oracle.gpt`` (the model written with PyTorch's functions) on the WHOLE sequence at every
step, in float64, choosing each token with exercise 10's rule written out below
(``torch.multinomial`` with a generator seeded as the learner's); for ``stream_text``, the text
decoded from all the ids after each token, cut at the first stop string, with the trailing U+FFFD
and the partial stop string held back, token by token. The learner's ``stream_tokens`` runs on
the reference ``GPTModel`` (parts/model.py) in float64, through the reference ``KVCache`` and
``gpt_cached`` (parts/kv_cache.py) in place of exercise 12's, and chooses its tokens itself, so a
mistake in 09, 10 or 12 costs nothing here. The trusted scenarios of ``harness/parts/stream_run.py``
pull the stream one ``next()`` at a time, with hooks that count what each ``next()`` feeds the
model, and feed ``stream_text`` a counted stream of ids with a byte-level decode
(``errors="replace"``). Fresh configurations, weights, prompts, seeds, sampling settings, texts,
stop strings and token boundaries each run; named mistakes come from the same oracles with the
mistake in them.
"""

import torch
from gpt_oracle import gpt, gpt_params, one_thread, random_config

from harness.compare import expect_value_error
from harness.draw import n
from harness.failures import LearnerError, Mismatch

EXERCISE = "35"
PARTS = ("kv_cache",)  # the learner's stream.py imports KVCache and gpt_cached: it gets the reference ones
ORACLE = "the model run on the whole sequence at every step, in float64"
FFFD = "\ufffd"

EOS_YIELDED = ("eos_id yielded", "When the chosen token is eos_id, return without yielding it: the caller never sees the "
               "end-of-text token.")
PAST_EOS = ("generation went on after eos_id", "Stop (return) as soon as the chosen token is eos_id.")
FED_ALONE = ("each new token run without the cached prefix (model(token) alone, or a new KVCache every step): it sat at "
             "position 0 and saw no earlier token", "Make one cache before the loop; prefill it with the prompt, then feed each "
             "token through gpt_cached(model, token, cache) with THAT cache, so it lands at position cache.length.")
FIRST_POSITION = ("the first token chosen from the logits at position 0 of the prefill, not the last",
                  "After the prefill the logits are (1, num_tokens, vocab): the next token is predicted at the LAST position, "
                  "[0, -1]; [0, 0] is only right when a single token was fed.")
NO_TEMPERATURE = ("the temperature has no effect on the draw (ignored, or applied to the probabilities after the softmax, "
                  "which sampling's normalisation undoes)", "Divide the logits by temperature BEFORE top-k, top-p and the softmax.")
TIMES_TEMPERATURE = ("the logits multiplied by the temperature", "Divide: logits / temperature.")
GREEDY_SAMPLING = ("greedy argmax although temperature > 0", "With temperature > 0, sample: torch.multinomial(probs, 1, "
                   "generator=generator).")
TOP_K_PLUS_ONE = ("top-k keeps k + 1 tokens", "The threshold is the k-th largest logit, torch.topk(logits, top_k).values[-1] "
                  "(index k - 1 of the sorted values); set the logits below it to -inf.")
TOP_K_MINUS_ONE = ("top-k keeps k - 1 tokens: the k-th largest dropped", "Keep every logit at least the k-th largest: only "
                   "logits < kth become -inf (not <=).")
TOP_K_LARGEST = ("only the largest logit kept: the threshold taken from the largest of the top k, not the k-th",
                 "The threshold is the k-th largest logit, torch.topk(logits, top_k).values[-1] (the last of the k).")
TEMPERATURE_LAST = ("the temperature applied after top-p chose its tokens (top-p on the unscaled probabilities)",
                    "Divide the logits by temperature first; top-k and top-p then work on the scaled logits and their softmax.")
CONTEXT_ONE_SHORT = ("the stream stopped one token before the context was full",
                     "Run min(max_new_tokens, context_length - num_tokens) steps: the last token makes num_tokens + yielded "
                     "== context_length, and it is yielded (it is never fed, so it needs no position).")
TOP_P_CROSSING = ("top-p drops the token that crosses top_p", "Keep a token while the probability mass BEFORE it (cumsum - p) "
                  "is < top_p: the token that crosses top_p stays.")
TOP_P_IGNORED = ("top_p not applied", "With top_p, set the logits of the tokens outside the nucleus to -inf before the softmax.")
TOP_K_IGNORED = ("top_k not applied", "With top_k, set every logit below the k-th largest to -inf before the softmax.")
GENERATOR_IGNORED = ("the generator ignored: torch's global generator was drawn from",
                     "Pass it on: torch.multinomial(probs, 1, generator=generator).")


# ------------------------------------------------------------------------------------ the oracles of stream_tokens


def choose(logits, temperature, top_k, top_p, generator, variant=""):
    """Exercise 10's rule on one row of float64 logits; ``variant`` makes a known mistake."""
    if temperature == 0 or variant == "greedy":
        return int(torch.argmax(logits))
    unscaled = variant in ("no_temperature", "temperature_last")
    scaled = logits * temperature if variant == "times_temperature" else logits / (1.0 if unscaled else temperature)
    if top_k is not None and variant != "no_top_k":
        keep = min(max(top_k + (variant == "top_k_plus_one") - (variant == "top_k_minus_one"), 1), scaled.numel())
        keep = 1 if variant == "top_k_largest" else keep
        kth = torch.sort(scaled, descending=True).values[keep - 1]
        scaled = torch.where(scaled >= kth, scaled, torch.tensor(float("-inf"), dtype=scaled.dtype))
    if top_p is not None and variant != "no_top_p":
        probs = torch.softmax(scaled, dim=0)
        ranked, order = torch.sort(probs, descending=True)
        running = torch.cumsum(ranked, dim=0)
        kept_ranked = running < top_p if variant == "top_p_crossing" else running - ranked < top_p
        kept_ranked[0] = True
        kept = torch.zeros_like(kept_ranked)
        kept[order] = kept_ranked
        scaled = torch.where(kept, scaled, torch.tensor(float("-inf"), dtype=scaled.dtype))
    if variant == "temperature_last":
        scaled = scaled / temperature
    return int(torch.multinomial(torch.softmax(scaled, dim=0), 1, generator=generator))


@one_thread()
def generation(idx, params, cfg, max_new_tokens, eos_id=None, temperature=0.0, top_k=None, top_p=None, seed=None, variant=""):
    """The new tokens: the whole sequence through the model at every step; stops as the contract
    says. ``variant``: a sampling mistake of ``choose``, or ``fed_alone``, ``first_position``,
    ``eos_yielded``, ``past_eos``."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    seq, out = idx.clone(), []
    steps = min(max_new_tokens, cfg["context_length"] - idx.size(1))
    for i in range(max(steps, 0)):
        if variant == "fed_alone" and i:
            logits = gpt(seq[:, -1:], params, cfg)[0, -1]
        else:
            logits = gpt(seq, params, cfg)[0, 0 if variant == "first_position" and i == 0 else -1]
        token = choose(logits, temperature, top_k, top_p, generator, variant)
        if token == eos_id and variant != "past_eos":
            if variant == "eos_yielded":
                out.append(token)
            break
        out.append(token)
        seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
    return out


# ------------------------------------------------------------------------------------ cases


def case(gen, context=(10, 16)):
    """A float64 GPT configuration and weights (drawn in float32, so that both dtypes hold them exactly)."""
    heads = n(gen, 1, 2)
    cfg = random_config(gen, context_length=n(gen, *context), n_heads=heads, emb_dim=heads * n(gen, 4, 8), vocab_size=n(gen, 12, 40))
    return cfg, {k: v.double() for k, v in gpt_params(gen, cfg).items()}


def prompt(gen, cfg, length):
    return torch.randint(0, cfg["vocab_size"], (1, length), generator=gen)


def run(impl, cfg, params, idx, max_new_tokens, **kw):
    return impl.scenario("stream_run.tokens", cfg, params, idx, max_new_tokens, substitute=PARTS, **kw).out


def describe(cfg, idx, max_new_tokens, **kw):
    settings = "".join(f", generator=torch.Generator().manual_seed({v})" if k == "seed" else f", {k}={v:.3f}" if isinstance(v, float)
                       else f", {k}={v}" for k, v in kw.items() if v is not None)
    return (f"stream_tokens(GPTModel(context_length={cfg['context_length']}, vocab_size={cfg['vocab_size']}), a {idx.size(1)}-token "
            f"prompt, max_new_tokens={max_new_tokens}{settings})")


def check_iterator(got, what):
    if not got["is_iterator"]:
        raise Mismatch(f"{what} returned a {got['returned']}; expected a generator that yields the tokens one at a time (a "
                       "function with yield in it)")


def check_tokens(got, want, what, oracle=ORACLE, mistakes=()):
    """The yielded tokens equal ``want``; ``mistakes``: (name, fix, the tokens that mistake gives, or a
    function that computes them, called only on a mismatch)."""
    check_iterator(got, what)
    wrong = [k for k in got["kinds"] if k != "int"]
    if wrong:
        raise Mismatch(f"{what} yielded a {wrong[0]}; expected Python ints (yield int(token)): a caller decodes them as a list "
                       "of ints")
    tokens = got["tokens"]
    if tokens == want:
        return
    if len(tokens) != len(want) and tokens[: len(want)] == want[: len(tokens)]:
        message = f"{what} yielded {len(tokens)} tokens, {tokens}; expected {len(want)}, {want}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(tokens, want)) if a != b)
        message = f"{what}: new token {i} is {tokens[i]}, expected {want[i]} ({oracle}); yielded {tokens}, expected {want}"
    for name, fix, output in mistakes:
        output = output() if callable(output) else output
        if tokens == output and output != want:
            message += f"\nThis looks like: {name}. {fix}"
            break
    raise Mismatch(message)


def cache_mistakes(idx, params, cfg, steps, **kw):
    return [(*FED_ALONE, lambda: generation(idx, params, cfg, steps, variant="fed_alone", **kw)),
            (*FIRST_POSITION, lambda: generation(idx, params, cfg, steps, variant="first_position", **kw))]


# ------------------------------------------------------------------------------------ stream_tokens: the tokens


def test_greedy_stream_equals_generation_on_the_whole_sequence(impl, gen):
    cfg, params = case(gen)
    ctx = cfg["context_length"]
    for _ in range(3):  # three prompts: a tiny random model's greedy chain may not tell every mistake from the right tokens
        idx = prompt(gen, cfg, n(gen, 2, ctx - 5))
        steps = n(gen, 3, ctx - idx.size(1) - 1)  # ends before the context is full
        produced = set(generation(idx, params, cfg, steps))
        unused = [t for t in range(cfg["vocab_size"]) if t not in produced]
        kw = {"top_k": n(gen, 1, 3), "top_p": 0.3, "eos_id": unused[n(gen, 0, len(unused) - 1)] if unused else None}  # change nothing
        got = run(impl, cfg, params, idx, steps, **kw)
        what = describe(cfg, idx, steps, **kw)
        check_tokens(got, generation(idx, params, cfg, steps, **kw), what, oracle=f"the argmax of the logits of {ORACLE}",
                     mistakes=cache_mistakes(idx, params, cfg, steps, **kw))
        if got["training_after"]:
            raise Mismatch(f"{what} left the model in training mode; it was in eval mode: leave the mode as it is (no model.train())")


# the sampling runs, one after another, and the mistakes of the rule each is the first to show (an earlier run passed)
SAMPLING_RUNS = [("temperature", [(NO_TEMPERATURE, "no_temperature"), (TIMES_TEMPERATURE, "times_temperature"),
                                  (GREEDY_SAMPLING, "greedy")]),
                 ("top_k", [(TOP_K_PLUS_ONE, "top_k_plus_one"), (TOP_K_MINUS_ONE, "top_k_minus_one"), (TOP_K_IGNORED, "no_top_k"),
                            (TOP_K_LARGEST, "top_k_largest")]),
                 ("top_p", [(TOP_P_CROSSING, "top_p_crossing"), (TOP_P_IGNORED, "no_top_p"), (TEMPERATURE_LAST, "temperature_last")]),
                 ("both", [(TOP_K_PLUS_ONE, "top_k_plus_one"), (TOP_K_MINUS_ONE, "top_k_minus_one"), (TOP_K_IGNORED, "no_top_k"),
                           (TOP_P_CROSSING, "top_p_crossing"), (TOP_P_IGNORED, "no_top_p"), (TEMPERATURE_LAST, "temperature_last")])]


def test_sampled_stream_equals_generate_with_the_same_seed(impl, gen):
    cfg, params = case(gen, context=(26, 32))
    ctx, vocab = cfg["context_length"], cfg["vocab_size"]
    for first, (kind, variants) in enumerate(SAMPLING_RUNS):
        temperature = float(torch.empty(1).uniform_(0.5, 0.8, generator=gen)) * (1 if first == 0 and n(gen, 0, 1) else 3)  # not 1
        setting = {"temperature": temperature,
                   # k >= 3: keeping k - 1 tokens and keeping the largest alone then differ
                   "top_k": n(gen, 3, 5) if kind == "top_k" else n(gen, 4, vocab - 2) if kind == "both" else None,
                   "top_p": {"top_p": 0.35 + 0.45 * float(torch.rand(1, generator=gen)),
                             "both": 0.5 + 0.4 * float(torch.rand(1, generator=gen))}.get(kind)}
        idx = prompt(gen, cfg, n(gen, 1, 4))
        steps = ctx - idx.size(1) - n(gen, 0, 2)
        kw = {**setting, "seed": n(gen, 0, 2**31 - 1)}
        got = run(impl, cfg, params, idx, steps, **kw)
        what = describe(cfg, idx, steps, **kw)
        want = generation(idx, params, cfg, steps, **kw)
        mistakes = [(*m, lambda v=v: generation(idx, params, cfg, steps, variant=v, **kw)) for m, v in variants]
        if got["is_iterator"] and got["tokens"] != want and not got["generator_drawn"] and got["global_drawn"]:
            mistakes.insert(0, (*GENERATOR_IGNORED, got["tokens"]))
        check_tokens(got, want, what, oracle=f"{ORACLE}, exercise 10's rule, torch.multinomial(probs, 1, generator=...) seeded alike",
                     mistakes=mistakes + cache_mistakes(idx, params, cfg, steps, **kw))


def eos_case(gen, cfg, params, idx, steps, **kw):
    """An eos_id that the generation chooses for the first time at a step > 0 when it can, and the tokens before it."""
    full = generation(idx, params, cfg, steps, **kw)
    firsts = [j for j, t in enumerate(full) if t not in full[:j]]
    later = [j for j in firsts if 0 < j < len(full) - 1] or firsts  # tokens after it show a stream that goes on
    j = later[n(gen, 0, len(later) - 1)]
    return full[j], full[:j]


def test_stream_stops_at_eos_without_yielding_it(impl, gen):
    cfg, params = case(gen, context=(14, 20))
    ctx = cfg["context_length"]
    for kw in ({}, {"temperature": 0.8 + 0.6 * float(torch.rand(1, generator=gen)), "top_k": n(gen, 4, 10), "seed": n(gen, 0, 10**6)}):
        idx = prompt(gen, cfg, n(gen, 1, 4))
        steps = ctx - idx.size(1) - 1
        eos_id, want = eos_case(gen, cfg, params, idx, steps, **kw)
        got = run(impl, cfg, params, idx, steps, eos_id=eos_id, **kw)
        what = describe(cfg, idx, steps, eos_id=eos_id, **kw)
        check_tokens(got, want, what, mistakes=[(*EOS_YIELDED, want + [eos_id]),
                                                (*PAST_EOS, lambda: generation(idx, params, cfg, steps, eos_id=eos_id, variant="past_eos",
                                                                               **kw))])
        last = got["steps"][-1]["fed"]
        if not got["stopped"] or last != [1 if want else idx.size(1)]:
            raise Mismatch(f"{what}: the next() that chose eos_id fed the model {last} token(s) and "
                           f"{'ended the stream' if got['stopped'] else 'yielded again'}; expected the one step that chose eos_id, "
                           "then StopIteration")


def test_stream_stops_when_the_context_is_full(impl, gen):
    cfg, params = case(gen)
    ctx = cfg["context_length"]
    for length in (n(gen, 1, ctx - 2), ctx - 1, ctx):  # room for some tokens, for exactly one, for none
        idx = prompt(gen, cfg, length)
        steps = ctx - length + n(gen, 2, 6)
        what = describe(cfg, idx, steps)
        try:
            got = run(impl, cfg, params, idx, steps)
        except LearnerError as e:
            if not e.message.startswith("ValueError"):
                raise
            # the course's KV cache refusing more tokens than the context: the model was fed past it (the
            # limit not checked); another ValueError on a prompt that fills the context, or all but one
            # place of it: the stream's own check of the prompt refused one that fits
            if "cached and" in e.message:
                name = ("the context limit not checked. Run at most min(max_new_tokens, context_length - num_tokens) steps, "
                        "context_length = model.pos_emb.num_embeddings.")
            elif length >= ctx - 1:
                name = ("a prompt that fits the context refused. Refuse only num_tokens > context_length: a prompt of "
                        "context_length tokens streams nothing, one token shorter streams one.")
            else:
                name = ""
            raise Mismatch(f"{what} raised {e.message}; expected {ctx - length} tokens and no error: the stream ends when the "
                           f"sequence fills the context ({length} + {ctx - length} = {ctx} tokens)"
                           + (f"\nThis looks like: {name}" if name else "")) from None
        want = generation(idx, params, cfg, steps)
        check_tokens(got, want, what, mistakes=[(*CONTEXT_ONE_SHORT, want[:-1])] if want else [])


def test_stream_refuses_a_batch_and_a_prompt_longer_than_the_context(impl, gen):
    cfg, params = case(gen)
    ctx = cfg["context_length"]
    batch = torch.randint(0, cfg["vocab_size"], (n(gen, 2, 3), n(gen, 1, ctx - 2)), generator=gen)
    expect_value_error(lambda: run(impl, cfg, params, batch, 3),
                       f"next() on stream_tokens(model, idx of shape {tuple(batch.shape)}, 3)",
                       why=": stream_tokens streams one prompt, idx of shape (1, num_tokens)")
    long = prompt(gen, cfg, ctx + n(gen, 1, 4))
    expect_value_error(lambda: run(impl, cfg, params, long, 3), f"next() on {describe(cfg, long, 3)}", needles=(long.size(1), ctx),
                       why=f": {long.size(1)} tokens do not fit a context of {ctx}; say both numbers")


# ------------------------------------------------------------------------------------ stream_tokens: streaming


def test_stream_is_lazy_and_feeds_one_token_per_step(impl, gen):
    cfg, params = case(gen)
    ctx = cfg["context_length"]
    length = n(gen, 2, ctx - 6)
    idx, steps = prompt(gen, cfg, length), n(gen, 3, ctx - length - 1)
    got = run(impl, cfg, {k: v.float() for k, v in params.items()}, idx, steps, dtype="float32")
    what = describe(cfg, idx, steps)
    check_iterator(got, what)
    counted = "(a hook on the first block counted the tokens of each pass)"
    if got["before"]["fed"]:
        raise Mismatch(f"{what} ran the model before the first next(), feeding it {got['before']['fed']} {counted}; expected "
                       "nothing to run until a token is asked for\nThis looks like: the work done when stream_tokens is called, "
                       "not in the generator. Make stream_tokens itself a generator function: its body runs at the first next().")
    if len(got["tokens"]) != steps or not got["stopped"]:
        raise Mismatch(f"{what} yielded {len(got['tokens'])} tokens{'' if got['stopped'] else ' and had not stopped'}; expected "
                       f"{steps}, then StopIteration")
    for i, step in enumerate(got["steps"]):
        fed = step["fed"]
        want = [length] if i == 0 else [1] if i < steps else []
        if fed == want:
            continue
        nth = "the first next()" if i == 0 else f"next() number {i + 1}"
        message = (f"{what}: {nth} fed the model {fed or 'nothing'} {counted}; expected "
                   + ("the prompt once, " + str([length]) if i == 0 else "the token yielded last, [1]" if i < steps else
                      "nothing: the last token was yielded, and no step follows it"))
        named = ""
        if "model" in fed:
            named = ("the model called on the sequence, model(...), not the cached step: every step recomputes the whole "
                     "sequence. Feed the prompt once, then one token per step, through gpt_cached(model, ..., cache).")
        elif i and fed == [length + i]:
            named = ("the whole sequence recomputed each step (no KV cache): feed only the token yielded last, "
                     "gpt_cached(model, torch.tensor([[token]]), cache), through the cache the prompt went into.")
        elif i == 0 and len(fed) == steps:
            named = ("every token generated before the first was yielded. Yield each token as soon as it is chosen, "
                     "inside the loop.")
        elif (i == 0 and fed == [length, 1]) or (0 < i < steps and fed == [1, 1]) or (i == steps and fed == [1]):
            named = ("the next step run before yielding the token chosen (or after the last one): a token must come out as "
                     "soon as it is chosen. In the loop: step, choose, yield; the step for the next token runs at the next next().")
        raise Mismatch(message + (f"\nThis looks like: {named}" if named else ""))


def test_stream_leaves_grad_mode_and_model_mode_as_they_were(impl, gen):
    cfg, params = case(gen)
    ctx = cfg["context_length"]
    idx = prompt(gen, cfg, n(gen, 1, ctx - 5))
    steps = n(gen, 3, ctx - idx.size(1) - 1)
    got = run(impl, cfg, params, idx, steps, train=True)  # drop_rate 0: training mode gives the same logits
    what = describe(cfg, idx, steps) + " on a model in training mode"
    check_tokens(got, generation(idx, params, cfg, steps), what)
    if any(step["grad"] for step in got["steps"]):
        raise Mismatch(f"{what} ran the model with gradients on; expected it under torch.no_grad(): a stream needs no graph")
    if not all(got["caller_grad"]):
        i = got["caller_grad"].index(False)
        raise Mismatch(f"{what}: after next() number {i + 1} the caller's code ran with gradients OFF; they were on before, and "
                       "must stay as the caller set them\nThis looks like: torch.no_grad() held across a yield: a `with "
                       "torch.no_grad():` block around the yield switches gradients off in the caller's code while it holds the "
                       "token. Wrap only the model calls, or decorate stream_tokens with @torch.no_grad() (PyTorch enters and "
                       "leaves it at every resumption of a generator).")
    if not got["training_after"]:
        raise Mismatch(f"{what} left the model in eval mode; expected the mode as the caller set it (no model.eval(): the caller "
                       "chooses)")


# ------------------------------------------------------------------------------------ the oracle of stream_text

WORDS = ["hello", "world", "café", "naïve", "über", "€5", "中文", "日本", "😀", "ok", "the", "cat", "Ω", "señor", "a", "I", "."]
STOPS = ["\nUser:", "###", "</s>", "<|end|>", "Ende€", "😀😀", "\n\n"]

STOP_EMITTED = ("the stop string itself yielded", "Yield only what precedes the stop string's first occurrence, text[:at], "
                "and none of the stop string.")
STOPS_IGNORED = ("the stop strings ignored", "After each token, look for every stop string in the WHOLE text decoded so far "
                 "(text.find(s)): one may span several tokens.")
START_MISSED = ("a stop string at the very start of the text taken for none (text.find's 0 read as not found)",
                "text.find(s) is 0 when the text begins with s and -1 only when s is absent: keep every index >= 0.")
DECODED_ALONE = ("each token decoded alone", "Decode all the ids so far, decode(ids), after each token: a character split "
                 "across tokens decodes to U+FFFD when a token is decoded on its own.")
FFFD_SHOWN = ("a U+FFFD yielded (an unfinished character)", "While the decoded text ends with '\\ufffd', hold that character "
              "back: the next token may complete it.")
PARTIAL_SHOWN = ("the start of a stop string yielded before it was complete, and never taken back",
                 "Hold back the longest end of the text that is a proper prefix of some stop string (s[:k] for k < len(s)): "
                 "the next tokens may complete the stop string, and what was yielded cannot be taken back.")
LOST_AT_END = ("what was held back never yielded when the tokens ran out", "After the loop over token_ids (no stop string "
               "found), yield the rest of the text that was held back.")
HELD_TO_END = ("the text held back until the tokens ran out (nothing streamed)", "Yield each final piece inside the loop, "
               "right after the token that makes it final, before the next token is taken.")
ONE_LATE = ("each piece yielded one token late", "Yield the final part of the text right after decoding, before taking the "
            "next token from token_ids.")
NOT_EARLIEST = ("the text cut at a stop string that is not the earliest in the text (the first in stop_strings, or the last "
                "found)", "When several stop strings occur, cut at the earliest: min(text.find(s) for s in stop_strings if s in "
                "text), whatever their order in the list.")
TOO_MANY_TAKEN = ("tokens taken from token_ids after the stop string was found", "Return as soon as a stop string occurs: every "
                  "token taken after it is a model step wasted (and a model that runs on).")


def decoder(vocab):
    return lambda ids: b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def first_stop(text, stops):
    found = [text.find(s) for s in stops if s in text]
    return min(found) if found else None


def shown_after_each_token(texts, stops):
    """The oracle, token by token: ``(shown, stop)``, ``shown[k]`` the text yielded in all once
    token ``k + 1`` was taken (before the next), and at the end (``shown[-1]``, one more entry);
    ``stop`` the number of tokens taken when a stop string appeared (None when none did)."""
    shown = []
    for k, text in enumerate(texts):
        at = first_stop(text, stops)
        if at is not None:
            shown.append(text[:at])
            return shown + [text[:at]], k + 1
        body = text[:-1] if text.endswith(FFFD) else text
        held = 0
        for s in stops:
            held = max([held] + [k2 for k2 in range(1, len(s)) if body.endswith(s[:k2])])
        shown.append(body[: len(body) - held])
    return shown + [texts[-1] if texts else ""], None


def with_mistake(texts, stops, hold_fffd=True, hold_partial=True):
    """A stream with a hold switched off, run on ``texts`` (the text after each token): what it
    has yielded in all after each token, up to a stop string. Once it has yielded a character that
    later changes, its pieces are slices of different texts, as a stream's would be."""
    out, yielded, shown = [], "", 0
    for text in texts:
        at = first_stop(text, stops)
        if at is not None:
            out.append(yielded + text[shown:at] if at > shown else yielded)
            break
        final = len(text) - (1 if hold_fffd and text.endswith(FFFD) else 0)
        if hold_partial:
            final -= max([0] + [k for s in stops for k in range(1, len(s)) if text[:final].endswith(s[:k])])
        if final > shown:
            yielded, shown = yielded + text[shown:final], final
        out.append(yielded)
    return out


def tokenize(gen, data: bytes, inside=()):
    """``data`` cut into tokens of 1 to 4 bytes, with a cut at each offset of ``inside`` (inside a
    stop string, a character); returns (vocab, ids): vocab a list of byte strings (with unused
    ones among them, in a random order), ids the tokens' indices."""
    cuts, at = set(inside), 0
    while at < len(data):
        at += n(gen, 1, 4)
        cuts.add(min(at, len(data)))
    bounds = sorted(c for c in cuts if 0 < c <= len(data))
    chunks, last = [], 0
    for c in bounds:
        chunks.append(data[last:c])
        last = c
    distinct = sorted(set(chunks) | {bytes([n(gen, 97, 122)]) * n(gen, 2, 3) for _ in range(3)})
    order = torch.randperm(len(distinct), generator=gen).tolist()
    vocab = [distinct[i] for i in order]
    index = {b: i for i, b in enumerate(vocab)}
    return vocab, [index[c] for c in chunks]


def text_case(gen, stop=True, teasers=3, start=False, unfinished=False, after=6):
    """Random text (words with multi-byte characters), 1 to 3 stop strings, ``teasers`` proper
    prefixes of them that do not complete, and with ``stop`` one stop string (at the very start
    with ``start``), followed by ``after`` more words; cut into tokens with a boundary inside every
    stop string and teaser and inside some multi-byte characters. ``unfinished``: the text ends
    with the first two of the three bytes of a "€"."""
    stops = [STOPS[i] for i in torch.randperm(len(STOPS), generator=gen)[: n(gen, 1, 3)].tolist()]
    parts = [WORDS[n(gen, 0, len(WORDS) - 1)] + " " for _ in range(n(gen, 4, 9))]
    for _ in range(teasers):
        s = stops[n(gen, 0, len(stops) - 1)]
        parts.insert(n(gen, 0, len(parts)), s[: n(gen, 1, len(s) - 1)] + "~")  # "~" begins no stop string
    if stop:
        parts.insert(0 if start else n(gen, 1, len(parts)), stops[n(gen, 0, len(stops) - 1)])
        parts += [WORDS[n(gen, 0, len(WORDS) - 1)] + " " for _ in range(after)]
    if not any(len(p.encode("utf-8")) > len(p) for p in parts):
        parts.insert(n(gen, 0, len(parts)), "中文 ")
    inside, offset, split = [], 0, False
    for p in parts:  # a boundary inside each stop string and teaser, the first multi-byte character and a third of the others
        raw = p.encode("utf-8")
        if p in stops or p.endswith("~"):
            inside.append(offset + n(gen, 1, len(raw) - 1))
        for ch in p:
            width = len(ch.encode("utf-8"))
            if width > 1 and (not split or n(gen, 0, 2) == 0):
                inside.append(offset + n(gen, 1, width - 1))
                split = True
            offset += width
    data = "".join(parts).encode("utf-8")
    if unfinished:
        data += "€".encode("utf-8")[:2]
        inside.append(len(data) - 1)  # the two bytes in two tokens: the first alone decodes to U+FFFD too
    vocab, ids = tokenize(gen, data, inside)
    return vocab, ids, stops


def run_text(impl, vocab, ids, stops):
    return impl.scenario("stream_run.text", vocab, ids, stops, substitute=PARTS).out


def describe_text(vocab, ids, stops):
    text = decoder(vocab)(ids)
    shown = text if len(text) <= 90 else text[:90] + "..."
    return f"stream_text over {len(ids)} tokens of a byte-level decode (text {shown!r}), stop_strings={stops!r}"


def pieces_of(got, what):
    if not got["is_iterator"]:
        raise Mismatch(f"{what} returned a {got['returned']}; expected a generator of str pieces (a function with yield in it)")
    if not got["finished"]:
        raise Mismatch(f"{what} yielded {len(got['pieces'])} pieces and had not stopped; expected at most one per token, then "
                       "StopIteration")
    for _, piece, kind in got["pieces"]:
        if piece is None:
            raise Mismatch(f"{what} yielded a {kind}; expected str pieces of text")
        if piece == "":
            raise Mismatch(f"{what} yielded an empty string; expected only non-empty pieces (skip a piece with nothing in it)")
    return got["pieces"]


def joined_mistakes(joined, vocab, ids, stops, want, found_later=False):
    """The names that fit a wrong joined text; ``found_later``: the same stream cut an earlier text
    at a stop string past its start, so it does look for stop strings."""
    decode = decoder(vocab)
    full = decode(ids)
    alone = "".join(decode([i]) for i in ids)
    at, cut_alone = first_stop(full, stops), first_stop(alone, stops)
    said = []
    if at is not None and any(joined == full[: full.find(s)] for s in stops if full.find(s) > at):
        said.append(NOT_EARLIEST)
    later = [i for i in (full.find(s) for s in stops) if i > 0]  # what finds only the stop strings past index 0
    if at == 0 and (later or found_later) and joined == (full[: min(later)] if later else full):
        said.append(START_MISSED)
    elif at is not None and joined == full:
        said.append(STOPS_IGNORED)
    elif at is not None and full.startswith(joined.removesuffix(FFFD)) and any(joined.startswith(full[:at] + s) for s in stops
                                                                            if full.startswith(s, at)):
        said.append(STOP_EMITTED)
    if FFFD in joined and FFFD not in want and (joined in (alone, alone[:cut_alone]) or alone.startswith(joined)):
        said.append(DECODED_ALONE)
    elif FFFD in joined and joined.count(FFFD) > want.count(FFFD):
        said.append(FFFD_SHOWN)
    if joined != want and joined.startswith(want) and any(s.startswith(joined[len(want):]) for s in stops):
        said.append(PARTIAL_SHOWN)
    if joined != want and want.startswith(joined) and not said:
        said.append(LOST_AT_END)
    return said


def check_joined(got, vocab, ids, stops, what, found_later=False):
    pieces = pieces_of(got, what)
    texts = [decoder(vocab)(ids[: k + 1]) for k in range(len(ids))]
    shown, _ = shown_after_each_token(texts, stops)
    want, joined = shown[-1], "".join(p for _, p, _ in pieces)
    if joined == want:
        return
    message = f"{what}: the pieces join to {joined!r}; expected {want!r}, the decoded text cut at its first stop string"
    for name, fix in joined_mistakes(joined, vocab, ids, stops, want, found_later)[:1]:
        message += f"\nThis looks like: {name}. {fix}"
    raise Mismatch(message)


def check_timing(got, vocab, ids, stops, what, found_later=False):
    """After each token, the pieces yielded so far join to the oracle's; the stream takes no token after a stop string."""
    pieces = pieces_of(got, what)
    texts = [decoder(vocab)(ids[: k + 1]) for k in range(len(ids))]
    shown, stop = shown_after_each_token(texts, stops)
    taken = stop if stop is not None else len(ids)
    learner = ["".join(p for t, p, _ in pieces if t <= k) for k in range(1, taken)]
    alone = ["".join(decoder(vocab)([i]) for i in ids[: k + 1]) for k in range(len(ids))]
    variants = [(FFFD_SHOWN, lambda: with_mistake(texts, stops, hold_fffd=False)),
                (PARTIAL_SHOWN, lambda: with_mistake(texts, stops, hold_partial=False)), (DECODED_ALONE, lambda: with_mistake(alone, stops))]
    for k in range(1, taken):
        so_far = "".join(p for t, p, _ in pieces if t <= k)
        if so_far == shown[k - 1]:
            continue
        message = (f"{what}: once {k} token(s) were taken (before the next), the pieces yielded join to {so_far!r}; expected "
                   f"{shown[k - 1]!r}: the decoded text {texts[k - 1]!r} less what may still change (a trailing U+FFFD, the start "
                   "of a stop string)")
        named = None
        for mistake, variant in variants:  # a mistake whose stream gives the learner's, token after token
            seq = variant()[: taken - 1]
            if seq[:k] == learner[:k] and seq == learner[: len(seq)]:
                named = mistake
                break
        if named is not None:
            pass
        elif not so_far and (all(t == got["taken"] for t, _, _ in pieces) or got["taken_before"] == len(ids)):
            named = HELD_TO_END
        elif so_far.startswith(shown[k - 1]) and FFFD in so_far[len(shown[k - 1]):]:
            named = FFFD_SHOWN
        elif so_far.startswith(shown[k - 1]) and any(s.startswith(so_far[len(shown[k - 1]):]) for s in stops):
            named = PARTIAL_SHOWN  # what was yielded too soon is the start of a stop string, nothing else
        elif all(learner[j] == shown[j - 1] for j in range(1, taken - 1)):
            named = ONE_LATE
        raise Mismatch(message + (f"\nThis looks like: {named[0]}. {named[1]}" if named else ""))
    check_joined(got, vocab, ids, stops, what, found_later)
    if got["taken"] != taken:
        raise Mismatch(f"{what} took {got['taken']} tokens from token_ids; expected {taken}: "
                       + (f"the stop string is complete after token {stop}, and no token after it is needed\nThis looks like: "
                          f"{TOO_MANY_TAKEN[0]}. {TOO_MANY_TAKEN[1]}" if stop is not None and got["taken"] > stop else
                          "every token, one at a time"))


# ------------------------------------------------------------------------------------ stream_text


def test_text_joins_to_the_text_cut_at_the_first_stop_string(impl, gen):
    for _ in range(3):
        vocab, ids, stops = text_case(gen)
        check_joined(run_text(impl, vocab, ids, stops), vocab, ids, stops, describe_text(vocab, ids, stops))


def test_text_comes_out_as_soon_as_it_is_final(impl, gen):
    for stop in (True, False, True):
        vocab, ids, stops = text_case(gen, stop=stop, teasers=n(gen, 2, 4))
        check_timing(run_text(impl, vocab, ids, stops), vocab, ids, stops, describe_text(vocab, ids, stops))


def test_text_takes_no_token_after_the_stop_string(impl, gen):
    for start in (False, True):
        vocab, ids, stops = text_case(gen, start=start, after=n(gen, 8, 14))
        got = run_text(impl, vocab, ids, stops)
        what = describe_text(vocab, ids, stops) + (": the text begins with a stop string" if start else "")
        if got["taken_before"]:
            raise Mismatch(f"{what} took {got['taken_before']} tokens when stream_text was called, before the first next(); "
                           f"expected none until a piece is asked for\nThis looks like: {HELD_TO_END[0]}. {HELD_TO_END[1]}")
        check_timing(got, vocab, ids, stops, what, found_later=start)  # the case before, a stop string past the start, passed


def exact_tokens(gen, segments):
    """``(vocab, ids)`` for ``segments``: pairs ``(text, exact)``, an exact one a single token, the
    others cut at random as ``tokenize`` cuts (with a boundary inside their first multi-byte
    character)."""
    chunks = []
    for text, exact in segments:
        raw = text.encode("utf-8")
        if exact or not raw:
            chunks += [raw] if raw else []
            continue
        vocab, ids = tokenize(gen, raw)
        chunks += [vocab[i] for i in ids]
    distinct = sorted(set(chunks))
    order = torch.randperm(len(distinct), generator=gen).tolist()
    vocab = [distinct[i] for i in order]
    index = {b: i for i, b in enumerate(vocab)}
    return vocab, [index[c] for c in chunks]


def two_stops_case(gen, nested, earliest_first):
    """Text in which one token completes two stop strings at once: ``nested``, a stop string and a
    proper end of it of 2 characters or more (both end at its last character); else two stop strings
    side by side, the token holding the first one's last character and all of the second. The one
    that begins first in the text is listed first with ``earliest_first``, else second."""
    words = [WORDS[n(gen, 0, len(WORDS) - 1)] + " " for _ in range(n(gen, 2, 5))]
    after = "".join(WORDS[n(gen, 0, len(WORDS) - 1)] + " " for _ in range(n(gen, 2, 4)))
    if nested:
        ends = [(s, s[k:]) for s in STOPS for k in range(1, len(s) - 1) if s[k:] not in s[:-1]]  # none complete before
        first, second = ends[n(gen, 0, len(ends) - 1)]  # second an end of first: both complete at its last character
        segments = [("".join(words), False), (first[:-1], False), (first[-1], True), (after, False)]
    else:
        pair = torch.randperm(len(STOPS), generator=gen)[:2].tolist()
        first, second = STOPS[pair[0]], STOPS[pair[1]]
        if second.startswith(first[-1]) or first.endswith(second[0]):  # no other overlap than the one made here
            first, second = "###", "</s>"
        segments = [("".join(words), False), (first[:-1], False), (first[-1] + second, True), (after, False)]
    vocab, ids = exact_tokens(gen, segments)
    return vocab, ids, [first, second] if earliest_first else [second, first]


def test_text_cuts_at_the_earliest_of_two_stop_strings_one_token_completes(impl, gen):
    """Two stop strings complete with the same token: the text is cut at the one that begins first,
    whichever the list names first (a cut at the first found in the list, or at the last found,
    passes every other check)."""
    for nested in (True, False):
        for earliest_first in (False, True):
            vocab, ids, stops = two_stops_case(gen, nested, earliest_first)
            what = describe_text(vocab, ids, stops) + ": one token completes both stop strings"
            check_timing(run_text(impl, vocab, ids, stops), vocab, ids, stops, what)


def test_text_never_splits_a_character(impl, gen):
    for unfinished in (False, True):
        vocab, ids, stops = text_case(gen, stop=False, teasers=0, unfinished=unfinished)
        what = describe_text(vocab, ids, stops) + (": its last character unfinished" if unfinished else "")
        check_timing(run_text(impl, vocab, ids, stops), vocab, ids, stops, what)


def test_text_refuses_an_empty_stop_string(impl, gen):
    vocab, ids, stops = text_case(gen)
    stops = stops + [""]
    expect_value_error(lambda: impl.scenario("stream_run.text", vocab, ids, stops, substitute=PARTS), f"next() on {describe_text(vocab, ids, stops)}",
                       why=": an empty stop string occurs everywhere; refuse it")
