"""Launches of the scan's Triton kernels to compile without a GPU (see :mod:`stpred.kernels.compile_check`).

The shapes are the benchmark's (B=8, P=128, H·W = 16x16 and 64x64), float32 and bfloat16, with and without
``x0`` / ``g_last``. The sequence length is not specialised (``do_not_specialize=["T"]``) and changes no stride's
divisibility, so a short L stands for every L and keeps the CPU tensors small.
"""

from __future__ import annotations

import functools

import torch

from stpred.kernels.compile_check import CompileCase

__all__ = ["compile_cases"]

_L = 4
_SHAPES = ((8, 128, 16, 16), (8, 128, 64, 64))
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _fwd(b: int, p: int, h: int, w: int, dtype: torch.dtype, with_x0: bool) -> None:
    from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_fwd

    bu = torch.empty(b, _L, 2, p, h, w, dtype=dtype)
    x0 = torch.empty(b, 2, p, h, w, dtype=dtype) if with_x0 else None
    conv_ssm_scan_fwd(torch.empty(p, 2), bu, x0)


def _bwd(b: int, p: int, h: int, w: int, dtype: torch.dtype, with_x0: bool) -> None:
    from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_bwd

    g = torch.empty(b, _L, 2, p, h, w, dtype=dtype)
    x0 = torch.empty(b, 2, p, h, w, dtype=dtype) if with_x0 else None
    g_last = torch.empty(b, 2, p, h, w, dtype=torch.float32) if with_x0 else None
    conv_ssm_scan_bwd(torch.empty(p, 2), g, g_last, torch.empty_like(g), x0)


def compile_cases() -> list[CompileCase]:
    """Forward and backward at every benchmark shape and dtype; ``+x0`` adds ``x0`` (and ``g_last`` backward)."""
    cases = []
    for (b, p, h, w), (dname, dtype), with_x0 in (
        (s, d, x) for s in _SHAPES for d in _DTYPES.items() for x in (False, True)
    ):
        suffix = f"B{b} P{p} {h}x{w} {dname}{' +x0' if with_x0 else ''}"
        cases.append(CompileCase(f"scan fwd {suffix}", functools.partial(_fwd, b, p, h, w, dtype, with_x0)))
        cases.append(CompileCase(f"scan bwd {suffix}", functools.partial(_bwd, b, p, h, w, dtype, with_x0)))
    return cases
