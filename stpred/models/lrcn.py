"""LRCN: a per-frame CNN with shared weights feeding an LSTM (Long-term Recurrent Convolutional Network).

Paper: Donahue et al., "Long-term Recurrent Convolutional Networks for Visual Recognition and Description",
CVPR 2015 / TPAMI 2017, arXiv:1411.4389. There is no canonical reference code (the original is Caffe with a
CaffeNet encoder); this is the modern form of ``docs/models.md`` §5 with a ResNet-style frame encoder.

Layout: ``[B, T, C, H, W]`` in. Every frame goes through the same CNN (``'b t c h w -> (b t) c h w'``):

    stem ("resnet": conv7x7/2 -> BN -> ReLU -> maxpool 3x3/2; "small": conv3x3 -> BN -> ReLU)
    -> len(widths) stages of ``blocks`` ResNet BasicBlocks (the first stage at stride 1, the others at stride 2)

The default (widths 64..512, 2 blocks, "resnet" stem) is ResNet-18's layout.

Classification: global average pool -> ``[B, T, widths[-1]]`` -> LSTM(hidden 256) -> dropout -> Linear per step
-> ``[B, T, num_classes]``; the clip score is the **mean over steps** (``readout="mean"``, the paper's) or the
last step (``readout="last"``, common in reimplementations).

Forecasting (**proposed**; a baseline with no reference numbers): the frame CNN's feature map is flattened and
projected to a ``feature_dim`` vector; the LSTM warms up on the ``T_in`` encoded input frames, then each step's
output is decoded (Linear -> reshape to the CNN's feature map -> transposed-conv x2 upsamplings -> conv3x3 to C)
into the next frame, which is encoded again and fed back, ``T_out`` times. :meth:`LRCN.generate` exposes the
rollout for any number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from stpred.errors import check
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = ["BasicBlock", "FrameEncoder", "FrameDecoder", "LRCN"]

_READOUTS = ("mean", "last")
_STEMS = ("resnet", "small")


class BasicBlock(nn.Module):
    """ResNet BasicBlock ``[N, d_in, H, W] -> [N, d_out, H / stride, W / stride]``.

    conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the input (through conv1x1 + BN where the shape changes); ReLU.

    Args:
        in_channels: d_in.
        out_channels: d_out.
        stride: 1 or 2.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, **fk)
        self.bn1 = nn.BatchNorm2d(out_channels, **fk)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, **fk)
        self.bn2 = nn.BatchNorm2d(out_channels, **fk)
        self.shortcut = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, **fk),
                nn.BatchNorm2d(out_channels, **fk),
            )
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class FrameEncoder(nn.Module):
    """Per-frame CNN ``[N, C, H, W] -> [N, widths[-1], H / factor, W / factor]``.

    Args:
        in_channels: frame channels C.
        widths: channels of each stage.
        blocks: BasicBlocks per stage (an int for every stage, or one per stage).
        stem: ``"resnet"`` (conv7x7/2 + maxpool/2) or ``"small"`` (conv3x3, stride 1).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        stem: str,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        w0 = widths[0]
        if stem == "resnet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, w0, 7, stride=2, padding=3, bias=False, **fk),
                nn.BatchNorm2d(w0, **fk),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, w0, 3, padding=1, bias=False, **fk),
                nn.BatchNorm2d(w0, **fk),
                nn.ReLU(inplace=True),
            )
        stages, d_in = [], w0
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layer = [BasicBlock(d_in if j == 0 else width, width, 2 if i > 0 and j == 0 else 1, **fk) for j in range(n)]
            stages.append(nn.Sequential(*layer))
            d_in = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = d_in
        self.factor = (4 if stem == "resnet" else 1) * 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class FrameDecoder(nn.Module):
    """Vector to frame ``[N, D] -> [N, C, H, W]`` (the forecaster's decoder).

    Linear(D -> d0 * h0 * w0) -> ReLU -> reshape ``[N, d0, h0, w0]`` -> log2(factor) x [ConvTranspose 4x4/2 -> BN
    -> ReLU] with the widths reversed -> conv3x3 to C.

    Args:
        feature_dim: D.
        out_channels: frame channels C.
        widths: the encoder's stage widths (used in reverse).
        latent_size: ``(h0, w0)``, the encoder's feature-map size.
        factor: upsampling factor (a power of 2).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        feature_dim: int,
        out_channels: int,
        widths: Sequence[int],
        latent_size: tuple[int, int],
        factor: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        rev = list(widths)[::-1]
        self.latent = (rev[0], *latent_size)
        self.fc = nn.Linear(feature_dim, rev[0] * latent_size[0] * latent_size[1], **fk)
        ups, d_in = [], rev[0]
        for i in range(int(math.log2(factor))):
            d_out = rev[min(i + 1, len(rev) - 1)]
            ups += [
                nn.ConvTranspose2d(d_in, d_out, 4, stride=2, padding=1, bias=False, **fk),
                nn.BatchNorm2d(d_out, **fk),
                nn.ReLU(inplace=True),
            ]
            d_in = d_out
        self.ups = nn.Sequential(*ups)
        self.readout = nn.Conv2d(d_in, out_channels, 3, padding=1, **fk)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(z)).reshape(z.shape[0], *self.latent)
        return self.readout(self.ups(x))


@register_model("lrcn")
class LRCN(SpatioTemporalModel):
    """LRCN: clip classifier ``[B, T, C, H, W] -> [B, num_classes]`` or recurrent forecaster (proposed).

    Give exactly one of ``out_frames`` and ``num_classes``.

    Args:
        in_shape: ``(T, C, H, W)``.
        out_frames: forecast length T_out.
        num_classes: number of classes.
        widths: channels of each frame-encoder stage (ResNet-18: 64, 128, 256, 512).
        blocks: BasicBlocks per stage (an int, or one per stage).
        stem: ``"resnet"`` (conv7x7/2 + maxpool/2, for ~224 frames) or ``"small"`` (conv3x3, for 32-64 frames).
        hidden: LSTM hidden size (256 in the paper).
        lstm_layers: stacked LSTM layers.
        readout: clip score from the per-step logits, ``"mean"`` (the paper's) or ``"last"``.
        dropout: classifier only: dropout on the LSTM outputs before the per-step linear layer.
        feature_dim: forecaster only: size of the encoded frame vector that enters the LSTM.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> clf = LRCN(in_shape=(8, 3, 64, 64), num_classes=5, widths=(8, 16), blocks=1, stem="small", hidden=16)
        >>> clf(torch.zeros(2, 8, 3, 64, 64)).shape
        torch.Size([2, 5])
        >>> fc = LRCN(in_shape=(10, 1, 32, 32), out_frames=4, widths=(8, 16), blocks=1, stem="small", hidden=16)
        >>> fc(torch.zeros(2, 10, 1, 32, 32)).shape
        torch.Size([2, 4, 1, 32, 32])
    """

    name = "lrcn"
    classifies = True
    any_length = True

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: int | Sequence[int] = 2,
        stem: str = "resnet",
        hidden: int = 256,
        lstm_layers: int = 1,
        readout: str = "mean",
        dropout: float = 0.5,
        feature_dim: int = 512,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        widths, blocks = _validate(
            self.in_shape, out_frames is not None, widths, blocks, stem, hidden, lstm_layers, readout, dropout,
            feature_dim,
        )  # fmt: skip
        _, c, h, w = self.in_shape
        # The forecaster flattens the latent frame into one vector, so its grid is fixed.
        self.fixed_grid = self.num_classes is None
        self.readout = readout
        fk = {"device": device, "dtype": dtype}
        self.encoder = FrameEncoder(c, widths, blocks, stem, **fk)
        factor = self.encoder.factor
        if self.num_classes is not None:
            lstm_in = self.encoder.out_channels
        else:
            self.latent_size = (h // factor, w // factor)
            self.project = nn.Linear(
                self.encoder.out_channels * self.latent_size[0] * self.latent_size[1], feature_dim, **fk
            )
            lstm_in = feature_dim
        self.lstm = nn.LSTM(lstm_in, hidden, num_layers=lstm_layers, batch_first=True, **fk)
        self.drop = nn.Dropout(dropout)
        if self.num_classes is not None:
            self.classifier = nn.Linear(hidden, self.num_classes, **fk)
        else:
            self.decoder = FrameDecoder(hidden, c, widths, self.latent_size, factor, **fk)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def extra_repr(self) -> str:
        target = f"num_classes={self.num_classes}" if self.num_classes is not None else f"out_frames={self.out_frames}"
        return f"in_shape={self.in_shape}, {target}, readout={self.readout}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T, C, H, W]`` -> vectors ``[B, T, D]`` (pooled for classification, projected for forecasts)."""
        b = x.shape[0]
        f = self.encoder(rearrange(x, "b t c h w -> (b t) c h w"))
        f = f.mean(dim=(-2, -1)) if self.num_classes is not None else self.project(f.flatten(1))
        return rearrange(f, "(b t) d -> b t d", b=b)

    def step_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step class logits ``[B, T, C, H, W] -> [B, T, num_classes]``."""
        out, _ = self.lstm(self.encode(x))
        return self.classifier(self.drop(out))

    def generate(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Warm up on ``x`` ``[B, T_in, C, H, W]``, then roll out ``steps`` frames ``[B, steps, C, H, W]``.

        Each predicted frame is encoded and fed back as the next LSTM input (O(1) work per frame).
        """
        out, state = self.lstm(self.encode(x))
        frames = []
        for i in range(steps):
            frame = self.decoder(out[:, -1])
            frames.append(frame)
            if i + 1 < steps:
                out, state = self.lstm(self.encode(frame.unsqueeze(1)), state)
        return torch.stack(frames, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, H, W]`` -> clip logits ``[B, num_classes]`` or forecast ``[B, T_out, C, H, W]``."""
        self.check_input(x)
        if self.num_classes is None:
            return self.generate(x, self.out_frames)
        logits = self.step_logits(x)
        return logits.mean(dim=1) if self.readout == "mean" else logits[:, -1]


def _validate(in_shape, forecast, widths, blocks, stem, hidden, lstm_layers, readout, dropout, fdim):
    m = "lrcn"
    widths = V.int_list(m, "widths", widths)
    if V.is_int(blocks):
        blocks = [int(blocks)] * len(widths)
    check(
        isinstance(blocks, Sequence) and len(blocks) == len(widths) and all(V.is_int(v) and v >= 1 for v in blocks),
        f"lrcn: blocks must be an int >= 1 or one such int per stage ({len(widths)}), got {blocks!r}",
    )
    V.one_of(m, "stem", stem, _STEMS)
    V.integer(m, "hidden", hidden)
    V.integer(m, "lstm_layers", lstm_layers)
    V.one_of(m, "readout", readout, _READOUTS)
    V.rate(m, "dropout", dropout)
    V.integer(m, "feature_dim", fdim)
    if forecast:
        _, _, h, w = in_shape
        factor = (4 if stem == "resnet" else 1) * 2 ** (len(widths) - 1)
        check(
            h % factor == 0 and w % factor == 0,
            f"lrcn: the forecaster needs H and W divisible by the encoder's downsampling {factor} (stem={stem}, "
            f"{len(widths)} stages), got H={h}, W={w}; use stem=small or fewer widths",
        )
    return widths, [int(v) for v in blocks]
