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

FNO-3D (``fourier_3d.py``, docs/models.md §6.2) convolves in space and time at once. The ``T_in`` input frames (folded
with the channels) are repeated along the ``T_out`` output steps and joined by the three normalised coordinates
(x, y, t), so every output step is one point of a space-time grid ``(b, c, x, y, t)`` with t last:

    lift Linear(T_in*C + 3, width) -> zero-pad t by 6 at the end
    -> depth x [SpectralConv3d (4 corner blocks ±x, ±y, +t) + 1x1x1 conv, GELU except after the last]
    -> crop t -> Linear(width, 128) -> GELU -> Linear(128, C)

All ``T_out`` frames come out of one pass.

Options for weights of neuraloperator's ``FNO`` (its 2.0 defaults differ from the 2021 script; all off by default):
``lift_hidden`` (a two-layer lifting MLP), ``channel_mlp`` (a channel MLP after every Fourier layer with a
soft-gating skip from the layer's input), ``proj_hidden`` (the projection width), ``grid="periodic"``
(coordinates ``linspace(0, 1, N + 1)[:-1]``) or ``grid="none"``, and ``spectral_norm`` (the FFT normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from stpred.errors import check
from stpred.kernels.spectral_conv import IMPLS
from stpred.layers.spectral_conv import SpectralConv2d, SpectralConv3d
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = ["FourierLayer2d", "FNO2d", "FourierLayer3d", "FNO3d"]

_MODES = ("autoregressive", "oneshot")
_PROJ_HIDDEN = 128
_GRIDS = ("closed", "periodic", "none")
_NORMS = ("backward", "forward", "ortho")
_TIME_PAD = 6  # fourier_3d.py: time is not periodic, so it is zero-padded before the FFTs and cropped after


class FourierLayer2d(nn.Module):
    """One Fourier layer ``[B, width, H, W] -> [B, width, H, W]``: ``act(K(v) + W v)``.

    Args:
        width: channels.
        modes1: modes kept on each side of the H axis.
        modes2: modes kept on the W (half-spectrum) axis.
        activation: apply GELU (every layer but the last).
        impl: spectral kernel, one of :data:`stpred.kernels.spectral_conv.IMPLS`.
        mlp_hidden: with a value, neuraloperator's block: ``u = act(K(v) + W v)``, then
            ``act(MLP(u) + g * v)`` with a two-layer 1x1 MLP (``width -> mlp_hidden -> width``, GELU inside, also
            in the last layer) and a per-channel soft gate ``g`` on the layer's input.
        spectral_norm: FFT normalisation of the spectral convolution.
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
        mlp_hidden: int | None = None,
        spectral_norm: str = "backward",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.spectral = SpectralConv2d(width, width, modes1, modes2, norm=spectral_norm, impl=impl, **fk)
        self.pointwise = nn.Conv2d(width, width, 1, **fk)
        self.activation = activation
        self.has_mlp = mlp_hidden is not None
        if self.has_mlp:
            self.mlp = nn.Sequential(
                nn.Conv2d(width, mlp_hidden, 1, **fk), nn.GELU(), nn.Conv2d(mlp_hidden, width, 1, **fk)
            )
            self.gate = nn.Parameter(torch.ones(1, width, 1, 1, **fk))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        u = self.spectral(v) + self.pointwise(v)
        u = F.gelu(u) if self.activation else u
        if not self.has_mlp:
            return u
        u = self.mlp(u) + self.gate * v
        return F.gelu(u) if self.activation else u


@register_model("fno2d")
class FNO2d(SpatioTemporalModel):
    """FNO-2D forecaster ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``.

    Args:
        in_shape: ``(T_in, C, H, W)``.
        out_frames: forecast length T_out.
        modes: Fourier modes kept, an int or ``[m1, m2]``; ``2*m1 <= H`` and ``m2 <= W//2 + 1``.
        width: channels of the Fourier layers.
        depth: number of Fourier layers.
        mode: ``"autoregressive"`` (one frame per step, rolled out) or ``"oneshot"`` (all T_out frames at once).
        legacy_bn: add the original script's ``depth`` unused BatchNorm2d layers (parameter-count parity only).
        impl: spectral-convolution kernel, one of :data:`stpred.kernels.spectral_conv.IMPLS`.
        lift_hidden: ``None``: one Linear lifting layer; a width: Linear -> GELU -> Linear through it
            (neuraloperator's lifting channel MLP).
        proj_hidden: hidden width of the projection (128 in the 2021 script).
        channel_mlp: ``None``, or the expansion of neuraloperator's channel MLP in every Fourier layer (hidden
            ``round(width * channel_mlp)``, with its soft-gating skip; see :class:`FourierLayer2d`).
        grid: coordinate channels: ``"closed"`` ``linspace(0, 1, N)`` (the 2021 script), ``"periodic"``
            ``linspace(0, 1, N + 1)[:-1]`` (neuraloperator), ``"none"``.
        spectral_norm: FFT normalisation of the spectral layers (``"backward"``; neuraloperator uses ``"forward"``).
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = FNO2d(in_shape=(10, 1, 64, 64), out_frames=5, modes=4, width=8)
        >>> model(torch.zeros(2, 10, 1, 64, 64)).shape
        torch.Size([2, 5, 1, 64, 64])
    """

    name = "fno2d"

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        modes: int | Sequence[int] = 12,
        width: int = 20,
        depth: int = 4,
        mode: str = "autoregressive",
        legacy_bn: bool = False,
        impl: str = "auto",
        lift_hidden: int | None = None,
        proj_hidden: int = _PROJ_HIDDEN,
        channel_mlp: float | None = None,
        grid: str = "closed",
        spectral_norm: str = "backward",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        t_in, c, h, w = self.in_shape
        m1, m2 = V.int_tuple(self.name, "modes", modes, 2, "[m1, m2]")
        check(
            2 * m1 <= h and m2 <= w // 2 + 1,
            f"fno2d: modes ({m1}, {m2}) do not fit the {h}x{w} grid (need 2*m1 <= H and m2 <= W//2+1); "
            f"use modes <= ({h // 2}, {w // 2 + 1})",
        )
        width = V.integer(self.name, "width", width)
        depth = V.integer(self.name, "depth", depth)
        V.one_of(self.name, "mode", mode, _MODES)
        V.one_of(self.name, "impl", impl, IMPLS)
        V.flag(self.name, "legacy_bn", legacy_bn)
        if lift_hidden is not None:
            lift_hidden = V.integer(self.name, "lift_hidden", lift_hidden)
        proj_hidden = V.integer(self.name, "proj_hidden", proj_hidden)
        if channel_mlp is not None:
            V.number(self.name, "channel_mlp", channel_mlp, positive=True)
            check(round(width * channel_mlp) >= 1, f"fno2d: channel_mlp={channel_mlp} leaves no hidden channel")
        V.one_of(self.name, "grid", grid, _GRIDS)
        V.one_of(self.name, "spectral_norm", spectral_norm, _NORMS)

        fk = {"device": device, "dtype": dtype}
        self.mode = mode
        self.modes = (m1, m2)
        self.grid_kind = grid
        n_in = t_in * c + (0 if grid == "none" else 2)
        if lift_hidden is None:
            self.lift = nn.Linear(n_in, width, **fk)
        else:
            self.lift = nn.Sequential(
                nn.Linear(n_in, lift_hidden, **fk), nn.GELU(), nn.Linear(lift_hidden, width, **fk)
            )
        mlp_hidden = None if channel_mlp is None else round(width * channel_mlp)
        self.layers = nn.ModuleList(
            FourierLayer2d(
                width, m1, m2, activation=i < depth - 1, impl=impl, mlp_hidden=mlp_hidden,
                spectral_norm=spectral_norm, **fk,
            )
            for i in range(depth)
        )  # fmt: skip
        if legacy_bn:
            # The original script builds bn0..bn3 but never calls them; kept only so the count is 414,517.
            self.unused_bn = nn.ModuleList(nn.BatchNorm2d(width, **fk) for _ in range(depth))
        out = c if mode == "autoregressive" else self.out_frames * c
        self.project = nn.Sequential(
            nn.Linear(width, proj_hidden, **fk), nn.GELU(), nn.Linear(proj_hidden, out, **fk)
        )

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_frames={self.out_frames}, mode={self.mode}, modes={self.modes}"

    @staticmethod
    def grid(
        b: int, h: int, w: int, *, device: torch.device, dtype: torch.dtype, periodic: bool = False
    ) -> torch.Tensor:
        """Normalised coordinates ``[B, H, W, 2]``: ``linspace(0, 1, H)`` down the rows, then across the columns
        (``periodic``: ``linspace(0, 1, N + 1)[:-1]``, the right end left out)."""
        extra = int(periodic)
        gy = torch.linspace(0.0, 1.0, h + extra, device=device, dtype=dtype)[:h]
        gx = torch.linspace(0.0, 1.0, w + extra, device=device, dtype=dtype)[:w]
        g = torch.stack(torch.meshgrid(gy, gx, indexing="ij"), dim=-1)
        return g.expand(b, h, w, 2)

    def step(self, window: torch.Tensor) -> torch.Tensor:
        """One operator application ``[B, T_in, C, H, W] -> [B, H, W, out]`` (``out = C`` or ``T_out * C``)."""
        b, _, _, h, w = window.shape
        v = rearrange(window, "b t c h w -> b h w (t c)")
        if self.grid_kind != "none":
            g = self.grid(b, h, w, device=v.device, dtype=v.dtype, periodic=self.grid_kind == "periodic")
            v = torch.cat([v, g], dim=-1)
        v = rearrange(self.lift(v), "b h w d -> b d h w")
        for layer in self.layers:
            v = layer(v)
        return self.project(rearrange(v, "b d h w -> b h w d"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``."""
        self.check_input(x)
        c = self.in_shape[1]
        if self.mode == "oneshot":
            return rearrange(self.step(x), "b h w (t c) -> b t c h w", c=c)
        frames = []
        for _ in range(self.out_frames):
            nxt = rearrange(self.step(x), "b h w c -> b 1 c h w")
            frames.append(nxt)
            x = torch.cat([x[:, 1:], nxt], dim=1)
        return torch.cat(frames, dim=1)


class FourierLayer3d(nn.Module):
    """One space-time Fourier layer ``[B, width, X, Y, T] -> [B, width, X, Y, T]``: ``act(K(v) + W v)``.

    Args:
        width: channels.
        modes_x: modes kept on each side of the x (H) axis.
        modes_y: modes kept on each side of the y (W) axis.
        modes_t: modes kept on the t (half-spectrum) axis.
        activation: apply GELU (every layer but the last).
        impl: spectral kernel, one of :data:`stpred.kernels.spectral_conv.IMPLS`.
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


@register_model("fno3d")
class FNO3d(SpatioTemporalModel):
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
        impl: spectral-convolution kernel, one of :data:`stpred.kernels.spectral_conv.IMPLS`.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = FNO3d(in_shape=(10, 1, 32, 32), out_frames=8, modes=4, width=8)
        >>> model(torch.zeros(2, 10, 1, 32, 32)).shape
        torch.Size([2, 8, 1, 32, 32])
    """

    name = "fno3d"

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        modes: int | Sequence[int] = 8,
        width: int = 20,
        depth: int = 4,
        padding: int = _TIME_PAD,
        legacy_bn: bool = False,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        padding = V.integer(self.name, "padding", padding, minimum=0)
        mx, my, mt = V.int_tuple(self.name, "modes", modes, 3, "[mx, my, mt]")
        t_in, c, h, w = self.in_shape
        n_t = self.out_frames + padding
        check(
            2 * mx <= h and 2 * my <= w,
            f"fno3d: modes ({mx}, {my}) do not fit the {h}x{w} grid (need 2*mx <= H and 2*my <= W); "
            f"use modes <= ({h // 2}, {w // 2})",
        )
        check(
            mt <= n_t // 2 + 1,
            f"fno3d: modes_t={mt} does not fit out_frames + padding = {n_t} time steps; use modes_t <= {n_t // 2 + 1}",
        )
        width = V.integer(self.name, "width", width)
        depth = V.integer(self.name, "depth", depth)
        V.one_of(self.name, "impl", impl, IMPLS)
        V.flag(self.name, "legacy_bn", legacy_bn)

        fk = {"device": device, "dtype": dtype}
        self.modes = (mx, my, mt)
        self.padding = padding
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
        self.check_input(x)
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
