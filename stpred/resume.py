"""What makes a run survive a kill (docs/training.md, "Kill and resume").

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file beside it, flushes it to disk and renames
  it, so ``last.ckpt`` and the best checkpoint are always either the old or the new file, never a torn one.
* :class:`SeedEachStep` seeds torch, NumPy and ``random`` from ``(seed, global step)`` before every training step,
  so a resumed run draws the same random numbers (dropout, drop-path) as an uninterrupted one; the data order comes
  from :mod:`stpred.datamodules.resumable`.
* :class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` that keeps the best score when a run resumes into a new
  folder (the old best file is referred to, never deleted) and never takes a NaN score as the best;
  :class:`LastCheckpoint` also writes ``last.ckpt`` every ``every_n_steps`` training steps.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from stpred.atomic import atomic_output

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "LoaderPosition", "RunCheckpoint", "SeedEachStep", "step_seed"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the checkpoint's folder, ``fsync``, rename (:func:`atomic_output`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            torch.save(checkpoint, tmp)


def step_seed(seed: int, step: int) -> int:
    """The seed of training step ``step`` of a run seeded ``seed`` (fits NumPy's 32 bits)."""
    return (int(seed) * 1_000_003 + int(step)) % (2**32)


class SeedEachStep(L.Callback):
    """Before each training step, seed torch (all devices), NumPy and ``random`` from ``(seed, global step)``.

    Args:
        seed: the run's seed (``stpred-train seed=``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        value = step_seed(self.seed, trainer.global_step)
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


class LoaderPosition(L.Callback):
    """Hands the checkpoint's position inside the epoch to the training loader (:mod:`stpred.datamodules.resumable`).

    Lightning restores a loader's ``state_dict`` only when it builds the loader after the checkpoint is read, but
    ``trainer.estimated_stepping_batches`` (asked by ``configure_optimizers`` for per-step schedules) builds it
    before; so the saved state is handed over here, before the first batch is drawn.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.fit_loop._load_combined_loader_states()


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for resumable runs.

    Resumed into another folder, it keeps the checkpoint's best score and best path (Lightning forgets both), so a
    later epoch must beat the score of the whole run to become the best; the earlier best file stays where it is.
    A NaN score is never saved as the best.
    """

    @property
    def state_key(self) -> str:
        # The key of a plain ModelCheckpoint with the same settings: checkpoints of either class resume each other.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        self.best_model_path = state_dict.get("best_model_path", "")
        self.best_model_score = state_dict.get("best_model_score")

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or not torch.isfinite(torch.as_tensor(current)).all():
            return False
        carried = self.best_model_score if not self.best_k_models else None
        if carried is not None and self.monitor is not None:
            better = torch.lt if self.mode == "min" else torch.gt
            if not bool(better(torch.as_tensor(current).cpu(), torch.as_tensor(carried).cpu())):
                return False
        return super().check_monitor_top_k(trainer, current)


class LastCheckpoint(RunCheckpoint):
    """The ``last.ckpt`` writer: after every epoch as ``ModelCheckpoint(monitor=None)``, and also every
    ``every_n_steps`` training steps when set, so a long epoch is not lost.

    Args:
        every_n_steps: also save after every this many optimiser steps (``None``: only at epoch ends).
        **kwargs: ``ModelCheckpoint``'s.
    """

    def __init__(self, *args: Any, every_n_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every_n_steps = int(every_n_steps) if every_n_steps else 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and self._last_global_step_saved != step:
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))
