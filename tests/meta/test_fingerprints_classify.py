"""The assistant track's classification fine-tuning (32): each known mistake, made as a small edit
of solutions/, is caught by the check that should catch it and named in its failure; and a broken
GPTModel (exercise 09) costs 32 nothing.
"""

import pytest
from helpers import SEEDS, assert_checks_pass, assert_mistake_named, impl_for, make_tree, run_check

CLS = "classify.py"
MODULE = "test_32_classify"
HEAD = "model.out_head = nn.Linear(old.in_features, num_classes, bias=True)"
UNFREEZE = "for module in [*last, model.final_norm, model.out_head]:"
FREEZE = "        p.requires_grad_(False)\n"
LAST = "last = list(model.trf_blocks)[n_blocks - trainable_blocks:]"
PICK = "return logits[rows, lengths.long() - 1]"
COUNT = "return sum(p.numel() for p in model.parameters() if p.requires_grad)"

# (the words the failure must say after "This looks like: ", file, [(old, new)], module, check)
CASES = [
    ("the batch's last column, [:, -1]", CLS, [(PICK, "return logits[:, -1]")], MODULE,
     "test_last_token_logits_takes_each_rows_last_real_token"),
    ("the batch's last column, [:, -1]", CLS, [(PICK, "return logits[:, -1]")], MODULE, "test_classification_loss_at_the_last_real_token"),
    ("the new head left frozen", CLS, [(UNFREEZE, UNFREEZE.replace(", model.out_head]", "]"))], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("the new head left frozen", CLS, [(UNFREEZE, UNFREEZE.replace(", model.out_head]", "]"))], MODULE,
     "test_gradients_reach_only_the_trainable_parameters"),
    ("the embeddings left trainable", CLS, [(UNFREEZE, UNFREEZE.replace("[*last,", "[*last, model.tok_emb, model.pos_emb,"))], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("every parameter left trainable", CLS, [(FREEZE, FREEZE.replace("False", "True"))], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("the final norm left frozen", CLS, [(UNFREEZE, UNFREEZE.replace(" model.final_norm,", ""))], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("the first blocks trainable instead of the last", CLS, [(LAST, "last = list(model.trf_blocks)[:trainable_blocks]")], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("with trainable_blocks=0 every block trainable", CLS, [(LAST, "last = list(model.trf_blocks)[-trainable_blocks:]")], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("the head still tied to the token embedding", CLS, [(HEAD, "model.out_head = old")], MODULE,
     "test_add_classification_head_replaces_the_head"),
    ("the head still vocab-sized", CLS, [(HEAD, HEAD.replace("num_classes, bias", "old.out_features, bias"))], MODULE,
     "test_add_classification_head_replaces_the_head"),
    ("the head without a bias", CLS, [(HEAD, HEAD.replace("bias=True", "bias=False"))], MODULE,
     "test_add_classification_head_replaces_the_head"),
    ("the trainable tensors counted, not their numbers", CLS, [(COUNT, COUNT.replace("p.numel()", "1"))], MODULE,
     "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"),
    ("the batch's last column, [:, -1]", CLS,
     [("predicted = last_token_logits(model(input_ids), lengths).argmax(dim=-1)", "predicted = model(input_ids)[:, -1].argmax(dim=-1)")],
     MODULE, "test_classification_accuracy_counts_the_right_predictions"),
]

# Mistakes without a name, whose failure must still say what was expected: (words, file, edits, module, check)
PLAIN = [
    ("expected it under torch.no_grad()", CLS, [("    with torch.no_grad():\n", "    with torch.enable_grad():\n")], MODULE,
     "test_classification_accuracy_counts_the_right_predictions"),
    ("has no autograd graph", CLS, [("return F.cross_entropy(last_token_logits(model(input_ids), lengths), labels)",
                                     "return F.cross_entropy(last_token_logits(model(input_ids), lengths), labels).detach()")],
     MODULE, "test_classification_loss_at_the_last_real_token"),
    ("expected a ValueError", CLS, [('num_classes = _count(num_classes, "num_classes", 2)', "num_classes = int(num_classes)")], MODULE,
     "test_add_classification_head_refuses_bad_class_counts"),
    ("expected a ValueError", CLS, [("    if len(bad):\n", "    if False:\n")], MODULE,
     "test_last_token_logits_refuses_lengths_outside_the_batch"),
    ("expected a ValueError", CLS, [("0 <= trainable_blocks <= n_blocks", "-9 <= trainable_blocks <= n_blocks + 9")], MODULE,
     "test_freeze_refuses_bad_block_counts"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[f"{c[0]} ({c[4]})" for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("words, file, edits, module, check", PLAIN, ids=[f"{c[0]} ({c[4]})" for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, CASES + PLAIN)


def test_mistakes_in_09_cost_classification_nothing(tmp_path):
    """32 runs the learner's functions on the reference GPTModel: a GPTModel without position
    embeddings or final norm, and untied, changes nothing."""
    tree = make_tree(tmp_path, {"model.py": [
        ("x = self.tok_emb(in_idx) + self.pos_emb(positions)", "x = self.tok_emb(in_idx)"),
        ("        x = self.final_norm(x)\n", ""),
        ("        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight\n", ""),
    ]})
    tests, impl = impl_for(tree, MODULE)
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)
