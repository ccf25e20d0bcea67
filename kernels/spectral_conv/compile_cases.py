"""Compile cases of the Triton spectral convolution at the benchmark shapes (``benchmark.cases``), for
``stpred.kernels.compile_check``: forward and backward, tf32 (the CUDA default) and bf16. Every kernel of these cases
runs its products on ``tl.dot``, so all are marked ``tensor_cores=True``."""

from __future__ import annotations

import torch

from stpred.kernels.compile_check import CompileCase
from stpred.kernels.spectral_conv.benchmark import cases as benchmark_cases

__all__ = ["compile_cases"]


def _shapes() -> list[tuple[str, int, int, tuple[int, ...], tuple[int, ...]]]:
    out = []
    for case in benchmark_cases(quick=False):
        grid, modes = "x".join(map(str, case["grid"])), "/".join(map(str, case["modes"]))
        name = f"{case['op']} B{case['B']} C{case['C']} {grid} m{modes}"
        out.append((name, case["B"], case["C"], case["grid"], case["modes"]))
    return out


def _launch(b: int, c: int, grid: tuple[int, ...], modes: tuple[int, ...], precision: str, backward: bool) -> None:
    """Runs the op's own launchers (the autograd function's forward, and its backward) on CPU tensors."""
    from stpred.kernels.spectral_conv.triton import TritonSpectralConv

    x = torch.zeros(b, c, *grid, requires_grad=backward)
    w = torch.zeros(c, c, *[2 * m for m in modes[:-1]], modes[-1], 2, requires_grad=backward)
    y = TritonSpectralConv.apply(x, w, grid[-1], "backward", precision)
    if backward:
        y.backward(torch.zeros_like(y))


def compile_cases() -> list[CompileCase]:
    """One case per benchmark shape, precision (tf32, bf16) and direction (fwd, fwd+bwd)."""
    out = []
    for name, b, c, grid, modes in _shapes():
        for precision in ("tf32", "bf16"):
            for backward in (False, True):
                label = f"{name} {precision} {'fwd+bwd' if backward else 'fwd'}"
                out.append(
                    CompileCase(
                        label,
                        lambda b=b, c=c, g=grid, m=modes, p=precision, bw=backward: _launch(b, c, g, m, p, bw),
                        tensor_cores=True,
                    )
                )
    return out
