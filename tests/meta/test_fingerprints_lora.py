"""LoRA (33): each known mistake, made as a one-line edit of solutions/lora.py, is caught by the
check that should catch it and named in its failure.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named

LORA = "lora.py"
MODULE = "test_33_lora"
SCALING = "self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank"
MERGE = "merged = weight + lora.scaling * (lora.A @ lora.B).T"
IN_PLACE_NOW = "                child.linear.weight = nn.Parameter(merged, requires_grad=weight.requires_grad)\n"
IN_PLACE = "                with torch.no_grad():\n                    child.linear.weight.copy_(merged)\n"

# (the words the failure must say after "This looks like: ", file, [(old, new)], module, check)
CASES = [
    ("the scaling is missing", LORA, [(SCALING, SCALING.replace("alpha / rank", "1.0"))], MODULE, "test_lora_layer_matches_the_formula"),
    ("the update scaled by alpha, not alpha / rank", LORA, [(SCALING, SCALING.replace("alpha / rank", "alpha"))],
     MODULE, "test_lora_layer_matches_the_formula"),
    ("the scaling is missing", LORA, [(SCALING, SCALING.replace("alpha / rank", "1.0"))],
     MODULE, "test_linear_with_lora_adds_the_update_to_the_linear_layer"),
    ("B initialised randomly", LORA, [("self.B = nn.Parameter(torch.zeros(rank, out_dim))", "self.B = nn.Parameter(torch.randn(rank, out_dim))")],
     MODULE, "test_a_fresh_lora_model_computes_what_the_base_model_did"),
    ("B initialised randomly", LORA, [("self.B = nn.Parameter(torch.zeros(rank, out_dim))", "self.B = nn.Parameter(torch.randn(rank, out_dim))")],
     MODULE, "test_a_fresh_lora_layer_adds_nothing"),
    ("A initialised to zeros", LORA, [("nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))", "nn.init.zeros_(self.A)")],
     MODULE, "test_a_fresh_lora_layer_adds_nothing"),
    ("the base weights left trainable", LORA, [("        p.requires_grad_(False)\n", "        pass\n")],
     MODULE, "test_replace_freezes_everything_but_A_and_B_and_counts_them"),
    ("the base weights left trainable", LORA, [("        p.requires_grad_(False)\n", "        pass\n")], MODULE, "test_training_moves_only_A_and_B"),
    ("the head replaced although include_head=False", LORA, [("if child is not head or include_head:", "if True:")],
     MODULE, "test_replace_wraps_every_linear_layer_and_the_head_only_when_asked"),
    ("only the model's direct children replaced", LORA, [("                replace(child)\n", "                pass\n")],
     MODULE, "test_replace_wraps_every_linear_layer_and_the_head_only_when_asked"),
    ("every parameter counted, not only the trainable ones", LORA,
     [("return sum(p.numel() for p in model.parameters() if p.requires_grad)", "return sum(p.numel() for p in model.parameters())")],
     MODULE, "test_replace_freezes_everything_but_A_and_B_and_counts_them"),
    ("the merge without the scaling", LORA, [(MERGE, MERGE.replace("lora.scaling * ", ""))], MODULE, "test_merge_folds_the_update_into_the_weights"),
    ("the merge without the transpose", LORA, [(MERGE, MERGE.replace("(lora.A @ lora.B).T", "(lora.A @ lora.B)"))],
     MODULE, "test_merge_folds_the_update_into_the_weights"),
    ("the merge without the scaling", LORA, [(MERGE, MERGE.replace("lora.scaling * ", ""))], MODULE, "test_lora_and_merge_match_peft"),
    ("the merge added in place to a weight the embedding shares", LORA, [(IN_PLACE_NOW, IN_PLACE)],
     MODULE, "test_merging_a_head_tied_to_the_embedding_leaves_the_embedding_as_it_was"),
]

# Mistakes without a name, whose failure must still say what was expected: (words, file, edits, module, check)
PLAIN = [
    ("expected torch.float64 like the layer's weight", LORA,
     [("self.lora = lora.to(device=linear.weight.device, dtype=linear.weight.dtype)", "self.lora = lora")],
     MODULE, "test_a_lora_layer_takes_the_dtype_of_the_layer_it_wraps"),
    ("expected a ValueError", LORA, [("        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:\n            raise",
                                      "        if False:\n            raise")], MODULE, "test_a_rank_below_one_is_refused"),
    ("expected the plain nn.Linear back", LORA, [("                setattr(module, name, child.linear)\n", "                pass\n")],
     MODULE, "test_merge_folds_the_update_into_the_weights"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[f"{c[0]} ({c[4]})" for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("words, file, edits, module, check", PLAIN, ids=[c[0] for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, CASES + PLAIN)
