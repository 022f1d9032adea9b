"""The given parts of solutions/dpo.py, which no graded check covers: ``PreferenceDataset`` writes
each entry's prompt and answers with exercise 31's template and encodes them as
``InstructionDataset`` does, and ``collate_preferences`` pads the chosen and the rejected halves
with exercise 31's ``collate`` into the batch ``dpo_batch_loss`` takes."""

import functools
import re

import torch
from torch.utils.data import DataLoader

from solutions.config import GPTConfig
from solutions.dpo import PreferenceDataset, collate_preferences, dpo_batch_loss
from solutions.instruct import InstructionDataset, collate
from solutions.model import GPTModel


class WordTokenizer:
    """Words, runs of whitespace and other characters, each one id below 200, and every text it was given."""

    def __init__(self):
        self.texts = []

    def encode(self, text):
        self.texts.append(text)
        return [sum(piece.encode()) % 200 for piece in re.findall(r"\w+|\s+|[^\w\s]", text)]


DATA = [
    {"instruction": "Name a colour.", "chosen": "Blue.", "rejected": "I cannot answer that question, sorry."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "chosen": "2 + 3 = 5.", "rejected": "6"},
    {"instruction": "Say hello.", "input": "", "chosen": "Hello!", "rejected": "Goodbye, and good night to you all."},
]


def test_preference_dataset_encodes_like_the_instruction_dataset():
    tok = WordTokenizer()
    dataset = PreferenceDataset(DATA, tok)
    assert len(dataset) == len(DATA)
    assert len(tok.texts) == 3 * len(DATA), "one prompt and two answers per entry, encoded once, in __init__"
    for k, entry in enumerate(DATA):
        chosen, rejected = dataset[k]
        for pair, key in ((chosen, "chosen"), (rejected, "rejected")):
            as_instruction = {**entry, "output": entry[key]}
            assert tuple(pair) == tuple(InstructionDataset([as_instruction], WordTokenizer())[0])
        assert chosen[1] == rejected[1] and chosen[0][: chosen[1]] == rejected[0][: rejected[1]], "the same prompt before both answers"
    assert len(tok.texts) == 3 * len(DATA), "reading items encodes nothing"


def test_collate_preferences_pads_each_half_with_exercise_31s_collate():
    dataset = PreferenceDataset(DATA, WordTokenizer())
    items = [dataset[k] for k in range(len(dataset))]
    batch = collate_preferences(items, pad_token_id=7, ignore_index=-5, allowed_max_length=90)
    assert sorted(batch) == ["chosen_inputs", "chosen_targets", "rejected_inputs", "rejected_targets"]
    for side, name in enumerate(("chosen", "rejected")):
        inputs, targets = collate([item[side] for item in items], pad_token_id=7, ignore_index=-5, allowed_max_length=90, mask_prompt=True)
        assert torch.equal(batch[name + "_inputs"], inputs) and torch.equal(batch[name + "_targets"], targets)
        assert batch[name + "_inputs"].dtype == torch.long
    assert batch["chosen_inputs"].shape[1] != batch["rejected_inputs"].shape[1], "the halves are padded apart"


def test_a_dataloader_feeds_dpo_batch_loss():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=200, context_length=128, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.1)
    policy, reference = GPTModel(cfg), GPTModel(cfg)
    reference.load_state_dict(policy.state_dict())
    policy.eval()  # no dropout: the policy equals the reference, so every reward is 0
    pad_with_0 = functools.partial(collate_preferences, pad_token_id=0)
    loader = DataLoader(PreferenceDataset(DATA, WordTokenizer()), batch_size=2, collate_fn=pad_with_0)
    for batch in loader:
        loss, chosen, rejected = dpo_batch_loss(policy, reference.train(), batch, beta=0.2)
        assert torch.allclose(loss, torch.tensor(0.6931472), atol=1e-6)
        assert torch.equal(chosen, torch.zeros_like(chosen)) and torch.equal(rejected, torch.zeros_like(rejected))
        assert not reference.training
