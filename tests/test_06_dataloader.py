"""Exercise 06: the sliding-window dataset, its DataLoader, and random batches from a token file.

Oracles: the windows written out here from their definition; PyTorch's own ``DataLoader`` over
the window indices, with the seeded generator, for the shuffled order; ``torch.randint`` with
the seeded generator for ``get_batch``'s starts. Fresh lengths, strides and seeds each run.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader

from harness.compare import Mistake, assert_close, assert_true, expect_value_error
from harness.draw import n
from harness.failures import Mismatch
from harness.impl import File

EXERCISE = "06"

UNSHIFTED = ("targets not shifted by one", "The target of a window is the same window one token later: ids[i + 1 : i + max_length + 1].")


def token_ids(gen, length):
    return torch.randint(0, 50257, (length,), generator=gen)


def windows(ids: torch.Tensor, max_length: int, stride: int, shift: int = 1):
    starts = range(0, len(ids) - max_length, stride)
    return [(ids[i : i + max_length], ids[i + shift : i + shift + max_length]) for i in starts]


def dataset(impl, ids, max_length, stride, count):
    """``GPTDataset(ids, max_length, stride)``: its length, then its first ``count`` items."""
    res = impl.call("data.GPTDataset", ids, max_length, stride, then=[("$len",)] + [("$getitem", (k,)) for k in range(count)])
    return res.then[0], res.then[1:]


def check_item(item, want, what, ids, max_length, stride, k):
    if type(item) not in (tuple, list) or len(item) != 2:
        raise Mismatch(f"{what}[{k}] is {type(item).__name__}; expected a tuple (input, target) of two tensors")
    for name, got, expected, shift in (("input", item[0], want[0], 0), ("target", item[1], want[1], 1)):
        if not isinstance(got, torch.Tensor):
            raise Mismatch(f"{what}[{k}]'s {name} is a {type(got).__name__}; expected a torch.long tensor")
        assert_true(got.dtype == torch.long, f"{what}[{k}]'s {name} has dtype {got.dtype}; expected torch.long (int64), the dtype embeddings take")
        i = k * stride
        assert_close(got, expected, f"{what}[{k}]'s {name} (window {k} starts at token {i})", oracle=f"token_ids[{i + shift}:{i + shift + max_length}]",
                     mistakes=[Mistake(*UNSHIFTED, ids[i : i + max_length]),
                               # (at window 0 a target shifted the wrong way would start at token -1: no window to compare)
                               *([Mistake("the target shifted the wrong way", "Targets are one token LATER: ids[i + 1 : i + max_length + 1].",
                                          ids[i - 1 : i - 1 + max_length])] if i > 0 else []),
                               Mistake("windows do not move by stride", f"Window k starts at k * stride = {i}.",
                                       ids[k + shift : k + shift + max_length])])


def check_dataset(impl, ids, max_length, stride, send):
    want = windows(ids, max_length, stride)
    what = f"GPTDataset(<{len(ids)} ids>, max_length={max_length}, stride={stride})"
    length, items = dataset(impl, send, max_length, stride, min(len(want), 40))
    if length != len(want):
        hint = ""
        if length == len(range(0, len(ids) - max_length + 1, stride)):
            hint = "\nThis looks like: a window whose target runs past the end. Starts go up to len(ids) - max_length - 1: range(0, len(ids) - max_length, stride)."
        elif length == len(range(0, len(ids) - max_length - 1, stride)):
            hint = "\nThis looks like: the last window is missing. range(0, len(ids) - max_length, stride) already leaves room for its target."
        raise Mismatch(f"len({what}) is {length}; expected {len(want)} = ceil(({len(ids)} - {max_length}) / {stride}){hint}")
    for k, (item, w) in enumerate(zip(items, want)):
        check_item(item, w, what, ids, max_length, stride, k)


# ----------------------------------------------------------------------------------- GPTDataset


def test_dataset_windows_overlapping(impl, gen):
    max_length = n(gen, 2, 12)
    ids = token_ids(gen, n(gen, max_length + 2, 90))
    check_dataset(impl, ids, max_length, n(gen, 1, max_length - 1), ids.tolist())


def test_dataset_windows_from_a_tensor(impl, gen):
    max_length = n(gen, 1, 10)
    stride = n(gen, max_length, max_length + 3)
    ids = token_ids(gen, n(gen, max_length + 1, 70))
    check_dataset(impl, ids, max_length, stride, ids.to(torch.int32))  # int32 in, torch.long out


def test_dataset_too_short_is_a_clear_error(impl, gen):
    max_length = n(gen, 4, 30)
    size = n(gen, 0, max_length)
    expect_value_error(lambda: impl.call("data.GPTDataset", token_ids(gen, size).tolist(), max_length, 1, returns="data"),
                       f"GPTDataset(<{size} ids>, max_length={max_length}, stride=1)", [size, max_length + 1],
                       why=": the text is too short for one window", missing="\nSay how many tokens there are and how many are needed.")


# ----------------------------------------------------------------------------------- DataLoader


def loader_batches(impl, ids, **kwargs):
    return impl.call("data.create_dataloader", ids, then=[("$list", ())], **kwargs).then[0]


def compare_batches(got, want, what):
    if len(got) != len(want):
        raise Mismatch(f"{what} gave {len(got)} batches; expected {len(want)}")
    for b, (g, w) in enumerate(zip(got, want)):
        if type(g) not in (list, tuple) or len(g) != 2:
            raise Mismatch(f"{what}: batch {b} is {type(g).__name__}; expected [inputs, targets]")
        assert_close(g[0], w[0], f"{what}: the inputs of batch {b}", oracle="the windows in the sampler's order")
        assert_close(g[1], w[1], f"{what}: the targets of batch {b}", oracle="the windows in the sampler's order",
                     mistakes=[Mistake(*UNSHIFTED, w[0])])


def expected_batches(ids, max_length, stride, batch_size, order, drop_last):
    win = windows(ids, max_length, stride)
    out = []
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        if drop_last and len(chunk) < batch_size:
            break
        out.append((torch.stack([win[i][0] for i in chunk]), torch.stack([win[i][1] for i in chunk])))
    return out


def test_dataloader_in_order(impl, gen):
    max_length, batch_size = n(gen, 2, 8), n(gen, 2, 5)
    stride = n(gen, 1, max_length)
    ids = token_ids(gen, n(gen, 40, 120))
    count = len(windows(ids, max_length, stride))
    for drop_last in (False, True):
        got = loader_batches(impl, ids.tolist(), batch_size=batch_size, max_length=max_length, stride=stride, shuffle=False, drop_last=drop_last)
        compare_batches(got, expected_batches(ids, max_length, stride, batch_size, list(range(count)), drop_last),
                        f"create_dataloader(batch_size={batch_size}, max_length={max_length}, stride={stride}, shuffle=False, drop_last={drop_last})")


def test_dataloader_seeded_shuffle(impl, gen):
    max_length, batch_size = n(gen, 2, 8), n(gen, 2, 4)
    stride = n(gen, 1, max_length)
    ids = token_ids(gen, n(gen, 60, 150))
    count = len(windows(ids, max_length, stride))
    seed = n(gen, 0, 2**31 - 1)
    kwargs = dict(batch_size=batch_size, max_length=max_length, stride=stride, shuffle=True, drop_last=True, seed=seed)
    order = [int(i) for i in DataLoader(range(count), shuffle=True, generator=torch.Generator().manual_seed(seed))]
    what = f"create_dataloader(<{len(ids)} ids>, batch_size={batch_size}, max_length={max_length}, stride={stride}, shuffle=True, seed={seed})"
    got = loader_batches(impl, ids.tolist(), **kwargs)
    try:
        compare_batches(got, expected_batches(ids, max_length, stride, batch_size, order, True), what)
    except Mismatch as e:
        if len(got) == len(order) // batch_size and all(type(g) in (list, tuple) and len(g) == 2 for g in got):
            seen = sorted(int(x) for g in got for x in g[0][:, 0]) if got else []
            firsts = sorted(int(w[0][0]) for k, w in enumerate(windows(ids, max_length, stride)) if k in order[: len(got) * batch_size])
            if seen == firsts or len(got) == 0:
                raise Mismatch(e.message + f"\nThe batches hold the right windows in another order: shuffle with DataLoader(..., generator="
                               f"torch.Generator().manual_seed(seed)), (it draws the order from that generator).") from None
        raise
    again = loader_batches(impl, ids.tolist(), **kwargs)
    compare_batches(again, got, what + " called a second time (the same seed must give the same order)")


# ----------------------------------------------------------------------------------- get_batch


def batch_oracle(data: np.ndarray, batch_size, block_size, seed):
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=torch.Generator().manual_seed(seed))
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y


def check_batch(got, data, batch_size, block_size, seed, what):
    if type(got) not in (tuple, list) or len(got) != 2 or not all(isinstance(t, torch.Tensor) for t in got):
        raise Mismatch(f"{what} returned {type(got).__name__}; expected a tuple (x, y) of two tensors")
    x, y = got
    ex, ey = batch_oracle(data, batch_size, block_size, seed)
    for name, t in (("x", x), ("y", y)):
        assert_true(t.dtype == torch.long, f"{what}: {name} has dtype {t.dtype}; expected torch.long (int64)")
    assert_true(tuple(y.shape) == tuple(x.shape) == (batch_size, block_size),
                f"{what}: x has shape {tuple(x.shape)} and y {tuple(y.shape)}; expected ({batch_size}, {block_size}) for both")
    assert_close(y[:, :-1], x[:, 1:], f"{what}: y[:, :-1] against x[:, 1:] (y is x one token later)", oracle="x shifted by one",
                 mistakes=[Mistake(*UNSHIFTED, y[:, :-1])])
    assert_close(x, ex, f"{what}: x", oracle="torch.randint(len(data) - block_size, (batch_size,), generator) starts")
    assert_close(y, ey, f"{what}: y", oracle="the windows one token after x's", mistakes=[Mistake(*UNSHIFTED, ex)])


def test_get_batch_from_a_tensor(impl, gen):
    block_size, batch_size = n(gen, 2, 16), n(gen, 1, 8)
    data = token_ids(gen, n(gen, block_size + 1, 400)).to(torch.int32)
    seed = n(gen, 0, 2**31 - 1)
    got = impl.call("data.get_batch", data, batch_size, block_size, seed, returns="data").out
    check_batch(got, data.numpy(), batch_size, block_size, seed, f"get_batch(<{len(data)} int32 ids>, {batch_size}, {block_size}, generator={seed})")


def test_get_batch_from_a_uint16_file(impl, gen, tmp_path):
    block_size, batch_size = n(gen, 2, 32), n(gen, 1, 8)
    data = token_ids(gen, n(gen, 1000, 5000)).numpy().astype(np.uint16)
    path = tmp_path / "train.bin"
    data.tofile(path)
    seed = n(gen, 0, 2**31 - 1)
    got = impl.call("data.get_batch", File(path), batch_size, block_size, seed, returns="data").out
    check_batch(got, data, batch_size, block_size, seed, f"get_batch(<a file of {len(data)} uint16 ids>, {batch_size}, {block_size}, generator={seed})")


def test_get_batch_too_short_is_a_clear_error(impl, gen):
    block_size = n(gen, 4, 40)
    size = n(gen, 1, block_size)
    expect_value_error(lambda: impl.call("data.get_batch", token_ids(gen, size), 2, block_size, 0, returns="data"),
                       f"get_batch(<{size} ids>, 2, block_size={block_size})", [size, block_size + 1],
                       why=": the text is too short for one window", missing="\nSay how many tokens there are and how many are needed.")
