"""Fourier-layer spectral convolutions (FNO, Li et al., ICLR 2021; SFNO's space-time form).

The layers keep one dense weight per layer (docs/kernels.md §2.1) and dispatch to the kernels of
``stpred.kernels.spectral_conv``. FFTs have no bfloat16, so the spectral path always runs in float32 (or float64)
with autocast off and casts back to the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from stpred.errors import check
from stpred.kernels.spectral_conv import IMPLS, spectral_conv2d, spectral_conv3d
from stpred.kernels.spectral_conv.reference import check_modes

__all__ = ["SpectralConv2d", "SpectralConv3d"]


def _spectral_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_impl(layer: str, impl: str) -> None:
    check(impl in IMPLS, f"{layer}: impl must be one of {'|'.join(IMPLS)}, got '{impl}'")


def _precision(x: torch.Tensor) -> str | None:
    """Triton operand precision: bf16 under bf16 autocast (or for bf16 input), else the op's default (tf32 on
    CUDA). The other paths ignore it and stay float32."""
    device = x.device.type
    if x.dtype == torch.bfloat16:
        return "bf16"
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
        return "bf16"
    return None


def _run(layer: nn.Module, fn, x: torch.Tensor, dims: int) -> torch.Tensor:
    """Validate the grid, then run ``fn`` in float32 (float64 stays float64) with autocast off; cast back.
    Under bf16 autocast the Triton path takes bf16 ``tl.dot`` operands (float32 accumulation)."""
    name = type(layer).__name__
    if x.dim() != dims + 2:
        raise ValueError(f"{name} expects [B, C, {dims} spatial dims], got shape {tuple(x.shape)}")
    dtype = _spectral_dtype(x)
    precision = _precision(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        w = layer.weight.to(dtype)
        check_modes(x, w, layer.out_last, layer.norm, spatial_dims=dims, name=name)
        y = fn(x.to(dtype), w, layer.out_last, layer.norm, impl=layer.impl, precision=precision)
    return y.to(x.dtype)


class SpectralConv2d(nn.Module):
    """2-D spectral convolution ``[B, C_in, N1, N2] -> [B, C_out, N1, N2']`` on the kept modes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        modes1: modes kept on each side of the first axis (two corner blocks), ``<= N1 / 2``.
        modes2: modes kept on the last (half-spectrum) axis, ``<= N2 / 2 + 1``.
        out_last: output length of the last axis; ``None`` keeps the input's.
        norm: FFT normalisation, ``"backward"`` as in the original FNO.
        init_scale: weights start as ``init_scale * U[0, 1)``; default ``1 / (C_in * C_out)`` (FNO).
        impl: ``"auto" | "triton" | "torch"`` (or ``"rfft" | "matmul"`` to pin one path).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes1: int,
        modes2: int,
        *,
        out_last: int | None = None,
        norm: str = "backward",
        init_scale: float | None = None,
        impl: str = "auto",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check(in_channels > 0 and out_channels > 0, "SpectralConv2d: channel counts must be positive")
        check(modes1 > 0 and modes2 > 0, f"SpectralConv2d: modes must be positive, got ({modes1}, {modes2})")
        check(norm in ("backward", "forward", "ortho"), f"SpectralConv2d: unknown norm '{norm}'")
        _check_impl("SpectralConv2d", impl)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes1, self.modes2 = modes1, modes2
        self.out_last, self.norm, self.impl = out_last, norm, impl
        scale = 1.0 / (in_channels * out_channels) if init_scale is None else init_scale
        self.weight = nn.Parameter(
            scale * torch.rand(in_channels, out_channels, 2 * modes1, modes2, 2, device=device, dtype=dtype)
        )

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes=({self.modes1}, {self.modes2}), impl={self.impl}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, N1, N2] -> [B, C_out, N1, out_last or N2]`` in ``x``'s dtype."""
        return _run(self, spectral_conv2d, x, 2)


class SpectralConv3d(nn.Module):
    """Space-time spectral convolution ``[B, C_in, NX, NY, NT] -> [B, C_out, NX, NY, NT']``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        modes_x: modes on each side of the x axis.
        modes_y: modes on each side of the y axis.
        modes_t: modes kept on the t (half-spectrum) axis.
        out_last: output length of the t axis (SFNO's ``SpectralConvT``); ``None`` keeps the input's.
        norm: FFT normalisation.
        init_scale: weights start as ``init_scale * U[0, 1)``; default ``1 / (C_in * C_out)``.
        impl: ``"auto" | "triton" | "torch"`` (or ``"rfft" | "matmul"``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes_x: int,
        modes_y: int,
        modes_t: int,
        *,
        out_last: int | None = None,
        norm: str = "backward",
        init_scale: float | None = None,
        impl: str = "auto",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check(min(modes_x, modes_y, modes_t) > 0, "SpectralConv3d: modes must be positive")
        check(norm in ("backward", "forward", "ortho"), f"SpectralConv3d: unknown norm '{norm}'")
        check(in_channels > 0 and out_channels > 0, "SpectralConv3d: channel counts must be positive")
        _check_impl("SpectralConv3d", impl)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes = (modes_x, modes_y, modes_t)
        self.out_last, self.norm, self.impl = out_last, norm, impl
        scale = 1.0 / (in_channels * out_channels) if init_scale is None else init_scale
        shape = (in_channels, out_channels, 2 * modes_x, 2 * modes_y, modes_t, 2)
        self.weight = nn.Parameter(scale * torch.rand(*shape, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}, impl={self.impl}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, NX, NY, NT] -> [B, C_out, NX, NY, out_last or NT]`` in ``x``'s dtype."""
        return _run(self, spectral_conv3d, x, 3)
