"""SimVPv2: a convolutional encoder, a gated spatiotemporal-attention (gSTA) translator and a decoder.

Paper: Tan et al., "SimVPv2: Towards Simple yet Powerful Spatiotemporal Predictive Learning", arXiv:2211.12509;
benchmark in OpenSTL, Tan et al., NeurIPS 2023 Datasets and Benchmarks, arXiv:2306.11249.
Original repository: https://github.com/chengtan9907/OpenSTL (Apache-2.0). This is an independent
reimplementation from the architecture description in ``docs/models.md`` §2.

Layout: ``[B, T, C, H, W]`` in and out. Frames are encoded one by one, time is folded into the channels of the
translator (``T * hid_S`` channels at ``H / 2^(N_S/2)``), and the decoder maps every latent frame back.

Horizon (docs/models.md §2.3): the published model maps ``T_in`` frames to ``T_in`` frames. With ``T_out < T_in`` the
output is truncated; with ``T_out > T_in`` and ``rollout="chunked"`` the model is applied to its own output
``T_out // T_in`` times plus a truncated remainder (OpenSTL's autoregressive evaluation). ``rollout="direct"``
(proposed, no published numbers) predicts ``T_out`` frames in a single pass: the translator's last 1x1 conv
projects ``hid_T`` to ``T_out * hid_S`` channels, and every output frame gets the encoder skip of the last input
frame (with ``T_out == T_in`` the per-frame skip is kept, so "direct" is then exactly the published model).

Classification (proposed, no published numbers): with ``num_classes`` instead of ``out_frames`` there is no decoder;
the translator's ``T_in * hid_S`` feature channels are average-pooled over space and fed to a linear layer
(:class:`stpred.layers.ClassifierHead`), giving logits ``[B, num_classes]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from einops import rearrange, repeat

from stpred.errors import check
from stpred.layers.drop import DropPath
from stpred.layers.heads import ClassifierHead
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = [
    "ConvSC",
    "SimVPEncoder",
    "SimVPDecoder",
    "GatedSpatialAttention",
    "MixMlp",
    "GASubBlock",
    "MidMetaNet",
    "SimVPv2",
    "drop_path_rates",
]

_ROLLOUTS = ("chunked", "direct")


def drop_path_rates(drop_path: float, depth: int, *, legacy: bool = False) -> list[float]:
    """Stochastic-depth rate of each translator block.

    OpenSTL uses ``linspace(1e-2, drop_path, depth)``, so with ``drop_path=0`` the early blocks still drop paths
    (up to 1e-2, decreasing). ``legacy=True`` reproduces that for parity; otherwise the ramp starts at
    ``min(1e-2, drop_path)``, which is all zeros for ``drop_path=0`` and the OpenSTL ramp for ``drop_path >= 1e-2``.

    Args:
        drop_path: rate of the last block.
        depth: number of blocks.
        legacy: reproduce OpenSTL's ramp exactly.
    """
    start = 1e-2 if legacy else min(1e-2, drop_path)
    return [float(r) for r in torch.linspace(start, drop_path, depth)]


class ConvSC(nn.Module):
    """Conv -> GroupNorm(2) -> SiLU, optionally strided (down) or followed by PixelShuffle(2) (up).

    ``[N, C_in, H, W] -> [N, C_out, H', W']`` with ``H' = H/2`` (down), ``2H`` (up) or ``H``.

    Args:
        in_channels: input channels.
        out_channels: output channels (even, for GroupNorm(2)).
        kernel_size: odd spatial kernel size.
        downsample: stride 2.
        upsample: conv to ``4 * out_channels`` then PixelShuffle(2).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        downsample: bool = False,
        upsample: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        stride = 2 if downsample else 1
        padding = (kernel_size - stride + 1) // 2
        conv_out = 4 * out_channels if upsample else out_channels
        self.conv = nn.Conv2d(in_channels, conv_out, kernel_size, stride=stride, padding=padding, **fk)
        self.shuffle = nn.PixelShuffle(2) if upsample else nn.Identity()
        self.norm = nn.GroupNorm(2, out_channels, **fk)
        self.act = nn.SiLU()
        nn.init.trunc_normal_(self.conv.weight, std=0.02)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.shuffle(self.conv(x))))


def _samplings(n_s: int) -> list[bool]:
    # Encoder strides [1, 2] * (N_S / 2); the decoder uses the reverse.
    return [False, True] * (n_s // 2)


class SimVPEncoder(nn.Module):
    """Per-frame encoder ``[N, C, H, W] -> (latent [N, hid, H/2^(N_S/2), W/2^(N_S/2)], skip [N, hid, H, W])``.

    Args:
        in_channels: frame channels C.
        hid_channels: hid_S.
        num_layers: N_S (even).
        kernel_size: spatial kernel size.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        hid_channels: int,
        num_layers: int,
        kernel_size: int = 3,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.layers = nn.ModuleList(
            ConvSC(in_channels if i == 0 else hid_channels, hid_channels, kernel_size, downsample=s, **fk)
            for i, s in enumerate(_samplings(num_layers))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.layers[0](x)
        z = skip
        for layer in self.layers[1:]:
            z = layer(z)
        return z, skip


class SimVPDecoder(nn.Module):
    """Per-frame decoder ``([N, hid, h, w], skip [N, hid, H, W]) -> [N, C, H, W]``; the skip enters the last layer.

    Args:
        hid_channels: hid_S.
        out_channels: frame channels C.
        num_layers: N_S (even).
        kernel_size: spatial kernel size.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        hid_channels: int,
        out_channels: int,
        num_layers: int,
        kernel_size: int = 3,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.layers = nn.ModuleList(
            ConvSC(hid_channels, hid_channels, kernel_size, upsample=s, **fk) for s in reversed(_samplings(num_layers))
        )
        self.readout = nn.Conv2d(hid_channels, out_channels, 1, **fk)

    def forward(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            z = layer(z)
        return self.readout(self.layers[-1](z + skip))


class GatedSpatialAttention(nn.Module):
    """gSTA attention ``[N, d, h, w] -> [N, d, h, w]``.

    1x1 -> GELU -> [DW5x5 -> DW7x7 (dilation 3) -> 1x1 to 2d -> sigmoid(g) * f] -> 1x1, plus the input
    (the internal shortcut). The two depth-wise convs approximate a 21x21 kernel.

    Args:
        dim: channels d.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(self, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.proj_in = nn.Conv2d(dim, dim, 1, **fk)
        self.act = nn.GELU()
        self.dw = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, **fk)
        self.dw_dilated = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim, **fk)
        self.gate = nn.Conv2d(dim, 2 * dim, 1, **fk)
        self.proj_out = nn.Conv2d(dim, dim, 1, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.proj_in(x))
        f, g = self.gate(self.dw_dilated(self.dw(a))).chunk(2, dim=1)
        return self.proj_out(torch.sigmoid(g) * f) + x


class MixMlp(nn.Module):
    """Convolutional MLP ``[N, d, h, w] -> [N, d, h, w]``: 1x1 (d -> hidden) -> DW3x3 -> GELU -> drop -> 1x1 -> drop.

    Args:
        dim: channels d.
        hidden: hidden channels.
        drop: dropout rate.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        drop: float = 0.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(dim, hidden, 1, **fk)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **fk)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1, **fk)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dw(self.fc1(x))))
        return self.drop(self.fc2(x))


class GASubBlock(nn.Module):
    """gSTA block ``[N, d, h, w] -> [N, d, h, w]``.

    ``x += DropPath(ls1 * Attn(BN(x)))``; ``x += DropPath(ls2 * MLP(BN(x)))`` with per-channel layer scales.

    Args:
        dim: channels d.
        mlp_ratio: MLP hidden size over d.
        drop: dropout inside the MLP.
        drop_path: stochastic-depth rate.
        init_value: initial layer-scale value.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 8.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        init_value: float = 1e-2,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.norm1 = nn.BatchNorm2d(dim, **fk)
        self.attn = GatedSpatialAttention(dim, **fk)
        self.norm2 = nn.BatchNorm2d(dim, **fk)
        self.mlp = MixMlp(dim, int(dim * mlp_ratio), drop, **fk)
        self.layer_scale1 = nn.Parameter(torch.full((dim,), init_value, **fk))
        self.layer_scale2 = nn.Parameter(torch.full((dim,), init_value, **fk))
        self.drop_path = DropPath(drop_path)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale2[:, None, None] * self.mlp(self.norm2(x)))


class MidMetaNet(nn.Module):
    """gSTA translator ``[N, C_in, h, w] -> [N, C_out, h, w]`` (time folded into channels).

    Block 0 runs at ``C_in`` then a 1x1 conv to ``hid``; the middle blocks at ``hid``; the last block at ``hid``
    then a 1x1 conv to ``C_out``. A 1x1 conv is present only where the channel count changes (as in OpenSTL).

    Args:
        in_channels: ``T_in * hid_S``.
        hid_channels: hid_T.
        out_channels: ``T * hid_S`` of the output (``T_in`` except for the direct rollout).
        depth: N_T >= 2.
        mlp_ratio: gSTA MLP ratio.
        drop: dropout inside the MLPs.
        drop_path: drop-path rate of the last block.
        legacy_drop_path: OpenSTL's drop-path ramp (see :func:`drop_path_rates`).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        hid_channels: int,
        out_channels: int,
        depth: int,
        *,
        mlp_ratio: float = 8.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        legacy_drop_path: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        rates = drop_path_rates(drop_path, depth, legacy=legacy_drop_path)
        dims = [in_channels] + [hid_channels] * (depth - 1)
        self.blocks = nn.ModuleList(GASubBlock(d, mlp_ratio, drop, r, **fk) for d, r in zip(dims, rates))
        self.proj_in = nn.Conv2d(in_channels, hid_channels, 1, **fk) if in_channels != hid_channels else nn.Identity()
        self.proj_out = (
            nn.Conv2d(hid_channels, out_channels, 1, **fk) if out_channels != hid_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(self.blocks[0](x))
        for block in self.blocks[1:]:
            x = block(x)
        return self.proj_out(x)


@register_model("simvpv2")
class SimVPv2(SpatioTemporalModel):
    """SimVPv2 with the gSTA translator; ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]`` (or logits ``[B, K]``).

    Args:
        in_shape: ``(T_in, C, H, W)``; H and W divisible by ``2^(N_S/2)``.
        out_frames: forecast length T_out; ``None`` with ``num_classes`` for a classifier.
        hid_S: spatial hidden channels (even: GroupNorm(2)).
        hid_T: translator hidden channels.
        N_S: encoder and decoder layers (even, >= 2); strides ``[1, 2] * (N_S/2)``.
        N_T: translator blocks (>= 2).
        mlp_ratio: gSTA MLP hidden ratio (8 in every OpenSTL SimVP config).
        drop: dropout inside the translator MLPs.
        drop_path: stochastic depth of the last translator block (ramp from 1e-2).
        spatio_kernel_enc: encoder kernel size (odd).
        spatio_kernel_dec: decoder kernel size (odd).
        rollout: ``"chunked"`` (feed outputs back when ``T_out > T_in``) or ``"direct"`` (one pass to T_out frames).
        legacy_drop_path: OpenSTL's ramp ``linspace(1e-2, drop_path, N_T)`` even when ``drop_path == 0``.
        num_classes: classify into this many classes instead of forecasting (exactly one of ``out_frames`` and
            ``num_classes``); encoder and translator features are pooled into a linear head, no decoder is built.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = SimVPv2(in_shape=(10, 1, 64, 64), out_frames=10, hid_S=8, hid_T=16, N_S=2, N_T=2)
        >>> model(torch.zeros(2, 10, 1, 64, 64)).shape
        torch.Size([2, 10, 1, 64, 64])
        >>> clf = SimVPv2(in_shape=(8, 3, 64, 64), num_classes=5, hid_S=8, hid_T=16, N_S=2, N_T=2)
        >>> clf(torch.zeros(2, 8, 3, 64, 64)).shape
        torch.Size([2, 5])
    """

    name = "simvpv2"
    classifies = True
    input_hint = "the translator is tied to T_in * hid_S channels, so rebuild the model for a new T_in or C"

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        hid_S: int = 64,
        hid_T: int = 512,
        N_S: int = 4,
        N_T: int = 8,
        mlp_ratio: float = 8.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        spatio_kernel_enc: int = 3,
        spatio_kernel_dec: int = 3,
        rollout: str = "chunked",
        legacy_drop_path: bool = False,
        num_classes: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        _validate(
            self.in_shape, hid_S, hid_T, N_S, N_T, mlp_ratio, drop, drop_path, spatio_kernel_enc, spatio_kernel_dec,
            rollout,
        )  # fmt: skip
        V.flag(self.name, "legacy_drop_path", legacy_drop_path)
        t_in, c, h, w = self.in_shape
        self.rollout = rollout
        self.hid_S = hid_S
        self.factor = 2 ** (N_S // 2)
        self.grid_multiple = self.factor
        # Only the direct rollout changes the translator's output width; chunked passes always yield T_in frames.
        self.pass_frames = self.out_frames if rollout == "direct" and self.num_classes is None else t_in
        fk = {"device": device, "dtype": dtype}
        self.encoder = SimVPEncoder(c, hid_S, N_S, spatio_kernel_enc, **fk)
        self.translator = MidMetaNet(
            t_in * hid_S,
            hid_T,
            self.pass_frames * hid_S,
            N_T,
            mlp_ratio=mlp_ratio,
            drop=drop,
            drop_path=drop_path,
            legacy_drop_path=legacy_drop_path,
            **fk,
        )
        if self.num_classes is None:
            self.decoder = SimVPDecoder(hid_S, c, N_S, spatio_kernel_dec, **fk)
        else:
            self.head = ClassifierHead(t_in * hid_S, self.num_classes)
            if device is not None or dtype is not None:
                self.head.to(**{k: v for k, v in fk.items() if v is not None})

    def extra_repr(self) -> str:
        if self.num_classes is not None:
            return f"in_shape={self.in_shape}, num_classes={self.num_classes}"
        return f"in_shape={self.in_shape}, out_frames={self.out_frames}, rollout={self.rollout}"

    def _single_pass(self, x: torch.Tensor) -> torch.Tensor:
        """One encoder-translator-decoder pass: ``[B, T_in, C, H, W] -> [B, pass_frames, C, H, W]``."""
        b, t = x.shape[:2]
        z, skip = self.encoder(rearrange(x, "b t c h w -> (b t) c h w"))
        z = self.translator(rearrange(z, "(b t) c h w -> b (t c) h w", b=b))
        z = rearrange(z, "b (t c) h w -> (b t) c h w", c=self.hid_S)
        if self.pass_frames != t:
            # Direct rollout: every forecast frame gets the skip of the most recent input frame.
            last = rearrange(skip, "(b t) c h w -> b t c h w", b=b)[:, -1]
            skip = repeat(last, "b c h w -> (b t) c h w", t=self.pass_frames)
        y = self.decoder(z, skip)
        return rearrange(y, "(b t) c h w -> b t c h w", b=b)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder + translator ``[B, T_in, C, H, W] -> [B, T_in * hid_S, h, w]`` (time folded into channels)."""
        b = x.shape[0]
        z, _ = self.encoder(rearrange(x, "b t c h w -> (b t) c h w"))
        return self.translator(rearrange(z, "(b t) c h w -> b (t c) h w", b=b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``, or logits ``[B, num_classes]``."""
        self.check_input(x)
        if self.num_classes is not None:
            return self.head(self.forward_features(x))
        t_in, t_out = self.in_shape[0], self.out_frames
        if self.rollout == "direct" or t_out <= t_in:
            return self._single_pass(x)[:, :t_out]
        chunks, done = [], 0
        while done < t_out:
            x = self._single_pass(x)
            chunks.append(x[:, : t_out - done])
            done += t_in
        return torch.cat(chunks, dim=1)


def _validate(
    in_shape: tuple[int, int, int, int],
    hid_S: int,
    hid_T: int,
    N_S: int,
    N_T: int,
    mlp_ratio: float,
    drop: float,
    drop_path: float,
    k_enc: int,
    k_dec: int,
    rollout: str,
) -> None:
    m = "simvpv2"
    check(V.is_int(N_S) and N_S >= 2 and N_S % 2 == 0, f"{m}: N_S must be an even int >= 2, got {N_S!r}")
    V.integer(m, "N_T", N_T, minimum=2, why=" (first and last translator block)")
    V.integer(m, "hid_S", hid_S)
    check(hid_S % 2 == 0, f"{m}: hid_S must be even for GroupNorm(2), got {hid_S}; use e.g. {hid_S + 1}")
    V.integer(m, "hid_T", hid_T)
    _, _, h, w = in_shape
    factor = 2 ** (N_S // 2)
    check(
        h % factor == 0 and w % factor == 0,
        f"simvpv2: H and W must be divisible by 2^(N_S/2) = {factor} for N_S={N_S}, got H={h}, W={w}; "
        f"pad or crop the grid, or lower N_S",
    )
    V.number(m, "mlp_ratio", mlp_ratio, positive=True)
    check(
        int(min(hid_S * in_shape[0], hid_T) * mlp_ratio) >= 1,
        f"simvpv2: mlp_ratio={mlp_ratio} leaves an empty MLP hidden layer; raise it",
    )
    V.rate(m, "drop", drop)
    V.rate(m, "drop_path", drop_path)
    for name, k in (("spatio_kernel_enc", k_enc), ("spatio_kernel_dec", k_dec)):
        check(V.is_int(k) and k > 0 and k % 2 == 1, f"{m}: {name} must be an odd positive int, got {k!r}")
    V.one_of(m, "rollout", rollout, _ROLLOUTS)
