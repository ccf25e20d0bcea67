"""PredFormer reference (``yyyujintang/PredFormer``, ``PredFormer_Model``) -> stpred ``predformer``.

Each reference variant keeps its GatedTransformers under its own names; the order they run in gives stpred's
arrangement:

=========  =====================================================================================================
``TSST``   ``blocks.{i}.ts_temporal_transformer, ts_space_transformer, st_space_transformer, st_temporal_transformer``
``STTS``   the same four names, stored (and run) in the order st_space, st_temporal, ts_temporal, ts_space
``TS``     ``blocks.{i}.ts_temporal_transformer, ts_space_transformer``
``ST``     ``blocks.{i}.st_space_transformer, st_temporal_transformer``
``TST``    ``blocks.{i}.temporal_transformer_first, space_transformer, temporal_transformer_second``
``STS``    ``blocks.{i}.space_transformer_first, temporal_transformer, space_transformer_second``
full       ``space_temporal_transformer`` (one stack of ``Ndepth`` GTBs, one closing LayerNorm)
fac_ts     ``temporal_transformer`` then ``space_transformer`` (stacks; the file cannot tell fac_ts from fac_st)
=========  =====================================================================================================

A GatedTransformer ``layers.{k}.0`` (PreNorm attention) / ``layers.{k}.1`` (PreNorm SwiGLU) and its closing ``norm``
become stpred's ``norm1``/``attn``/``norm2``/``mlp`` and ``norm3``. The head's output vector is ``(c p1 p2)`` in the
reference and ``(p1 p2 c)`` in stpred, so its rows are permuted. Fac-S-T is refused: the reference reads its
final ``(b n) t d`` tokens as ``(b t n)``, which stpred does not reproduce.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from einops import rearrange

from stpred.errors import UserError
from stpred.importers.plan import Entry, Plan

__all__ = ["ARRANGEMENTS", "looks_like_predformer", "predformer_plan"]

FAMILY = "PredFormer reference PredFormer_Model"

#: Arrangement -> (transformer names per layer in run order, kinds, stacked (full/fac) or per-layer).
ARRANGEMENTS: dict[str, tuple[tuple[str, ...], str, bool]] = {
    "TSST": (("ts_temporal_transformer", "ts_space_transformer", "st_space_transformer", "st_temporal_transformer"),
             "TSST", False),
    "STTS": (("st_space_transformer", "st_temporal_transformer", "ts_temporal_transformer", "ts_space_transformer"),
             "STTS", False),
    "TS": (("ts_temporal_transformer", "ts_space_transformer"), "TS", False),
    "ST": (("st_space_transformer", "st_temporal_transformer"), "ST", False),
    "TST": (("temporal_transformer_first", "space_transformer", "temporal_transformer_second"), "TST", False),
    "STS": (("space_transformer_first", "temporal_transformer", "space_transformer_second"), "STS", False),
    "full": (("space_temporal_transformer",), "F", True),
    "fac_ts": (("temporal_transformer", "space_transformer"), "TS", True),
}  # fmt: skip
_GTB = (
    ("layers.{k}.0.norm.", "norm1."),
    ("layers.{k}.0.fn.to_qkv.", "attn.qkv."),
    ("layers.{k}.0.fn.to_out.0.", "attn.proj."),
    ("layers.{k}.1.norm.", "norm2."),
    ("layers.{k}.1.fn.fc1_g.", "mlp.fc_gate."),
    ("layers.{k}.1.fn.fc1_x.", "mlp.fc_x."),
    ("layers.{k}.1.fn.fc2.", "mlp.fc_out."),
)


def looks_like_predformer(state: dict[str, Any]) -> bool:
    return "to_patch_embedding.1.weight" in state and any(k.startswith("mlp_head.") for k in state)


def _file_layout(state: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """``("layer", names in file order)`` for per-layer variants, ``("stack", names)`` for full/fac."""
    layer = [m.group(1) for k in state if (m := re.match(r"blocks\.0\.(\w+?)\.(?:layers|norm)\.", k))]
    if layer:
        return "layer", tuple(dict.fromkeys(layer))
    top = [m.group(1) for k in state if (m := re.match(r"(\w+_transformer)\.(?:layers|norm)\.", k))]
    return "stack", tuple(dict.fromkeys(top))


def _normalise(arrangement: str) -> str:
    key = arrangement.strip()
    if key.lower() in ("full", "fac_ts", "fac_st"):
        return key.lower()
    return key.upper().replace(",", "").replace(" ", "")


def detect_arrangement(state: dict[str, Any]) -> str | None:
    """The arrangement the file's transformer names (and their order) imply; ``None`` for the fac variants."""
    kind, names = _file_layout(state)
    for name, (expected, _, stacked) in ARRANGEMENTS.items():
        if stacked == (kind == "stack") and names == expected and name != "fac_ts":
            return name
    return None


def predformer_plan(
    state: dict[str, Any],
    in_shape: tuple[int, int, int, int],
    out_frames: int | None,
    *,
    arrangement: str | None = None,
    heads: int | None = None,
) -> Plan:
    """Map a ``PredFormer_Model`` state_dict onto ``predformer``.

    Args:
        state: the reference state_dict (prefixes already stripped).
        in_shape: ``(T, C, H, W)``; the position code is not stored, so T, H and W come from here.
        out_frames: forecast length (default ``T``).
        arrangement: one of :data:`ARRANGEMENTS` (or ``fac_st``, refused); default read from the keys.
        heads: attention heads; the file stores ``heads * dim_head`` only, so this is required.
    """
    kind, names = _file_layout(state)
    detected = detect_arrangement(state)
    if arrangement is None:
        if detected is None:
            raise UserError(
                f"{FAMILY}: the file holds {', '.join(names) or 'no known transformer'}; "
                "pass --arrangement (fac_ts and fac_st store the same keys)"
            )
        arrangement = detected
    arrangement = _normalise(arrangement)
    if arrangement == "fac_st":
        raise UserError(
            "--arrangement fac_st is not imported: the reference Fac-S-T reads its final (b n) t d tokens as "
            "(b t n), which stpred's predformer does not reproduce"
        )
    if arrangement not in ARRANGEMENTS:
        raise UserError(f"--arrangement must be one of {', '.join([*ARRANGEMENTS, 'fac_st'])}, got {arrangement!r}")
    expected, kinds, stacked = ARRANGEMENTS[arrangement]
    # fac_ts and fac_st register space before temporal; only the set of names can be checked there.
    same = set(names) == set(expected) if arrangement == "fac_ts" else names == expected
    if stacked != (kind == "stack") or not same:
        raise UserError(
            f"--arrangement {arrangement} expects transformers {', '.join(expected)}"
            f"{'' if stacked else ' in every layer'}, but the file holds {', '.join(names) or 'none'} in that order"
            + (f" ({detected})" if detected else "")
        )
    if heads is None:
        inner = state[f"{'blocks.0.' if not stacked else ''}{expected[0]}.layers.0.0.fn.to_qkv.weight"].shape[0] // 3
        raise UserError(f"{FAMILY}: pass --heads (the file stores heads * dim_head = {inner} only)")

    t_in, c = in_shape[0], in_shape[1]
    dim, patch_dim = (int(s) for s in state["to_patch_embedding.1.weight"].shape)
    p = round((patch_dim / c) ** 0.5)
    if p * p * c != patch_dim:
        raise UserError(
            f"tensor to_patch_embedding.1.weight {tuple(state['to_patch_embedding.1.weight'].shape)} does not fit "
            f"C={c}: its {patch_dim} inputs are not patch_size^2 * C for any patch size"
        )
    prefix0 = "" if stacked else "blocks.0."
    qkv = state[f"{prefix0}{expected[0]}.layers.0.0.fn.to_qkv.weight"]
    inner = qkv.shape[0] // 3
    if inner % heads:
        raise UserError(f"--heads {heads} does not divide the file's heads * dim_head = {inner}")
    mlp_hidden = int(state[f"{prefix0}{expected[0]}.layers.0.1.fn.fc1_g.weight"].shape[0])

    entries: list[Entry] = [
        Entry("to_patch_embedding.1.weight", "embed.weight"),
        Entry("to_patch_embedding.1.bias", "embed.bias"),
        Entry("mlp_head.0.weight", "head.0.weight"),
        Entry("mlp_head.0.bias", "head.0.bias"),
        Entry("mlp_head.1.weight", "head.1.weight", lambda w: _head_rows(w, c, p)),
        Entry("mlp_head.1.bias", "head.1.bias", lambda b: _head_rows(b, c, p)),
    ]
    synthesized: dict[str, torch.Tensor] = {}
    project_out = f"{prefix0}{expected[0]}.layers.0.0.fn.to_out.0.weight" in state
    if not project_out and not (heads == 1 and inner == dim):
        raise UserError(f"{FAMILY}: the file has no attention output projection (to_out) but heads={heads}")
    if stacked:
        depth = _depth(state, expected[0])
        n_units = depth
        gtb = 0
        for name in expected:
            for k in range(depth):
                entries += _gtb_entries(f"{name}.", k, f"blocks.{gtb}.", project_out, synthesized, dim)
                gtb += 1
            entries += [Entry(f"{name}.norm.{s}", f"blocks.{gtb - 1}.norm3.{s}") for s in ("weight", "bias")]
    else:
        n_units = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        for i in range(n_units):
            for j, name in enumerate(expected):
                depth = _depth(state, f"blocks.{i}.{name}")
                if depth != 1:
                    raise UserError(
                        f"{FAMILY}: blocks.{i}.{name} stacks {depth} GTBs under one LayerNorm (depth={depth}); "
                        "stpred's per-layer arrangements give every GTB its own, so only depth=1 imports"
                    )
                gtb = i * len(expected) + j
                src = f"blocks.{i}.{name}."
                entries += _gtb_entries(src, 0, f"blocks.{gtb}.", project_out, synthesized, dim)
                entries += [Entry(f"{src}norm.{s}", f"blocks.{gtb}.norm3.{s}") for s in ("weight", "bias")]
    kwargs: dict[str, Any] = {
        "arrangement": arrangement if stacked else list(kinds),
        "n_units": n_units,
        "patch_size": p,
        "dim": dim,
        "heads": int(heads),
        "dim_head": inner // heads,
        "mlp_hidden": mlp_hidden,
    }
    if stacked:
        kwargs["legacy_stack_norm"] = True
    ref = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    return Plan(
        family=f"{FAMILY} ({arrangement})",
        model="predformer",
        kwargs=kwargs,
        in_shape=in_shape,
        out_frames=int(out_frames or t_in),
        entries=entries,
        synthesized=synthesized,
        reference_params=ref,
        notes=[f"arrangement {arrangement} ({'from --arrangement' if detected != arrangement else 'from the keys'})"],
    )


def _depth(state: dict[str, Any], prefix: str) -> int:
    ks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.layers\.(\d+)\.", k))}
    return max(ks) + 1 if ks else 0


def _gtb_entries(
    src: str, k: int, dst: str, project_out: bool, synthesized: dict[str, torch.Tensor], dim: int
) -> list[Entry]:
    out = []
    for s_part, d_part in _GTB:
        if "to_out" in s_part and not project_out:
            # heads == 1 and dim_head == dim: the reference has no output projection; stpred's is the identity.
            synthesized[f"{dst}attn.proj.weight"] = torch.eye(dim)
            synthesized[f"{dst}attn.proj.bias"] = torch.zeros(dim)
            continue
        names = ("weight",) if "to_qkv" in s_part else ("weight", "bias")
        out += [Entry(src + s_part.format(k=k) + n, dst + d_part + n) for n in names]
    return out


def _head_rows(t: torch.Tensor, c: int, p: int) -> torch.Tensor:
    """Reorder the head's output rows from the reference's ``(c p1 p2)`` to stpred's ``(p1 p2 c)``."""
    return rearrange(t, "(c p1 p2) ... -> (p1 p2 c) ...", c=c, p1=p, p2=p)
