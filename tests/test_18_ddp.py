"""Exercise 18: data-parallel training under torchrun.

Oracle: single-process training in this process, with the same reference GPT (``parts/model.py``,
no dropout), the same weights, SGD with momentum and ``F.cross_entropy`` over each global batch,
each step's gradient taken as the mean of the gradients of the batch's two halves (the whole
batch's gradient, rounded as two averaging processes round it: training on a nearly singular
LayerNorm amplifies any other rounding past the tolerance). With two processes that each take
their contiguous half of every global batch and average their gradients (DistributedDataParallel),
the parameters after ``K`` steps must equal the single process's up to float32 rounding:
``atol=1e-6, rtol=1e-5`` (measured differences are about 1e-7), and the two processes must hold
the same parameters (``atol=1e-7, rtol=1e-6``).

The three two-process checks read one ``torchrun --standalone --nproc_per_node 2`` run (gloo, CPU)
per grade, launched through ``harness/parts/ddp_run.py`` and ``ddp_rank.py``, each for its own
property; the others call the learner's functions in the worker, without torchrun.
"""

import zlib

import pytest
import torch
import torch.nn.functional as F
from gpt_oracle import gpt_params, random_config

from harness.compare import Mistake, assert_close, assert_true
from harness.draw import n
from harness.failures import GradingFailure, Mismatch
from harness.impl import load_part as _load_part

EXERCISE = "18"
ORACLE = "single-process training on the whole global batches (the mean of the halves' gradients)"
ATOL, RTOL = 1e-6, 1e-5


def case(gen):
    """A tiny GPT's config and weights, and ``steps`` global batches of ``2 * per`` distinct rows."""
    cfg = random_config(gen, vocab_size=n(gen, 16, 32), context_length=n(gen, 3, 6), n_layers=1, drop_rate=0.0,
                        tie_weights=False)
    per, steps = n(gen, 2, 4), n(gen, 2, 3)
    batch = 2 * per
    xs = torch.randint(0, cfg["vocab_size"], (steps, batch, cfg["context_length"]), generator=gen)
    xs[:, :, 0] = torch.arange(batch)  # every row of a global batch is different: the hook can tell them apart
    ys = torch.randint(0, cfg["vocab_size"], (steps, batch, cfg["context_length"]), generator=gen)
    lr, momentum = 0.05 + 0.1 * float(torch.rand(1, generator=gen)), 0.9
    return cfg, gpt_params(gen, cfg), xs, ys, lr, momentum


def launch(impl, cfg, state, xs, ys, lr, momentum):
    return impl.scenario("ddp_run.two_processes", cfg, state, xs, ys, lr, momentum).out["ranks"]


_RUNS: dict = {}


def shared_run(impl, gen):
    """The one two-process run that the three checks below read, each for its own property: a
    torchrun launch takes seconds, so a grade makes one (per worker backend). Returns the case and
    what each process recorded, or raises the failure the launch raised."""
    key = (id(impl.backend), impl.exercise.id)
    # the backend itself is kept with its run: while it is held, no later backend can reuse its id
    if key not in _RUNS or _RUNS[key][0] is not impl.backend:
        c = case(gen)
        try:
            _RUNS[key] = (impl.backend, c, launch(impl, *c), None)
        except GradingFailure as e:
            _RUNS[key] = (impl.backend, c, None, e)
    _, c, ranks, failure = _RUNS[key]
    if failure is not None:
        raise failure
    return c, ranks


@pytest.fixture(scope="module")
def ddp_gen(kata):
    """The generator of the shared run's inputs: from the grade's seed, so --seed reproduces it."""
    return torch.Generator().manual_seed(zlib.crc32(f"{kata.seed}:ddp".encode()) & 0x7FFFFFFF)


def single_process(cfg, state, xs, ys, lr, momentum, rows=None, halves=False):
    """The parameters after training on each global batch (or on its ``rows`` only).

    With ``halves``, each step's gradient is the mean of the gradients of the batch's two halves:
    the same number as the whole batch's gradient, taken with the same float32 arithmetic as two
    processes that average their gradients. Training amplifies rounding (a LayerNorm over two
    features is nearly singular), and the whole-batch gradient, rounded otherwise, drifted 1.5e-5
    from a correct two-process run in 3 steps (seed 13); this one stays within about 1e-7."""
    model = _load_part("model").GPTModel(cfg)
    model.load_state_dict(state)
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    for x, y in zip(xs, ys):
        if rows is not None:
            x, y = x[rows], y[rows]
        parts = [slice(0, len(x) // 2), slice(len(x) // 2, None)] if halves else [slice(None)]
        grads = []
        for part in parts:
            loss = F.cross_entropy(model(x[part]).flatten(0, 1), y[part].flatten())
            grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        for p, *gs in zip(params, *grads):
            gs = [torch.zeros_like(p) if g is None else g for g in gs]
            p.grad = gs[0] if len(gs) == 1 else (gs[0] + gs[1]) / 2
        optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def half_losses(cfg, state, x, y):
    model = _load_part("model").GPTModel(cfg)
    model.load_state_dict(state)
    h = len(x) // 2
    with torch.no_grad():
        return [float(F.cross_entropy(model(x[s]).flatten(0, 1), y[s].flatten())) for s in (slice(0, h), slice(h, None))]


def flat(params):
    return torch.cat([p.flatten() for p in params.values()])


def describe(cfg, xs):
    return (f"two processes under torchrun training a GPT (emb_dim={cfg['emb_dim']}, n_heads={cfg['n_heads']}, "
            f"vocab_size={cfg['vocab_size']}) with SGD for {len(xs)} steps on global batches of {xs.shape[1]} rows")


def test_two_processes_train_like_one(impl, ddp_gen):
    (cfg, state, xs, ys, lr, momentum), ranks = shared_run(impl, ddp_gen)
    p0, p1 = flat(ranks[0]["params"]), flat(ranks[1]["params"])
    if not torch.allclose(p0, p1, rtol=1e-6, atol=1e-7):
        worst = float((p0 - p1).abs().max())
        raise Mismatch(f"{describe(cfg, xs)}: the two processes end with different parameters (up to {worst:.3g} "
                       "apart). Their gradients were not averaged: wrap_model must wrap the model in "
                       "DistributedDataParallel when there is a process group (and setup_distributed must create "
                       "that group, init_process_group), so that backward all-reduces the gradients.")
    half = xs.shape[1] // 2
    expected = flat(single_process(cfg, state, xs, ys, lr, momentum, halves=True))
    assert_close(p0, expected, f"{describe(cfg, xs)}: every parameter after training, flattened into one vector",
                 oracle=ORACLE, atol=ATOL, rtol=RTOL,
                 mistakes=[Mistake("both processes trained on the same half of each batch (the rank was ignored)",
                                   "shard must take this process's rows: batch[rank * n : (rank + 1) * n].",
                                   lambda: flat(single_process(cfg, state, xs, ys, lr, momentum, rows=slice(0, half)))),
                           Mistake("both processes trained on the second half of each batch",
                                   "shard must take this process's rows: batch[rank * n : (rank + 1) * n].",
                                   lambda: flat(single_process(cfg, state, xs, ys, lr, momentum, rows=slice(half, None))))])


def _rows(seen: torch.Tensor, batch: torch.Tensor) -> list:
    """The index in ``batch`` of each row of ``seen`` (None for a row that is not in it)."""
    out = []
    for row in seen:
        hit = (batch == row).all(dim=-1).nonzero().flatten().tolist() if row.shape == batch.shape[1:] else []
        out.append(hit[0] if hit else None)
    return out


def test_each_process_sees_its_contiguous_half(impl, ddp_gen):
    (cfg, state, xs, ys, lr, momentum), ranks = shared_run(impl, ddp_gen)
    steps, batch = xs.shape[0], xs.shape[1]
    per = batch // 2
    for r, rank in enumerate(ranks):
        assert_true(len(rank["seen"]) == steps, f"in {steps} training steps, process {r}'s model was called "
                                                f"{len(rank['seen'])} times; expected once per step")
    for k in range(steps):
        rows = [_rows(rank["seen"][k], xs[k]) for rank in ranks]
        for r in (0, 1):
            want = list(range(r * per, (r + 1) * per))
            if rows[r] == want:
                continue
            what = f"at step {k}, process {r} of 2 fed its model rows {rows[r]} of the global batch of {batch} rows"
            fix = f"; shard(batch, info) should give the contiguous rows {want[0]}..{want[-1]} (rank * n .. (rank + 1) * n - 1, n = {per})"
            if None in rows[r]:
                raise Mismatch(f"at step {k}, process {r} fed its model {len(rows[r])} rows, some of which are not rows "
                               f"of the global batch (shape {tuple(ranks[r]['seen'][k].shape)}){fix}")
            if sorted(rows[r]) == list(range(batch)):
                raise Mismatch(f"{what}: the whole batch, not sharded: every process computed the gradient of every "
                               f"row, and the batch is not split over the processes{fix}")
            if rows[r] == list(range(r, batch, 2)):
                raise Mismatch(f"{what}: interleaved rows (batch[rank::world_size]){fix}")
            if rows[0] == rows[1]:
                raise Mismatch(f"{what}, and so did the other process: the same half on both, the slice does not depend "
                               f"on the rank{fix}")
            raise Mismatch(what + fix)


def test_dist_info_and_mean_over_processes(impl, ddp_gen):
    (cfg, state, xs, ys, lr, momentum), ranks = shared_run(impl, ddp_gen)
    for r, rank in enumerate(ranks):
        info = rank["info"]
        want = {"rank": r, "local_rank": r, "world_size": 2, "device": "cpu", "is_main": r == 0}
        wrong = [f"{k}={info[k]!r} (expected {v!r})" for k, v in want.items() if info[k] != v]
        assert_true(not wrong, f"under torchrun with 2 processes on one machine, setup_distributed('cpu') in process "
                               f"{r} returned DistInfo with {', '.join(wrong)}: read RANK, LOCAL_RANK and WORLD_SIZE "
                               "from os.environ")
        assert_true(rank["initialized"] and rank["backend"] == "gloo",
                    f"after setup_distributed('cpu') under torchrun, process {r} "
                    + ("has no process group" if not rank["initialized"] else f"has a process group with backend {rank['backend']!r}")
                    + ": call torch.distributed.init_process_group(backend='gloo') on the CPU")
        assert_true(rank["ddp"], f"wrap_model under torchrun returned a {rank['wrapped']}, expected the model wrapped in "
                                 "torch.nn.parallel.DistributedDataParallel")
    own = half_losses(cfg, state, xs[0], ys[0])
    for r, rank in enumerate(ranks):
        assert_close(rank["losses"][:1], torch.tensor([own[r]], dtype=torch.float64),
                     f"process {r}'s loss at the first step (on its half of the batch)", oracle="F.cross_entropy on that half",
                     atol=1e-5, rtol=1e-5)
    for r, rank in enumerate(ranks):
        assert_true(rank["mean_types"] == ["float"], f"mean_over_processes(loss, info) in process {r} returned "
                                                     f"{' and '.join(rank['mean_types'])}, expected a Python float "
                                                     "(float(tensor.item()) / world_size)")
    l0, l1 = ranks[0]["losses"], ranks[1]["losses"]
    expected = (l0 + l1) / 2
    for r, rank in enumerate(ranks):
        assert_close(rank["means"], expected,
                     f"mean_over_processes(loss, info) in process {r}, at each of the {len(expected)} steps",
                     oracle="the mean of the two processes' losses", atol=1e-7, rtol=1e-6,
                     mistakes=[Mistake("mean_over_processes returned this process's own value",
                                       "all_reduce a tensor holding the value (op=dist.ReduceOp.SUM), then divide by world_size.",
                                       rank["losses"]),
                               Mistake("the sum over the processes, not divided by world_size",
                                       "Divide the all-reduced sum by info.world_size.", l0 + l1)])


# ----------------------------------------------------------------------------- without torchrun


def test_running_alone_without_torchrun(impl, gen):
    batch = torch.randn(n(gen, 1, 6), 3, generator=gen)
    value = float(torch.randn(1, generator=gen))
    out = impl.scenario("ddp_run.alone", batch, value).out
    info = out["info"]
    want = {"rank": 0, "local_rank": 0, "world_size": 1, "device": "cpu", "is_main": True}
    wrong = [f"{k}={info[k]!r} (expected {v!r})" for k, v in want.items() if info[k] != v]
    assert_true(not wrong, f"without torchrun (no WORLD_SIZE in the environment), setup_distributed('cpu') returned "
                           f"{out['info_type']} with {', '.join(wrong)}; expected DistInfo(0, 0, 1, torch.device('cpu'))")
    assert_true(not out["initialized"], "without torchrun, setup_distributed('cpu') created a process group; a process "
                                        "running alone needs none (check 'WORLD_SIZE' in os.environ first)")
    assert_true(out["same_model"], f"without a process group, wrap_model should return the model itself, got a {out['wrapped']}")
    piece = out["shard"]
    assert_true(isinstance(piece, torch.Tensor) and piece.shape == batch.shape and torch.equal(piece, batch),
                f"shard of a batch of {len(batch)} rows with world_size 1 should return the whole batch, got "
                + (f"shape {tuple(piece.shape)}" if isinstance(piece, torch.Tensor) else str(piece)))
    assert_true(out["mean"] == value, f"mean_over_processes({value!r}) in a process running alone returned "
                                      f"{out['mean']!r}, expected the value itself")


def test_shard_takes_contiguous_slices(impl, gen):
    world = n(gen, 2, 4)
    per = n(gen, 1, 4)
    batch = torch.randn(world * per, n(gen, 1, 3), generator=gen)
    cases = [(r, world) for r in range(world)]
    got = impl.scenario("ddp_run.shards", batch, cases).out
    for (r, w), out in zip(cases, got):
        want = batch[r * per : (r + 1) * per]
        if "returned" not in out:
            raise Mismatch(f"shard(batch of {len(batch)} rows, DistInfo(rank={r}, world_size={w})) raised "
                           f"{out['raised']}: {out['message']}")
        piece = out["returned"]
        if piece.shape[:1] == want.shape[:1] and not torch.equal(piece, want):
            if torch.equal(piece, batch[r::w]):
                raise Mismatch(f"shard(batch of {len(batch)} rows, rank={r}, world_size={w}) returned interleaved rows "
                               f"(batch[rank::world_size]); expected the contiguous rows {r * per}..{(r + 1) * per - 1}")
        assert_close(piece, want, f"shard(batch of {len(batch)} rows, DistInfo(rank={r}, world_size={w}))",
                     oracle=f"batch[rank * n : (rank + 1) * n] with n = {per}", atol=0, rtol=0)


def test_shard_refuses_an_indivisible_batch(impl, gen):
    world = n(gen, 2, 4)
    rows = world * n(gen, 1, 3) + n(gen, 1, world - 1)
    batch = torch.randn(rows, 2, generator=gen)
    (out,) = impl.scenario("ddp_run.shards", batch, [(0, world)]).out
    if "returned" in out or out["raised"] is None:
        got = f"returned {tuple(out['returned'].shape)[0]} rows" if "returned" in out else out["message"]
        raise Mismatch(f"shard of a batch of {rows} rows over world_size={world} processes {got}; expected ValueError: "
                       "the processes would not cover the batch equally")
    assert_true("ValueError" in out["types"], f"shard of a batch of {rows} rows over {world} processes raised "
                                              f"{out['raised']}: {out['message']}; expected ValueError")
    assert_true(str(rows) in out["message"] and str(world) in out["message"],
                f"shard's ValueError({out['message']!r}) should give both the batch's length ({rows}) and world_size ({world})")


def test_setup_distributed_refuses_unknown_devices(impl):
    out = impl.scenario("ddp_run.bad_devices").out
    for key, what in (("tpu", "setup_distributed('tpu')"), ("cuda", "setup_distributed('cuda') where CUDA is not available")):
        if key not in out:
            continue
        got = out[key]
        assert_true("raised" in got and "ValueError" in got["types"],
                    f"{what} " + (f"raised {got['raised']}: {got['message']}" if "raised" in got else f"returned {got['returned']}")
                    + "; expected ValueError (device is 'auto', 'cpu' or 'cuda', and 'cuda' needs CUDA)")
