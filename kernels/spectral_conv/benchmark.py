"""Spectral-convolution benchmark: rfft reference vs truncated-DFT matmul (vs Triton on CUDA), and the path the
dispatcher picks (``auto``).

Shapes (FNO-2D and SFNO as trained in docs/models.md §6-7):
- FNO-2D: B=32, width 32 and 64, 64x64 grid, modes 12 and 16 (per side on the first axis, half axis on the last).
- SFNO: B=4, width 20, 64x64x20 (x, y, t), modes (12, 12, 5), as in the published FNO-data configuration.

``tflops`` counts only the mode-mixing GEMM, ``8 * B * C_in * C_out * K`` real FLOPs per forward (K = kept modes,
a complex multiply-add being 8 real FLOPs) and three times that for forward+backward, so it is comparable across
implementations but understates the work of the transforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from stpred.kernels._bench import median_ms
from stpred.kernels._dispatch import has_triton
from stpred.kernels.spectral_conv import select_impl, spectral_conv2d, spectral_conv3d
from stpred.kernels.spectral_conv.matmul import spectral_conv2d_matmul, spectral_conv3d_matmul
from stpred.kernels.spectral_conv.reference import spectral_conv2d_reference, spectral_conv3d_reference

__all__ = ["run", "cases"]


def cases(quick: bool = False) -> list[dict]:
    """Benchmark cases as ``{op, B, C, grid, modes}``; ``quick`` shrinks the batch (and only the batch)."""
    b2, b3 = (4, 2) if quick else (32, 4)
    out = [
        {"op": "spectral_conv2d", "B": b2, "C": c, "grid": (64, 64), "modes": (m, m)}
        for c in (32, 64)
        for m in (12, 16)
    ]
    out.append({"op": "spectral_conv3d", "B": b3, "C": 20, "grid": (64, 64, 20), "modes": (12, 12, 5)})
    return out


def _impls(op: str, x: torch.Tensor, w: torch.Tensor, device: torch.device) -> dict[str, Callable[..., torch.Tensor]]:
    """The implementations to time, by row name; ``auto (<path>)`` is what the layers run (the dispatcher's
    choice for this shape and device)."""
    two_d = op == "spectral_conv2d"
    public = spectral_conv2d if two_d else spectral_conv3d
    impls = {
        "rfft": spectral_conv2d_reference if two_d else spectral_conv3d_reference,
        "matmul": spectral_conv2d_matmul if two_d else spectral_conv3d_matmul,
    }
    if device.type == "cuda" and has_triton():
        from stpred.kernels.spectral_conv.triton import spectral_conv2d_triton, spectral_conv3d_triton

        impls["triton"] = spectral_conv2d_triton if two_d else spectral_conv3d_triton
    impls[f"auto ({select_impl('auto', x, w)})"] = lambda x_, w_: public(x_, w_, impl="auto")
    return impls


def _time(fn: Callable, x: torch.Tensor, w: torch.Tensor, device: torch.device, iters: int) -> tuple[float, float]:
    fwd = median_ms(lambda: fn(x, w), device, warmup=2, iters=iters)
    xg, wg = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    gy = torch.randn_like(fn(x, w))

    def step() -> None:
        xg.grad = wg.grad = None
        fn(xg, wg).backward(gy)

    return fwd, median_ms(step, device, warmup=2, iters=iters)


def run(device: str | torch.device = "cpu", quick: bool = False) -> list[dict]:
    """Time forward and forward+backward of every available implementation.

    Args:
        device: where to run; Triton rows appear only on CUDA.
        quick: smaller batches and fewer iterations (shapes are recorded in each row).

    Returns:
        One row per (case, impl): ``op, shape, impl, fwd_ms, fwd_bwd_ms, tflops, speedup`` where ``shape`` is
        ``"B=..,C=..,grid=..,modes=.."``, ``tflops`` is the mixing GEMM rate over fwd+bwd and ``speedup`` is the
        rfft reference's fwd+bwd time over this row's.
    """
    device = torch.device(device)
    iters = 3 if quick else 10
    rows = []
    for case in cases(quick):
        b, c, grid, modes = case["B"], case["C"], case["grid"], case["modes"]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, *grid, generator=gen).to(device)
        wshape = (c, c, *[2 * m for m in modes[:-1]], modes[-1], 2)
        w = (torch.rand(wshape, generator=gen) / (c * c)).to(device)
        k = math.prod(2 * m for m in modes[:-1]) * modes[-1]
        mix_flops = 8 * b * c * c * k
        shape = f"B={b},C={c},grid={'x'.join(map(str, grid))},modes={'/'.join(map(str, modes))}"
        base = None
        for name, fn in _impls(case["op"], x, w, device).items():
            fwd, fwd_bwd = _time(fn, x, w, device, iters)
            base = fwd_bwd if base is None else base
            rows.append(
                {
                    "op": case["op"],
                    "shape": shape,
                    "impl": name,
                    "fwd_ms": round(fwd, 3),
                    "fwd_bwd_ms": round(fwd_bwd, 3),
                    "tflops": round(3 * mix_flops / (fwd_bwd * 1e-3) / 1e12, 4),
                    "speedup": round(base / fwd_bwd, 2),
                }
            )
    return rows


if __name__ == "__main__":
    for row in run(quick=False):
        print(row)
