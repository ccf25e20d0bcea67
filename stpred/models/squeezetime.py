"""SqueezeTime: time squeezed into the channel axis, then a 2-D ResNet-50 of Channel-Time Learning (CTL) blocks.

Paper: Zhai et al., "No Time to Waste: Squeeze Time into Channel for Mobile Video Understanding", arXiv:2405.08344.
Original repository: https://github.com/xinghaochen/SqueezeTime (Apache-2.0, an mmaction2 plug-in). This is an
independent reimplementation from ``docs/models.md`` §4: no mmaction registry, no ``.cuda()`` at construction.

Layout: ``[B, T, C, H, W]`` in. The clip is squeezed **channel-major** into ``C * T`` image channels (channel
``c * T + t``: R0..R(T-1), G0.., B0..), and everything afterwards is 2-D:

    stem conv5x5/2 (C*T -> w0) -> BN -> ReLU -> maxpool 3x3/2
    -> 4 stages of CTL Bottlenecks (depths [3, 4, 6, 3], widths [64, 128, 256, 512] x 4, strides [1, 2, 2, 2];
       a stride-2 stage first applies a depth-wise 2x2/2 conv + BN)
    -> classification: global average pool -> Dropout(0.5) -> Linear(2048, num_classes)

CTL (docs/models.md §4.2), ``in -> out`` channels at stride 1:
    ``p = sigmoid(conv1x1(ReLU(BN(conv1x1(GAP(x))))))`` (temporal importance; the hidden width equals the input
    width in the reference), ``branch1 = conv1x1(p * x)``, ``branch2 = conv3x3(x) * gate(p * x)`` with
    ``gate = sigmoid(conv3x3(ReLU(BN(conv7x7(ReLU(BN(conv3x3(.))) + pos_embed)))))`` on ``gate_channels`` (16), and a
    learnable ``pos_embed`` bilinearly resized to the feature map (it restores the frame order the squeeze loses).
    ``CTL(x) = branch1 + branch2``.

At 400 classes, 16 frames, 224x224 the classifier has 28.7M parameters (published). ``pos_dim=None`` (default) sizes
every stage's ``pos_embed`` to that stage's feature map for ``in_shape`` (56, 28, 14, 7 at 224, the published
K400 setting); an explicit ``pos_dim`` that differs from the feature map is bilinearly resized at every call.

Forecasting (**proposed**, docs/models.md §4.4; no published numbers): with ``out_frames`` the same channel-major
squeeze
of ``T_in * C`` channels feeds a conv stem (the full-resolution skip), ``forecast_down`` depth-wise 2x2/2
downsamplings, ``forecast_depth`` CTL Bottlenecks at ``forecast_hid`` channels as the translator, and a
SimVP-style decoder (conv -> PixelShuffle(2) -> GroupNorm(2) -> SiLU per level, + skip, conv, 1x1 readout to
``T_out * C`` channels, unsqueezed channel-major to ``[B, T_out, C, H, W]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from stpred.errors import check
from stpred.layers.heads import ClassifierHead
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = [
    "squeeze_time",
    "unsqueeze_time",
    "TemporalImportance",
    "ObjectInteraction",
    "CTL",
    "CTLBottleneck",
    "SqueezeTime",
]

_EXPANSION = 4


def squeeze_time(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, H, W] -> [B, C * T, H, W]``, channel-major: frame ``t`` of channel ``c`` lands at ``c * T + t``."""
    return rearrange(x, "b t c h w -> b (c t) h w")


def unsqueeze_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Inverse of :func:`squeeze_time`: ``[B, C * T, H, W] -> [B, T, C, H, W]``."""
    return rearrange(x, "b (c t) h w -> b t c h w", t=frames)


class TemporalImportance(nn.Module):
    """Per-channel importance in (0, 1): ``[N, d, H, W] -> [N, d, 1, 1]``.

    GAP -> conv1x1 (d -> d, no bias) -> BN -> ReLU -> conv1x1 (d -> d, no bias) -> sigmoid.

    Args:
        dim: channels d (squeezed time x features).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(self, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.fc1 = nn.Conv2d(dim, dim, 1, bias=False, **fk)
        self.bn = nn.BatchNorm2d(dim, **fk)
        self.fc2 = nn.Conv2d(dim, dim, 1, bias=False, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(-2, -1), keepdim=True)
        return torch.sigmoid(self.fc2(F.relu(self.bn(self.fc1(pooled)))))


class ObjectInteraction(nn.Module):
    """Inter-temporal object interaction ``(x [N, d_in, H, W], p [N, d_in, 1, 1]) -> [N, d_out, H, W]``.

    ``conv3x3(x) * gate(x * p)``; the gate is conv3x3 (d_in -> g) -> BN -> ReLU -> + pos_embed -> conv7x7 (g -> g)
    -> BN -> ReLU -> conv3x3 (g -> d_out) -> sigmoid, with ``pos_embed`` of shape ``[1, g, *pos_dim]`` resized
    bilinearly (``align_corners=True``) when the feature map has another size.

    Args:
        in_channels: d_in.
        out_channels: d_out.
        pos_dim: ``pos_embed`` size ``(h, w)``.
        gate_channels: g (16 in the paper).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pos_dim: tuple[int, int],
        gate_channels: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        g = gate_channels
        self.short = nn.Conv2d(in_channels, out_channels, 3, padding=1, **fk)
        self.gate_in = nn.Conv2d(in_channels, g, 3, padding=1, **fk)
        self.gate_bn1 = nn.BatchNorm2d(g, **fk)
        self.gate_mid = nn.Conv2d(g, g, 7, padding=3, **fk)
        self.gate_bn2 = nn.BatchNorm2d(g, **fk)
        self.gate_out = nn.Conv2d(g, out_channels, 3, padding=1, **fk)
        self.pos_embed = nn.Parameter(torch.empty(1, g, *pos_dim, **fk))
        nn.init.kaiming_normal_(self.pos_embed, mode="fan_out", nonlinearity="relu")

    def position(self, size: tuple[int, int]) -> torch.Tensor:
        """``pos_embed`` at feature-map ``size`` ``(H, W)``: ``[1, g, H, W]``."""
        if tuple(self.pos_embed.shape[-2:]) == tuple(size):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=size, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        g = F.relu(self.gate_bn1(self.gate_in(x * p)))
        g = g + self.position(g.shape[-2:])
        g = F.relu(self.gate_bn2(self.gate_mid(g)))
        return self.short(x) * torch.sigmoid(self.gate_out(g))


class CTL(nn.Module):
    """Channel-Time Learning module ``[N, d_in, H, W] -> [N, d_out, H, W]`` (stride 1).

    ``conv1x1(p * x) + ObjectInteraction(x, p)`` with ``p = TemporalImportance(x)``.

    Args:
        in_channels: d_in.
        out_channels: d_out.
        pos_dim: ``pos_embed`` size ``(h, w)``.
        gate_channels: hidden channels of the interaction gate.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pos_dim: tuple[int, int],
        gate_channels: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.importance = TemporalImportance(in_channels, **fk)
        self.temporal = nn.Conv2d(in_channels, out_channels, 1, bias=False, **fk)
        self.interaction = ObjectInteraction(in_channels, out_channels, pos_dim, gate_channels, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.importance(x)
        return self.temporal(p * x) + self.interaction(x, p)


class CTLBottleneck(nn.Module):
    """ResNet Bottleneck with a CTL in the middle: ``[N, d_in, H, W] -> [N, 4 * planes, H / stride, W / stride]``.

    [DW2x2/2 + BN if stride 2] -> conv1x1 -> BN -> ReLU -> CTL -> BN -> ReLU -> conv1x1 (x4) -> BN, plus the
    (downsampled) input, through a conv1x1 + BN where the width changes; then ReLU.

    Args:
        in_channels: d_in.
        planes: bottleneck width; the output has ``4 * planes`` channels.
        stride: 1 or 2.
        pos_dim: ``pos_embed`` size of the CTL ``(h, w)``.
        gate_channels: hidden channels of the CTL gate.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        pos_dim: tuple[int, int],
        gate_channels: int = 16,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        out_channels = planes * _EXPANSION
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 2, stride=2, groups=in_channels, **fk),
                nn.BatchNorm2d(in_channels, **fk),
            )
            if stride == 2
            else nn.Identity()
        )
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False, **fk)
        self.bn1 = nn.BatchNorm2d(planes, **fk)
        self.ctl = CTL(planes, planes, pos_dim, gate_channels, **fk)
        self.bn2 = nn.BatchNorm2d(planes, **fk)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False, **fk)
        self.bn3 = nn.BatchNorm2d(out_channels, **fk)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False, **fk), nn.BatchNorm2d(out_channels, **fk))
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.ctl(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class _ForecastUp(nn.Module):
    """SimVP-style upsampling ``[N, d, h, w] -> [N, d, 2h, 2w]``: conv3x3 to 4d -> PixelShuffle(2) -> GN(2) -> SiLU."""

    def __init__(self, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(dim, 4 * dim, 3, padding=1, **fk)
        self.shuffle = nn.PixelShuffle(2)
        self.norm = nn.GroupNorm(2, dim, **fk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.shuffle(self.conv(x))))


def _conv_bn_relu(c_in: int, c_out: int, fk: dict) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False, **fk), nn.BatchNorm2d(c_out, **fk), nn.ReLU(inplace=True)
    )


def _stage_sizes(h: int, w: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map size entering each stage's CTLs: stem conv5x5/2 and maxpool 3x3/2 round up, DW 2x2/2 down."""
    h, w = (h + 1) // 2, (w + 1) // 2
    h, w = (h + 1) // 2, (w + 1) // 2
    sizes = []
    for s in strides:
        h, w = h // s, w // s
        sizes.append((h, w))
    return sizes


@register_model("squeezetime")
class SqueezeTime(SpatioTemporalModel):
    """SqueezeTime: a clip classifier ``[B, T, C, H, W] -> [B, num_classes]`` or a forecaster (proposed).

    Give exactly one of ``out_frames`` (forecast, ``[B, T_out, C, H, W]``) and ``num_classes`` (classification).
    The classification backbone knobs (``depths`` .. ``dropout``) apply to the classifier, the ``forecast_*`` knobs
    to the forecaster; ``gate_channels`` to both.

    Args:
        in_shape: ``(T, C, H, W)``; ``T * C`` is the number of squeezed input channels.
        out_frames: forecast length T_out.
        num_classes: number of classes.
        depths: CTL Bottlenecks per stage ([3, 4, 6, 3] is the ResNet-50 layout of the paper).
        widths: bottleneck widths per stage; a stage outputs ``4 * width`` channels, the stem ``widths[0]``.
        strides: spatial stride of each stage (1 or 2; 2 = a depth-wise 2x2/2 conv + BN before the stage).
        pos_dim: ``pos_embed`` size per stage, each an int (square) or ``[h, w]``; ``None`` uses each stage's
            feature-map size for ``in_shape`` (``[56, 28, 14, 7]`` at 224x224).
        gate_channels: hidden channels of every CTL's interaction gate (16 in the paper).
        dropout: dropout before the classifier's linear layer.
        forecast_hid: forecaster width (a multiple of 4: its CTL Bottlenecks run at ``forecast_hid / 4``).
        forecast_depth: CTL Bottlenecks in the forecaster's translator.
        forecast_down: downsamplings by 2 before the translator (H and W divisible by ``2^forecast_down``).
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> clf = SqueezeTime(in_shape=(8, 3, 64, 64), num_classes=5, widths=(8, 8, 16, 16), depths=(1, 1, 1, 1))
        >>> clf(torch.zeros(2, 8, 3, 64, 64)).shape
        torch.Size([2, 5])
        >>> fc = SqueezeTime(in_shape=(10, 1, 64, 64), out_frames=10, forecast_hid=16, forecast_depth=2)
        >>> fc(torch.zeros(2, 10, 1, 64, 64)).shape
        torch.Size([2, 10, 1, 64, 64])
    """

    name = "squeezetime"
    classifies = True
    input_hint = "the stem is tied to T * C squeezed channels, so rebuild the model for a new T or C"

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        depths: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[int] = (1, 2, 2, 2),
        pos_dim: Sequence[int | Sequence[int]] | None = None,
        gate_channels: int = 16,
        dropout: float = 0.5,
        forecast_hid: int = 64,
        forecast_depth: int = 4,
        forecast_down: int = 2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        V.integer(self.name, "gate_channels", gate_channels)
        fk = {"device": device, "dtype": dtype}
        if self.num_classes is not None:
            sizes = _validate_classifier(self.in_shape, depths, widths, strides, pos_dim, dropout)
            self._build_classifier(depths, widths, strides, sizes, gate_channels, dropout, fk)
        else:
            _validate_forecaster(self.in_shape, forecast_hid, forecast_depth, forecast_down)
            self.grid_multiple = 2**forecast_down
            self._build_forecaster(forecast_hid, forecast_depth, forecast_down, gate_channels, fk)
        self._init_weights()

    # -- construction ----------------------------------------------------------------------------------------
    def _build_classifier(self, depths, widths, strides, sizes, gate_channels, dropout, fk) -> None:
        t, c = self.in_shape[:2]
        width0 = int(widths[0])
        self.stem = nn.Sequential(
            nn.Conv2d(c * t, width0, 5, stride=2, padding=2, bias=False, **fk),
            nn.BatchNorm2d(width0, **fk),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, d_in = [], width0
        for depth, planes, stride, pos in zip(depths, widths, strides, sizes):
            blocks = []
            for i in range(int(depth)):
                blocks.append(CTLBottleneck(d_in, int(planes), int(stride) if i == 0 else 1, pos, gate_channels, **fk))
                d_in = int(planes) * _EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = d_in
        self.head = ClassifierHead(d_in, self.num_classes, dropout=float(dropout))
        if fk["device"] is not None or fk["dtype"] is not None:
            self.head.to(**{k: v for k, v in fk.items() if v is not None})

    def _build_forecaster(self, hid: int, depth: int, down: int, gate_channels: int, fk) -> None:
        t, c, h, w = self.in_shape
        latent = (h >> down, w >> down)
        self.fc_stem = _conv_bn_relu(c * t, hid, fk)
        self.fc_down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(hid, hid, 2, stride=2, groups=hid, **fk),
                nn.BatchNorm2d(hid, **fk),
                _conv_bn_relu(hid, hid, fk),
            )
            for _ in range(down)
        )
        self.fc_translator = nn.Sequential(
            *(CTLBottleneck(hid, hid // _EXPANSION, 1, latent, gate_channels, **fk) for _ in range(depth))
        )
        self.fc_up = nn.ModuleList(_ForecastUp(hid, **fk) for _ in range(down))
        self.fc_fuse = nn.Sequential(
            nn.Conv2d(hid, hid, 3, padding=1, **fk), nn.GroupNorm(2, hid, **fk), nn.SiLU(inplace=True)
        )
        self.fc_readout = nn.Conv2d(hid, c * self.out_frames, 1, **fk)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.num_classes is not None:
            nn.init.normal_(self.head.fc.weight, std=0.01)
            nn.init.zeros_(self.head.fc.bias)

    def extra_repr(self) -> str:
        target = f"num_classes={self.num_classes}" if self.num_classes is not None else f"out_frames={self.out_frames}"
        return f"in_shape={self.in_shape}, {target}"

    # -- forward ---------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier backbone ``[B, T, C, H, W] -> [B, 4 * widths[-1], H / 32, W / 32]`` (at the default strides)."""
        return self.stages(self.stem(squeeze_time(x)))

    def _forecast(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.fc_stem(squeeze_time(x))
        z = skip
        for down in self.fc_down:
            z = down(z)
        z = self.fc_translator(z)
        for up in self.fc_up:
            z = up(z)
        y = self.fc_readout(self.fc_fuse(z + skip))
        return unsqueeze_time(y, self.out_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` -> logits ``[B, num_classes]`` or forecast ``[B, T_out, C, H, W]``."""
        self.check_input(x)
        if self.num_classes is not None:
            return self.head(self.forward_features(x))
        return self._forecast(x)


# -- validation ----------------------------------------------------------------------------------------------


def _validate_classifier(in_shape, depths, widths, strides, pos_dim, dropout) -> list[tuple[int, int]]:
    m = "squeezetime"
    depths = V.int_list(m, "depths", depths)
    n = len(depths)
    widths = V.int_list(m, "widths", widths, length=n)
    strides = V.int_list(m, "strides", strides, length=n)
    check(all(s in (1, 2) for s in strides), f"squeezetime: strides must be 1 or 2, got {strides}")
    V.rate(m, "dropout", dropout)
    _, _, h, w = in_shape
    sizes = _stage_sizes(h, w, strides)
    check(
        min(min(s) for s in sizes) >= 1,
        f"squeezetime: H={h}, W={w} shrink to nothing after the stem and strides {strides}; use a larger frame or "
        "fewer stride-2 stages",
    )
    if pos_dim is None:
        return sizes
    check(
        isinstance(pos_dim, Sequence) and not isinstance(pos_dim, str) and len(pos_dim) == n,
        f"squeezetime: pos_dim must be null or a list of {n} sizes (int or [h, w]), got {pos_dim!r}",
    )
    out = []
    for p in pos_dim:
        pair = (p, p) if V.is_int(p) else tuple(p) if isinstance(p, Sequence) and not isinstance(p, str) else ()
        check(
            len(pair) == 2 and all(V.is_int(v) and v > 0 for v in pair),
            f"squeezetime: pos_dim entries must be a positive int or [h, w], got {p!r}",
        )
        out.append((int(pair[0]), int(pair[1])))
    return out


def _validate_forecaster(in_shape, hid, depth, down) -> None:
    check(
        V.is_int(hid) and hid >= 4 and hid % 4 == 0,
        f"squeezetime: forecast_hid must be a positive multiple of 4 (GroupNorm(2), Bottleneck /4), got {hid!r}",
    )
    V.integer("squeezetime", "forecast_depth", depth)
    V.integer("squeezetime", "forecast_down", down, minimum=0)
    _, _, h, w = in_shape
    factor = 2**down
    check(
        h % factor == 0 and w % factor == 0,
        f"squeezetime: H and W must be divisible by 2^forecast_down = {factor}, got H={h}, W={w}; "
        "lower forecast_down or pad the grid",
    )
