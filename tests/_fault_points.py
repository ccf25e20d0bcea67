"""Callbacks that put faults into a training process at chosen points, for tests/test_kill_resume.py and
tests/test_faults.py: SIGKILL (which nothing in the run can catch or tidy up after), SIGTERM, a NaN in a batch.

They are added to a run with ``+callbacks.fault._target_=_fault_points.<Class>`` and this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import io
import os
import signal

import lightning as L
import torch

from stpred.atomic import atomic_output


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class AfterStep(L.Callback):
    """Kill right after training step ``step`` (after the callbacks before it, e.g. a step checkpoint, ran)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            _die()


class AtEpochStart(L.Callback):
    """Kill as epoch ``epoch`` starts, after the previous epoch's checkpoints were written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            _die()


class DuringSave(L.Callback):
    """Kill in the middle of writing ``last.ckpt`` at or after step ``step``: half the bytes are in the temporary
    file that would have been renamed over it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def setup(self, trainer, pl_module, stage) -> None:
        checkpoint_io = trainer.strategy.checkpoint_io
        original = checkpoint_io.save_checkpoint

        def save(checkpoint, path, storage_options=None):
            if trainer.global_step >= self.step and str(path).endswith("last.ckpt"):
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                data = buffer.getvalue()
                with atomic_output(path) as tmp, open(tmp, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    _die()
            return original(checkpoint, path, storage_options)

        checkpoint_io.save_checkpoint = save


class SigtermAfterStep(L.Callback):
    """Send this process SIGTERM after training step ``step``, as a job scheduler would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class NanInput(L.Callback):
    """Put one NaN into the input of the batch that trains step ``step`` (counted from 1)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step + 1 == self.step:
            batch["x"][0, 0, 0, 0, 0] = float("nan")
