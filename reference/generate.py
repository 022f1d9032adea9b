"""Writes the reference outputs in this directory from independent oracles.

Run it with ``nox -s reference`` (or ``python reference/generate.py [OUT_DIR]``). Every file comes
from PyTorch's own implementations, never from ``solutions/``, on inputs drawn from fixed seeds;
running it twice writes byte-identical files.

01_attention.npz    torch.nn.functional.scaled_dot_product_attention: a causal case, a boolean
                    mask, and a mask with a fully masked query row (whose output is zeros).
02_layernorm.npz    torch.nn.functional.layer_norm and torch.nn.functional.gelu(approximate="tanh"),
                    in float32 and bfloat16.
"""

from __future__ import annotations

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


GENERATORS = {"01_attention": attention, "02_layernorm": layernorm}


def main(out_dir: Path = HERE) -> None:
    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, make in GENERATORS.items():
        write_npz(out_dir / f"{name}.npz", make())
        print(f"wrote {out_dir / (name + '.npz')}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
