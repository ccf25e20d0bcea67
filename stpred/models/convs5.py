"""ConvS5: a ResNet frame encoder, a stack of ConvS5 sequence layers and a mirrored decoder (``CONVS5_NOVQ``).

Paper: Smith, De Mello, Kautz, Linderman, Byeon, "Convolutional State Space Models for Long-Range Spatiotemporal
Modeling", NeurIPS 2023, arXiv:2310.19694. Original repository: https://github.com/NVlabs/ConvSSM (JAX, NVIDIA
Source Code License, non-commercial). This is an independent reimplementation from the equations and the network
description in ``docs/models.md`` §1; no code was taken from that repository. The encoder and decoder follow TECO.

Layout: ``[B, T, C, H, W]`` in and out. Every frame is encoded to a ``[d_model, H/2^s, W/2^s]`` latent (``s``
average-pooling stages), the latents run through ``n_layers`` post-norm sequence layers
``u = LN(u + dropout(ConvSSM(u, x0)))`` (LN over channels per pixel), each keeping its own complex state
``[B, 2, P, h, w]`` (planar re/im, ``P = ssm_size / 2``), and the decoder maps each latent to the next frame.

Forecasting (``forward``): the ``T_in`` context frames are scanned in parallel (one scan per layer, giving each layer's
last state), the last output is decoded into the first forecast frame, then every further frame is produced by
encoding the previous prediction and stepping each layer once (:meth:`ConvSSM.step`, ``x = Λ̄x + B̄*u``): O(1) per
frame and per layer, so the cost of a frame does not grow with the horizon. :meth:`ConvS5.teacher_forced` is the
next-frame training mode (frames ``0..L-1`` predict ``1..L``, one scan per layer); ``supports_teacher_forcing``
tells :class:`stpred.tasks.ForecastTask` to train that way.

Value range (``value_range``): the published decoder ends in ``tanh`` (frames in [-1, 1]). ``"unit"`` (default, for
data in [0, 1] such as Moving MNIST) feeds ``2x - 1`` to the encoder and returns ``(tanh(y) + 1) / 2``, so inputs
and predictions are in data units; ``"symmetric"`` takes and returns [-1, 1] values; ``"real"`` drops the ``tanh``
(normalised physical fields, e.g. the proposed TaxiBJ / WeatherBench variant on z-scored data).

Model card (stpred's own counts; no whole-model count is published, docs/models.md §1.6):

- SSM core per layer (Λ, log Δ, B̃, C̃) at P=128, U=256, k=3: 1,180,032 (derived, matches docs/models.md).
- Whole model, published long-horizon Moving-MNIST configuration (d_model 256, ssm_size 256, 8 layers, blocks 1,
  3x3 kernels, ``resnet`` feed-through, encoder widths 64/128/256, 64x64x1 frames, no actions): **22,550,657**
  parameters (computed by stpred, not published): encoder 1,223,936; action conv 65,792; 8 sequence layers of
  2,361,728 each (SSM core 1,180,032, ``resnet`` feed-through convs 1,180,160, GroupNorms 1,024, LayerNorm 512);
  decoder 2,367,105.
- Proposed one-stage variant (widths 64/128, d_model 128, ssm_size 128, 8 layers, one input channel): 5,612,545.

Not implemented: the long skip connections (layers 3→8 and 6→11), which are off in every Moving-MNIST
configuration, and the VQ variants. Initialisation of the encoder/decoder convs is PyTorch's default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from stpred.errors import UserError, check
from stpred.kernels.conv_ssm_scan import IMPLS
from stpred.layers import ClassifierHead, ConvSSM
from stpred.losses import convs5_loss  # re-exported: the loss lives in the registry as 'convs5'
from stpred.models import _validate as V
from stpred.models.base import SpatioTemporalModel
from stpred.registry import register_model

__all__ = [
    "ResBlock",
    "ConvS5Encoder",
    "ConvS5Decoder",
    "SequenceLayer",
    "ConvS5",
    "convs5_loss",
]

_VALUE_RANGES = ("unit", "symmetric", "real")
_C_D_CONFIGS = ("resnet", "standard")
_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "elu", "tanh")

States = list[torch.Tensor | None]


def _channel_ln(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of every pixel: ``[N, C, H, W] -> [N, C, H, W]``."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling ``[N, C, H, W] -> [N, C, 2H, 2W]`` (the values of
    ``F.interpolate(x, scale_factor=2, mode="nearest")``) as a broadcast, so its backward is a plain sum.

    Why not ``F.interpolate``: Inductor (PyTorch 2.13, CPU) lowers its backward to an accumulating ``index_put`` into
    a zeros buffer and, in the decoder's graph, schedules the residual branch's conv backward before that scatter, so
    the branch read zeros and the ConvS5 forecast gradients were wrong (eager and aot_eager were right).
    """
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class ResBlock(nn.Module):
    """TECO's residual block: ``skip(x) + 0.1·[GN → ELU → conv3x3 → GN → ELU → conv3x3](x)``.

    ``[N, C_in, H, W] -> [N, C_out, H, W]``; the skip is a 1x1 conv when the channel count changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        norm_groups: GroupNorm groups (must divide both channel counts).
        scale: factor on the residual branch (0.1 in the published network).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        norm_groups: int = 32,
        scale: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.scale = scale
        self.norm1 = nn.GroupNorm(norm_groups, in_channels, **fk)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, **fk)
        self.norm2 = nn.GroupNorm(norm_groups, out_channels, **fk)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, **fk)
        self.act = nn.ELU()
        self.skip = nn.Conv2d(in_channels, out_channels, 1, **fk) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + self.scale * h


class ConvS5Encoder(nn.Module):
    """Frame encoder ``[N, C, H, W] -> [N, widths[-1], H/2^s, W/2^s]`` with ``s = len(widths) - 1``.

    conv3x3(widths[0]) → ResBlock(widths[0]), then per stage: avgpool2 → ResBlock(widths[i]).

    Args:
        in_channels: frame channels C.
        widths: channels per resolution (64, 128, 256 in the published network).
        norm_groups: GroupNorm groups.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        *,
        norm_groups: int = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, **fk)
        ins = [widths[0], *widths[:-1]]
        self.blocks = nn.ModuleList(ResBlock(i, o, norm_groups=norm_groups, **fk) for i, o in zip(ins, widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](self.stem(x))
        for block in self.blocks[1:]:
            x = block(F.avg_pool2d(x, 2))
        return x


class ConvS5Decoder(nn.Module):
    """Mirror of :class:`ConvS5Encoder`: ``[N, d_model, h, w] -> [N, C, h·2^s, w·2^s]`` (before the output map).

    conv3x3(widths[-1]) → ResBlock(widths[-1]), then per stage: nearest-up x2 → ResBlock(widths[i]), then
    LN (channels) → Dense(C).

    Args:
        d_model: latent channels.
        out_channels: frame channels C.
        widths: the encoder's widths (used in reverse).
        norm_groups: GroupNorm groups.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        d_model: int,
        out_channels: int,
        widths: Sequence[int],
        *,
        norm_groups: int = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        rev = list(reversed(widths))
        self.stem = nn.Conv2d(d_model, rev[0], 3, padding=1, **fk)
        ins = [rev[0], *rev[:-1]]
        self.blocks = nn.ModuleList(ResBlock(i, o, norm_groups=norm_groups, **fk) for i, o in zip(ins, rev))
        self.norm = nn.LayerNorm(rev[-1], **fk)
        self.proj = nn.Linear(rev[-1], out_channels, **fk)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](self.stem(z))
        for block in self.blocks[1:]:
            x = block(_upsample2x(x))
        x = self.proj(self.norm(x.permute(0, 2, 3, 1)))
        return x.permute(0, 3, 1, 2)


class SequenceLayer(nn.Module):
    """Post-norm ConvS5 layer ``u = LN(u + dropout(ConvSSM(u, x0)))``, LN over channels per pixel.

    Args:
        d_model: channels U.
        ssm_size: S5 state size (P = ssm_size / 2 complex channels).
        dropout: dropout on the ConvSSM output.
        device: parameter device.
        dtype: parameter dtype.
        **ssm_kwargs: keyword arguments of :class:`stpred.layers.ConvSSM`.
    """

    def __init__(
        self,
        d_model: int,
        ssm_size: int,
        *,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **ssm_kwargs,
    ) -> None:
        super().__init__()
        self.ssm = ConvSSM(d_model, ssm_size, device=device, dtype=dtype, **ssm_kwargs)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, device=device, dtype=dtype)

    def forward(self, u: torch.Tensor, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel scan: ``u [B, L, U, h, w]``, ``x0 [B, 2, P, h, w] | None`` -> ``(u', x_last)``."""
        y, x_last = self.ssm(u, x0)
        b = u.shape[0]
        out = _channel_ln(self.norm, rearrange(u + self.drop(y), "b l c h w -> (b l) c h w"))
        return rearrange(out, "(b l) c h w -> b l c h w", b=b), x_last

    def step(self, u: torch.Tensor, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: ``u [B, U, h, w]``, ``x [B, 2, P, h, w] | None`` -> ``(u', x_new)``."""
        y, x_new = self.ssm.step(u, x)
        return _channel_ln(self.norm, u + self.drop(y)), x_new


@register_model("convs5")
class ConvS5(SpatioTemporalModel):
    """ConvS5 (``CONVS5_NOVQ``) forecaster ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]`` or classifier.

    Args:
        in_shape: ``(T_in, C, H, W)``; H and W divisible by ``2^(len(widths) - 1)``. T_in is the context length used
            by the presets; the network itself accepts any number of input frames.
        out_frames: forecast length T_out (forecasting; give exactly one of ``out_frames`` and ``num_classes``).
        num_classes: classes (classification: the final layer's features, pooled over time and space, feed a
            :class:`stpred.layers.ClassifierHead`; no decoder is built).
        d_model: latent channels U of the sequence layers.
        ssm_size: S5 state size per layer (even); ``P = ssm_size / 2`` complex state channels.
        n_layers: number of sequence layers.
        blocks: HiPPO blocks of the S5 initialisation.
        kernel_b: odd kernel size of the B conv.
        kernel_c: odd kernel size of the C conv.
        kernel_d: odd kernel size of the D conv (``c_d_config="standard"`` only).
        c_d_config: ConvSSM feed-through, ``"resnet"`` (published) or ``"standard"``.
        dt_min: smallest initial step Δ.
        dt_max: largest initial step Δ.
        clip_eigs: clip Re Λ at -1e-4.
        activation: ConvSSM activation (``"gelu"`` published).
        norm_groups: GroupNorm groups everywhere (must divide d_model and every width).
        dropout: dropout on each ConvSSM output.
        widths: encoder channels per resolution; ``len(widths) - 1`` average-pooling stages. ``(64, 128, 256)``
            is published (16x16 latents at 64x64); ``(64, 128)`` with ``d_model=128, ssm_size=128`` is the proposed
            one-stage TaxiBJ / WeatherBench variant (P = 64).
        action_dim: channels of an action embedding concatenated to every latent before the 1x1 conv to d_model
            (zeros unless ``actions`` are passed; 0 for Moving MNIST).
        value_range: ``"unit"`` (data in [0, 1]), ``"symmetric"`` (data in [-1, 1]) or ``"real"`` (no tanh).
        cls_dropout: dropout before the classifier's linear layer.
        impl: scan implementation, one of :data:`stpred.kernels.conv_ssm_scan.IMPLS`.
        device: parameter device.
        dtype: parameter dtype.

    Examples:
        >>> model = ConvS5(in_shape=(10, 1, 32, 32), out_frames=5, d_model=16, ssm_size=8, n_layers=2,
        ...                widths=(8, 16), norm_groups=4)
        >>> model(torch.rand(2, 10, 1, 32, 32)).shape
        torch.Size([2, 5, 1, 32, 32])
        >>> model.teacher_forced(torch.rand(2, 7, 1, 32, 32)).shape
        torch.Size([2, 7, 1, 32, 32])
    """

    name = "convs5"
    classifies = True
    any_length = True
    supports_teacher_forcing = True

    def __init__(
        self,
        *,
        in_shape: Sequence[int],
        out_frames: int | None = None,
        num_classes: int | None = None,
        d_model: int = 256,
        ssm_size: int = 256,
        n_layers: int = 8,
        blocks: int = 1,
        kernel_b: int = 3,
        kernel_c: int = 3,
        kernel_d: int = 3,
        c_d_config: str = "resnet",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        clip_eigs: bool = True,
        activation: str = "gelu",
        norm_groups: int = 32,
        dropout: float = 0.0,
        widths: Sequence[int] = (64, 128, 256),
        action_dim: int = 0,
        value_range: str = "unit",
        cls_dropout: float = 0.0,
        impl: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_shape=in_shape, out_frames=out_frames, num_classes=num_classes)
        _validate(
            self.in_shape, d_model, ssm_size, n_layers, blocks, (kernel_b, kernel_c, kernel_d),
            c_d_config, dt_min, dt_max, activation, norm_groups, dropout, widths, action_dim, value_range,
            cls_dropout, impl,
        )  # fmt: skip
        c = self.in_shape[1]
        self.widths = tuple(int(v) for v in widths)
        self.factor = 2 ** (len(self.widths) - 1)
        self.grid_multiple = self.factor
        self.d_model, self.state_size, self.n_layers = d_model, ssm_size // 2, n_layers
        self.action_dim, self.value_range = action_dim, value_range
        fk = {"device": device, "dtype": dtype}

        self.encoder = ConvS5Encoder(c, self.widths, norm_groups=norm_groups, **fk)
        self.action_conv = nn.Conv2d(self.widths[-1] + action_dim, d_model, 1, **fk)
        ssm_kwargs = {
            "blocks": blocks,
            "kernel_b": kernel_b,
            "kernel_c": kernel_c,
            "kernel_d": kernel_d,
            "c_d_config": c_d_config,
            "dt_min": dt_min,
            "dt_max": dt_max,
            "clip_eigs": clip_eigs,
            "activation": activation,
            "norm_groups": norm_groups,
            "impl": impl,
        }
        self.layers = nn.ModuleList(
            SequenceLayer(d_model, ssm_size, dropout=dropout, **ssm_kwargs, **fk) for _ in range(n_layers)
        )
        if self.num_classes is None:
            self.decoder = ConvS5Decoder(d_model, c, self.widths, norm_groups=norm_groups, **fk)
        else:
            self.head = ClassifierHead(d_model, self.num_classes, dropout=cls_dropout).to(**fk)
            # Instance attribute: a classifier has no next-frame mode.
            self.supports_teacher_forcing = False

    def extra_repr(self) -> str:
        target = f"out_frames={self.out_frames}" if self.num_classes is None else f"num_classes={self.num_classes}"
        return f"in_shape={self.in_shape}, {target}, value_range={self.value_range}"

    # -- checks ---------------------------------------------------------------------------------------------
    def _check_actions(self, actions: torch.Tensor | None, b: int, length: int) -> None:
        if actions is None:
            return
        if self.action_dim == 0:
            raise UserError("convs5 was built with action_dim=0; rebuild it with action_dim > 0 to pass actions")
        if actions.shape != (b, length, self.action_dim):
            raise UserError(
                f"convs5 actions must be [B, L, action_dim] = {[b, length, self.action_dim]}, got {list(actions.shape)}"
            )

    def _require_forecaster(self, what: str) -> None:
        if self.num_classes is not None:
            raise UserError(f"convs5.{what} needs a forecasting model (built with num_classes, it has no decoder)")

    # -- building blocks ------------------------------------------------------------------------------------
    def _to_net(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x - 1 if self.value_range == "unit" else x

    def _from_net(self, y: torch.Tensor) -> torch.Tensor:
        if self.value_range == "unit":
            return 0.5 * (torch.tanh(y) + 1)
        return torch.tanh(y) if self.value_range == "symmetric" else y

    def _encode(self, frames: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor:
        """``[N, C, H, W]`` (data units) and ``[N, A] | None`` -> latents ``[N, d_model, h, w]``."""
        z = self.encoder(self._to_net(frames))
        if self.action_dim:
            n, _, h, w = z.shape
            a = z.new_zeros(n, self.action_dim) if actions is None else actions.to(z.dtype)
            z = torch.cat([z, a[:, :, None, None].expand(n, self.action_dim, h, w)], dim=1)
        return self.action_conv(z)

    def encode(self, frames: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a sequence: ``[B, L, C, H, W]`` (+ ``actions [B, L, A]``) -> latents ``[B, L, d_model, h, w]``."""
        b = frames.shape[0]
        a = None if actions is None else rearrange(actions, "b l a -> (b l) a")
        z = self._encode(rearrange(frames, "b l c h w -> (b l) c h w"), a)
        return rearrange(z, "(b l) c h w -> b l c h w", b=b)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, d_model, h, w]`` -> frames ``[N, C, H, W]`` in data units."""
        return self._from_net(self.decoder(z))

    def scan(self, u: torch.Tensor, states: States | None = None) -> tuple[torch.Tensor, States]:
        """Run every layer in parallel (scan) mode.

        Args:
            u: latents ``[B, L, d_model, h, w]``.
            states: one ``[B, 2, P, h, w]`` state (or ``None``, zeros) per layer, or ``None`` for all zeros.

        Returns:
            ``(features [B, L, d_model, h, w], states)``: the last layer's outputs and each layer's last state.
        """
        states = [None] * self.n_layers if states is None else list(states)
        new_states: States = []
        for layer, x0 in zip(self.layers, states):
            u, x_last = layer(u, x0)
            new_states.append(x_last)
        return u, new_states

    def step(
        self, frame: torch.Tensor, states: States | None = None, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, States]:
        """Consume one frame and predict the next, stepping each layer once (O(1) in the sequence position).

        Args:
            frame: ``[B, C, H, W]`` in data units.
            states: per-layer states ``[B, 2, P, h, w]`` (from :meth:`condition` or a previous step), or ``None``
                for zero states.
            action: ``[B, action_dim]`` or ``None`` (zeros).

        Returns:
            ``(next_frame [B, C, H, W], states)``.
        """
        self._require_forecaster("step")
        self.check_input(frame, single_frame=True)
        if action is not None:
            self._check_actions(action[:, None], frame.shape[0], 1)
        states = [None] * self.n_layers if states is None else list(states)
        u = self._encode(frame, action)
        new_states: States = []
        for layer, x in zip(self.layers, states):
            u, x = layer.step(u, x)
            new_states.append(x)
        return self.decode(u), new_states

    def condition(self, x: torch.Tensor, actions: torch.Tensor | None = None) -> tuple[torch.Tensor, States]:
        """Scan the context: ``x [B, T, C, H, W]`` -> ``(prediction of frame T [B, C, H, W], states)``."""
        self._require_forecaster("condition")
        self.check_input(x)
        self._check_actions(actions, x.shape[0], x.shape[1])
        return self._condition(x, actions)

    def _condition(self, x: torch.Tensor, actions: torch.Tensor | None) -> tuple[torch.Tensor, States]:
        features, states = self.scan(self.encode(x, actions))
        return self.decode(features[:, -1]), states

    def generate(self, x: torch.Tensor, n_frames: int, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Condition on ``x`` by scanning, then generate ``n_frames`` frames one :meth:`step` at a time.

        Args:
            x: context ``[B, T, C, H, W]`` in data units.
            n_frames: frames to generate (>= 1).
            actions: ``[B, T + n_frames - 1, action_dim]``, one per encoded frame (context, then each fed-back
                prediction), or ``None`` for zeros.

        Returns:
            ``[B, n_frames, C, H, W]`` in data units.
        """
        if not V.is_int(n_frames) or n_frames < 1:
            raise UserError(f"convs5.generate: n_frames must be a positive int, got {n_frames!r}")
        self._require_forecaster("generate")
        self.check_input(x)
        t = x.shape[1]
        self._check_actions(actions, x.shape[0], t + n_frames - 1)
        frame, states = self._condition(x, None if actions is None else actions[:, :t])
        out = [frame]
        for k in range(1, n_frames):
            frame, states = self.step(frame, states, None if actions is None else actions[:, t + k - 1])
            out.append(frame)
        return torch.stack(out, dim=1)

    def teacher_forced(self, frames: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Next-frame predictions over a whole sequence in one scan per layer.

        Output ``t`` is the prediction of frame ``t + 1`` from frames ``<= t``; training on frames ``0..L-2`` against
        ``1..L-1`` is ConvS5's teacher-forced recipe.

        Args:
            frames: ``[B, L, C, H, W]`` in data units.
            actions: ``[B, L, action_dim]`` or ``None``.

        Returns:
            ``[B, L, C, H, W]`` in data units.
        """
        self._require_forecaster("teacher_forced")
        self.check_input(frames)
        self._check_actions(actions, frames.shape[0], frames.shape[1])
        features, _ = self.scan(self.encode(frames, actions))
        y = self.decode(rearrange(features, "b l c h w -> (b l) c h w"))
        return rearrange(y, "(b l) c h w -> b l c h w", b=frames.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``, or logits ``[B, num_classes]``."""
        if self.num_classes is None:
            return self.generate(x, self.out_frames)
        self.check_input(x)
        features, _ = self.scan(self.encode(x))
        return self.head(rearrange(features, "b t c h w -> b c t h w"))


def _validate(
    in_shape: tuple[int, int, int, int],
    d_model: int,
    ssm_size: int,
    n_layers: int,
    blocks: int,
    kernels: tuple[int, int, int],
    c_d_config: str,
    dt_min: float,
    dt_max: float,
    activation: str,
    norm_groups: int,
    dropout: float,
    widths: Sequence[int],
    action_dim: int,
    value_range: str,
    cls_dropout: float,
    impl: str,
) -> None:
    m = "convs5"
    for name, v in (("d_model", d_model), ("n_layers", n_layers), ("norm_groups", norm_groups)):
        V.integer(m, name, v)
    check(
        V.is_int(ssm_size) and ssm_size >= 2 and ssm_size % 2 == 0,
        f"convs5: ssm_size must be a positive even int (P = ssm_size / 2 conjugate pairs), got {ssm_size!r}",
    )
    check(
        V.is_int(blocks) and blocks >= 1 and ssm_size % blocks == 0 and (ssm_size // blocks) % 2 == 0,
        f"convs5: blocks={blocks!r} must split ssm_size={ssm_size} into blocks of even size",
    )
    for name, k in zip(("kernel_b", "kernel_c", "kernel_d"), kernels):
        check(V.is_int(k) and k >= 1 and k % 2 == 1, f"convs5: {name} must be a positive odd int, got {k!r}")
    V.one_of(m, "c_d_config", c_d_config, _C_D_CONFIGS)
    check(
        all(V.is_number(v) for v in (dt_min, dt_max)) and 0 < dt_min <= dt_max,
        f"convs5: need numbers 0 < dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}",
    )
    V.one_of(m, "activation", activation, _ACTIVATIONS)
    V.rate(m, "dropout", dropout)
    V.rate(m, "cls_dropout", cls_dropout)
    V.int_list(m, "widths", widths)
    bad = [v for v in (d_model, *widths) if v % norm_groups]
    check(
        not bad,
        f"convs5: norm_groups={norm_groups} (GroupNorm) must divide d_model and every width, not {bad}; "
        "lower norm_groups or change the widths",
    )
    V.integer(m, "action_dim", action_dim, minimum=0)
    V.one_of(m, "value_range", value_range, _VALUE_RANGES)
    V.one_of(m, "impl", impl, IMPLS)
    factor = 2 ** (len(widths) - 1)
    h, w = in_shape[2], in_shape[3]
    check(
        h % factor == 0 and w % factor == 0,
        f"convs5: H={h} and W={w} must be divisible by {factor} ({len(widths) - 1} pooling stages from "
        f"widths={list(widths)}); use fewer widths or pad the frames",
    )
