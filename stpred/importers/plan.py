"""An import plan: which stpred model to build and where each reference tensor goes, checked shape by shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from stpred.errors import UserError
from stpred.registry import create_model

__all__ = ["Entry", "Plan", "apply_plan", "fmt_shape", "parse_in_shape"]

Shape = tuple[int, ...]


def fmt_shape(shape: Shape | torch.Size) -> str:
    """``(8, 1, 3, 3)``, ``(80,)``: a shape as Python prints a tuple."""
    return str(tuple(int(s) for s in shape))


def parse_in_shape(value: Any) -> tuple[int, int, int, int]:
    """``"T,C,H,W"`` or a sequence of four positive ints."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise UserError(f"in_shape must be four positive ints T,C,H,W, got {value!r}")
    return shape  # type: ignore[return-value]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _same_shape(shape: Shape) -> Shape:
    return shape


@dataclass
class Entry:
    """One reference tensor ``src`` that becomes the stpred tensor ``dst``.

    ``convert`` turns the reference tensor into stpred's layout; ``src_shape`` gives the reference shape that
    stpred's shape for ``dst`` implies (so a mismatch is reported in the file's own terms).
    """

    src: str
    dst: str
    convert: Callable[[torch.Tensor], torch.Tensor] = _same
    src_shape: Callable[[Shape], Shape] = _same_shape


@dataclass
class Plan:
    """What a converter reads from a reference file.

    Attributes:
        family: the reference implementation and class, for messages and the checkpoint's provenance.
        model: stpred registry name.
        kwargs: the model's hyperparameters (without ``in_shape``/``out_frames``).
        in_shape: ``(T_in, C, H, W)``.
        out_frames: forecast length (``None`` for a classifier).
        entries: reference tensor -> stpred tensor.
        synthesized: stpred tensors the reference does not store but implies (e.g. an identity projection).
        ignored: reference keys with no stpred counterpart and no effect in evaluation (optimiser state, etc.).
        reference_params: the parameter count as the reference counts it (complex entries once).
        notes: lines for the report.
        num_classes: classes of a classifier (``None`` for a forecaster).
    """

    family: str
    model: str
    kwargs: dict[str, Any]
    in_shape: tuple[int, int, int, int]
    out_frames: int
    entries: list[Entry]
    synthesized: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    reference_params: int = 0
    notes: list[str] = field(default_factory=list)
    num_classes: int | None = None

    @property
    def target(self) -> dict[str, int]:
        """``{"num_classes": n}`` for a classifier, else ``{"out_frames": n}``."""
        return {"num_classes": self.num_classes} if self.num_classes is not None else {"out_frames": self.out_frames}

    def describe(self) -> str:
        kw = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        name, value = next(iter(self.target.items()))
        return f"{self.model}(in_shape={list(self.in_shape)}, {name}={value}, {kw})"


def build_model(plan: Plan) -> nn.Module:
    """The stpred model the plan describes; an invalid hyperparameter is one :class:`UserError`."""
    try:
        return create_model(plan.model, in_shape=plan.in_shape, **plan.target, **plan.kwargs)
    except UserError as exc:
        raise UserError(f"{plan.family}: cannot build {plan.model} from this file and the flags: {exc}") from None


def apply_plan(plan: Plan, state: dict[str, Any]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Build the model, check every tensor in the file's order, convert and load (strict).

    Returns:
        ``(net, converted)``: the model holding the weights, and its state_dict entries taken from the file.

    Raises:
        UserError: the first reference tensor whose shape does not fit (expected vs found), a tensor the plan does
            not place, or a model tensor the file lacks.
    """
    net = build_model(plan)
    target = net.state_dict()
    by_src = {e.src: e for e in plan.entries}
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in plan.ignored or not isinstance(value, torch.Tensor):
            continue
        entry = by_src.get(key)
        if entry is None:
            raise UserError(
                f"tensor {key} {fmt_shape(value.shape)} has no place in {plan.describe()}; "
                f"check --model/--arrangement (the file looks like {plan.family})"
            )
        if entry.dst not in target:
            raise UserError(f"tensor {key} maps to {entry.dst}, which {plan.model} does not have")
        expected = entry.src_shape(tuple(target[entry.dst].shape))
        if tuple(value.shape) != tuple(expected):
            raise UserError(
                f"tensor {key} does not fit {plan.describe()}: expected shape {fmt_shape(expected)}, "
                f"found {fmt_shape(value.shape)}"
            )
        out = entry.convert(value)
        converted[entry.dst] = out.to(target[entry.dst].dtype).contiguous()
    missing_src = [e.src for e in plan.entries if e.src not in state]
    if missing_src:
        raise UserError(f"the file lacks tensor {missing_src[0]}, which {plan.describe()} needs")
    for key, value in plan.synthesized.items():
        converted[key] = value.to(target[key].dtype)
    lacking = [k for k in target if k not in converted]
    if lacking:
        raise UserError(f"nothing in the file gives {plan.model} tensor {lacking[0]}")
    net.load_state_dict(converted, strict=True)
    return net.eval(), converted
