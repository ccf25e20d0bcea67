"""SFNO: the Spectral-Refiner space-time Fourier neural operator (not the *spherical* FNO of torch-harmonics).

Paper: Cao et al., "Spectral-Refiner: Accurate Fine-Tuning of Spatiotemporal Fourier Neural Operator for Turbulent
Flows", ICLR 2025, arXiv:2405.17211. Original repository: https://github.com/scaomath/torch-cfd, ``fno/`` (MIT).
This is an independent reimplementation from ``docs/models.md`` §7. "SFNO" elsewhere in the ecosystem usually
means the Spherical FNO (torch-harmonics); this module is the space-time operator of the Spectral-Refiner.

Layout: ``[B, T, C, H, W]`` in and out; internally ``(b, c, x, y, t)`` with x = H, y = W and t last (the
half-spectrum axis). Time is a grid axis, not a channel, so the operator maps a trajectory to a trajectory:

1. lift: positional channels (x, y, t grids plus ``width - 3`` channels ``exp(beta t) {sin, cos}(pi k t)``) plus
   the input field -> GroupNorm(1) -> 1x1 conv to ``width`` -> ``SpectralConvT`` to ``latent_steps`` -> FFN, and
   ``act(v[..., -1:] + .)`` (the last lifted input step as a residual);
2. ``num_spectral_layers - 1`` x ``act(FFN(SpectralConvS(v)) + W v)``;
3. reduction 1x1 conv ``width -> C``;
4. out-conv: the last input frame is put in front of the latent steps, a ``SpectralConvT`` (C -> C, with a complex
   spectral bias of strength ``delta``) resamples them to ``T_out + 1`` steps, the last ``T_out`` are kept and the
   last input frame is added. With ``temporal_padding`` the out-conv input is left-padded with as many zeros as it
   has steps (and the output cropped), against the wrap-around of the non-periodic time axis.

The positional channels are added to every input channel (the published model has C = 1: the vorticity is
broadcast onto all ``width`` channels). For C > 1 (proposed, no published model), positional channel j gets input
channel ``j mod C``. ``helmholtz=True`` (C = 2, velocity) projects the out-conv output on divergence-free fields,
``u_hat - k (k . u_hat) / |k|^2``.

Spectral weights are ``SpectralConv3d`` tensors ``[C_in, C_out, 2 mx, 2 my, mt, 2]`` (the four ±x, ±y corners of
the reference in one tensor; rows ``>= m`` are the negative frequencies), initialised ``0.5 / (C_in C_out) U[0, 1)``.
The spectral bias ``[2 mx, 2 my, mt, 2]`` (shared by the output channels) is added to the kept modes; because the
inverse FFT is linear, it is applied as the equivalent physical-space field. FFTs run in float32 (float64 stays
float64) with autocast off.

Published FNO-data configuration (docs/models.md §7.3): modes 12, modes_t 5, width 20, beta = 1e-2 and an FFN hidden
width of 128 (``ffn_hidden=128``, from an earlier torch-cfd default where ``channel_expansion`` was the hidden
width itself) = 9,250,333 parameters; with today's ``channel_expansion=4`` (hidden 80) it is 9,242,461.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from einops import rearrange

from stpred.errors import check
from stpred.kernels.spectral_conv import IMPLS
from stpred.layers.spectral_conv import SpectralConv3d
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = [
    "space_time_encoding",
    "SpectralConvS",
    "SpectralConvT",
    "FeedForward3d",
    "LiftingOperator",
    "SpectralBlock",
    "OutConv",
    "SFNO",
]

_NORMS = ("backward", "forward", "ortho")
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
#: The time grid of the positional encoding is ``t_j = (j + 1) / 100`` (torch-cfd's ``max_time_steps``).
_PE_TIME_STEPS = 100


def _spectral_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def space_time_encoding(
    width: int, nx: int, ny: int, nt: int, *, beta: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Positional channels ``[1, width, nx, ny, nt]``: x, y and t grids, then ``width - 3`` time channels.

    Channel ``3 + k`` is ``exp(beta t) sin(pi (k+1) t)`` for even ``k`` and ``exp(beta t) cos(pi (k+1) t)`` for odd
    ``k``, with ``t_j = (j + 1) / 100``; x and y are ``linspace(0, 1, n)``.
    """
    f64 = {"device": device, "dtype": torch.float64}
    gx = torch.linspace(0.0, 1.0, nx, **f64)
    gy = torch.linspace(0.0, 1.0, ny, **f64)
    gt = torch.arange(1, nt + 1, **f64) / _PE_TIME_STEPS
    k = torch.arange(width - 3, **f64)
    phase = math.pi * (k[:, None] + 1) * gt[None, :]
    waves = torch.where((k % 2 == 0)[:, None], torch.sin(phase), torch.cos(phase)) * torch.exp(beta * gt)[None, :]
    channels = [
        gx[:, None, None].expand(nx, ny, nt),
        gy[None, :, None].expand(nx, ny, nt),
        gt[None, None, :].expand(nx, ny, nt),
        *(wave[None, None, :].expand(nx, ny, nt) for wave in waves),
    ]
    return torch.stack(channels)[None].to(dtype)


class SpectralConvS(nn.Module):
    """Space-time spectral convolution at the same size, ``[B, C_in, X, Y, T] -> [B, C_out, X, Y, T]``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        modes_x: modes on each side of x.
        modes_y: modes on each side of y.
        modes_t: modes on t (half spectrum).
        bias: add a learnable complex spectral bias ``delta * b`` (``[2 mx, 2 my, mt, 2]``, zero at start).
        delta: strength of the spectral bias.
        norm: FFT normalisation.
        impl: spectral kernel.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes_x: int,
        modes_y: int,
        modes_t: int,
        *,
        bias: bool = False,
        delta: float = 1.0,
        norm: str = "backward",
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.modes = (modes_x, modes_y, modes_t)
        self.delta, self.norm = float(delta), norm
        self.conv = SpectralConv3d(
            in_channels,
            out_channels,
            modes_x,
            modes_y,
            modes_t,
            out_last=self._conv_out_len(),
            norm=norm,
            init_scale=0.5 / (in_channels * out_channels),
            impl=impl,
            device=device,
            dtype=dtype,
        )
        if bias:
            self.bias = nn.Parameter(torch.zeros(2 * modes_x, 2 * modes_y, modes_t, 2, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def _conv_out_len(self) -> int | None:
        return None

    def extra_repr(self) -> str:
        return f"modes={self.modes}, bias={self.bias is not None}, delta={self.delta}"

    def bias_field(self, nx: int, ny: int, nt: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The spectral bias in physical space, ``[nx, ny, nt]``: ``irfftn`` of ``delta * b`` on the kept modes."""
        mx, my, mt = self.modes
        with torch.autocast(device_type=device.type, enabled=False):
            b = torch.view_as_complex(self.bias.to(dtype).contiguous())
            spec = torch.zeros(nx, ny, nt // 2 + 1, dtype=b.dtype, device=device)
            for src_x, dst_x in ((slice(0, mx), slice(0, mx)), (slice(mx, 2 * mx), slice(nx - mx, nx))):
                for src_y, dst_y in ((slice(0, my), slice(0, my)), (slice(my, 2 * my), slice(ny - my, ny))):
                    spec[dst_x, dst_y, :mt] = b[src_x, src_y]
            return self.delta * torch.fft.irfftn(spec, s=(nx, ny, nt), norm=self.norm)

    def _spectral(self, v: torch.Tensor) -> torch.Tensor:
        y = self.conv(v)
        if self.bias is None:
            return y
        field = self.bias_field(*y.shape[-3:], device=y.device, dtype=_spectral_dtype(y))
        return y + field.to(y.dtype)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, X, Y, T] -> [B, C_out, X, Y, T]``."""
        return self._spectral(v)


class SpectralConvT(SpectralConvS):
    """Space-time spectral convolution that resamples time: ``[B, C_in, X, Y, T] -> [B, C_out, X, Y, out_steps]``.

    The inverse transform is ``irfftn(s=(X, Y, out_steps))``, so the kept time modes are evaluated on a new grid.
    With ``temporal_padding`` the input is left-padded by ``in_steps`` zeros, transformed to
    ``out_steps + in_steps`` steps and the last ``out_steps`` are kept.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        modes_x: modes on each side of x.
        modes_y: modes on each side of y.
        modes_t: modes on t (half spectrum).
        out_steps: output length of t.
        temporal_padding: left-pad t by the input length (needs ``in_steps``).
        in_steps: input length of t, fixed when ``temporal_padding``.
        bias: learnable complex spectral bias.
        delta: strength of the spectral bias.
        norm: FFT normalisation.
        impl: spectral kernel.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes_x: int,
        modes_y: int,
        modes_t: int,
        *,
        out_steps: int,
        temporal_padding: bool = False,
        in_steps: int | None = None,
        bias: bool = False,
        delta: float = 1.0,
        norm: str = "backward",
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if temporal_padding and in_steps is None:
            raise ValueError("SpectralConvT: temporal_padding needs in_steps")
        self.out_steps = int(out_steps)
        self.pad_steps = int(in_steps) if temporal_padding else 0
        super().__init__(
            in_channels,
            out_channels,
            modes_x,
            modes_y,
            modes_t,
            bias=bias,
            delta=delta,
            norm=norm,
            impl=impl,
            device=device,
            dtype=dtype,
        )

    def _conv_out_len(self) -> int | None:
        return self.out_steps + self.pad_steps

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, out_steps={self.out_steps}, pad_steps={self.pad_steps}"

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, X, Y, T] -> [B, C_out, X, Y, out_steps]``."""
        if self.pad_steps:
            if v.shape[-1] != self.pad_steps:
                raise ValueError(f"SpectralConvT with temporal padding expects {self.pad_steps} steps, got {v.shape}")
            v = nn.functional.pad(v, (self.pad_steps, 0))
        return self._spectral(v)[..., -self.out_steps :]


class FeedForward3d(nn.Module):
    """Pointwise FFN ``Conv3d(C, hidden, 1) -> act -> Conv3d(hidden, C, 1)``."""

    def __init__(self, channels: int, hidden: int, activation: str, **fk: object) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, hidden, 1, **fk)
        self.act = _ACTIVATIONS[activation]()
        self.fc2 = nn.Conv3d(hidden, channels, 1, **fk)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(v)))


class LiftingOperator(nn.Module):
    """``[B, C, X, Y, T_in] -> [B, width, X, Y, latent_steps]``: positional channels, GN, 1x1 conv, SpectralConvT, FFN.

    Args:
        channels: input channels C.
        width: latent channels (also the number of positional channels).
        modes: ``(mx, my, mt)``.
        latent_steps: output length of t.
        beta: exponential rate of the time channels.
        hidden: FFN hidden channels.
        activation: ``"relu" | "gelu"``.
        norm: FFT normalisation.
        impl: spectral kernel.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        modes: tuple[int, int, int],
        latent_steps: int,
        *,
        beta: float,
        hidden: int,
        activation: str,
        norm: str,
        impl: str,
        **fk: object,
    ) -> None:
        super().__init__()
        self.width, self.beta = width, float(beta)
        # Positional channel j receives input channel j mod C (for C = 1 the reference's broadcast add).
        self.register_buffer("channel_index", torch.arange(width) % channels, persistent=False)
        self.norm = nn.GroupNorm(1, width, eps=1e-7, **fk)
        self.proj = nn.Conv3d(width, width, 1, **fk)
        self.sconv = SpectralConvT(width, width, *modes, out_steps=latent_steps, norm=norm, impl=impl, **fk)
        self.ffn = FeedForward3d(width, hidden, activation, **fk)
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, nx, ny, nt = x.shape
        pe = space_time_encoding(self.width, nx, ny, nt, beta=self.beta, device=x.device, dtype=x.dtype)
        v = self.proj(self.norm(x[:, self.channel_index] + pe))
        return self.act(v[..., -1:] + self.ffn(self.sconv(v)))


class SpectralBlock(nn.Module):
    """``act(FFN(SpectralConvS(v)) + W v)`` on ``[B, width, X, Y, T]``."""

    def __init__(
        self, width: int, modes: tuple[int, int, int], *, hidden: int, activation: str, norm: str, impl: str, **fk
    ) -> None:
        super().__init__()
        self.sconv = SpectralConvS(width, width, *modes, norm=norm, impl=impl, **fk)
        self.ffn = FeedForward3d(width, hidden, activation, **fk)
        self.skip = nn.Conv3d(width, width, 1, **fk)
        self.act = _ACTIVATIONS[activation]()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.act(self.ffn(self.sconv(v)) + self.skip(v))


def _helmholtz(v: torch.Tensor) -> torch.Tensor:
    """Divergence-free part of velocity fields ``[B, 2, X, Y, T]`` (components along x and y)."""
    nx, ny = v.shape[2], v.shape[3]
    dtype = _spectral_dtype(v)
    with torch.autocast(device_type=v.device.type, enabled=False):
        k1 = torch.fft.fftfreq(nx, d=1.0 / nx, dtype=dtype, device=v.device).round()[:, None, None]
        k2 = torch.fft.rfftfreq(ny, d=1.0 / ny, dtype=dtype, device=v.device).round()[None, :, None]
        k_sq = k1**2 + k2**2
        k_sq[0, 0] = 1.0  # the mean flow has no divergence and is kept
        u_hat = torch.fft.rfftn(v.to(dtype), dim=(2, 3))
        div = (k1 * u_hat[:, 0] + k2 * u_hat[:, 1]) / k_sq
        u_hat = torch.stack([u_hat[:, 0] - k1 * div, u_hat[:, 1] - k2 * div], dim=1)
        return torch.fft.irfftn(u_hat, s=(nx, ny), dim=(2, 3)).to(v.dtype)


class OutConv(nn.Module):
    """Latent ``[B, C, X, Y, L]`` + last input frame ``[B, C, X, Y, 1]`` -> ``[B, C, X, Y, out_steps]``.

    Args:
        channels: field channels C.
        modes: ``(mx, my, mt)`` of the spectral conv.
        latent_steps: L.
        out_steps: T_out.
        delta: strength of the spectral bias.
        temporal_padding: left-pad time by the input length (L + 1).
        helmholtz: project the output on divergence-free velocity fields (C = 2).
        norm: FFT normalisation.
        impl: spectral kernel.
    """

    def __init__(
        self,
        channels: int,
        modes: tuple[int, int, int],
        latent_steps: int,
        out_steps: int,
        *,
        delta: float,
        temporal_padding: bool,
        helmholtz: bool,
        norm: str,
        impl: str,
        **fk: object,
    ) -> None:
        super().__init__()
        self.channels, self.latent_steps, self.out_steps = channels, latent_steps, out_steps
        self.delta, self.temporal_padding, self.helmholtz = delta, temporal_padding, helmholtz
        self.norm, self.impl = norm, impl
        self.conv = SpectralConvT(
            channels,
            channels,
            *modes,
            out_steps=out_steps + 1,
            temporal_padding=temporal_padding,
            in_steps=latent_steps + 1,
            bias=True,
            delta=delta,
            norm=norm,
            impl=impl,
            **fk,
        )

    @property
    def modes(self) -> tuple[int, int, int]:
        return self.conv.modes

    def max_modes(self, nx: int, ny: int) -> tuple[int, int, int]:
        """The untruncated modes on an ``nx x ny`` grid: every spatial mode and every time mode both lengths hold."""
        pad = self.latent_steps + 1 if self.temporal_padding else 0
        n_in, n_out = self.latent_steps + 1 + pad, self.out_steps + 1 + pad
        return nx // 2, ny // 2, min(n_in // 2 + 1, n_out // 2 + 1)

    def with_modes(self, modes: tuple[int, int, int], *, init_gain: float = 1e-6) -> OutConv:
        """A copy keeping ``modes >=`` the current ones: old weights and bias in the low modes, new weight entries
        Xavier-uniform with gain ``init_gain`` and new bias entries 0 (the Spectral-Refiner's expansion)."""
        old_m = self.modes
        check(all(n >= o for n, o in zip(modes, old_m)), f"OutConv.with_modes: {modes} must not be below {old_m}")
        w = self.conv.conv.weight
        new = OutConv(
            self.channels,
            tuple(int(m) for m in modes),
            self.latent_steps,
            self.out_steps,
            delta=self.delta,
            temporal_padding=self.temporal_padding,
            helmholtz=self.helmholtz,
            norm=self.norm,
            impl=self.impl,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            nn.init.xavier_uniform_(new.conv.conv.weight, gain=init_gain)
            new.conv.bias.zero_()
            _copy_low_modes(new.conv.conv.weight, w, old_m, modes, lead=2)
            _copy_low_modes(new.conv.bias, self.conv.bias, old_m, modes, lead=0)
        return new

    def forward(self, latent: torch.Tensor, last_frame: torch.Tensor) -> torch.Tensor:
        v = torch.cat([last_frame, latent], dim=-1)
        v = self.conv(v)
        if self.helmholtz:
            v = _helmholtz(v)
        return last_frame + v[..., -self.out_steps :]


def _copy_low_modes(dst: torch.Tensor, src: torch.Tensor, old: Sequence[int], new: Sequence[int], lead: int) -> None:
    """Copy the corner blocks of ``src`` (modes ``old``) into ``dst`` (modes ``new``); the x, y axes follow ``lead``."""
    (mx, my, mt), (nmx, nmy) = old, new[:2]
    ax = [slice(None)] * lead
    for s_x, d_x in ((slice(0, mx), slice(0, mx)), (slice(mx, 2 * mx), slice(2 * nmx - mx, 2 * nmx))):
        for s_y, d_y in ((slice(0, my), slice(0, my)), (slice(my, 2 * my), slice(2 * nmy - my, 2 * nmy))):
            dst[(*ax, d_x, d_y, slice(0, mt))] = src[(*ax, s_x, s_y)]


@register_model("sfno")
class SFNO(SpatioTemporalModel):
    """Spectral-Refiner space-time FNO ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]`` (not the spherical FNO).

    Args:
        in_shape: ``(T_in, C, H, W)``.
        out_frames: forecast length T_out.
        modes: spatial modes kept on each side, an int or ``[mx, my]``; ``2*mx <= H``, ``2*my <= W``.
        modes_t: time modes kept; ``<= T_in//2 + 1`` and ``<= latent_steps//2 + 1``.
        width: latent channels (> 3; also the number of positional channels).
        beta: exponential rate of the positional time channels (-1e-2; +1e-2 for the FNO data).
        delta: strength of the out-conv spectral bias.
        num_spectral_layers: spectral convolutions in all, the lifting one included (>= 2).
        latent_steps: time steps of the latent trajectory.
        channel_expansion: FFN hidden width as a multiple of ``width``.
        ffn_hidden: FFN hidden width; overrides ``channel_expansion`` (128 in the published FNO-data model).
        activation: ``"relu" | "gelu"``.
        temporal_padding: left-pad the out-conv's time axis.
        fft_norm: FFT normalisation, ``"backward"`` as published.
        helmholtz: project the output on divergence-free fields (velocity, C = 2).
        impl: spectral kernel, one of :data:`stpred.kernels.spectral_conv.IMPLS`.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = SFNO(in_shape=(10, 1, 32, 32), out_frames=20, modes=4, modes_t=3, width=8)
        >>> model(torch.zeros(2, 10, 1, 32, 32)).shape
        torch.Size([2, 20, 1, 32, 32])
    """

    name = "sfno"

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        modes: int | Sequence[int] = 12,
        modes_t: int = 5,
        width: int = 20,
        beta: float = -1e-2,
        delta: float = 1e-1,
        num_spectral_layers: int = 4,
        latent_steps: int = 10,
        channel_expansion: int = 4,
        ffn_hidden: int | None = None,
        activation: str = "relu",
        temporal_padding: bool = True,
        fft_norm: str = "backward",
        helmholtz: bool = False,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        m = self.name
        t_in, c, h, w = self.in_shape
        mx, my = V.int_tuple(m, "modes", modes, 2, "[mx, my]")
        check(
            2 * mx <= h and 2 * my <= w,
            f"sfno: modes ({mx}, {my}) do not fit the {h}x{w} grid (need 2*mx <= H and 2*my <= W); "
            f"use modes <= ({h // 2}, {w // 2})",
        )
        V.integer(m, "latent_steps", latent_steps)
        V.integer(m, "modes_t", modes_t)
        limit = min(t_in // 2 + 1, latent_steps // 2 + 1)
        check(
            modes_t <= limit,
            f"sfno: modes_t={modes_t} does not fit T_in={t_in} and latent_steps={latent_steps} "
            f"(need modes_t <= T//2+1 for both); use modes_t <= {limit}",
        )
        V.integer(m, "width", width, minimum=4, why=" (3 coordinate channels)")
        check(width >= c, f"sfno: width={width} must be at least the {c} input channels")
        V.integer(m, "num_spectral_layers", num_spectral_layers, minimum=2, why=" (the lifting layer counts)")
        V.integer(m, "channel_expansion", channel_expansion)
        check(
            ffn_hidden is None or (V.is_int(ffn_hidden) and ffn_hidden > 0),
            f"sfno: ffn_hidden must be null or a positive int, got {ffn_hidden!r}",
        )
        V.number(m, "beta", beta)
        V.number(m, "delta", delta)
        act = activation.lower() if isinstance(activation, str) else activation
        check(act in _ACTIVATIONS, f"sfno: activation must be one of {'|'.join(_ACTIVATIONS)}, got {activation!r}")
        V.flag(m, "temporal_padding", temporal_padding)
        V.one_of(m, "fft_norm", fft_norm, _NORMS)
        V.one_of(m, "impl", impl, IMPLS)
        V.flag(m, "helmholtz", helmholtz)
        check(not helmholtz or c == 2, f"sfno: helmholtz projects 2-component velocity; in_shape has C={c}")

        fk = {"device": device, "dtype": dtype}
        hidden = int(ffn_hidden) if ffn_hidden is not None else channel_expansion * width
        spectral = {"norm": fft_norm, "impl": impl}
        m3 = (mx, my, int(modes_t))
        self.modes = m3
        self.latent_steps = int(latent_steps)
        self.lift = LiftingOperator(
            c, width, m3, self.latent_steps, beta=beta, hidden=hidden, activation=act, **spectral, **fk
        )
        self.blocks = nn.ModuleList(
            SpectralBlock(width, m3, hidden=hidden, activation=act, **spectral, **fk)
            for _ in range(num_spectral_layers - 1)
        )
        self.reduction = nn.Conv3d(width, c, 1, **fk)
        self.head = OutConv(
            c,
            m3,
            self.latent_steps,
            self.out_frames,
            delta=float(delta),
            temporal_padding=temporal_padding,
            helmholtz=helmholtz,
            **spectral,
            **fk,
        )

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_frames={self.out_frames}, modes={self.modes}, "
            f"latent_steps={self.latent_steps}"
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent trajectory ``[B, C, H, W, latent_steps]`` of ``x`` ``[B, T_in, C, H, W]``, before the out-conv."""
        self.check_input(x)
        v = self.lift(rearrange(x, "b t c h w -> b c h w t"))
        for block in self.blocks:
            v = block(v)
        return self.reduction(v)

    def decode(self, latent: torch.Tensor, x: torch.Tensor, head: OutConv | None = None) -> torch.Tensor:
        """Out-conv of ``latent`` and the last frame of ``x``: ``[B, T_out, C, H, W]`` (``head`` replaces its own)."""
        last = rearrange(x[:, -1:], "b t c h w -> b c h w t")
        # The out-conv adds the input frame back, so it runs in the input's precision (not autocast's bf16).
        y = (head if head is not None else self.head)(latent.to(last.dtype), last)
        return rearrange(y, "b c h w t -> b t c h w")

    def refinement_head(
        self,
        modes: tuple[int, int, int] | None = None,
        *,
        grid: tuple[int, int] | None = None,
        init_gain: float = 1e-6,
    ) -> tuple[OutConv, dict[str, list[nn.Parameter]]]:
        """A trainable copy of the out-conv with more modes (the Spectral-Refiner's expansion); ``self`` is unchanged.

        Args:
            modes: ``(mx, my, mt)``, none below the trained ones; the untruncated maximum on ``grid`` when ``None``.
            grid: ``(H, W)`` the head will run on; the model's own by default.
            init_gain: Xavier gain of the new weight entries (the trained weights and bias fill the low modes).

        Returns:
            ``(head, groups)``: the head (for :meth:`decode`), all its parameters requiring grad, and its parameters
            by kind, ``{"bias": [spectral bias], "weight": [spectral weights]}``, for per-group learning rates.
        """
        nx, ny = grid if grid is not None else self.in_shape[2:]
        head = self.head.with_modes(modes or self.head.max_modes(nx, ny), init_gain=init_gain).requires_grad_(True)
        return head, {"bias": [head.conv.bias], "weight": [head.conv.conv.weight]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``."""
        return self.decode(self.encode(x), x)
