"""Exercise 10: generate, greedy and sampled.

The model is a trusted tiny one built in the worker (harness/parts/tinylm.py), whose logits are
``table[last token] + first[first token of the window]``, so generate's points depend on
generate only. Oracles: ``argmax`` chains simulated here for greedy decoding, cropping and
eos; ``torch.softmax`` of the (temperature-scaled, top-k or top-p filtered) logits for sampling,
compared with the frequencies of 20,000 draws. Tolerance of a frequency check: a token of
probability p drawn with frequency f passes when |f - p| <= 5 * sqrt(p (1 - p) / N) + 2 / N, so a
correct generate fails one check in about 10^5 runs.
"""

import torch
from harness.draw import n

from harness.failures import Mismatch
from harness.impl import Part

EXERCISE = "10"
DRAWS = 20_000


def tiny(gen, vocab=None, context=None, scale=2.0):
    vocab = vocab or n(gen, 5, 24)
    table = torch.randn(vocab, vocab, generator=gen) * scale
    table -= 3 * scale * torch.eye(vocab)  # no token likes to follow itself: greedy chains move on
    first = torch.randn(vocab, vocab, generator=gen) * scale
    context = context or n(gen, 2, 6)
    return table, first, context


def model(table, first, context):
    return Part("tinylm.TinyLM", table, first, context)


def logits_of(window, table, first):
    return table[window[:, -1]] + first[window[:, 0]]


def greedy(idx, steps, context, table, first, eos=None, crop="last", stop=True):
    finished = torch.zeros(idx.size(0), dtype=torch.bool)
    for _ in range(steps):
        window = idx[:, -context:] if crop == "last" else idx[:, :context]
        nxt = logits_of(window, table, first).argmax(-1)
        if eos is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos), nxt)
            finished |= nxt == eos
        idx = torch.cat([idx, nxt[:, None]], dim=1)
        if eos is not None and stop and bool(finished.all()):
            break
    return idx


def check_tokens(got, expected, what, prompt_len, wrong=()):
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} returned a {type(got).__name__}; expected a (batch, num_tokens + new) int64 tensor")
    if got.dtype != torch.int64:
        raise Mismatch(f"{what} returned dtype {got.dtype}; expected torch.int64 token ids")
    if torch.equal(got, expected):
        return
    if got.shape != expected.shape:
        message = (f"{what} returned shape {tuple(got.shape)}; expected {tuple(expected.shape)}: the prompt's {prompt_len} tokens "
                   f"followed by {expected.size(1) - prompt_len} new ones")
    elif not torch.equal(got[:, :prompt_len], expected[:, :prompt_len]):
        message = f"{what}: the output should start with the prompt itself (its first {prompt_len} tokens are changed)"
    else:
        row, col = (got != expected).nonzero()[0].tolist()
        message = (f"{what}: row {row}, new token {col - prompt_len} is {int(got[row, col])}, expected {int(expected[row, col])} "
                   f"(the argmax of the logits at that step)")
    for name, fix, output in wrong:
        if output.shape == got.shape and torch.equal(output, got):
            message += f"\nThis looks like: {name}. {fix}"
            break
    raise Mismatch(message)


def test_greedy_is_argmax_and_crops_to_the_context(impl, gen):
    table, first, context = tiny(gen)
    prompt = torch.randint(0, table.size(0), (n(gen, 2, 3), n(gen, 1, context + 3)), generator=gen)
    steps = n(gen, context + 3, context + 8)
    res = impl.call("generate.generate", model(table, first, context), prompt, steps, context)
    expected = greedy(prompt, steps, context, table, first)
    check_tokens(res.out, expected, f"generate(model, idx of shape {tuple(prompt.shape)}, max_new_tokens={steps}, context_size={context})",
                 prompt.size(1), wrong=[("the window keeps the FIRST context_size tokens", "Crop with idx[:, -context_size:]: the model "
                                         "reads the most recent tokens.", greedy(prompt, steps, context, table, first, crop="first"))])


def test_greedy_ignores_top_k_and_top_p(impl, gen):
    table, first, context = tiny(gen)
    prompt = torch.randint(0, table.size(0), (2, n(gen, 1, context)), generator=gen)
    steps = n(gen, 2, 6)
    res = impl.call("generate.generate", model(table, first, context), prompt, steps, context, temperature=0.0, top_k=3, top_p=0.5,
                    generator=Part("tinylm.generator", n(gen, 0, 10**6)))
    check_tokens(res.out, greedy(prompt, steps, context, table, first), "generate(..., temperature=0.0, top_k=3, top_p=0.5)", prompt.size(1))


def frequencies(impl, gen, table, first, token, **sampling):
    prompt = torch.full((DRAWS, 1), token, dtype=torch.int64)
    res = impl.call("generate.generate", model(table, first, 4), prompt, 1, 4, generator=Part("tinylm.generator", n(gen, 0, 10**6)), **sampling)
    out = res.out
    if not isinstance(out, torch.Tensor) or out.shape != (DRAWS, 2) or out.dtype != torch.int64:
        raise Mismatch(f"generate on a prompt of shape ({DRAWS}, 1) with max_new_tokens=1 should return a ({DRAWS}, 2) int64 tensor, "
                       f"got {getattr(out, 'dtype', type(out).__name__)} of shape {tuple(getattr(out, 'shape', ()))}")
    drawn = out[:, 1]
    vocab = table.size(0)
    if bool(((drawn < 0) | (drawn >= vocab)).any()):
        raise Mismatch(f"generate drew token ids outside 0..{vocab - 1}")
    return torch.bincount(drawn, minlength=vocab).double() / DRAWS


def worst_gap(freq, probs):
    """The token whose frequency is furthest from its probability, in units of the tolerance."""
    tol = 5 * torch.sqrt(probs * (1 - probs) / DRAWS) + 2 / DRAWS
    ratio = (freq - probs).abs() / tol
    t = int(ratio.argmax())
    return float(ratio[t]), t, float(tol[t])


def check_frequencies(freq, probs, what, alternatives=()):
    ratio, t, tol = worst_gap(freq, probs)
    if ratio <= 1:
        return
    message = (f"{what}: over {DRAWS:,} draws token {t} came {100 * freq[t]:.2f}% of the time; its probability is {100 * probs[t]:.2f}% "
               f"(tolerance ±{100 * tol:.2f} points, 5 standard errors)")
    for name, fix, alt in alternatives:
        if worst_gap(freq, alt)[0] <= 1:
            message += f"\nThis looks like: {name}. {fix}"
            break
    raise Mismatch(message)


def test_temperature_sampling_matches_softmax(impl, gen):
    table, first, _ = tiny(gen, vocab=n(gen, 4, 10), scale=0.7)
    token = n(gen, 0, table.size(0) - 1)
    temperature = float(torch.empty(1).uniform_(0.4, 0.7, generator=gen)) * (1 if n(gen, 0, 1) else 3.5)  # clearly not 1
    logits = (table[token] + first[token]).double()
    freq = frequencies(impl, gen, table, first, token, temperature=temperature)
    onehot = torch.nn.functional.one_hot(logits.argmax(), logits.numel()).double()
    check_frequencies(freq, torch.softmax(logits / temperature, -1), f"generate(..., temperature={temperature:.3f})", alternatives=[
        ("the logits are multiplied by the temperature", "Divide: logits / temperature.", torch.softmax(logits * temperature, -1)),
        ("the temperature is ignored", "Divide the logits by temperature before the softmax.", torch.softmax(logits, -1)),
        ("greedy decoding although temperature > 0", "With temperature > 0, sample: torch.multinomial(probs, 1, generator=generator).", onehot),
    ])


def test_top_k_never_leaves_the_top_k(impl, gen):
    table, first, _ = tiny(gen, vocab=n(gen, 5, 12), scale=0.7)
    token = n(gen, 0, table.size(0) - 1)
    k = n(gen, 1, table.size(0) - 2)
    temperature = float(torch.empty(1).uniform_(0.7, 1.5, generator=gen))
    logits = (table[token] + first[token]).double() / temperature
    freq = frequencies(impl, gen, table, first, token, temperature=temperature, top_k=k)
    order = logits.argsort(descending=True)
    outside = [int(t) for t in order[k:] if freq[t] > 0]
    if outside:
        rank = int((order == outside[0]).nonzero()) + 1
        if outside == [int(order[k])]:
            named = ("\nThis looks like: top-k keeps k + 1 tokens. The threshold is the k-th largest logit, "
                     "torch.topk(logits, top_k).values[:, -1:]; keep the logits >= it and set the ones below it to -inf.")
        elif len(outside) == len(order) - k:
            named = "\nThis looks like: top_k is not applied. With top_k, set every logit below the k-th largest to -inf first."
        else:
            named = ""
        raise Mismatch(f"generate(..., top_k={k}) drew token {outside[0]}, the {rank}th most likely, "
                       f"{int(round(float(freq[outside[0]]) * DRAWS))} times: only the {k} most likely tokens may be drawn "
                       f"(set the other logits to -inf before the softmax){named}")
    kept = torch.full_like(logits, float("-inf"))
    kept[order[:k]] = logits[order[:k]]
    check_frequencies(freq, torch.softmax(kept, -1), f"generate(..., temperature={temperature:.3f}, top_k={k})")


def nucleus(logits, p):
    probs = torch.softmax(logits, -1)
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    keep = order[before < p]
    return keep, order


def test_top_p_keeps_the_nucleus(impl, gen):
    table, first, _ = tiny(gen, vocab=n(gen, 5, 12), scale=0.7)
    token = n(gen, 0, table.size(0) - 1)
    temperature = float(torch.empty(1).uniform_(0.7, 1.5, generator=gen))
    logits = (table[token] + first[token]).double() / temperature
    sorted_probs = torch.softmax(logits, -1).sort(descending=True).values
    cums = sorted_probs.cumsum(0)
    # a top_p between two cumulative sums, at least 0.02 from each, so that float rounding cannot move the cut
    gaps = [(float(a), float(b)) for a, b in zip(cums[:-1], cums[1:]) if b - a > 0.05 and b < 0.99]
    lo, hi = gaps[n(gen, 0, len(gaps) - 1)] if gaps else (float(cums[0]), float(cums[1]))
    p = lo + 0.02 + float(torch.rand(1, generator=gen)) * max(hi - lo - 0.04, 0.0)
    freq = frequencies(impl, gen, table, first, token, temperature=temperature, top_p=p)
    keep, order = nucleus(logits, p)
    outside = [int(t) for t in order[len(keep):] if freq[t] > 0]
    crossing = int(order[len(keep) - 1])
    if outside:
        raise Mismatch(f"generate(..., temperature={temperature:.3f}, top_p={p:.3f}) drew token {outside[0]}, which lies outside the "
                       f"nucleus: the {len(keep)} most likely tokens are the smallest set whose probabilities reach {p:.3f}")
    kept = torch.full_like(logits, float("-inf"))
    kept[keep] = logits[keep]
    without = kept.clone()
    without[crossing] = float("-inf")
    check_frequencies(freq, torch.softmax(kept, -1), f"generate(..., temperature={temperature:.3f}, top_p={p:.3f})", alternatives=[
        ("the token that crosses top_p is dropped", "Keep a token while the probability BEFORE it (cumsum - p) is below top_p, so the "
         "nucleus reaches top_p.", torch.softmax(without, -1) if len(keep) > 1 else torch.softmax(kept, -1)),
        ("top_p was applied before the temperature", "Divide by the temperature first, then filter.",
         torch.softmax(torch.where(torch.isin(torch.arange(logits.numel()), nucleus(logits * temperature, p)[0]), logits, float("-inf")), -1)),
    ])


def test_eos_stops_generation(impl, gen):
    table, first, context = tiny(gen)
    vocab = table.size(0)
    for rows in (1, 2):
        prompt = torch.randint(0, vocab, (rows, n(gen, 1, context)), generator=gen)
        steps = n(gen, 6, 10)
        free = greedy(prompt, steps, context, table, first)[0, prompt.size(1):]
        eos = int(free[n(gen, 1, 3)])  # a token that row 0 produces early
        res = impl.call("generate.generate", model(table, first, context), prompt, steps, context, eos_id=eos)
        expected = greedy(prompt, steps, context, table, first, eos=eos)
        what = f"generate(..., max_new_tokens={steps}, eos_id={eos}) on {rows} row(s)"
        wrong = [("eos_id is ignored", "Once a row has produced eos_id it is finished: its later tokens are eos_id, and generation "
                  "stops when every row is finished.", greedy(prompt, steps, context, table, first)),
                 ("generation did not stop once every row had produced eos_id", "Break out of the loop when every row is finished.",
                  greedy(prompt, steps, context, table, first, eos=eos, stop=False))]
        if rows > 1:
            wrong.append(("rows that finished went on generating", "Once a row has produced eos_id, its later tokens are eos_id.",
                          greedy(prompt, expected.size(1) - prompt.size(1), context, table, first)))
        check_tokens(res.out, expected, what, prompt.size(1), wrong=wrong)


def test_sampling_is_reproducible_with_a_generator(impl, gen):
    table, first, context = tiny(gen)
    prompt = torch.randint(0, table.size(0), (64, 2), generator=gen)
    seed = n(gen, 0, 10**6)
    kwargs = {"temperature": 1.0, "top_k": table.size(0) - 1, "top_p": 0.95}
    runs = [impl.call("generate.generate", model(table, first, context), prompt, 6, context,
                      generator=Part("tinylm.generator", s), **kwargs).out for s in (seed, seed, seed + 1)]
    if not torch.equal(runs[0], runs[1]):
        raise Mismatch("two calls with a torch.Generator seeded the same way drew different tokens: pass generator=generator to "
                       "torch.multinomial (and draw nothing else from PyTorch's global random state)")
    if torch.equal(runs[0], runs[2]):
        raise Mismatch("generators seeded differently drew the same 384 tokens: sample with torch.multinomial(probs, 1, generator=generator)")
