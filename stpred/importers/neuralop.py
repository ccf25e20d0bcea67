"""neuraloperator 2.0 ``FNO`` (2-D) -> stpred ``fno2d`` with its neuraloperator options.

neuraloperator's FNO (``neuralop/models/fno.py``, ``layers/fno_block.py``) lifts ``[data, grid]`` channels with a
channel MLP, runs ``n_layers`` blocks ``u = act(K v + bias + W v)``, ``act(MLP(u) + g * v)`` (no activations in the
last block) and projects with a second channel MLP. Names and layouts:

- ``lifting.fcs.{0,1}`` / ``projection.fcs.{0,1}`` (Conv1d ``[out, in, 1]``) -> ``lift.{0,2}`` / ``project.{0,2}``
  (Linear ``[out, in]``; a one-layer lifting -> ``lift``);
- ``fno_blocks.convs.{i}.weight.tensor`` (complex ``[in, out, 2*m1, m2]``, the first mode axis fft-shifted:
  index ``j`` is frequency ``j - m1``) -> ``layers.{i}.spectral.weight`` (real pairs, rows ``0..m1-1`` frequency
  ``j``, then the negative block): rolled by ``m1`` along that axis;
- ``fno_blocks.convs.{i}.bias`` ``[out, 1, 1]`` (added after the inverse FFT) and ``fno_blocks.fno_skips.{i}.conv``
  (bias-free Conv1d) -> ``layers.{i}.pointwise`` (1x1 Conv2d with that bias);
- ``fno_blocks.channel_mlp.{i}.fcs.{0,1}`` -> ``layers.{i}.mlp.{0,2}``; ``fno_blocks.channel_mlp_skips.{i}.weight``
  ``[1, C, 1, 1]`` -> ``layers.{i}.gate``.

The FFT normalisation (``forward``) is kept, and the grid channels are ``linspace(0, 1, N + 1)[:-1]``. The input
channels ``in_channels = T * C`` are read as stpred's ``(t c)`` fold of ``[T, C]``; ``out_channels = C`` is an
autoregressive model (one frame a step), ``out_channels = T_out * C`` a one-shot one.
"""

from __future__ import annotations

from typing import Any

import torch

from stpred.errors import UserError
from stpred.importers._read import PickledName
from stpred.importers.plan import Entry, Plan

__all__ = ["looks_like_neuralop_fno", "fno_plan", "DEFAULTS"]

FAMILY = "neuraloperator 2.0 FNO"

#: neuraloperator 2.0's FNO defaults: the options a file may leave out, and the only values stpred reproduces
#: (``None`` in the right column: any value is fine, it does not change evaluation).
DEFAULTS: dict[str, Any] = {
    "lifting_channel_ratio": 2,
    "projection_channel_ratio": 2,
    "positional_embedding": "grid",
    "norm": None,
    "complex_data": False,
    "use_channel_mlp": True,
    "channel_mlp_expansion": 0.5,
    "channel_mlp_skip": "soft-gating",
    "fno_skip": "linear",
    "resolution_scaling_factor": None,
    "domain_padding": None,
    "fno_block_precision": "full",
    "stabilizer": None,
    "max_n_modes": None,
    "factorization": None,
    "separable": False,
    "preactivation": False,
}
_REQUIRED = {
    "norm": (None,),
    "complex_data": (False,),
    "fno_skip": ("linear",),
    "resolution_scaling_factor": (None,),
    "fno_block_precision": ("full",),
    "stabilizer": (None,),
    "separable": (False,),
    "preactivation": (False,),
    "positional_embedding": ("grid", None),
    # Without the channel MLP neuralop applies its activation twice per block; stpred's block does not.
    "use_channel_mlp": (True,),
    "channel_mlp_skip": ("soft-gating",),
}
_GELU = ("torch._C._nn.gelu", "torch.nn.functional.gelu")


def looks_like_neuralop_fno(state: dict[str, Any]) -> bool:
    return any(k.startswith("fno_blocks.convs.") for k in state) and any(k.startswith("lifting.") for k in state)


def _check_options(meta: dict[str, Any]) -> None:
    """Refuse, with one line, an option stpred's fno2d does not reproduce exactly."""
    name = meta.get("_name", "FNO")
    if name not in ("FNO", "FNO2d"):
        raise UserError(f"{FAMILY}: the file holds a neuralop {name}, not an FNO; only the 2-D FNO imports")
    n_modes = meta.get("n_modes")
    if n_modes is not None and len(n_modes) != 2:
        raise UserError(f"{FAMILY}: n_modes={tuple(n_modes)} is {len(n_modes)}-D; stpred imports the 2-D FNO only")
    for key, allowed in _REQUIRED.items():
        value = meta.get(key, DEFAULTS[key])
        if value not in allowed:
            raise UserError(f"{FAMILY}: {key}={value!r} is not reproduced by stpred's fno2d (it needs {allowed[0]!r})")
    padding = meta.get("domain_padding")
    if padding not in (None, 0, 0.0) and not (isinstance(padding, list) and sum(padding) == 0):
        raise UserError(f"{FAMILY}: domain_padding={padding!r} is not reproduced by stpred's fno2d (it needs None)")
    factorization = meta.get("factorization")
    if factorization not in (None, "dense", "Dense"):
        raise UserError(f"{FAMILY}: factorization={factorization!r} is not imported; stpred holds dense weights only")
    act = meta.get("non_linearity")
    if act is not None and not (isinstance(act, PickledName) and act.name in _GELU):
        raise UserError(f"{FAMILY}: non_linearity={act!r} is not GELU; stpred's fno2d uses GELU")
    conv = meta.get("conv_module")
    if conv is not None and not (isinstance(conv, PickledName) and conv.name.endswith(".SpectralConv")):
        raise UserError(f"{FAMILY}: conv_module={conv!r} is not neuralop's SpectralConv")
    max_modes = meta.get("max_n_modes")
    if max_modes is not None and n_modes is not None and tuple(max_modes) != tuple(n_modes):
        raise UserError(f"{FAMILY}: max_n_modes={tuple(max_modes)} differs from n_modes; not imported")


def _n_layers(state: dict[str, Any], prefix: str) -> int:
    idx = {int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def fno_plan(
    state: dict[str, Any],
    meta: dict[str, Any] | None,
    in_shape: tuple[int, int, int, int],
    out_frames: int | None,
) -> Plan:
    """Map a neuraloperator FNO state_dict (and its constructor arguments ``meta``) onto ``fno2d``.

    Args:
        state: tensors (``_metadata`` removed).
        meta: the constructor arguments (``_metadata`` or ``<name>_metadata.pkl``); ``None``: neuralop's defaults.
        in_shape: ``(T, C, H, W)`` with ``T * C = in_channels``.
        out_frames: forecast length; default ``out_channels / C`` for a one-shot model, else 1.
    """
    meta = dict(meta or {})
    _check_options(meta)
    if any(".weight.core" in k or ".weight.factors" in k for k in state):
        raise UserError(f"{FAMILY}: factorized spectral weights (Tucker/CP/TT) are not imported; dense only")
    t_in, c = in_shape[0], in_shape[1]
    depth = _n_layers(state, "fno_blocks.convs.")
    w0 = state.get("fno_blocks.convs.0.weight.tensor", state.get("fno_blocks.convs.0.weight"))
    if not isinstance(w0, torch.Tensor) or not w0.is_complex() or w0.dim() != 4:
        raise UserError(f"{FAMILY}: fno_blocks.convs.0.weight.tensor is not a dense complex [in, out, m1, m2] tensor")
    width, _, rows, m2 = (int(s) for s in w0.shape)
    if rows % 2:
        raise UserError(
            f"{FAMILY}: the first mode axis keeps {rows} modes (odd); stpred keeps as many negative as positive modes"
        )
    m1 = rows // 2
    n_lift = _n_layers(state, "lifting.fcs.")
    out_channels = int(state["projection.fcs.1.weight"].shape[0])
    proj_hidden = int(state["projection.fcs.0.weight"].shape[0])
    if not any(k.startswith("fno_blocks.channel_mlp.") for k in state):
        raise UserError(f"{FAMILY}: the file has no channel MLPs (use_channel_mlp=False); stpred imports the default")
    grid = "periodic" if meta.get("positional_embedding", "grid") == "grid" else "none"
    if out_channels == c:
        mode, frames = "autoregressive", int(out_frames or 1)
    else:
        mode, frames = "oneshot", int(out_frames or max(out_channels // c, 1))
    kwargs: dict[str, Any] = {
        "modes": [m1, m2],
        "width": width,
        "depth": depth,
        "mode": mode,
        "lift_hidden": int(state["lifting.fcs.0.weight"].shape[0]) if n_lift == 2 else None,
        "proj_hidden": proj_hidden,
        "channel_mlp": int(state["fno_blocks.channel_mlp.0.fcs.0.weight"].shape[0]) / width,
        "grid": grid,
        "spectral_norm": "forward",
    }
    if n_lift not in (1, 2):
        raise UserError(f"{FAMILY}: the lifting MLP has {n_lift} layers; stpred's fno2d takes one or two")

    def squeeze1(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1])

    def conv1d_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape, 1)

    def conv1x1(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape, 1)

    def spectral(t: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(torch.roll(t, shifts=t.shape[2] // 2, dims=2).resolve_conj())

    entries: list[Entry] = []
    lift_dst = ["lift"] if n_lift == 1 else ["lift.0", "lift.2"]
    for j, dst in enumerate(lift_dst):
        entries += [
            Entry(f"lifting.fcs.{j}.weight", f"{dst}.weight", squeeze1, conv1d_shape),
            Entry(f"lifting.fcs.{j}.bias", f"{dst}.bias"),
        ]
    for j, dst in enumerate(["project.0", "project.2"]):
        entries += [
            Entry(f"projection.fcs.{j}.weight", f"{dst}.weight", squeeze1, conv1d_shape),
            Entry(f"projection.fcs.{j}.bias", f"{dst}.bias"),
        ]
    for i in range(depth):
        blk, dst = "fno_blocks.", f"layers.{i}."
        entries += [
            Entry(f"{blk}convs.{i}.weight.tensor", f"{dst}spectral.weight", spectral, lambda s: s[:-1]),
            Entry(f"{blk}convs.{i}.bias", f"{dst}pointwise.bias", lambda t: t.reshape(-1), lambda s: (*s, 1, 1)),
            Entry(f"{blk}fno_skips.{i}.conv.weight", f"{dst}pointwise.weight", lambda t: conv1x1(t), lambda s: s[:-1]),
        ]
        for j in range(2):
            entries += [
                Entry(f"{blk}channel_mlp.{i}.fcs.{j}.weight", f"{dst}mlp.{2 * j}.weight", conv1x1, lambda s: s[:-1]),
                Entry(f"{blk}channel_mlp.{i}.fcs.{j}.bias", f"{dst}mlp.{2 * j}.bias"),
            ]
        entries.append(Entry(f"{blk}channel_mlp_skips.{i}.weight", f"{dst}gate"))
    ref = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    return Plan(
        family=FAMILY,
        model="fno2d",
        kwargs=kwargs,
        in_shape=in_shape,
        out_frames=frames,
        entries=entries,
        reference_params=ref,
        notes=[
            f"{mode}: {t_in * c} input channels read as T={t_in} x C={c}, {out_channels} output channels",
            f"modes: neuralop n_modes ({rows}, {2 * (m2 - 1)}) -> fno2d modes [{m1}, {m2}]",
        ],
    )
