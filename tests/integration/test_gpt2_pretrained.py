"""Opt-in: OpenAI's GPT-2 small through the tree's model and loader, against transformers.

Runs only where the weights are already in the Hugging Face cache (`nox -s gpt2` downloads
them) and transformers is installed (`nox -s tests` installs it); skipped otherwise, saying why.
About 8 seconds on a 2-core machine (measured with a stand-in checkpoint of GPT-2 small's shapes).
"""

import pytest
import torch

from harness.compare import assert_close
from harness.failures import NotStarted
from harness.impl import Impl
from harness.manifest import Exercise

REPO = "openai-community/gpt2"
CHAIN = Exercise(id="gpt2", slug="gpt2_pretrained", title="GPT-2 small against transformers (ungraded)", module="pretrained", functions=(), points=0)
IDS = [[15496, 11, 616, 1438, 318, 1757, 290, 314, 588, 284]]  # "Hello, my name is John and I like to"


def cached_weights() -> str:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        pytest.skip("huggingface_hub is not installed (nox -s gpt2 and nox -s tests install it)")
    pytest.importorskip("transformers", reason="the comparison needs transformers (nox -s gpt2 and nox -s bench install it)")
    pytest.importorskip("safetensors", reason="reading the weights needs safetensors (nox -s gpt2 installs it)")
    path = try_to_load_from_cache(REPO, "model.safetensors")
    if not isinstance(path, str):
        pytest.skip(f"GPT-2's weights are not in the Hugging Face cache: run `nox -s gpt2` once, with a network connection, to download {REPO}")
    return path


def test_gpt2_small_logits_match_transformers(kata):
    path = cached_weights()
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = torch.tensor(IDS)
    hf = GPT2LMHeadModel(GPT2Config(attn_implementation="eager")).eval()
    state = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
    missing, _ = hf.transformer.load_state_dict(state, strict=False)
    assert not missing, f"transformers' GPT-2 lacks {missing[:3]} in {path}"
    with torch.no_grad():
        expected = hf(ids).logits
    impl = Impl(kata.get_backend(), CHAIN, kata.lost, timeout=300)
    try:
        got = impl.call("pretrained.load", path, then=[("__call__", (ids,), {})]).then[0]
    except NotStarted as e:
        pytest.skip(f"the chain is not finished: {e.message}")
    assert_close(got, expected, "GPT-2 small's logits through your model and loader", oracle="transformers' GPT2LMHeadModel",
                 atol=1e-3, rtol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1)), "the most likely next tokens differ from transformers'"
