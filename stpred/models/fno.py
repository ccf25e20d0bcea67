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
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from stpred.errors import check
from stpred.layers.spectral_conv import SpectralConv2d
from stpred.registry import register_model

__all__ = ["FourierLayer2d", "FNO2d", "fno2d"]

_MODES = ("autoregressive", "oneshot")
_IMPLS = ("auto", "triton", "torch")
_PROJ_HIDDEN = 128


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


def _create_fno(in_shape: Sequence[int], out_frames: int, **kwargs: object) -> FNO2d:
    return FNO2d(in_shape, out_frames, **kwargs)


@register_model("fno2d")
def fno2d(in_shape: Sequence[int], out_frames: int, **kwargs: object) -> FNO2d:
    """FNO-2D (script defaults: modes 12, width 20, depth 4, autoregressive); see :class:`FNO2d`."""
    return _create_fno(in_shape, out_frames, **kwargs)
