"""OpenSTL ``SimVP_Model`` (SimVP.V2, gSTA translator) -> stpred ``simvpv2``.

OpenSTL names (``openstl/models/simvp_model.py``, ``openstl/modules/simvp_modules.py``) and stpred's:

- ``enc.enc.{i}.conv.conv`` / ``.conv.norm`` -> ``encoder.layers.{i}.conv`` / ``.norm``;
- ``dec.dec.{i}.conv.conv`` (``.conv.0`` when upsampling: Conv2d + PixelShuffle) / ``.conv.norm`` ->
  ``decoder.layers.{i}.conv`` / ``.norm``; ``dec.readout`` -> ``decoder.readout``;
- ``hid.enc.{i}.block.*`` -> ``translator.blocks.{i}.*`` with ``layer_scale_{1,2}`` -> ``layer_scale{1,2}``,
  ``attn.proj_{1,2}`` -> ``attn.proj_{in,out}``, ``attn.spatial_gating_unit.{conv0,conv_spatial,conv1}`` ->
  ``attn.{dw,dw_dilated,gate}``, ``mlp.dwconv.dwconv`` -> ``mlp.dw``;
- ``hid.enc.0.reduction`` -> ``translator.proj_in``, ``hid.enc.{N_T-1}.reduction`` -> ``translator.proj_out``.

Hyperparameters come from the shapes: ``hid_S``, ``C`` and the encoder kernel from the first conv, ``N_S`` and
``N_T`` from the layer counts, ``T`` from the translator width ``T * hid_S``, ``hid_T`` from the first reduction,
``mlp_ratio`` from the first MLP. Only H and W (and the forecast length) come from the caller.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from stpred.errors import UserError
from stpred.importers.plan import Entry, Plan

__all__ = ["looks_like_simvp", "simvp_plan"]

FAMILY = "OpenSTL SimVP_Model (gSTA)"

_BLOCK_RENAMES = (
    ("layer_scale_1", "layer_scale1"),
    ("layer_scale_2", "layer_scale2"),
    ("attn.proj_1.", "attn.proj_in."),
    ("attn.proj_2.", "attn.proj_out."),
    ("attn.spatial_gating_unit.conv0.", "attn.dw."),
    ("attn.spatial_gating_unit.conv_spatial.", "attn.dw_dilated."),
    ("attn.spatial_gating_unit.conv1.", "attn.gate."),
    ("mlp.dwconv.dwconv.", "mlp.dw."),
)
_GSTA_PARTS = {
    "norm1", "norm2", "layer_scale_1", "layer_scale_2", "attn.proj_1", "attn.proj_2",
    "attn.spatial_gating_unit.conv0", "attn.spatial_gating_unit.conv_spatial", "attn.spatial_gating_unit.conv1",
    "mlp.fc1", "mlp.fc2", "mlp.dwconv.dwconv",
}  # fmt: skip


def looks_like_simvp(state: dict[str, Any]) -> bool:
    return any(k.startswith("enc.enc.") for k in state) and any(k.startswith("dec.readout.") for k in state)


def _count(state: dict[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _check_translator(state: dict[str, Any], n_t: int) -> None:
    """Refuse translators other than gSTA (OpenSTL's ``model_type``) with one line."""
    if any(k.startswith("hid.dec.") for k in state) or not any(k.startswith("hid.enc.0.block.") for k in state):
        raise UserError(
            f"{FAMILY}: this translator is not gSTA (no hid.enc.0.block.*; IncepU / SimVP v1 keys?); stpred's "
            "simvpv2 imports model_type='gSTA' only"
        )
    for key in state:
        m = re.match(r"hid\.enc\.(\d+)\.block\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", key)
        m2 = re.match(r"hid\.enc\.(\d+)\.block\.(layer_scale_[12])$", key)
        part = m.group(2) if m else (m2.group(2) if m2 else None)
        if key.startswith("hid.enc.") and ".block." in key and part not in _GSTA_PARTS:
            raise UserError(
                f"{FAMILY}: translator tensor {key} is not part of a gSTA block; stpred's simvpv2 imports "
                "model_type='gSTA' only (OpenSTL's other translators are not implemented)"
            )


def simvp_plan(
    state: dict[str, Any], in_shape: tuple[int, int, int, int], out_frames: int | None
) -> Plan:
    """Map an OpenSTL ``SimVP_Model`` state_dict onto ``simvpv2`` for ``in_shape = (T, C, H, W)``.

    ``T`` and ``C`` of ``in_shape`` must agree with the file (a wrong one fails the shape check on the first
    tensor that depends on it); ``out_frames`` defaults to ``T``.
    """
    n_s = _count(state, r"enc\.enc\.(\d+)\.")
    n_t = _count(state, r"hid\.enc\.(\d+)\.")
    _check_translator(state, n_t)
    first = state["enc.enc.0.conv.conv.weight"]
    hid_s, _, k_enc, _ = first.shape
    dec_key = next(k for k in ("dec.dec.0.conv.conv.0.weight", "dec.dec.0.conv.conv.weight") if k in state)
    k_dec = int(state[dec_key].shape[-1])
    d0 = int(state["hid.enc.0.block.norm1.weight"].shape[0])
    hid_t = int(state["hid.enc.0.reduction.weight"].shape[0]) if "hid.enc.0.reduction.weight" in state else d0
    mlp_ratio = float(state["hid.enc.0.block.mlp.fc1.weight"].shape[0]) / d0
    t_in = in_shape[0]
    kwargs = {
        "hid_S": int(hid_s), "hid_T": hid_t, "N_S": n_s, "N_T": n_t, "mlp_ratio": mlp_ratio,
        "spatio_kernel_enc": int(k_enc), "spatio_kernel_dec": k_dec,
    }  # fmt: skip

    entries: list[Entry] = []
    for key in state:
        dst = _simvp_dst(key, n_t)
        if dst is not None:
            entries.append(Entry(key, dst))
    ignored = tuple(k for k in state if _simvp_dst(k, n_t) is None and not isinstance(state[k], torch.Tensor))
    ref = sum(v.numel() for k, v in state.items() if isinstance(v, torch.Tensor) and not _is_buffer(k))
    return Plan(
        family=FAMILY,
        model="simvpv2",
        kwargs=kwargs,
        in_shape=in_shape,
        out_frames=int(out_frames or t_in),
        entries=entries,
        ignored=ignored,
        reference_params=ref,
        notes=[f"file: hid_S={hid_s}, T*hid_S={d0} (T={d0 // int(hid_s)}), C={first.shape[1]}"],
    )


def _is_buffer(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _simvp_dst(key: str, n_t: int) -> str | None:
    if m := re.match(r"enc\.enc\.(\d+)\.conv\.(conv|norm)\.(.+)$", key):
        return f"encoder.layers.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    if m := re.match(r"dec\.dec\.(\d+)\.conv\.(conv(?:\.0)?|norm)\.(.+)$", key):
        part = "norm" if m.group(2) == "norm" else "conv"
        return f"decoder.layers.{m.group(1)}.{part}.{m.group(3)}"
    if m := re.match(r"dec\.readout\.(.+)$", key):
        return f"decoder.readout.{m.group(1)}"
    if m := re.match(r"hid\.enc\.(\d+)\.reduction\.(.+)$", key):
        i = int(m.group(1))
        if i not in (0, n_t - 1):
            return None
        return f"translator.{'proj_in' if i == 0 else 'proj_out'}.{m.group(2)}"
    if m := re.match(r"hid\.enc\.(\d+)\.block\.(.+)$", key):
        rest = m.group(2)
        for old, new in _BLOCK_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        return f"translator.blocks.{m.group(1)}.{rest}"
    return None
