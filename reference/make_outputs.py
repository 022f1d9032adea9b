"""Writes the reference outputs in this directory from independent oracles.

Run it with ``nox -s reference`` (or ``python reference/make_outputs.py [OUT_DIR]``). Every file comes
from PyTorch's own implementations, never from ``solutions/``, on inputs drawn from fixed seeds;
running it twice writes byte-identical files.

01_attention.npz    torch.nn.functional.scaled_dot_product_attention: a causal case, a boolean
                    mask, and a mask with a fully masked query row (whose output is zeros).
02_layernorm.npz    torch.nn.functional.layer_norm and torch.nn.functional.gelu(approximate="tanh"),
                    in float32 and bfloat16.
11_gpt2_tiny.safetensors  a GPT-2 checkpoint in Hugging Face's layout (GPT2LMHeadModel.state_dict()
                    without the tied lm_head.weight): transformers' GPT2LMHeadModel in a tiny
                    configuration (2 layers, 4 heads, 32 features, vocabulary 96, context 32)
                    with weights drawn from a fixed seed. Needs transformers and safetensors.
11_gpt2_tiny.npz    that model's configuration, its logits for fixed token ids, its greedy
                    continuation of two prompts (transformers' generate), and the parameter
                    counts of transformers' GPT-2 small (124M) with and without weight tying.
15_training_run.npz a known answer for the training track: that same tiny GPT2LMHeadModel,
                    trained for a few steps by a plain PyTorch loop written here (AdamW, a linear
                    warmup then cosine learning rate through LambdaLR, gradient accumulation over
                    micro-batches, clip_grad_norm_), on fixed token ids: the learning rate, loss
                    and gradient norm of every step and the logits after the last. Needs
                    transformers.
21_llama3_rope.npz  Llama 3.1's RoPE frequency scaling as transformers computes it
                    (ROPE_INIT_FUNCTIONS["llama3"]) for three scalings, three head sizes and bases.
                    Needs transformers.
23_modern_presets.npz  the parameter counts of transformers' LlamaForCausalLM and Qwen3ForCausalLM
                    built on the meta device in the published configurations of Llama 3.2 1B and
                    Qwen3 0.6B (their config.json's sizes, written below). Needs transformers.
24_llama_tiny.safetensors, 24_qwen3_tiny.safetensors  checkpoints in Hugging Face's layout
                    (LlamaForCausalLM.state_dict(), Qwen3ForCausalLM.state_dict() without a tied
                    lm_head.weight): tiny configurations (2 layers, grouped-query heads, Qwen3's
                    QK-norm and head_dim apart from hidden_size / heads; Llama's head untied and
                    its RoPE scaled as Llama 3.1's, Qwen3's head tied) with weights drawn from fixed seeds. Needs transformers.
24_hf_tiny.npz      those models' configurations (in ModernConfig's field names), their logits for
                    fixed token ids and their greedy continuations of two prompts (generate).
26_moe.npz          transformers' Qwen3MoeSparseMoeBlock (6 experts, 2 per token) with weights drawn
                    from a fixed seed, both with and without renormalised top-k weights: its
                    inputs, weights (the experts' fused gate_up_proj and down_proj), outputs and
                    router logits, and load_balancing_loss_func on those logits. Needs transformers.
33_lora.npz         Hugging Face peft's LoRA (get_peft_model, LoraConfig) on a small network of
                    nn.Linear layers (two residual blocks, a LayerNorm and an output head, written
                    below) with base weights and nonzero lora_A / lora_B drawn from a fixed seed,
                    once on the blocks' layers only and once with the head too: the inputs, the
                    base weights, the LoRA weights (peft's layout: lora_A (rank, in), lora_B (out,
                    rank)), peft's outputs, its merged (merge_and_unload) outputs and weights, and
                    its count of trainable parameters. Needs peft (and transformers).
38_grpo.npz         Hugging Face trl's GRPO loss (GRPOTrainer._compute_loss, trl 1.16.0) on fixed
                    per-token log-probabilities (policy, old policy, reference), advantages and
                    completion masks (a prefix of each row, one row empty), for each loss type
                    ("grpo", "bnpo", "dr_grpo") and once without the KL term (beta 0): the loss,
                    its gradient with respect to the policy's log-probabilities, and the "kl" and
                    "clip_ratio/region_mean" that trl logs. The loss is a method of the trainer, not
                    a free function: it is called unbound on a stand-in (_TrlStandIn below) that
                    holds the attributes the method reads, a model in eval mode (so no division
                    for gradient accumulation) and an accelerator of one process, with
                    _get_per_token_logps_and_entropies returning the given log-probabilities
                    instead of running a model. Also trl's unbiased standard deviation
                    (trl.trainer.utils.nanstd) of each group of fixed rewards, and the advantages
                    GRPOTrainer computes from it, (r - mean) / (std + 1e-4). Needs trl (and
                    transformers).
"""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness.reference import write_npz  # noqa: E402


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()


def attention() -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(1)
    out: dict[str, np.ndarray] = {}

    def case(name, q, k, v, mask=None, causal=False):
        res = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        arrays = {"q": q, "k": k, "v": v, "out": res, "is_causal": torch.tensor(causal)}
        if mask is not None:
            arrays["attn_mask"] = mask
        out.update({f"{name}/{key}": _np(t) for key, t in arrays.items()})

    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    case("causal", q, k, v, causal=True)
    q, k, v = torch.randn(2, 4, 6, generator=g), torch.randn(2, 7, 6, generator=g), torch.randn(2, 7, 5, generator=g)
    case("bool_mask", q, k, v, mask=torch.rand(4, 7, generator=g) > 0.4)
    mask = torch.rand(6, 6, generator=g) > 0.3
    mask[2] = False  # query 2 may attend to nothing: PyTorch (>= 2.5) returns zeros there
    q, k, v = (torch.randn(1, 2, 6, 4, generator=g) for _ in range(3))
    case("fully_masked", q, k, v, mask=mask)
    return out


def layernorm() -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(2)
    out: dict[str, np.ndarray] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        x = (torch.randn(3, 4, 16, generator=g) * 2 + 0.5).to(dtype)
        w = (torch.randn(16, generator=g) * 0.5 + 1).to(dtype)
        b = (torch.randn(16, generator=g) * 0.1).to(dtype)
        y = F.layer_norm(x, (16,), w, b, eps=1e-5)
        z = torch.linspace(-8, 8, 97).to(dtype)
        out.update({f"{name}/x": _np(x), f"{name}/scale": _np(w), f"{name}/shift": _np(b), f"{name}/layer_norm": _np(y),
                    f"{name}/gelu_x": _np(z), f"{name}/gelu": _np(F.gelu(z, approximate="tanh"))})
    return out


GPT2_TINY = {"vocab_size": 96, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4}


@functools.lru_cache(maxsize=None)
def _gpt2_tiny():
    """transformers' GPT2LMHeadModel in GPT2_TINY's configuration, eval mode, eager attention. Its
    weights are drawn from a fixed seed here, not by transformers' initialisation (which may
    change between versions): layer norms near 1 and 0, the rest normal, large enough that the
    logits are far from ties."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(**GPT2_TINY, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():  # lm_head.weight is wte's: listed once
            noise = torch.randn(p.shape, generator=g)
            if ".ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif name.endswith("mlp.c_proj.weight"):
                p.copy_(0.15 * noise)
            else:
                p.copy_((0.5 if name.endswith(("wte.weight", "wpe.weight")) else 0.3) * noise)
    return model


def gpt2_checkpoint() -> bytes:
    from safetensors.torch import save

    model = _gpt2_tiny()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return save(state, metadata={"format": "pt"})


def gpt2_outputs() -> dict[str, np.ndarray]:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = _gpt2_tiny()
    g = torch.Generator().manual_seed(12)
    ids = torch.randint(0, GPT2_TINY["vocab_size"], (3, 20), generator=g)
    prompt = torch.randint(0, GPT2_TINY["vocab_size"], (2, 5), generator=g)
    with torch.no_grad():
        logits = model(ids).logits
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
        steps = model(greedy).logits[:, prompt.size(1) - 1 : -1].topk(2, dim=-1).values
    margin = float((steps[..., 0] - steps[..., 1]).min())
    assert margin > 1e-3, f"a greedy step is a near tie (margin {margin}): pick another seed"
    with torch.device("meta"):  # the parameter counts of GPT-2 small, without allocating it
        counts = {tie: sum(p.numel() for p in GPT2LMHeadModel(GPT2Config(tie_word_embeddings=tie)).parameters())
                  for tie in (True, False)}
    out = {"ids": ids, "logits": logits, "prompt": prompt, "greedy": greedy,
           "params_124M_tied": torch.tensor(counts[True]), "params_124M_untied": torch.tensor(counts[False])}
    out.update({f"config/{k}": torch.tensor(v) for k, v in GPT2_TINY.items()})
    return {k: _np(v) for k, v in out.items()}


# The known training run: every setting the test needs to repeat it travels in the file.
TRAINING_RUN = {"steps": 8, "micro_batches": 2, "batch": 2, "seq_len": 16, "max_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 3,
                "total_steps": 6, "weight_decay": 0.1, "max_norm": 0.5}


def training_run() -> dict[str, np.ndarray]:
    """A plain PyTorch training loop on transformers' tiny GPT-2: no code of this repository's
    trees. The schedule is written here from its definition (warmup to max_lr over warmup_steps,
    cosine to min_lr at total_steps, min_lr after) and applied through LambdaLR."""
    import math

    run = TRAINING_RUN
    model = copy.deepcopy(_gpt2_tiny()).train()  # a copy: _gpt2_tiny is cached; dropout is 0
    g = torch.Generator().manual_seed(15)
    n = run["steps"] * run["micro_batches"] * run["batch"]
    data = torch.randint(0, GPT2_TINY["vocab_size"], (n, run["seq_len"] + 1), generator=g)
    # a learnable pattern in half the rows (each token the previous one plus 1), so the loss falls
    data[::2] = (data[::2, :1] + torch.arange(run["seq_len"] + 1)) % GPT2_TINY["vocab_size"]
    probe = torch.randint(0, GPT2_TINY["vocab_size"], (2, 12), generator=g)

    def factor(step):
        if step < run["warmup_steps"]:
            lr = run["max_lr"] * (step + 1) / run["warmup_steps"]
        elif step > run["total_steps"]:
            lr = run["min_lr"]
        else:
            r = (step - run["warmup_steps"]) / (run["total_steps"] - run["warmup_steps"])
            lr = run["min_lr"] + 0.5 * (1 + math.cos(math.pi * r)) * (run["max_lr"] - run["min_lr"])
        return lr / run["max_lr"]

    opt = torch.optim.AdamW(model.parameters(), lr=run["max_lr"], weight_decay=run["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    lrs, losses, norms = [], [], []
    rows = iter(data.split(run["batch"]))
    for _ in range(run["steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        total = 0.0
        for _ in range(run["micro_batches"]):
            rows_ = next(rows)
            logits = model(rows_[:, :-1]).logits
            loss = F.cross_entropy(logits.flatten(0, 1), rows_[:, 1:].flatten()) / run["micro_batches"]
            loss.backward()
            total += float(loss.detach())
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), run["max_norm"])))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
    assert losses[-1] < losses[0], f"the known run should learn something: losses {losses}"
    with torch.no_grad():
        logits = model.eval()(probe).logits
    out = {"data": data, "probe": probe, "lr": torch.tensor(lrs, dtype=torch.float64), "loss": torch.tensor(losses, dtype=torch.float64),
           "grad_norm": torch.tensor(norms, dtype=torch.float64), "logits_after": logits}
    out.update({f"run/{k}": torch.tensor(v) for k, v in run.items()})
    return {k: _np(v) for k, v in out.items()}


# Llama 3.1's RoPE frequency scaling as transformers computes it, for exercise 21: Llama 3.1/3.2's
# own numbers and two others, each over a few head sizes and bases.
LLAMA3_CASES = [
    {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    {"factor": 4.0, "low_freq_factor": 0.5, "high_freq_factor": 2.0, "original_max_position_embeddings": 64},
]


def llama3_rope() -> dict[str, np.ndarray]:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    out = {}
    for i, scaling in enumerate(LLAMA3_CASES):
        for head_dim, theta in ((64, 500000.0), (128, 10000.0), (16, 1000000.0)):
            cfg = LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim, max_position_embeddings=131072,
                              rope_parameters={"rope_type": "llama3", "rope_theta": theta, **scaling})
            inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
            assert attention_factor == 1.0, "llama3 scaling leaves the cosines and sines unscaled"
            key = f"case{i}/d{head_dim}"
            out.update({f"{key}/inv_freq": inv_freq, f"{key}/theta": torch.tensor(theta, dtype=torch.float64)})
        out.update({f"case{i}/{k}": torch.tensor(v, dtype=torch.float64) for k, v in scaling.items()})
    return {k: _np(v) for k, v in out.items()}


# The published sizes (each model's config.json on the Hugging Face hub) of the presets that
# exercise 23 counts; the keys are transformers' config names.
PRESET_CONFIGS = {
    "llama3.2-1b": ("llama", {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}),
    "qwen3-0.6b": ("qwen3", {"vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": True}),
}


def _hf_classes(kind: str):
    import transformers

    name = {"llama": "Llama", "qwen3": "Qwen3"}[kind]
    return getattr(transformers, f"{name}Config"), getattr(transformers, f"{name}ForCausalLM")


def modern_presets() -> dict[str, np.ndarray]:
    out = {}
    for preset, (kind, sizes) in PRESET_CONFIGS.items():
        config_cls, model_cls = _hf_classes(kind)
        with torch.device("meta"):  # counted without allocating a billion numbers
            model = model_cls(config_cls(**sizes))
        out[f"params/{preset}"] = torch.tensor(sum(p.numel() for p in model.parameters()))
        emb = model.get_input_embeddings().weight.numel()
        out[f"params_without_embedding/{preset}"] = torch.tensor(out[f"params/{preset}"].item() - emb)
    return {k: _np(v) for k, v in out.items()}


# Tiny checkpoints of both architectures, in transformers' config names. Llama: grouped heads (4
# query, 2 kv), an untied head, Llama 3.1's RoPE scaling (LLAMA3_SCALING, over a training context
# of 16 positions so that it shows within 20 tokens). Qwen3: one kv head for four query heads (multi-query
# attention), QK-norm, heads of 16 features although 4 x 16 != 32, a tied head, theta 1e6.
LLAMA3_SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
HF_TINY = {
    "llama": {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 72, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64, "rope_theta": 10000.0,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "qwen3": {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 64, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
}


@functools.lru_cache(maxsize=None)
def _hf_tiny(kind: str):
    """transformers' model of HF_TINY[kind], eval mode, eager attention, its weights drawn from a
    fixed seed here (not transformers' initialisation): norms near 1, the rest normal."""
    config_cls, model_cls = _hf_classes(kind)
    sizes = dict(HF_TINY[kind])
    theta = sizes.pop("rope_theta")
    rope = {"rope_type": "llama3", "rope_theta": theta, **LLAMA3_SCALING} if kind == "llama" else {"rope_type": "default", "rope_theta": theta}
    cfg = config_cls(**sizes, rope_parameters=rope, attention_dropout=0.0,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None, attn_implementation="eager")
    model = model_cls(cfg).eval()
    g = torch.Generator().manual_seed({"llama": 23, "qwen3": 24}[kind])
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head.weight is embed_tokens': listed once
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[1] ** 0.5)
    return model


def _hf_checkpoint(kind: str) -> bytes:
    from safetensors.torch import save

    model = _hf_tiny(kind)
    tied = model.config.tie_word_embeddings
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    return save(state, metadata={"format": "pt"})


def hf_outputs() -> dict[str, np.ndarray]:
    out = {}
    g = torch.Generator().manual_seed(24)
    for kind, sizes in HF_TINY.items():
        model = _hf_tiny(kind)
        ids = torch.randint(0, sizes["vocab_size"], (3, 20), generator=g)
        prompt = torch.randint(0, sizes["vocab_size"], (2, 5), generator=g)
        with torch.no_grad():
            logits = model(ids).logits
            greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
            steps = model(greedy).logits[:, prompt.size(1) - 1 : -1].topk(2, dim=-1).values
        margin = float((steps[..., 0] - steps[..., 1]).min())
        assert margin > 1e-3, f"{kind}: a greedy step is a near tie (margin {margin}): pick another seed"
        out.update({f"{kind}/ids": ids, f"{kind}/logits": logits, f"{kind}/prompt": prompt, f"{kind}/greedy": greedy})
        # the configuration in ModernConfig's names (bools as 0/1)
        cfg = {"vocab_size": sizes["vocab_size"], "context_length": sizes["max_position_embeddings"], "emb_dim": sizes["hidden_size"],
               "n_heads": sizes["num_attention_heads"], "n_kv_heads": sizes["num_key_value_heads"], "n_layers": sizes["num_hidden_layers"],
               "hidden_dim": sizes["intermediate_size"], "head_dim": sizes["head_dim"], "qk_norm": int(kind == "qwen3"),
               "theta": sizes["rope_theta"], "eps": sizes["rms_norm_eps"], "tie_weights": int(sizes["tie_word_embeddings"])}
        if kind == "llama":
            cfg.update({f"rope_scaling/{k}": v for k, v in LLAMA3_SCALING.items()})
        out.update({f"{kind}/config/{k}": torch.tensor(v, dtype=torch.float64 if isinstance(v, float) else torch.int64)
                    for k, v in cfg.items()})
    return {k: _np(v) for k, v in out.items()}


MOE = {"hidden_size": 16, "moe_intermediate_size": 12, "num_experts": 6, "num_experts_per_tok": 2}


def moe_outputs() -> dict[str, np.ndarray]:
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe import modeling_qwen3_moe

    out = {}
    g = torch.Generator().manual_seed(26)
    for norm in (True, False):
        cfg = Qwen3MoeConfig(**MOE, norm_topk_prob=norm)
        cfg._experts_implementation = "eager"  # the plain loop over the chosen experts
        block = modeling_qwen3_moe.Qwen3MoeSparseMoeBlock(cfg).eval()
        with torch.no_grad():
            for p in block.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            x = torch.randn(3, 9, MOE["hidden_size"], generator=g)
            y = block(x)
            logits = block.gate(x.reshape(-1, MOE["hidden_size"]))[0]
            aux = modeling_qwen3_moe.load_balancing_loss_func((logits,), MOE["num_experts"], MOE["num_experts_per_tok"])
        key = "norm" if norm else "raw"
        out.update({f"{key}/x": x, f"{key}/router": block.gate.weight, f"{key}/gate_up_proj": block.experts.gate_up_proj,
                    f"{key}/down_proj": block.experts.down_proj, f"{key}/out": y, f"{key}/router_logits": logits,
                    f"{key}/aux_loss": aux})
    out.update({f"config/{k}": torch.tensor(v) for k, v in MOE.items()})
    return {k: _np(v) for k, v in out.items()}


LORA = {"d_in": 12, "d_hidden": 20, "d_out": 7, "n_blocks": 2}
LORA_CASES = {"blocks": {"rank": 4, "alpha": 6.0, "head": False}, "head": {"rank": 3, "alpha": 12.0, "head": True}}


class LoRANet(torch.nn.Module):
    """The network exercise 33's checks adapt (harness/parts/lora_run.py builds the same one):
    blocks.{i}.0 and blocks.{i}.2 are Linear layers, out_head the head."""

    def __init__(self, d_in, d_hidden, d_out, n_blocks):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(d_in, d_hidden), torch.nn.GELU(), torch.nn.Linear(d_hidden, d_in)) for _ in range(n_blocks))
        self.norm = torch.nn.LayerNorm(d_in)
        self.out_head = torch.nn.Linear(d_in, d_out, bias=False)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.out_head(self.norm(x))


def lora_outputs() -> dict[str, np.ndarray]:
    from peft import LoraConfig, get_peft_model

    out = {}
    g = torch.Generator().manual_seed(33)
    for case, c in LORA_CASES.items():
        base = LoRANet(**LORA)
        with torch.no_grad():
            for name, p in base.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.2 if name.endswith("bias") else p.shape[-1] ** -0.5))
        out.update({f"{case}/base/{name}": p.detach().clone() for name, p in base.named_parameters()})
        targets = r"blocks\.\d+\.[02]" + (r"|out_head" if c["head"] else "")  # a full match of each module's name
        config = LoraConfig(r=c["rank"], lora_alpha=c["alpha"], target_modules=targets, lora_dropout=0.0, bias="none")
        model = get_peft_model(base, config).eval()
        x = torch.randn(3, 5, LORA["d_in"], generator=g)
        with torch.no_grad():
            for name, module in model.base_model.model.named_modules():
                if hasattr(module, "lora_A"):
                    a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                    a.copy_(torch.randn(a.shape, generator=g) * a.shape[1] ** -0.5)  # peft leaves lora_B at zero: draw both
                    b.copy_(torch.randn(b.shape, generator=g) * 0.5)
                    out.update({f"{case}/lora/{name}/lora_A": a.clone(), f"{case}/lora/{name}/lora_B": b.clone()})
            out[f"{case}/trainable"] = torch.tensor(model.get_nb_trainable_parameters()[0])
            out[f"{case}/x"], out[f"{case}/out"] = x, model(x)
            merged = model.merge_and_unload()
            out[f"{case}/merged_out"] = merged(x)
            out.update({f"{case}/merged/{name}": p.detach().clone() for name, p in merged.named_parameters()})
        out.update({f"{case}/config/{k}": torch.tensor(c[k]) for k in ("rank", "alpha", "head")})
    out.update({f"config/{k}": torch.tensor(v) for k, v in LORA.items()})
    return {k: _np(v) for k, v in out.items()}


GRPO_CASES = {  # name: (loss_type, clip_eps, beta, max_completion_length beyond the width)
    "grpo": ("grpo", 0.2, 0.04, 0), "bnpo": ("bnpo", 0.28, 0.1, 0), "dr_grpo": ("dr_grpo", 0.2, 0.04, 3),
    "no_kl": ("grpo", 0.2, 0.0, 0)}


class _TrlStandIn:
    """What GRPOTrainer._compute_loss reads of its trainer, for the plain token-level clipped loss
    (no entropy mask or bonus, no off-policy mask, no vLLM correction, no auxiliary loss): called
    unbound on this object, the method runs trl's own lines on the tensors given, and
    ``_get_per_token_logps_and_entropies`` hands it the policy's log-probabilities in place of a
    model's forward."""

    def __init__(self, logps, loss_type, clip_eps, beta, max_completion_length):
        from collections import defaultdict
        from types import SimpleNamespace

        self.logps, self.loss_type, self.beta, self.max_completion_length = logps, loss_type, beta, max_completion_length
        self.epsilon_low = self.epsilon_high = clip_eps
        self.top_entropy_quantile, self.off_policy_mask_threshold, self.importance_sampling_level = 1.0, None, "token"
        self.use_vllm = self.vllm_importance_sampling_correction = False
        self._entropy_bonus_enabled = self.aux_loss_enabled = False
        self.args = SimpleNamespace(delta=None, use_bias_correction_kl=False)
        self.model = SimpleNamespace(training=False)  # eval mode: the loss is not divided for gradient accumulation
        self.current_gradient_accumulation_steps = 1
        self.accelerator = SimpleNamespace(num_processes=1, reduce=lambda t, reduction: t, gather=lambda t: t,
                                           gather_for_metrics=lambda t: t)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        return self.logps, torch.zeros_like(self.logps), None


def grpo_outputs() -> dict[str, np.ndarray]:
    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    out = {}
    g = torch.Generator().manual_seed(38)
    groups, size = 4, 3
    for case, (loss_type, clip_eps, beta, extra) in GRPO_CASES.items():
        n, width = groups * size, 7
        logps = -torch.rand(n, width, generator=g, dtype=torch.float64) * 4 - 0.05
        old = logps + 0.3 * torch.randn(n, width, generator=g, dtype=torch.float64)  # ratios around 1, some clipped
        ref = logps + 0.5 * torch.randn(n, width, generator=g, dtype=torch.float64)
        advantages = torch.randn(n, generator=g, dtype=torch.float64)
        lengths = torch.randint(1, width + 1, (n,), generator=g)
        lengths[int(torch.randint(0, n, (), generator=g))] = 0  # a completion with no counted token
        mask = (torch.arange(width) < lengths[:, None]).long()
        leaf = logps.clone().requires_grad_(True)
        trainer = _TrlStandIn(leaf, loss_type, clip_eps, beta, width + extra)
        inputs = {"prompt_ids": torch.zeros(n, 2, dtype=torch.long), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
                  "completion_ids": torch.zeros(n, width, dtype=torch.long), "completion_mask": mask,
                  "advantages": advantages, "old_per_token_logps": old}
        if beta != 0:
            inputs["ref_per_token_logps"] = ref
        loss = GRPOTrainer._compute_loss(trainer, None, inputs)
        loss.backward()
        metrics = trainer._metrics["eval"]
        scalars = {"loss": loss.detach(), "clip_fraction": metrics["clip_ratio/region_mean"][-1], "clip_eps": clip_eps, "beta": beta}
        out.update({f"{case}/{k}": torch.as_tensor(v, dtype=torch.float64) for k, v in scalars.items()})
        out.update({f"{case}/logprobs": logps, f"{case}/old_logprobs": old, f"{case}/ref_logprobs": ref,
                    f"{case}/advantages": advantages, f"{case}/mask": mask.bool(), f"{case}/grad": leaf.grad,
                    f"{case}/max_completion_length": torch.tensor(width + extra),
                    f"{case}/loss_type": torch.tensor(list(loss_type.encode()))})  # the name's bytes
        if beta != 0:
            out[f"{case}/kl"] = torch.tensor(metrics["kl"][-1], dtype=torch.float64)
    rewards = torch.randint(0, 3, (groups * size,), generator=g).double() / 2  # ties; then one group all equal
    rewards[:size] = 0.5
    std = nanstd(rewards.view(-1, size), dim=1).repeat_interleave(size)
    mean = rewards.view(-1, size).mean(dim=1).repeat_interleave(size)
    out.update({"advantages/rewards": rewards, "advantages/group_size": torch.tensor(size), "advantages/std": std,
                "advantages/advantages": (rewards - mean) / (std + 1e-4)})  # as GRPOTrainer writes them
    return {k: _np(v) for k, v in out.items()}


GENERATORS = {"01_attention": attention, "02_layernorm": layernorm,
              "11_gpt2_tiny.safetensors": gpt2_checkpoint, "11_gpt2_tiny": gpt2_outputs, "15_training_run": training_run,
              "21_llama3_rope": llama3_rope, "23_modern_presets": modern_presets, "24_llama_tiny.safetensors": lambda: _hf_checkpoint("llama"),
              "24_qwen3_tiny.safetensors": lambda: _hf_checkpoint("qwen3"), "24_hf_tiny": hf_outputs, "26_moe": moe_outputs,
              "33_lora": lora_outputs, "38_grpo": grpo_outputs}


# These need transformers (and safetensors): the regeneration session installs them; the test
# suite regenerates only the others unless they are installed.
NEEDS_TRANSFORMERS = {"11_gpt2_tiny.safetensors", "11_gpt2_tiny", "15_training_run", "21_llama3_rope", "23_modern_presets",
                      "24_llama_tiny.safetensors", "24_qwen3_tiny.safetensors", "24_hf_tiny", "26_moe",
                      "33_lora", "38_grpo"}
# These need peft too: the regeneration session installs it (noxfile.py); only there are they regenerated.
NEEDS_PEFT = {"33_lora"}
# These need trl too: the same.
NEEDS_TRL = {"38_grpo"}


def main(out_dir: Path = HERE, only: set[str] | None = None) -> None:
    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in GENERATORS.items():
        if only is not None and name not in only:
            continue
        if name.endswith(".safetensors"):  # a file in its own format: the generator returns its bytes
            (out_dir / name).write_bytes(make())
            print(f"wrote {out_dir / name}")
            continue
        write_npz(out_dir / f"{name}.npz", make())
        print(f"wrote {out_dir / (name + '.npz')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
