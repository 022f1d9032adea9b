"""Exercise 03: the BPE primitives, counting adjacent pairs and merging one pair.

Oracles: ``collections.Counter(zip(ids, ids[1:]))`` for the counts, and a left-to-right merge
written here, on fresh random id lists full of repeats and runs (where overlaps matter).
"""

from collections import Counter

import torch

from harness.draw import n
from harness.failures import LearnerError, Mismatch

EXERCISE = "03"


def random_ids(gen, length, alphabet):
    """Ids drawn from a few values, so that pairs repeat and runs like [7, 7, 7] occur."""
    values = torch.randperm(300, generator=gen)[:alphabet]
    ids = values[torch.randint(0, alphabet, (length,), generator=gen)]
    for _ in range(n(gen, 0, 2)):  # a run of one id
        if length:
            at, run = n(gen, 0, length - 1), n(gen, 2, 6)
            ids = torch.cat([ids[:at], values[0].repeat(run), ids[at:]])
    return [int(i) for i in ids]


def pair_counts(impl, ids):
    """The learner's counts as a plain dict; a collections.Counter comes back through most_common()."""
    try:
        return impl.call("bpe.get_pair_counts", ids, returns="data").out
    except LearnerError as e:
        if "collections.Counter" not in e.message:
            raise
    items = impl.call("bpe.get_pair_counts", ids, then=[("most_common", ())]).then[0]
    return {tuple(k) if isinstance(k, (list, tuple)) else k: v for k, v in items}


def compare_counts(got, ids, what):
    expected = dict(Counter(zip(ids, ids[1:])))
    if type(got) is not dict:
        raise Mismatch(f"get_pair_counts({what}) returned a {type(got).__name__}; expected a dict of pair -> count")
    if got == expected:
        return
    bad_keys = [k for k in got if not (type(k) is tuple and len(k) == 2)]
    if bad_keys:
        raise Mismatch(f"get_pair_counts({what}) has the key {bad_keys[0]!r}; each key should be a tuple of two ids, (ids[i], ids[i + 1])")
    missing = [p for p in expected if p not in got]
    extra = [p for p in got if p not in expected]
    wrong = [p for p in expected if p in got and got[p] != expected[p]]
    lines = [f"get_pair_counts({what}) differs from Counter(zip(ids, ids[1:]))"]
    if missing:
        lines.append(f"missing pair {missing[0]} (expected count {expected[missing[0]]}){f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
    if extra:
        lines.append(f"pair {extra[0]} does not occur in ids but has count {got[extra[0]]}")
    if wrong:
        lines.append(f"pair {wrong[0]}: got count {got[wrong[0]]}, expected {expected[wrong[0]]}{f' (and {len(wrong) - 1} more wrong counts)' if len(wrong) > 1 else ''}")
    if got == {p: 1 for p in expected}:
        lines.append("This looks like: each distinct pair counted once. Count every position i: a pair that occurs 3 times has count 3.")
    elif got == dict(Counter(zip(ids[:-1], ids[1:-1]))):
        lines.append("This looks like: the last pair is missing. zip(ids, ids[1:]) reaches (ids[-2], ids[-1]).")
    elif got == dict(Counter(p for i, p in enumerate(zip(ids, ids[1:])) if not (i and ids[i - 1] == ids[i] == ids[i + 1]))):
        lines.append("This looks like: overlapping pairs skipped. [1, 1, 1] holds (1, 1) twice: at positions 0 and 1.")
    raise Mismatch("\n".join(lines))


def merge_oracle(ids, pair, new_id):
    out, skip = [], False
    for i, x in enumerate(ids):
        if skip:
            skip = False
        elif i + 1 < len(ids) and (x, ids[i + 1]) == pair:
            out.append(new_id)
            skip = True
        else:
            out.append(x)
    return out


def merge_mistakes(ids, pair, new_id):
    overlapping = [new_id if (x, y) == pair else x for x, y in zip(ids, ids[1:])] + ids[-1:]
    from_right = merge_oracle(ids[::-1], pair[::-1], new_id)[::-1]
    drops_last = merge_oracle(ids, pair, new_id)
    drops_last = drops_last[:-1] if ids and drops_last and drops_last[-1] == ids[-1] else None
    return [
        ("overlapping pairs merged", "Once ids[i], ids[i + 1] are merged, skip both: i += 2. Merging (1, 1) in [1, 1, 1] gives [new_id, 1].", overlapping),
        ("merged from the right", "Scan left to right: merging (1, 1) in [1, 1, 1] gives [new_id, 1], not [1, new_id].", from_right),
        ("the last id is dropped", "When the last id is not the start of a pair, copy it: check i + 1 < len(ids) before reading ids[i + 1].", drops_last),
        ("the pair was never found", "The grader passes pair as a list [a, b] (JSON has no tuples): compare ids[i] == pair[0] and ids[i + 1] == pair[1], or unpack a, b = pair.", list(ids)),
    ]


def check_merge(impl, ids, pair, new_id):
    got = impl.call("bpe.merge", ids, pair, new_id, returns="data").out
    expected = merge_oracle(ids, pair, new_id)
    if got == expected:
        return
    what = f"merge(ids, pair={pair}, new_id={new_id}) for ids = {ids}"
    if type(got) is not list:
        raise Mismatch(f"{what} returned a {type(got).__name__}; expected a list of ints")
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    message = f"{what}:\n  got      {got}\n  expected {expected}\nthey differ first at position {first}"
    if len(got) != len(expected):
        message += f" (lengths {len(got)} and {len(expected)})"
    for name, fix, wrong in merge_mistakes(ids, pair, new_id):
        if wrong is not None and got == wrong and wrong != expected:
            message += f"\nThis looks like: {name}. {fix}"
            break
    raise Mismatch(message)


# ----------------------------------------------------------------------------------- pair counts


def test_pair_counts_match_counter(impl, gen):
    ids = random_ids(gen, n(gen, 20, 80), n(gen, 2, 6))
    compare_counts(pair_counts(impl, ids), ids, f"ids of length {len(ids)}")


def test_pair_counts_count_overlapping_runs(impl, gen):
    a, b = (int(x) for x in torch.randperm(500, generator=gen)[:2])
    run = n(gen, 3, 9)
    ids = [b] + [a] * run + [b, a, a, a]
    compare_counts(pair_counts(impl, ids), ids, str(ids))


def test_pair_counts_of_short_lists_are_empty(impl, gen):
    for ids in ([], [n(gen, 0, 255)]):
        compare_counts(pair_counts(impl, ids), ids, str(ids))


# ----------------------------------------------------------------------------------- merge


def test_merge_matches_left_to_right(impl, gen):
    ids = random_ids(gen, n(gen, 20, 60), n(gen, 2, 4))
    i = n(gen, 0, len(ids) - 2)
    check_merge(impl, ids, (ids[i], ids[i + 1]), 256 + n(gen, 0, 1000))


def test_merge_overlapping_runs_left_to_right(impl, gen):
    a, b = (int(x) for x in torch.randperm(256, generator=gen)[:2])
    new_id = 256 + n(gen, 0, 100)
    check_merge(impl, [a, a, a], (a, a), new_id)
    ids = [b] + [a] * n(gen, 2, 7) + [b] + [a] * n(gen, 2, 7)
    check_merge(impl, ids, (a, a), new_id)
    check_merge(impl, [a, b, a, b, a, b, b, a], (b, a), new_id)


def test_merge_edge_cases(impl, gen):
    a, b, c = (int(x) for x in torch.randperm(256, generator=gen)[:3])
    new_id = 256 + n(gen, 0, 100)
    check_merge(impl, [], (a, b), new_id)
    check_merge(impl, [a], (a, b), new_id)
    check_merge(impl, [a, c, b, c], (a, b), new_id)  # the pair is not adjacent anywhere: nothing changes
    check_merge(impl, [c, a, b], (a, b), new_id)  # at the very end
    check_merge(impl, [a, b, c], (a, b), new_id)  # at the very start
