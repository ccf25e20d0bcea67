"""Missing values in a forecaster's input: filled as training did, said in one line, NaN in the forecast.

A checkpoint trained on masked data (``metadata["mask"]``) keeps the cells observed at least once as ``valid_mask``
``[C, H, W]``. At prediction time a NaN input value is filled with the training mean (0 once normalised, what the
model saw at masked cells during training); the forecast is NaN outside the trained mask and at cells missing in
every input frame. NaN inside the trained mask (where training always had data) is filled too, and said in one
line. A checkpoint trained with ``fill_nan`` fills input NaN with the training's fill values and says so; its
forecast has no NaN, as its training targets had none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["MaskReport", "fill_input", "training_fill"]


def _count(n: int, noun: str) -> str:
    """``"1 NaN value"``, ``"2 NaN values"``: a count with its noun in agreement."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class MaskReport:
    """What a forecast did with missing input values.

    Attributes:
        masked_cells: cells ``(c, h, w)`` per sample that are NaN in the forecast (outside the trained mask, or
            missing in every input frame).
        trained_masked: of these, the cells outside the trained mask.
        unexpected: NaN input values where the training data had no missing value (filled).
        first: ``(sample, frame, channel, row, column)`` of the first unexpected value, or ``None``.
        fill: how missing input values were filled, in words.
        filled_by_training_rule: the checkpoint was trained with ``fill_nan`` (the forecast has no NaN).
    """

    masked_cells: int = 0
    trained_masked: int = 0
    unexpected: int = 0
    first: tuple[int, int, int, int, int] | None = None
    fill: str = ""
    filled_by_training_rule: bool = False

    def message(self) -> str | None:
        """One line when the input held NaN where training had data, else ``None``."""
        if not self.unexpected:
            return None
        n, t, c, h, w = self.first  # type: ignore[misc]
        where = f"sample {n}, frame {t}, channel {c}, row {h}, column {w}"
        outcome = (
            "the forecast is NaN at cells missing in every input frame"
            if not self.filled_by_training_rule
            else "as the checkpoint's training did"
        )
        return (
            f"the input holds {_count(self.unexpected, 'NaN value')} where the training data had none "
            f"(first at {where}); they were filled with {self.fill}, {outcome}"
        )

    def attributes(self) -> dict[str, str]:
        """NetCDF attributes that record the masking and filling of this forecast; none when nothing was."""
        if not (self.masked_cells or self.unexpected):
            return {}
        if self.filled_by_training_rule:
            return {"stpred_fill": f"missing input values filled with {self.fill} (the checkpoint's fill_nan)"}
        attrs = {
            "stpred_mask": (
                f"NaN (_FillValue) where the input is masked: {_count(self.masked_cells, 'cell')} per time step "
                f"({self.trained_masked} outside the trained mask, {self.masked_cells - self.trained_masked} "
                "missing in every input frame); elsewhere missing input values were filled with "
                f"{self.fill or 'the training mean'}"
            )
        }
        if self.unexpected:
            attrs["stpred_unexpected_nan"] = str(self.message())
        return attrs


def training_fill(meta: Mapping[str, Any]) -> list[float] | None:
    """Per-channel fill values in the data's units when the checkpoint was trained with ``fill_nan``, else ``None``.

    Reads every form checkpoints have stored: a list of values (weather), ``{"method", "values"}`` (arrays),
    ``"mean"``/``"zero"`` (arrays before 0.2) or one number.
    """
    fill = meta.get("fill_nan")
    channels = int(meta["in_shape"][1])
    if fill is None:
        return None
    if isinstance(fill, Mapping):
        return [float(v) for v in fill["values"]]
    if isinstance(fill, str):
        return [float(v) for v in meta["mean"]] if fill == "mean" else [0.0] * channels
    if isinstance(fill, Sequence):
        return [float(v) for v in fill]
    return [float(fill)] * channels


def fill_input(
    x: Tensor,
    mean: Tensor,
    std: Tensor,
    *,
    valid_mask: Tensor | None = None,
    fill: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor | None, MaskReport]:
    """Normalise ``x`` and fill its NaN; say which forecast cells are masked.

    Args:
        x: ``[B, T_in, C, H, W]`` float32 in the data's units, NaN where missing.
        mean: ``[1, 1, C, 1, 1]`` training mean.
        std: ``[1, 1, C, 1, 1]`` training standard deviation.
        valid_mask: ``[C, H, W]`` bool, the cells observed at least once in training, or ``None``.
        fill: the training's ``fill_nan`` values ``[C]`` (then nothing is masked), or ``None``.

    Returns:
        ``(normalised x without NaN, masked [B, C, H, W] bool or None, report)``: ``masked`` marks the forecast
        cells to set to NaN (``None`` when there are none).
    """
    missing = torch.isnan(x)
    any_missing = bool(missing.any())
    if fill is not None:
        if not any_missing:
            return (x - mean) / std, None, MaskReport()
        values = torch.as_tensor(list(fill), dtype=x.dtype, device=x.device).reshape(1, 1, -1, 1, 1)
        report = _report(missing, None, None, f"the checkpoint's fill values {list(fill)}", by_rule=True)
        return (torch.where(missing, values, x) - mean) / std, None, report
    if not any_missing and valid_mask is None:
        return (x - mean) / std, None, MaskReport()
    normalised = torch.where(missing, torch.zeros((), dtype=x.dtype, device=x.device), (x - mean) / std)
    masked = missing.all(dim=1)  # [B, C, H, W]: no input frame observed
    if valid_mask is not None:
        masked = masked | ~valid_mask.to(x.device).unsqueeze(0)
    report = _report(missing, valid_mask, masked, "the training mean", by_rule=False)
    return normalised, (masked if bool(masked.any()) else None), report


def _report(
    missing: Tensor, valid_mask: Tensor | None, masked: Tensor | None, fill: str, *, by_rule: bool
) -> MaskReport:
    unexpected = missing if valid_mask is None else missing & valid_mask.to(missing.device)
    count = int(unexpected.sum())
    first = tuple(int(v) for v in torch.nonzero(unexpected)[0]) if count else None
    trained = 0 if valid_mask is None else int((~valid_mask).sum())
    return MaskReport(
        masked_cells=0 if masked is None else int(masked[0].sum()),
        trained_masked=trained,
        unexpected=count,
        first=first,  # type: ignore[arg-type]
        fill=fill,
        filled_by_training_rule=by_rule,
    )
