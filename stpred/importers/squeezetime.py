"""SqueezeTime's released mmaction2 recognizers (K400, K600, HMDB51) -> stpred ``squeezetime`` classifiers.

The reference (``xinghaochen/SqueezeTime``, ``mmaction/models/backbones/SqueezeTime.py`` and
``mmaction/models/heads/i2d_head.py``) wraps its ResNet as ``SqueezeTime.net`` inside mmaction2's ``Recognizer3D``,
so a checkpoint's ``state_dict`` holds ``backbone.net.*`` and ``cls_head.fc_cls.*``. Its names and stpred's:

- ``conv1`` / ``bn1`` (stem) -> ``stem.0`` / ``stem.1``;
- ``layer{i}.{j}.`` -> ``stages.{i-1}.{j}.``; inside a block ``conv1``, ``bn1``, ``bn2``, ``conv3``, ``bn3`` keep their
  names, ``downsample.{0,1}`` (depth-wise 2x2/2 conv + BN) too, ``shortcut_conv.{0,1}`` -> ``shortcut.{0,1}``;
- the block's CTL ``conv2`` -> ``ctl``: ``param_conv.{1,2,4}`` -> ``importance.{fc1,bn,fc2}``, ``temporal_conv`` ->
  ``temporal``, ``spatial_conv.short_conv`` -> ``interaction.short``, ``spatial_conv.glo_conv.{0,1,3,4,6}`` ->
  ``interaction.{gate_in,gate_bn1,gate_mid,gate_bn2,gate_out}``, ``spatial_conv.pos_embed`` ->
  ``interaction.pos_embed``;
- ``cls_head.fc_cls`` -> ``head.fc``.

Both squeeze ``[N, C, T, H, W]`` clips channel-major (channel ``c * T + t``). Depths, widths, strides (a stage with
``downsample`` has stride 2), ``pos_dim`` (each stage's ``pos_embed``), the gate width and the class count come from
the tensors; ``T`` and ``C`` from ``--in-shape`` (the file holds only ``C * T``, the stem's input channels). Only the
Bottleneck networks (depth 50 and up, the released ones) exist in stpred: depths 10/18/34 (BasicBlock, whose first
conv is a CTL) are refused. The reference's input normalisation (mmaction's ``data_preprocessor``, ImageNet mean and
std in 0-255 units) is not in the file; it is stpred's ``IMAGENET_MEAN`` / ``IMAGENET_STD`` on [0, 1] pixels.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from stpred.errors import UserError
from stpred.importers.plan import Entry, Plan

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "looks_like_squeezetime", "squeezetime_plan"]

FAMILY = "SqueezeTime mmaction2 Recognizer3D (I2DHead)"
#: mmaction2's ``ActionDataPreprocessor`` of every released SqueezeTime config, divided by 255.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BACKBONE = "backbone.net."
_HEAD = "cls_head.fc_cls."
_CTL = (
    ("param_conv.1.", "importance.fc1."),
    ("param_conv.2.", "importance.bn."),
    ("param_conv.4.", "importance.fc2."),
    ("temporal_conv.", "temporal."),
    ("spatial_conv.short_conv.", "interaction.short."),
    ("spatial_conv.glo_conv.0.", "interaction.gate_in."),
    ("spatial_conv.glo_conv.1.", "interaction.gate_bn1."),
    ("spatial_conv.glo_conv.3.", "interaction.gate_mid."),
    ("spatial_conv.glo_conv.4.", "interaction.gate_bn2."),
    ("spatial_conv.glo_conv.6.", "interaction.gate_out."),
    ("spatial_conv.pos_embed", "interaction.pos_embed"),
)
_BLOCK = ("conv1.", "bn1.", "bn2.", "conv3.", "bn3.", "downsample.0.", "downsample.1.")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def looks_like_squeezetime(state: dict[str, Any]) -> bool:
    return f"{_BACKBONE}conv1.weight" in state and any(".conv2.param_conv." in k for k in state)


def _dst(key: str) -> str | None:
    """stpred's name for a reference tensor; ``None`` for a name the mapping does not know."""
    if key.startswith(_HEAD):
        return "head.fc." + key[len(_HEAD) :]
    if not key.startswith(_BACKBONE):
        return None
    rest = key[len(_BACKBONE) :]
    if m := re.fullmatch(r"(conv1|bn1)\.(.+)", rest):
        return f"stem.{0 if m.group(1) == 'conv1' else 1}.{m.group(2)}"
    m = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", rest)
    if m is None:
        return None
    block, part = f"stages.{int(m.group(1)) - 1}.{m.group(2)}.", m.group(3)
    if part.startswith("conv2."):
        for old, new in _CTL:
            if part[len("conv2.") :].startswith(old):
                return block + "ctl." + new + part[len("conv2.") + len(old) :]
        return None
    if part.startswith("shortcut_conv."):
        return block + "shortcut." + part[len("shortcut_conv.") :]
    return block + part if part.startswith(_BLOCK) else None


def _count(state: dict[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def squeezetime_plan(state: dict[str, Any], in_shape: tuple[int, int, int, int]) -> Plan:
    """Map a SqueezeTime recognizer's state_dict onto ``squeezetime`` (a classifier) for ``in_shape = (T, C, H, W)``.

    Raises:
        UserError: a BasicBlock network, a file without the classification head, stages whose blocks have different
            ``pos_embed`` sizes, or ``T * C`` other than the stem's input channels.
    """
    pre = _BACKBONE
    if f"{pre}layer1.0.conv1.param_conv.1.weight" in state:
        raise UserError(
            f"{FAMILY}: this is a BasicBlock SqueezeTime (depth 10, 18 or 34: its conv1 is a CTL); stpred's "
            "squeezetime builds the Bottleneck networks (depth 50 and up) only"
        )
    if f"{_HEAD}weight" not in state:
        raise UserError(
            f"{FAMILY}: the file has no cls_head.fc_cls (an ImageNet pretrain or a detector?); stpred imports the "
            "recognizers (K400, K600, HMDB51)"
        )
    stem = state[f"{pre}conv1.weight"]
    t, c = in_shape[:2]
    if stem.shape[1] != t * c:
        raise UserError(
            f"tensor {pre}conv1.weight {tuple(stem.shape)} squeezes {stem.shape[1]} channels = T * C; --in-shape "
            f"{','.join(map(str, in_shape))} gives T * C = {t * c} (the released K400 model takes T=16, C=3)"
        )
    stages = 0
    while f"{pre}layer{stages + 1}.0.conv1.weight" in state:
        stages += 1
    depths, widths, strides, pos_dim = [], [], [], []
    for i in range(1, stages + 1):
        depths.append(_count(state, rf"{re.escape(pre)}layer{i}\.(\d+)\."))
        widths.append(int(state[f"{pre}layer{i}.0.conv1.weight"].shape[0]))
        strides.append(2 if f"{pre}layer{i}.0.downsample.0.weight" in state else 1)
        sizes = {tuple(state[f"{pre}layer{i}.{j}.conv2.spatial_conv.pos_embed"].shape[-2:]) for j in range(depths[-1])}
        if len(sizes) != 1:
            raise UserError(f"{FAMILY}: layer{i}'s blocks have pos_embed sizes {sorted(sizes)}; stpred takes one")
        pos_dim.append(list(sizes.pop()))
    gate = int(state[f"{pre}layer1.0.conv2.spatial_conv.glo_conv.0.weight"].shape[0])
    num_classes = int(state[f"{_HEAD}weight"].shape[0])
    kwargs = {"depths": depths, "widths": widths, "strides": strides, "pos_dim": pos_dim, "gate_channels": gate}

    entries = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        dst = _dst(key)
        if dst is None:
            raise UserError(f"tensor {key} {tuple(value.shape)} has no place in stpred's squeezetime ({FAMILY})")
        entries.append(Entry(key, dst))
    ref = sum(v.numel() for k, v in state.items() if isinstance(v, torch.Tensor) and not k.endswith(_BUFFERS))
    return Plan(
        family=FAMILY,
        model="squeezetime",
        kwargs=kwargs,
        in_shape=in_shape,
        out_frames=None,
        entries=entries,
        reference_params=ref,
        num_classes=num_classes,
        notes=[
            f"file: {num_classes} classes, C*T={stem.shape[1]}, depths {depths}, widths {widths}, pos_dim {pos_dim}",
            "normalisation: the reference's ImageNet mean/std (mmaction data_preprocessor) unless --data/--mean/--std",
        ],
    )
