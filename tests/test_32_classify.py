"""Exercise 32: classification fine-tuning: a class head in place of the LM head, the model frozen
but for its last blocks, final norm and head, and the class logits at each row's last real token.

Oracle: ``gpt_oracle.gpt``, the model written with PyTorch's functions, with the class head
written here (``F.linear`` with a bias), run on each row ALONE, cut to its real tokens: causal
attention makes its last output what the padded batch must give at the row's last real token.
The trainable set is written from the docstring as names and counted from the oracle's shapes;
gradients come from autograd through the oracle. Fresh configurations, weights, ragged
right-padded batches (pads of random ids), lengths and labels each run. The learner's functions
run on the reference ``GPTModel`` (harness/parts/model.py), so a mistake in exercise 09 costs
nothing here.
"""

import torch
import torch.nn.functional as F
from gpt_oracle import gpt, gpt_params, gpt_shapes, random_config

from harness.compare import Mistake, assert_close, assert_true, expect_value_error, fitting_alone
from harness.draw import n
from harness.failures import Mismatch
from harness.impl import Part

EXERCISE = "32"
PARTS = ("model",)  # the learner's classify.py may import GPTModel: it gets the reference one

LAST_COLUMN = ("the batch's last column, [:, -1]: a pad for every row shorter than the longest",
               "The batch is right-padded: row b's last real token is at lengths[b] - 1. "
               "logits[torch.arange(batch), lengths - 1].")
HEAD_FROZEN = ("the new head left frozen", "After freezing every parameter, set requires_grad back to True on "
               "model.out_head's parameters: the new head starts random and must learn.")
EMBEDDING_TRAINABLE = ("the embeddings left trainable", "tok_emb and pos_emb stay frozen: set requires_grad = False on "
                       "every parameter first, then True only on the last blocks, the final norm and the head.")
ALL_TRAINABLE = ("every parameter left trainable", "Freeze first: for p in model.parameters(): p.requires_grad_(False); "
                 "then unfreeze the last trainable_blocks blocks, model.final_norm and model.out_head.")
NORM_FROZEN = ("the final norm left frozen", "model.final_norm sits between the last block and the head: set "
               "requires_grad = True on its parameters too.")
FIRST_BLOCKS = ("the first blocks trainable instead of the last", "The blocks nearest the head adapt best: "
                "model.trf_blocks[len(blocks) - k:], not [:k].")
MINUS_ZERO = ("with trainable_blocks=0 every block trainable: trf_blocks[-0:] is all of them",
              "Slice from len(model.trf_blocks) - trainable_blocks, which is empty for 0.")
NOT_RESET = ("blocks left trainable from before", "Set requires_grad = False on EVERY parameter first, so that "
             "what an earlier call (or nn.Linear's default) made trainable does not stay so.")
STILL_TIED = ("the head still tied to the token embedding (the language-model head kept)",
              "model.out_head = nn.Linear(emb_dim, num_classes): a new layer with a weight of its own, not tok_emb.weight.")
VOCAB_SIZED = ("the head still vocab-sized", "The new head maps emb_dim to num_classes: nn.Linear(emb_dim, num_classes).")
NO_BIAS = ("the head without a bias", "nn.Linear(emb_dim, num_classes) has a bias by default (bias=True), as the book's head.")
FIRST_TOKEN = ("the first token of each row, [:, 0]", "Causal attention: only the last real token has seen the whole text; take "
               "logits[b, lengths[b] - 1].")


def shifted(k):
    """The name of each row's logits taken ``k`` positions after (``k > 0``) or before its last real token."""
    where = f"{k} position(s) past" if k > 0 else f"{-k} position(s) before"
    index = "lengths" if k == 1 else f"lengths {'+' if k > 1 else '-'} {abs(k - 1)}"
    return (f"each row's logits taken {where} its last real token (index {index}, not lengths - 1)",
            "Row b's last real token is at index lengths[b] - 1 (0-based): logits[torch.arange(batch), lengths - 1].")


def position_rules(lengths, width):
    """``(name and fix, positions)`` for each plausible wrong choice of a row's position: the last
    column, the first, and a shift of the right index by -2, -1, +1, +2 (kept inside the row as an
    index that wraps, as Python's does, or one clamped to the batch)."""
    right = lengths.long() - 1
    rules = [(LAST_COLUMN, torch.full_like(right, width - 1)), (FIRST_TOKEN, torch.zeros_like(right))]
    for k in (-2, -1, 1, 2):
        rules.append((shifted(k), (right + k) % width))
        rules.append((shifted(k), (right + k).clamp(0, width - 1)))
    return rules


def position_mistakes(at, lengths, width):
    """The mistakes of ``position_rules``, their outputs ``at(positions)`` (computed when asked)."""
    return [Mistake(*words, (lambda p=p: at(p))) for words, p in position_rules(lengths, width)]


# ------------------------------------------------------------------------------------ the oracles


def classifier_logits(idx, params, cfg):
    """The classifier's logits ``(batch, num_tokens, num_classes)``: the GPT with the class head."""
    return gpt(idx, params, dict(cfg, tie_weights=False)) + params["out_head.bias"]


def last_real(idx, lengths, params, cfg):
    """``(batch, num_classes)``: each row run alone on its real tokens, the last position's logits."""
    return torch.stack([classifier_logits(idx[b : b + 1, : int(lengths[b])], params, cfg)[0, -1] for b in range(idx.size(0))])


def classifier_shapes(cfg, num_classes):
    shapes = {k: v for k, v in gpt_shapes(cfg).items() if k != "out_head.weight"}
    shapes.update({"out_head.weight": (num_classes, cfg["emb_dim"]), "out_head.bias": (num_classes,)})
    return shapes


def trainable(cfg, k, names):
    """The names ``freeze_for_classification(model, k)`` leaves trainable."""
    first = cfg["n_layers"] - k
    keep = lambda name: (name.startswith(("final_norm.", "out_head."))  # noqa: E731
                         or name.startswith("trf_blocks.") and int(name.split(".")[1]) >= first)
    return sorted(x for x in names if keep(x))


# ------------------------------------------------------------------------------------ cases


def case(gen, rows=(2, 5), full_context=False, classes=(2, 5), head_scale=0.5, **fixed):
    """A config, a class count, the classifier's parameters and a ragged right-padded batch: token
    ids (pads are random ids too), lengths (one row full, one shorter) and labels."""
    heads = n(gen, 1, 3)  # emb_dim of 4 or more: over 2 numbers a LayerNorm has two outputs, and rows look alike
    cfg = random_config(gen, **{"context_length": n(gen, 4, 12), "n_heads": heads, "emb_dim": heads * n(gen, 4, 6), **fixed})
    num_classes = n(gen, *classes)
    fixed_width = cfg["context_length"] if full_context else None  # a batch exactly as wide as the context
    params = {k: v for k, v in gpt_params(gen, cfg).items() if k != "out_head.weight"}
    params["out_head.weight"] = torch.randn(num_classes, cfg["emb_dim"], generator=gen) * head_scale
    params["out_head.bias"] = torch.randn(num_classes, generator=gen) * 0.5
    batch, width = n(gen, *rows), fixed_width or n(gen, 3, cfg["context_length"])
    ids = torch.randint(0, cfg["vocab_size"], (batch, width), generator=gen)
    lengths = boundary_lengths(gen, batch, width)
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    return cfg, num_classes, params, ids, lengths, labels


def boundary_lengths(gen, batch, width):
    """``(batch,)`` lengths in ``[1, width]``, ``width >= 3``: always one row full, one of a single
    token and (with three rows or more) one of 2 to ``width - 2`` tokens, in random rows: then a
    position one past the last real token is not the last column, and a row's index never
    coincides with another rule's for every row."""
    lengths = torch.randint(1, width, (batch,), generator=gen)
    rows = torch.randperm(batch, generator=gen).tolist()
    lengths[rows[0]], lengths[rows[1]] = width, 1
    if batch > 2:
        lengths[rows[2]] = n(gen, 2, max(2, width - 2))
    return lengths


def describe(cfg, ids, lengths):
    return (f"a classifier on GPTModel(emb_dim={cfg['emb_dim']}, n_layers={cfg['n_layers']}) with a right-padded batch of "
            f"{ids.size(0)} rows of {ids.size(1)} tokens, lengths {lengths.tolist()}")


def body(params):
    """The classifier's parameters a GPTModel had before its head was replaced."""
    return {k: v for k, v in params.items() if not k.startswith("out_head.")}


# ------------------------------------------------------------------------------------ the head


def test_add_classification_head_replaces_the_head(impl, gen):
    for tie in (True, False):
        cfg, num_classes, params, ids, lengths, _ = case(gen, tie_weights=tie)
        state = body(params)
        if not tie:
            state["out_head.weight"] = torch.randn(cfg["vocab_size"], cfg["emb_dim"], generator=gen) * 0.3
        head = {k: params[k] for k in ("out_head.weight", "out_head.bias")}
        what = f"add_classification_head(GPTModel(vocab_size={cfg['vocab_size']}, emb_dim={cfg['emb_dim']}, tie_weights={tie}), {num_classes})"
        got = impl.scenario("classify_run.head", cfg, num_classes, state, head, ids, substitute=PARTS).out
        assert_true(got["returned_model"], f"{what} returned {got['returned_type']}; expected the model it was given, changed in place")
        assert_true(got["head_type"] == "Linear", f"{what}: model.out_head is a {got['head_type']}; expected an nn.Linear")
        e, c, v = cfg["emb_dim"], num_classes, cfg["vocab_size"]
        if got["tied"]:
            raise Mismatch(f"{what}: model.out_head.weight is model.tok_emb.weight, of shape {tuple(got['weight'])}; expected a weight "
                           f"of its own, ({c}, {e})\nThis looks like: {STILL_TIED[0]}. {STILL_TIED[1]}")
        if got["weight"] != [c, e]:
            named = f"\nThis looks like: {VOCAB_SIZED[0]}. {VOCAB_SIZED[1]}" if got["weight"] == [v, e] else ""
            raise Mismatch(f"{what}: model.out_head.weight has shape {tuple(got['weight'] or ())}; expected (num_classes, emb_dim) = "
                           f"({c}, {e}){named}")
        if got["bias"] is None:
            raise Mismatch(f"{what}: model.out_head has no bias; expected one of shape ({c},)\nThis looks like: {NO_BIAS[0]}. {NO_BIAS[1]}")
        assert_true(got["bias"] == [c], f"{what}: model.out_head.bias has shape {tuple(got['bias'])}; expected ({c},)")
        want = classifier_shapes(cfg, num_classes)
        shapes = {k: tuple(s) for k, s in got["shapes"].items()}
        missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
        assert_true(not missing and not extra, f"{what}: the model's parameters differ from a GPTModel with a class head: "
                    + (f"missing {', '.join(missing[:6])} " if missing else "") + (f"unexpected {', '.join(extra[:6])}" if extra else ""))
        wrong = [f"{k} is {shapes[k]}, expected {want[k]}" for k in want if shapes[k] != want[k]]
        assert_true(not wrong, f"{what}: " + "; ".join(wrong[:4]))
        assert_true(got["tok_emb_kept"], f"{what} changed tok_emb.weight; expected the token embedding as it was")
        assert_close(got["logits"], classifier_logits(ids, params, cfg), f"the output of {what} on token ids of shape {tuple(ids.shape)}, "
                     "with the head's weight and bias set", oracle="the GPT with F.linear(x, weight, bias) as its head", atol=1e-4, rtol=1e-4)


def test_add_classification_head_refuses_bad_class_counts(impl, gen):
    cfg = random_config(gen)
    for bad in [n(gen, -3, 1), 1]:
        expect_value_error(lambda: impl.call("classify.add_classification_head", Part("classify_run.gpt", cfg), bad, returns="data",
                                             substitute=PARTS),
                           f"add_classification_head(model, num_classes={bad})", needles=(bad, "num_classes"),
                           why=": a classifier needs at least 2 classes; say num_classes and its value")


# ------------------------------------------------------------------------------------ freezing


def name_mistakes(cfg, k, names, got, earlier=None):
    """The named mistakes the trainable set ``got`` (for ``trainable_blocks=k``) fits."""
    want = set(trainable(cfg, k, names))
    got = set(got)
    missing, extra = want - got, got - want
    said = []
    if got == set(names) and got != want:
        said.append(ALL_TRAINABLE)
    elif extra & {"tok_emb.weight", "pos_emb.weight"}:
        said.append(EMBEDDING_TRAINABLE)
    if {x for x in want if x.startswith("out_head.")} <= missing:
        said.append(HEAD_FROZEN)
    if {x for x in want if x.startswith("final_norm.")} <= missing:
        said.append(NORM_FROZEN)
    blocks = {x for x in got if x.startswith("trf_blocks.")}
    last_blocks = {j: {x for x in trainable(cfg, j, names) if x.startswith("trf_blocks.")} for j in range(cfg["n_layers"] + 1)}
    want_blocks = last_blocks[k]
    first = {x for x in names if x.startswith("trf_blocks.") and int(x.split(".")[1]) < k}
    if 0 < k < cfg["n_layers"] and blocks == first:
        said.append(FIRST_BLOCKS)
    elif k == 0 and blocks and blocks == {x for x in names if x.startswith("trf_blocks.")}:
        said.append(MINUS_ZERO)
    else:  # blocks left from an earlier call, or the slice off: named only when one of them alone fits
        not_reset = earlier is not None and bool(blocks - want) and blocks - want <= set(earlier)
        other = next((j for j, b in last_blocks.items() if b == blocks), None) if blocks != want_blocks else None
        if not_reset and other is None:
            said.append(NOT_RESET)
        elif other is not None and not not_reset:
            said.append((f"the last {other} block(s) trainable, not the last {k}: the slice of trf_blocks is off",
                         "model.trf_blocks[len(model.trf_blocks) - trainable_blocks:] holds exactly the last trainable_blocks "
                         "blocks."))
    return said


def check_trainable(got, cfg, k, names, what, earlier=None, verb="left {} parameter(s) trainable"):
    want = trainable(cfg, k, names)
    if sorted(got) == want:
        return
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    message = (f"{what} {verb.format(len(got))}; expected {len(want)}: the last {k} block(s), final_norm and out_head. "
               + (f"Frozen but should train: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}. " if missing else "")
               + (f"Trainable but should be frozen: {', '.join(extra[:6])}{' ...' if len(extra) > 6 else ''}." if extra else ""))
    for name, fix in name_mistakes(cfg, k, names, got, earlier):
        message += f"\nThis looks like: {name}. {fix}"
    raise Mismatch(message)


def check_count(got, cfg, num_classes, k, names, what):
    shapes = classifier_shapes(cfg, num_classes)
    numel = {name: int(torch.Size(s).numel()) for name, s in shapes.items()}
    want = sum(numel[x] for x in trainable(cfg, k, names))
    if got["count"] is None:
        raise Mismatch(f"{what} returned a {got['count_type']}; expected an int, the number of trainable numbers")
    if got["count"] == want:
        return
    named = ""
    if got["count"] == sum(numel.values()):
        named = ("\nThis looks like: every parameter counted. Count only those with p.requires_grad, after the freezing.")
    elif got["count"] == len(trainable(cfg, k, names)):
        named = "\nThis looks like: the trainable tensors counted, not their numbers. sum(p.numel() for p in ... if p.requires_grad)."
    elif got["count"] == sum(numel.values()) - want:
        named = "\nThis looks like: the frozen numbers counted. Count those with p.requires_grad."
    raise Mismatch(f"{what} returned {got['count']:,}; expected {want:,}, the numbers in the parameters that train (sum of "
                   f"p.numel() where p.requires_grad){named}")


def test_freeze_trains_the_last_blocks_the_final_norm_and_the_head(impl, gen):
    cfg, num_classes, *_ = case(gen, n_layers=n(gen, 2, 4))
    names = sorted(classifier_shapes(cfg, num_classes))
    layers = cfg["n_layers"]
    calls = [None, n(gen, 2, layers), 0, layers, n(gen, 1, layers - 1)]  # None: the default, 1
    initial = {x: bool(n(gen, 0, 1)) for x in names}
    initial.update({x: False for x in names if x.startswith("out_head.")})  # a head frozen before: the call must unfreeze it
    got = impl.scenario("classify_run.freeze", cfg, num_classes, calls, initial, substitute=PARTS).out
    before = sorted(x for x in names if initial[x])
    for i, (k, res) in enumerate(zip(calls, got)):
        what = (f"freeze_for_classification(model{'' if k is None else f', trainable_blocks={k}'}) on a classifier with "
                f"{layers} blocks" + (f", after the call with trainable_blocks={calls[i - 1]}" if i else ""))
        check_trainable(res["trainable"], cfg, 1 if k is None else k, names, what, earlier=got[i - 1]["trainable"] if i else before)
        check_count(res, cfg, num_classes, 1 if k is None else k, names, what)


def test_freeze_refuses_bad_block_counts(impl, gen):
    cfg, num_classes, *_ = case(gen)
    layers = cfg["n_layers"]
    for bad in [-n(gen, 1, 3), layers + n(gen, 1, 3)]:
        expect_value_error(lambda: impl.call("classify.freeze_for_classification", Part("classify_run.gpt", cfg), bad, returns="data",
                                             substitute=PARTS),
                           f"freeze_for_classification(<a model with {layers} blocks>, trainable_blocks={bad})",
                           needles=(bad, "trainable_blocks"), why=f": it must be from 0 to {layers}; say trainable_blocks and its value")


# ------------------------------------------------------------------------------------ the last real token


def test_last_token_logits_takes_each_rows_last_real_token(impl, gen):
    batch, width, classes = n(gen, 3, 6), n(gen, 4, 10), n(gen, 2, 7)
    for dtype, as_list in ((torch.float32, False), (torch.float64, True)):
        logits = torch.randn(batch, width, classes, generator=gen, dtype=dtype)
        lengths = boundary_lengths(gen, batch, width)
        g = torch.randn(batch, classes, generator=gen, dtype=dtype)
        arg = lengths.tolist() if as_list else lengths
        res = impl.call("classify.last_token_logits", logits, arg, grad_output=g, grad_wrt=(0,), substitute=PARTS)
        rows = torch.arange(batch)
        what = (f"last_token_logits(logits of shape {tuple(logits.shape)}, {dtype}, lengths={lengths.tolist()}"
                + (" as a list)" if as_list else ")"))
        want = logits[rows, lengths - 1]
        mistakes = position_mistakes(lambda p, logits=logits, rows=rows: logits[rows, p], lengths, width)
        assert_close(res.out, want, what, oracle="logits[b, lengths[b] - 1] for each row b",
                     mistakes=fitting_alone(res.out, want, mistakes) if res.out.shape == want.shape else [])
        want = torch.zeros_like(logits)
        want[rows, lengths - 1] = g
        assert_close(res.grad(0), want, f"the gradient of {what} with respect to logits",
                     oracle="grad_output at each row's last real token, zero elsewhere")


def test_last_token_logits_refuses_lengths_outside_the_batch(impl, gen):
    batch, width = n(gen, 2, 5), n(gen, 2, 8)
    logits = torch.randn(batch, width, 3, generator=gen)
    good = torch.randint(1, width + 1, (batch,), generator=gen)
    for bad in (0, width + n(gen, 1, 3)):
        lengths = good.clone()
        lengths[n(gen, 0, batch - 1)] = bad
        expect_value_error(lambda: impl.call("classify.last_token_logits", logits, lengths, substitute=PARTS),
                           f"last_token_logits(logits of shape {tuple(logits.shape)}, lengths={lengths.tolist()})", needles=(bad,),
                           why=f": a row holds from 1 to {width} real tokens; say the length that does not fit")
    expect_value_error(lambda: impl.call("classify.last_token_logits", logits, good[:-1], substitute=PARTS),
                       f"last_token_logits(logits of shape {tuple(logits.shape)}, lengths={good[:-1].tolist()})",
                       why=": one length per row is needed")


# ------------------------------------------------------------------------------------ loss and gradients


def oracle_backward(ids, lengths, labels, params, cfg, names):
    """The loss and autograd's gradients of the parameters ``names`` through the per-row oracle."""
    pp = {k: v.clone().requires_grad_(k in names) for k, v in params.items()}
    loss = F.cross_entropy(last_real(ids, lengths, pp, cfg), labels)
    loss.backward()
    return loss.detach(), {k: pp[k].grad for k in names}


def at_positions(ids, params, cfg):
    """``at(positions)``: the classifier's logits of the padded batch at one position per row."""
    def at(positions):
        with torch.no_grad():
            return classifier_logits(ids, params, cfg)[torch.arange(ids.size(0)), positions]
    return at


def loss_mistakes(ids, lengths, labels, params, cfg, want_loss):
    at = at_positions(ids, params, cfg)
    out = [Mistake(words, fix, (lambda m=m: F.cross_entropy(m.output(), labels)))
           for m in position_mistakes(at, lengths, ids.size(1)) for words, fix in [(m.name, m.fix)]]
    return out + [Mistake("the sum over the batch, not the mean", "F.cross_entropy's default reduction is the mean.",
                          lambda: want_loss * ids.size(0))]


def test_classification_loss_at_the_last_real_token(impl, gen):
    cfg, num_classes, params, ids, lengths, labels = case(gen, full_context=True)
    k = n(gen, 0, cfg["n_layers"])
    names = trainable(cfg, k, list(params))
    want_loss, want_grads = oracle_backward(ids, lengths, labels, params, cfg, names)
    got = impl.scenario("classify_run.backward", cfg, num_classes, params, ids, lengths, labels, k, learners_freeze=False,
                        learners_loss=True, substitute=PARTS).out
    what = f"classification_loss on {describe(cfg, ids, lengths)}"
    assert_true(got["loss"] is not None, f"{what} returned a {got['loss_type']}; expected a 0-d tensor")
    assert_true(got["loss"].dim() == 0, f"{what} has shape {tuple(got['loss'].shape)}; expected a 0-d tensor, the mean over the batch")
    assert_close(got["loss"], want_loss, what, oracle="F.cross_entropy of the oracle's logits at each row's last real token",
                 atol=1e-4, rtol=1e-4,
                 mistakes=fitting_alone(got["loss"], want_loss, loss_mistakes(ids, lengths, labels, params, cfg, want_loss)))
    assert_true(got["has_graph"], f"{what} has no autograd graph; expected a loss that backpropagates into the trainable "
                                  "parameters (no torch.no_grad(), no .detach(), no .item())")
    for name in names:
        assert_true(name in got["grads"], f"after backward through {what}, {name} has no gradient; expected one")
        assert_close(got["grads"][name], want_grads[name], f"the gradient of {what} with respect to {name}",
                     oracle="autograd through the oracle", atol=1e-4, rtol=1e-3)


def test_gradients_reach_only_the_trainable_parameters(impl, gen):
    cfg, num_classes, params, ids, lengths, labels = case(gen, n_layers=n(gen, 2, 3))
    k = n(gen, 1, cfg["n_layers"] - 1)
    names = trainable(cfg, k, list(params))
    _, want_grads = oracle_backward(ids, lengths, labels, params, cfg, names)
    got = impl.scenario("classify_run.backward", cfg, num_classes, params, ids, lengths, labels, k, learners_freeze=True,
                        learners_loss=False, substitute=PARTS).out
    what = f"a backward after freeze_for_classification(model, trainable_blocks={k}) on a classifier with {cfg['n_layers']} blocks"
    check_trainable(sorted(got["grads"]), cfg, k, list(params), what, verb="gave a gradient to {} parameter(s)")
    for name in names:
        assert_close(got["grads"][name], want_grads[name], f"the gradient of {name} in {what}", oracle="autograd through the oracle",
                     atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------ accuracy


def telling_labels(gen, predicted, by_rule, num_classes, restarts=4, passes=3):
    """Labels under which the accuracies tell the positions apart: the right accuracy differs from
    every wrong position's, then the last column's from every other's, then as many as can be
    differ from each other. Found by trying, row after row, each label a position predicts there
    (and one random class), from the right predictions and from random labels. So a wrong accuracy
    is named only when one position alone gives it."""
    distinct = []
    for p in [predicted, *by_rule]:
        if not any(torch.equal(p, q) for q in distinct):
            distinct.append(p)
    column = by_rule[0]  # position_rules lists the last column first

    def score(labels):
        counts = [int((p == labels).sum()) for p in distinct]
        column_count = int((column == labels).sum())
        return (counts.count(counts[0]) == 1, torch.equal(column, predicted) or counts.count(column_count) == 1,
                sum(counts.count(c) == 1 for c in counts), int((predicted != labels).sum()) > 0)

    best, best_score = None, None
    for restart in range(restarts):
        labels = predicted.clone() if restart == 0 else torch.randint(0, num_classes, predicted.shape, generator=gen)
        for _ in range(passes):
            for b in range(len(labels)):
                options = {int(p[b]) for p in distinct} | {n(gen, 0, num_classes - 1)}
                tried = []
                for c in sorted(options):
                    labels[b] = c
                    tried.append((score(labels), c))
                labels[b] = max(tried)[1]
        if best_score is None or score(labels) > best_score:
            best, best_score = labels.clone(), score(labels)
    return best


def test_classification_accuracy_counts_the_right_predictions(impl, gen):
    for _ in range(2):
        # more classes, a wider head, six positions or more: each position predicts its own class, so that the accuracies tell
        # the positions apart
        cfg, num_classes, params, ids, lengths, _ = case(gen, rows=(6, 9), classes=(4, 6), head_scale=3.0,
                                                         context_length=n(gen, 6, 12), full_context=True)
        params["pos_emb.weight"] = params["pos_emb.weight"] * 6.0  # and the position weighs more than the token
        rules = position_rules(lengths, ids.size(1))
        with torch.no_grad():
            predicted = last_real(ids, lengths, params, cfg).argmax(-1)
            everywhere = classifier_logits(ids, params, cfg)
            by_rule = [everywhere[torch.arange(ids.size(0)), p].argmax(-1) for _, p in rules]
        labels = telling_labels(gen, predicted, by_rule, num_classes)
        got = impl.scenario("classify_run.accuracy", cfg, num_classes, params, ids, lengths, labels, substitute=PARTS).out
        what = f"classification_accuracy on {describe(cfg, ids, lengths)}, labels {labels.tolist()}"
        assert_true(got["type"] == "float", f"{what} returned a {got['type']}; expected a Python float (.item())")
        want = (predicted == labels).double().mean()
        value = torch.tensor(float(got["value"]), dtype=torch.float64)
        mistakes = [Mistake(*words, (wrong == labels).double().mean()) for (words, _), wrong in zip(rules, by_rule)]
        mistakes.append(Mistake("the number of right predictions, not their fraction", "Divide by the number of rows: "
                                ".float().mean().", (predicted == labels).double().sum()))
        assert_close(value, want, what, oracle="the fraction of rows whose argmax at the last real token is the label", atol=1e-6,
                     rtol=0, mistakes=fitting_alone(value, want, mistakes, rtol=0, atol=1e-6))
        assert_true(got["grad_enabled"] and not any(got["grad_enabled"]),
                    f"{what} ran the model with gradients on; expected it under torch.no_grad(): an accuracy needs no graph")
