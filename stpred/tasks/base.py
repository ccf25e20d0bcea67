"""``TaskBase``: what the forecasting and classification tasks share.

The metadata check, the loss from :mod:`stpred.losses`, the model from the registry (and its optional
``torch.compile``), the hyperparameters and version stamps saved in the checkpoint, and the optimisers and schedules
of :mod:`stpred.tasks.optim`. A subclass names its ``kind``, its ``required_metadata`` and the model's target
arguments (``out_frames`` or ``num_classes``); it keeps its own constructor signature, whose arguments are what the
checkpoint's hyperparameters hold.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import lightning as L
import torch.nn as nn

from stpred.errors import ConfigError
from stpred.losses import Loss, create_loss
from stpred.registry import create_model_from_config
from stpred.tasks.optim import build_optimizers

__all__ = ["TaskBase"]

log = logging.getLogger("stpred.train")


class TaskBase(L.LightningModule):
    """Checks the metadata, saves the subclass's constructor arguments, builds the loss and the model.

    Class attributes a subclass sets:
        kind: ``"forecast"`` or ``"classify"``: the kind of loss it accepts (:func:`stpred.losses.list_losses`).
        required_metadata: keys the datamodule's ``metadata()`` must hold.
        metadata_hint: how the metadata error names the datamodule.
        model_example: a registry name for the error about a missing model name.

    Attributes:
        net: the registered model.
        loss_fn: the :class:`~stpred.losses.Loss` named by ``loss``.
    """

    kind: str = ""
    required_metadata: tuple[str, ...] = ()
    metadata_hint: str = "a datamodule must provide"
    model_example: str = "simvpv2"

    def __init__(
        self, model: dict[str, Any], data: dict[str, Any], loss: str, *, loss_options: dict[str, Any] | None = None
    ) -> None:
        """Validate ``data``/``loss``/``model``, save the caller's constructor arguments as hyperparameters.

        The model itself is built by :meth:`build_net` once the subclass knows its target arguments.

        Args:
            model: ``{"name": registry name, "kwargs": {...}}``.
            data: the datamodule's ``metadata()``.
            loss: a registered loss of this task's ``kind``.
            loss_options: keyword options bound to the loss (e.g. ``label_smoothing``).
        """
        super().__init__()
        missing = [k for k in self.required_metadata if k not in data]
        if missing:
            raise ConfigError(f"datamodule metadata lacks {missing}; {self.metadata_hint} {self.required_metadata}")
        self.loss_fn: Loss = create_loss(loss, kind=self.kind, **(loss_options or {}))
        if "name" not in model:
            raise ConfigError(f"model config needs a 'name' (a registry name, e.g. model={self.model_example})")
        # The hyperparameters are the subclass's constructor arguments (Lightning reads them from its frame), so
        # that checkpoints rebuild the task with nothing but plain values.
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        self._schedule_start, self._restart_schedule = 0, False
        self._resumed_from: tuple[dict[str, Any], int] | None = None
        self._fresh_schedule: dict[str, Any] | None = None

    def build_net(self, **target: int) -> nn.Module:
        """Build the registered model for ``data["in_shape"]`` and ``target`` (``out_frames=`` or ``num_classes=``)
        as ``self.net``, and stamp its ``model_version`` into the hyperparameters."""
        in_shape = tuple(int(v) for v in self.hparams.data["in_shape"])
        self.net = create_model_from_config(self.hparams.model, in_shape, **target)
        self.hparams["model_version"] = int(getattr(self.net, "_version", 1))
        return self.net

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile(**(self.hparams.compile_kwargs or {}))
            self._compiled = True

    # -- the schedule across resumes ------------------------------------------------------------------------
    # A checkpoint records the epochs its schedule was planned for. Resumed with the same trainer.max_epochs, the
    # schedule continues exactly; with another (extending a finished run), it restarts over the epochs still to
    # run, and the run says so in one line.

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stpred_schedule"] = {"max_epochs": self.trainer.max_epochs, "start_epoch": self._schedule_start}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("stpred_schedule")
        if self._trainer is not None and saved is not None and self.trainer.state.fn == "fit":
            self._resumed_from = (saved, int(checkpoint["global_step"]))

    def _plan_schedule(self, max_epochs: int, steps_per_epoch: int) -> None:
        """On a resume: continue the checkpoint's schedule, or restart it over the epochs still to run."""
        saved, step = self._resumed_from
        self._resumed_from = None
        done = step // steps_per_epoch
        scheduler = (self.hparams.optim or {}).get("scheduler", "onecycle")
        if saved["max_epochs"] == max_epochs:
            self._schedule_start = int(saved["start_epoch"])
            log.info(f"resuming at step {step} (epoch {done} of {max_epochs}): the {scheduler} schedule continues")
            return
        self._schedule_start, self._restart_schedule = done, True
        log.info(
            f"resuming after epoch {done} with trainer.max_epochs={max_epochs} (the checkpoint planned "
            f"{saved['max_epochs']}): the {scheduler} schedule restarts over the remaining {max_epochs - done} epochs"
        )

    def configure_optimizers(self) -> dict[str, Any]:
        trainer = self.trainer
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        steps = max(1, int(trainer.estimated_stepping_batches) // max_epochs) if trainer.max_epochs else 1
        if self._resumed_from is not None:
            self._plan_schedule(max_epochs, steps)
        config = build_optimizers(
            self.parameters(),
            dict(self.hparams.optim or {}),
            max_epochs=max(1, max_epochs - self._schedule_start),
            steps_per_epoch=steps,
        )
        scheduler = config.get("lr_scheduler", {}).get("scheduler")
        self._fresh_schedule = None if scheduler is None else scheduler.state_dict()
        return config

    def on_train_start(self) -> None:
        # Lightning restored the old schedule's state after configure_optimizers; a restart puts the new one back.
        if not self._restart_schedule:
            return
        self._restart_schedule = False
        for config, optimizer in zip(self.trainer.lr_scheduler_configs, self.trainer.optimizers):
            config.scheduler.load_state_dict(self._fresh_schedule)
            for group, lr in zip(optimizer.param_groups, config.scheduler.get_last_lr()):
                group["lr"] = lr
