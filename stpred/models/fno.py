"""FNO-2D: the Fourier neural operator on a 2-D grid, with time (and channels) folded into the lifted input.

Paper: Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations", ICLR 2021,
arXiv:2010.08895. Original repository: https://github.com/zongyi-li/fourier_neural_operator (MIT), now inside
neuraloperator (MIT). This is an independent reimplementation of ``fourier_2d_time.py`` from ``docs/models.md`` §6.

Layout: ``[B, T, C, H, W]`` in and out. One step maps the last ``T_in`` frames, folded with the channels into
``T_in * C`` features per grid point plus the two normalised coordinates, to the next frame(s):

    lift Linear(T_in*C + 2, width) -> depth x [SpectralConv2d + 1x1 conv, GELU except after the last]
    -> Linear(width, 128) -> GELU -> Linear(128, out)

``mode="autoregressive"`` (the paper's form) predicts one frame (``out = C``) and rolls out ``T_out`` steps,
sliding the input window over its own predictions. ``mode="oneshot"`` predicts all frames at once
(``out = T_out * C``). The spectral layers run in float32 with autocast off (no bf16 FFT).

The network is defined on the grid, so it also runs at resolutions other than ``in_shape``'s H, W as long as the
grid holds the kept modes (zero-shot super-resolution); ``T_in`` and ``C`` are fixed.

FNO-3D (``fourier_3d.py``, models.md §6.2) convolves in space and time at once. The ``T_in`` input frames (folded
with the channels) are repeated along the ``T_out`` output steps and joined by the three normalised coordinates
(x, y, t), so every output step is one point of a space-time grid ``(b, c, x, y, t)`` with t last:

    lift Linear(T_in*C + 3, width) -> zero-pad t by 6 at the end
    -> depth x [SpectralConv3d (4 corner blocks ±x, ±y, +t) + 1x1x1 conv, GELU except after the last]
    -> crop t -> Linear(width, 128) -> GELU -> Linear(128, C)

All ``T_out`` frames come out of one pass.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from stpred.errors import check
from stpred.layers.spectral_conv import SpectralConv2d, SpectralConv3d
from stpred.registry import register_model

__all__ = ["FourierLayer2d", "FNO2d", "FourierLayer3d", "FNO3d", "fno2d", "fno3d"]

_MODES = ("autoregressive", "oneshot")
_IMPLS = ("auto", "triton", "torch")
_PROJ_HIDDEN = 128
_TIME_PAD = 6  # fourier_3d.py: time is not periodic, so it is zero-padded before the FFTs and cropped after


def _is_int(v: object) -> bool:
    # numbers.Integral so that numpy ints from a datamodule pass; bool is an int but never a size.
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _mode_pair(modes: int | Sequence[int]) -> tuple[int, int]:
    if _is_int(modes):
        return int(modes), int(modes)
    check(
        isinstance(modes, Sequence) and not isinstance(modes, str) and len(modes) == 2 and all(map(_is_int, modes)),
        f"fno2d: modes must be an int or a pair of ints [m1, m2], got {modes!r}",
    )
    return int(modes[0]), int(modes[1])


class FourierLayer2d(nn.Module):
    """One Fourier layer ``[B, width, H, W] -> [B, width, H, W]``: ``act(K(v) + W v)``.

    Args:
        width: channels.
        modes1: modes kept on each side of the H axis.
        modes2: modes kept on the W (half-spectrum) axis.
        activation: apply GELU (every layer but the last).
        impl: spectral kernel, ``"auto" | "triton" | "torch"``.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        width: int,
        modes1: int,
        modes2: int,
        *,
        activation: bool = True,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.spectral = SpectralConv2d(width, width, modes1, modes2, impl=impl, **fk)
        self.pointwise = nn.Conv2d(width, width, 1, **fk)
        self.activation = activation

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = self.spectral(v) + self.pointwise(v)
        return F.gelu(v) if self.activation else v


class FNO2d(nn.Module):
    """FNO-2D forecaster ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``.

    Args:
        in_shape: ``(T_in, C, H, W)``.
        out_frames: forecast length T_out.
        modes: Fourier modes kept, an int or ``[m1, m2]``; ``2*m1 <= H`` and ``m2 <= W//2 + 1``.
        width: channels of the Fourier layers.
        depth: number of Fourier layers.
        mode: ``"autoregressive"`` (one frame per step, rolled out) or ``"oneshot"`` (all T_out frames at once).
        legacy_bn: add the original script's ``depth`` unused BatchNorm2d layers (parameter-count parity only).
        impl: spectral-convolution kernel, ``"auto" | "triton" | "torch"``.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = FNO2d((10, 1, 64, 64), 5, modes=4, width=8)
        >>> model(torch.zeros(2, 10, 1, 64, 64)).shape
        torch.Size([2, 5, 1, 64, 64])
    """

    _version = 1

    def __init__(
        self,
        in_shape: Sequence[int],
        out_frames: int,
        *,
        modes: int | Sequence[int] = 12,
        width: int = 20,
        depth: int = 4,
        mode: str = "autoregressive",
        legacy_bn: bool = False,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check(
            isinstance(in_shape, Sequence) and len(in_shape) == 4 and all(_is_int(v) and v > 0 for v in in_shape),
            f"fno2d: in_shape must be 4 positive ints (T_in, C, H, W), got {in_shape!r}",
        )
        check(_is_int(out_frames) and out_frames > 0, f"fno2d: out_frames must be a positive int, got {out_frames!r}")
        m1, m2 = _mode_pair(modes)
        t_in, c, h, w = (int(v) for v in in_shape)
        check(m1 > 0 and m2 > 0, f"fno2d: modes must be positive, got {modes!r}")
        check(
            2 * m1 <= h and m2 <= w // 2 + 1,
            f"fno2d: modes ({m1}, {m2}) do not fit the {h}x{w} grid (need 2*m1 <= H and m2 <= W//2+1); "
            f"use modes <= ({h // 2}, {w // 2 + 1})",
        )
        check(_is_int(width) and width > 0, f"fno2d: width must be a positive int, got {width!r}")
        check(_is_int(depth) and depth >= 1, f"fno2d: depth must be an int >= 1, got {depth!r}")
        check(mode in _MODES, f"fno2d: mode must be one of {'|'.join(_MODES)}, got {mode!r}")
        check(impl in _IMPLS, f"fno2d: impl must be one of {'|'.join(_IMPLS)}, got {impl!r}")
        check(isinstance(legacy_bn, bool), f"fno2d: legacy_bn must be true or false, got {legacy_bn!r}")

        fk = {"device": device, "dtype": dtype}
        self.in_shape = (t_in, c, h, w)
        self.out_frames = int(out_frames)
        self.mode = mode
        self.modes = (m1, m2)
        self.lift = nn.Linear(t_in * c + 2, width, **fk)
        self.layers = nn.ModuleList(
            FourierLayer2d(width, m1, m2, activation=i < depth - 1, impl=impl, **fk) for i in range(depth)
        )
        if legacy_bn:
            # The original script builds bn0..bn3 but never calls them; kept only so the count is 414,517.
            self.unused_bn = nn.ModuleList(nn.BatchNorm2d(width, **fk) for _ in range(depth))
        out = c if mode == "autoregressive" else self.out_frames * c
        self.project = nn.Sequential(
            nn.Linear(width, _PROJ_HIDDEN, **fk), nn.GELU(), nn.Linear(_PROJ_HIDDEN, out, **fk)
        )

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_frames={self.out_frames}, mode={self.mode}, modes={self.modes}"

    @staticmethod
    def grid(b: int, h: int, w: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Normalised coordinates ``[B, H, W, 2]``: ``linspace(0, 1, H)`` down the rows, then across the columns."""
        gy = torch.linspace(0.0, 1.0, h, device=device, dtype=dtype)
        gx = torch.linspace(0.0, 1.0, w, device=device, dtype=dtype)
        g = torch.stack(torch.meshgrid(gy, gx, indexing="ij"), dim=-1)
        return g.expand(b, h, w, 2)

    def step(self, window: torch.Tensor) -> torch.Tensor:
        """One operator application ``[B, T_in, C, H, W] -> [B, H, W, out]`` (``out = C`` or ``T_out * C``)."""
        b, _, _, h, w = window.shape
        v = rearrange(window, "b t c h w -> b h w (t c)")
        v = torch.cat([v, self.grid(b, h, w, device=v.device, dtype=v.dtype)], dim=-1)
        v = rearrange(self.lift(v), "b h w d -> b d h w")
        for layer in self.layers:
            v = layer(v)
        return self.project(rearrange(v, "b d h w -> b h w d"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``."""
        t_in, c, _, _ = self.in_shape
        if x.ndim != 5 or x.shape[1] != t_in or x.shape[2] != c:
            raise ValueError(
                f"fno2d built for in_shape={self.in_shape} expects [B, {t_in}, {c}, H, W], got {list(x.shape)}"
            )
        if self.mode == "oneshot":
            return rearrange(self.step(x), "b h w (t c) -> b t c h w", c=c)
        frames = []
        for _ in range(self.out_frames):
            nxt = rearrange(self.step(x), "b h w c -> b 1 c h w")
            frames.append(nxt)
            x = torch.cat([x[:, 1:], nxt], dim=1)
        return torch.cat(frames, dim=1)


def _mode_triple(modes: int | Sequence[int]) -> tuple[int, int, int]:
    if _is_int(modes):
        return int(modes), int(modes), int(modes)
    check(
        isinstance(modes, Sequence) and not isinstance(modes, str) and len(modes) == 3 and all(map(_is_int, modes)),
        f"fno3d: modes must be an int or a triple of ints [mx, my, mt], got {modes!r}",
    )
    return int(modes[0]), int(modes[1]), int(modes[2])


class FourierLayer3d(nn.Module):
    """One space-time Fourier layer ``[B, width, X, Y, T] -> [B, width, X, Y, T]``: ``act(K(v) + W v)``.

    Args:
        width: channels.
        modes_x: modes kept on each side of the x (H) axis.
        modes_y: modes kept on each side of the y (W) axis.
        modes_t: modes kept on the t (half-spectrum) axis.
        activation: apply GELU (every layer but the last).
        impl: spectral kernel, ``"auto" | "triton" | "torch"``.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        width: int,
        modes_x: int,
        modes_y: int,
        modes_t: int,
        *,
        activation: bool = True,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.spectral = SpectralConv3d(width, width, modes_x, modes_y, modes_t, impl=impl, **fk)
        self.pointwise = nn.Conv3d(width, width, 1, **fk)
        self.activation = activation

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = self.spectral(v) + self.pointwise(v)
        return F.gelu(v) if self.activation else v


class FNO3d(nn.Module):
    """FNO-3D forecaster ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``, all ``T_out`` frames in one pass.

    Internally ``(b, c, x, y, t)`` with x = H, y = W and t = the ``T_out`` output steps (last, the half-spectrum
    axis of the FFT); t is zero-padded by ``padding`` steps at the end for the Fourier layers.

    Args:
        in_shape: ``(T_in, C, H, W)``.
        out_frames: forecast length T_out.
        modes: Fourier modes kept, an int or ``[mx, my, mt]``; ``2*mx <= H``, ``2*my <= W`` and
            ``mt <= (T_out + padding)//2 + 1``.
        width: channels of the Fourier layers.
        depth: number of Fourier layers.
        padding: zero steps appended to t before the Fourier layers and cropped after (6 in ``fourier_3d.py``).
        legacy_bn: add the original script's ``depth`` unused BatchNorm3d layers (parameter-count parity only).
        impl: spectral-convolution kernel, ``"auto" | "triton" | "torch"``.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = FNO3d((10, 1, 32, 32), 8, modes=4, width=8)
        >>> model(torch.zeros(2, 10, 1, 32, 32)).shape
        torch.Size([2, 8, 1, 32, 32])
    """

    _version = 1

    def __init__(
        self,
        in_shape: Sequence[int],
        out_frames: int,
        *,
        modes: int | Sequence[int] = 8,
        width: int = 20,
        depth: int = 4,
        padding: int = _TIME_PAD,
        legacy_bn: bool = False,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check(
            isinstance(in_shape, Sequence) and len(in_shape) == 4 and all(_is_int(v) and v > 0 for v in in_shape),
            f"fno3d: in_shape must be 4 positive ints (T_in, C, H, W), got {in_shape!r}",
        )
        check(_is_int(out_frames) and out_frames > 0, f"fno3d: out_frames must be a positive int, got {out_frames!r}")
        check(_is_int(padding) and padding >= 0, f"fno3d: padding must be an int >= 0, got {padding!r}")
        mx, my, mt = _mode_triple(modes)
        t_in, c, h, w = (int(v) for v in in_shape)
        n_t = int(out_frames) + int(padding)
        check(min(mx, my, mt) > 0, f"fno3d: modes must be positive, got {modes!r}")
        check(
            2 * mx <= h and 2 * my <= w,
            f"fno3d: modes ({mx}, {my}) do not fit the {h}x{w} grid (need 2*mx <= H and 2*my <= W); "
            f"use modes <= ({h // 2}, {w // 2})",
        )
        check(
            mt <= n_t // 2 + 1,
            f"fno3d: modes_t={mt} does not fit out_frames + padding = {n_t} time steps; use modes_t <= {n_t // 2 + 1}",
        )
        check(_is_int(width) and width > 0, f"fno3d: width must be a positive int, got {width!r}")
        check(_is_int(depth) and depth >= 1, f"fno3d: depth must be an int >= 1, got {depth!r}")
        check(impl in _IMPLS, f"fno3d: impl must be one of {'|'.join(_IMPLS)}, got {impl!r}")
        check(isinstance(legacy_bn, bool), f"fno3d: legacy_bn must be true or false, got {legacy_bn!r}")

        fk = {"device": device, "dtype": dtype}
        self.in_shape = (t_in, c, h, w)
        self.out_frames = int(out_frames)
        self.modes = (mx, my, mt)
        self.padding = int(padding)
        self.lift = nn.Linear(t_in * c + 3, width, **fk)
        self.layers = nn.ModuleList(
            FourierLayer3d(width, mx, my, mt, activation=i < depth - 1, impl=impl, **fk) for i in range(depth)
        )
        if legacy_bn:
            # The original script builds bn0..bn3 but never calls them; kept only so the count is 6,558,537.
            self.unused_bn = nn.ModuleList(nn.BatchNorm3d(width, **fk) for _ in range(depth))
        self.project = nn.Sequential(nn.Linear(width, _PROJ_HIDDEN, **fk), nn.GELU(), nn.Linear(_PROJ_HIDDEN, c, **fk))

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_frames={self.out_frames}, modes={self.modes}, padding={self.padding}"

    @staticmethod
    def grid(b: int, h: int, w: int, t: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Normalised coordinates ``[B, H, W, T, 3]``: ``linspace(0, 1, n)`` along H, W and the output steps."""
        axes = [torch.linspace(0.0, 1.0, n, device=device, dtype=dtype) for n in (h, w, t)]
        g = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        return g.expand(b, h, w, t, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``."""
        t_in, c, _, _ = self.in_shape
        if x.ndim != 5 or x.shape[1] != t_in or x.shape[2] != c:
            raise ValueError(
                f"fno3d built for in_shape={self.in_shape} expects [B, {t_in}, {c}, H, W], got {list(x.shape)}"
            )
        b, _, _, h, w = x.shape
        t_out = self.out_frames
        # The input window is repeated along the output steps: each step sees all T_in frames plus its coordinates.
        v = repeat(x, "b t c h w -> b h w s (t c)", s=t_out)
        v = torch.cat([v, self.grid(b, h, w, t_out, device=v.device, dtype=v.dtype)], dim=-1)
        v = rearrange(self.lift(v), "b h w s d -> b d h w s")
        v = F.pad(v, (0, self.padding))
        for layer in self.layers:
            v = layer(v)
        v = v[..., :t_out]
        return rearrange(self.project(rearrange(v, "b d h w s -> b h w s d")), "b h w s c -> b s c h w")


def _create_fno(in_shape: Sequence[int], out_frames: int, **kwargs: object) -> FNO2d:
    return FNO2d(in_shape, out_frames, **kwargs)


@register_model("fno2d")
def fno2d(in_shape: Sequence[int], out_frames: int, **kwargs: object) -> FNO2d:
    """FNO-2D (script defaults: modes 12, width 20, depth 4, autoregressive); see :class:`FNO2d`."""
    return _create_fno(in_shape, out_frames, **kwargs)


def _create_fno3d(in_shape: Sequence[int], out_frames: int, **kwargs: object) -> FNO3d:
    return FNO3d(in_shape, out_frames, **kwargs)


@register_model("fno3d")
def fno3d(in_shape: Sequence[int], out_frames: int, **kwargs: object) -> FNO3d:
    """FNO-3D (script defaults: modes 8, width 20, depth 4, time padding 6); see :class:`FNO3d`."""
    return _create_fno3d(in_shape, out_frames, **kwargs)
