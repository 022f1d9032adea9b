"""The given parts of solutions/fast.py, which no graded check covers: ``generate_fast`` (greedy
decoding with a preallocated cache, what the benchmark times) gives exercise 12's tokens, and the
state-dict padding round-trips between GPTModel and FastGPT."""

import torch

from solutions.config import GPTConfig
from solutions.fast import FastGPT, generate_fast, pad_state_dict, unpad_state_dict
from solutions.kv_cache import generate_cached
from solutions.model import GPTModel


def test_generate_fast_equals_the_kv_cache_of_exercise_12():
    for tie in (True, False):
        torch.manual_seed(int(tie))
        cfg = GPTConfig(vocab_size=203, context_length=40, emb_dim=24, n_heads=3, n_layers=2, drop_rate=0.0, tie_weights=tie)
        slow = GPTModel(cfg).eval()
        with torch.no_grad():
            for p in slow.parameters():
                p.add_(torch.randn_like(p) * 0.3)  # away from the initialisation, so the greedy choices differ by token
        fast = FastGPT(cfg).eval()
        fast.load_state_dict(pad_state_dict(slow.state_dict(), cfg.vocab_size))
        prompt = torch.randint(0, cfg.vocab_size, (3, 5))
        want = generate_cached(slow, prompt, 30)
        got = generate_fast(fast, prompt, 30)
        assert torch.equal(got, want), (got, want)
        assert int(got.max()) < cfg.vocab_size
        back = GPTModel(cfg)
        back.load_state_dict(unpad_state_dict(fast.state_dict(), cfg.vocab_size))
        assert torch.allclose(back.eval()(prompt), slow(prompt))
