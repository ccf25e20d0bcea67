"""Faults a training run meets and how it ends (docs/training.md, "Faults").

* :class:`FiniteGuard`: a NaN or infinite training loss stops the run at once with :class:`TrainingDiverged`, naming
  the step, epoch and batch; weights that are no longer finite are never written, so the checkpoints already on
  disk stay the last good ones.
* :class:`SigtermCheckpoint`: SIGTERM (what SLURM, Kubernetes and ``timeout`` send) makes Lightning stop at the next
  batch boundary; this callback then writes ``last.ckpt`` so the run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from stpred.errors import UserError

__all__ = ["FiniteGuard", "SIGTERMException", "SigtermCheckpoint", "TrainingDiverged"]


class TrainingDiverged(UserError):
    """Training produced a NaN or infinite loss or weights; the message names the step and what to change."""


_ADVICE = "lower optim.lr, set trainer.gradient_clip_val=1.0, or check the data for extreme values"


class FiniteGuard(L.Callback):
    """Stop on a non-finite loss before it reaches the weights; refuse to save non-finite weights."""

    def __init__(self) -> None:
        self._batch_idx = -1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            raise TrainingDiverged(
                f"the training loss is {float(loss.detach().float().reshape(-1)[0])} at step {trainer.global_step + 1} "
                f"(epoch {trainer.current_epoch}, batch {self._batch_idx}); training stopped before the weights "
                f"changed and the checkpoints on disk were kept; {_ADVICE}"
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = [name for name, p in pl_module.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
        if bad:
            raise TrainingDiverged(
                f"{len(bad)} parameter tensors (first {bad[0]}) hold NaN or inf after step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}); this checkpoint was not written and the ones on disk were kept; "
                f"{_ADVICE}"
            )


class SigtermCheckpoint(L.Callback):
    """On SIGTERM, write ``path`` (the run's ``last.ckpt``) at the batch boundary where Lightning stopped.

    Attributes:
        saved: the path written, ``None`` until then.
        step: the global step saved.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saved: Path | None = None
        self.step = 0

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path)
        self.saved, self.step = self.path, trainer.global_step
