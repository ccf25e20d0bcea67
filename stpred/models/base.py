"""The base every predictor inherits: shapes and target parsed once, the forward input checked once, a version.

A predictor maps ``[B, T_in, C, H, W]`` to a forecast ``[B, T_out, C, H, W]`` (``out_frames``) or to class logits
``[B, num_classes]``. Its constructor is keyword-only::

    Model(*, in_shape=(T_in, C, H, W), out_frames=None, num_classes=None, **hyperparameters)

:class:`SpatioTemporalModel` validates ``in_shape`` and the target (exactly one of ``out_frames`` and
``num_classes``; ``num_classes`` only where :attr:`~SpatioTemporalModel.classifies`), and
:meth:`~SpatioTemporalModel.check_input` raises one :class:`stpred.errors.UserError` naming the model, the expected
and the given shape. The check is plain Python on ``x.shape`` and ``x.dtype``, which ``torch.compile`` turns into
guards, so it costs no graph break.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn

from stpred.errors import UserError
from stpred.models import _validate

__all__ = ["SpatioTemporalModel", "InputError"]


class InputError(UserError):
    """A tensor passed to a predictor does not have the shape or dtype it was built for."""


class _VersionAlias:
    """``_version``, read by the tasks and older code, mirrors ``version`` on the class and on its instances."""

    def __get__(self, obj: object, owner: type) -> int:
        return owner.version


class SpatioTemporalModel(nn.Module):
    """Base of every predictor ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]`` (or logits ``[B, num_classes]``).

    Subclasses set the class attributes, call ``super().__init__(in_shape=..., out_frames=..., num_classes=...)``
    first, set ``grid_multiple`` / ``fixed_grid`` if their grid is constrained, and call :meth:`check_input` at the
    top of ``forward``.

    Args:
        in_shape: ``(T_in, C, H, W)``.
        out_frames: forecast length T_out (forecasting).
        num_classes: number of classes (classification, where :attr:`classifies`).

    Attributes:
        name: registry name, the prefix of every error message.
        version: bumped when a change makes older checkpoints of the model load into different behaviour;
            ``load_predictor`` warns when a checkpoint's version differs.
        classifies: the model can be built with ``num_classes``.
        any_length: ``forward`` takes any number of input frames (recurrent models), not only ``T_in``.
        grid_multiple: H and W of an input must be multiples of this (encoder strides, patches).
        fixed_grid: H and W of an input must equal ``in_shape``'s (flattened latents, position codes).
    """

    name: ClassVar[str] = "model"
    version: ClassVar[int] = 1
    classifies: ClassVar[bool] = False
    any_length: ClassVar[bool] = False
    #: the hint appended to an input error, e.g. why T_in is fixed.
    input_hint: ClassVar[str] = ""
    _version = _VersionAlias()

    def __init__(
        self, *, in_shape: Sequence[int], out_frames: int | None = None, num_classes: int | None = None
    ) -> None:
        super().__init__()
        self.in_shape = _validate.in_shape(self.name, in_shape)
        self.out_frames, self.num_classes = _validate.target(
            self.name, out_frames, num_classes, classify=self.classifies
        )
        self.grid_multiple = 1
        self.fixed_grid = False

    @property
    def task(self) -> str:
        """``"forecast"`` or ``"classify"``."""
        return "forecast" if self.num_classes is None else "classify"

    def check_input(self, x: torch.Tensor, *, single_frame: bool = False) -> None:
        """Raise :class:`InputError` unless ``x`` is a floating ``[B, T_in, C, H, W]`` (``[B, C, H, W]`` when
        ``single_frame``) that this model was built for."""
        t, c, h, w = self.in_shape
        ndim = 4 if single_frame else 5
        ok = isinstance(x, torch.Tensor) and x.ndim == ndim and x.is_floating_point() and x.shape[-3] == c
        if ok and not single_frame:
            ok = x.shape[1] >= 1 if self.any_length else x.shape[1] == t
        if ok:
            gh, gw, m = x.shape[-2], x.shape[-1], self.grid_multiple
            ok = (gh, gw) == (h, w) if self.fixed_grid else gh % m == 0 and gw % m == 0
        if not ok:
            raise InputError(self._input_message(x, single_frame))

    def _input_message(self, x: object, single_frame: bool) -> str:
        t, c, h, w = self.in_shape
        if self.fixed_grid:
            grid = f"H={h}, W={w}"
        else:
            grid = "H, W" + (f" (H and W divisible by {self.grid_multiple})" if self.grid_multiple > 1 else "")
        frames = "" if single_frame else ("T, " if self.any_length else f"T_in={t}, ")
        got = f"{list(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        hint = f"; {self.input_hint}" if self.input_hint else ""
        return (
            f"{self.name} built for in_shape={self.in_shape} expects a floating-point [B, {frames}C={c}, {grid}] "
            f"input, got {got}{hint}"
        )
