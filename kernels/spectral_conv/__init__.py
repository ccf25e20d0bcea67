"""Truncated-DFT spectral convolution (FNO-2D, FNO-3D, SFNO): public functions and dispatch.

Implementations (README.md): the rfft reference (``reference.py``), truncated-DFT GEMMs in PyTorch
(``matmul.py``), and Triton fused truncated-DFT and tensor-core mixing kernels (``triton.py``, CUDA). ``impl``:

- ``"auto"``: Triton when the tensors are on CUDA and Triton is usable (``stpred.kernels.resolve_impl``), else
  as ``"torch"``;
- ``"torch"``: on CPU the cost model's choice between ``"rfft"`` and ``"matmul"`` (never the slower of the two
  at the measured shapes); on CUDA the matmul path;
- ``"triton"``, ``"rfft"``, ``"matmul"``: that implementation.

float64 always runs on the rfft reference unless ``"matmul"`` is asked for (``tl.dot`` has no float64, and the
Spectral-Refiner fine-tuning runs untruncated grids where the FFT is cheaper). bfloat16/float16 inputs are computed
in float32 (on Triton: bfloat16 ``tl.dot`` operands, float32 accumulation) and the result cast back. float32 on
Triton uses TF32 tensor cores on CUDA unless ``precision`` says otherwise (README "Precision").
"""

from __future__ import annotations

import torch

from stpred.kernels._dispatch import resolve_impl
from stpred.kernels.spectral_conv.matmul import prefer_matmul, spectral_conv2d_matmul, spectral_conv3d_matmul
from stpred.kernels.spectral_conv.reference import (
    check_modes,
    spectral_conv2d_reference,
    spectral_conv3d_reference,
)

__all__ = [
    "spectral_conv2d",
    "spectral_conv3d",
    "select_impl",
    "IMPLS",
    "spectral_conv2d_reference",
    "spectral_conv3d_reference",
    "spectral_conv2d_matmul",
    "spectral_conv3d_matmul",
]

IMPLS = ("auto", "triton", "torch", "rfft", "matmul")


def select_impl(
    impl: str, x: torch.Tensor, weight: torch.Tensor, out_last: int | None = None, norm: str = "backward"
) -> str:
    """The implementation a call would run: ``"triton"``, ``"rfft"`` or ``"matmul"``.

    Args:
        impl: one of :data:`IMPLS`.
        x: ``[B, C_in, *grid]`` input (2 or 3 spatial dims).
        weight: ``[C_in, C_out, *modes, 2]``.
        out_last: output length of the last axis.
        norm: FFT normalisation.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got '{impl}'")
    modes, n_out = check_modes(x, weight, out_last, norm, spatial_dims=x.dim() - 2)
    if impl in ("rfft", "matmul"):
        return impl
    if x.dtype == torch.float64:
        if impl == "triton":
            raise ValueError("impl='triton' has no float64 (tl.dot); use 'rfft' or 'matmul'")
        return "rfft"
    if resolve_impl(impl, x, weight) == "triton":
        return "triton"
    if x.device.type != "cpu":
        return "matmul"
    b, c_in, c_out = x.shape[0], x.shape[1], weight.shape[1]
    return "matmul" if prefer_matmul(b, c_in, c_out, tuple(x.shape[2:]), modes, n_out) else "rfft"


def default_precision(x: torch.Tensor) -> str:
    """The Triton ``tl.dot`` operand precision when none is asked for: ``"bf16"`` for bf16 input, ``"tf32"``
    on CUDA (tensor cores; error measured in README "Precision"), ``"ieee"`` elsewhere (the interpreter)."""
    if x.dtype == torch.bfloat16:
        return "bf16"
    return "tf32" if x.is_cuda else "ieee"


def _call(
    dims: int, x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, impl: str, precision: str | None
) -> torch.Tensor:
    path = select_impl(impl, x, weight, out_last, norm)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    # Autocast would run the transform GEMMs in bf16/fp16; the math stays float32 and the result is cast back.
    with torch.autocast(device_type=x.device.type, enabled=False):
        xs, ws = x.to(dtype), weight.to(dtype)
        if path == "triton":
            from stpred.kernels.spectral_conv.triton import spectral_conv2d_triton, spectral_conv3d_triton

            fn = spectral_conv2d_triton if dims == 2 else spectral_conv3d_triton
            prec = precision or default_precision(x)
            y = fn(xs, ws, out_last, norm, precision=prec)
        else:
            table = {
                ("rfft", 2): spectral_conv2d_reference,
                ("rfft", 3): spectral_conv3d_reference,
                ("matmul", 2): spectral_conv2d_matmul,
                ("matmul", 3): spectral_conv3d_matmul,
            }
            y = table[(path, dims)](xs, ws, out_last, norm)
    return y.to(x.dtype)


def spectral_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    impl: str = "auto",
    precision: str | None = None,
) -> torch.Tensor:
    """FNO-2D spectral convolution: rfft2, per-mode complex channel mixing on the kept modes, irfft2.

    Kept modes: rows ``0..m1-1`` and ``N1-m1..N1-1`` of the first axis, ``0..m2-1`` of the half spectrum.

    Args:
        x: real ``[B, C_in, N1, N2]``.
        weight: ``[C_in, C_out, 2*m1, m2, 2]`` real pairs (row ``j < m1``: frequency j; ``j >= m1``: ``j - 2*m1``).
            Needs ``m1 <= N1/2`` and ``m2 <= N2//2+1`` (and ``<= out_last//2+1``).
        out_last: output length of the last axis (``irfft2(s=(N1, out_last))``), default ``N2``.
        norm: ``"backward" | "forward" | "ortho"`` as in ``torch.fft``.
        impl: ``"auto" | "triton" | "torch" | "rfft" | "matmul"`` (module docstring).
        precision: Triton ``tl.dot`` operands, ``"ieee" | "tf32" | "tf32x3" | "bf16"``; default tf32 on CUDA,
            bf16 for bf16 input or under bf16 autocast (the layers), ieee in the interpreter.

    Returns:
        ``[B, C_out, N1, out_last]`` in ``x``'s dtype.

    Examples:
        >>> import torch
        >>> from stpred.kernels.spectral_conv import spectral_conv2d
        >>> x = torch.randn(2, 3, 32, 30)
        >>> w = torch.rand(3, 5, 2 * 8, 8, 2) / 15
        >>> spectral_conv2d(x, w).shape
        torch.Size([2, 5, 32, 30])
        >>> ref = spectral_conv2d(x, w, impl="rfft")
        >>> bool(torch.allclose(spectral_conv2d(x, w, impl="matmul"), ref, atol=1e-5))
        True
    """
    return _call(2, x, weight, out_last, norm, impl, precision)


def spectral_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    impl: str = "auto",
    precision: str | None = None,
) -> torch.Tensor:
    """Space-time (x, y, t) spectral convolution of FNO-3D and SFNO, optionally resampling t.

    Kept modes: the four (±x, ±y) corner blocks and ``0..mt-1`` of the t half spectrum.

    Args:
        x: real ``[B, C_in, NX, NY, NT]`` (t last).
        weight: ``[C_in, C_out, 2*mx, 2*my, mt, 2]`` real pairs. Needs ``mx <= NX/2``, ``my <= NY/2``,
            ``mt <= NT//2+1`` and ``mt <= out_last//2+1``.
        out_last: output length of t (SFNO's ``SpectralConvT``: ``irfftn(s=(NX, NY, out_last))``), default ``NT``.
        norm: ``"backward" | "forward" | "ortho"``.
        impl: ``"auto" | "triton" | "torch" | "rfft" | "matmul"``.
        precision: as in :func:`spectral_conv2d`.

    Returns:
        ``[B, C_out, NX, NY, out_last]`` in ``x``'s dtype.

    Examples:
        >>> import torch
        >>> from stpred.kernels.spectral_conv import spectral_conv3d
        >>> x = torch.randn(1, 4, 16, 16, 10)
        >>> w = torch.rand(4, 4, 2 * 4, 2 * 4, 5, 2) / 16
        >>> spectral_conv3d(x, w, out_last=20).shape
        torch.Size([1, 4, 16, 16, 20])
    """
    return _call(3, x, weight, out_last, norm, impl, precision)
