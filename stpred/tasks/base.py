"""``TaskBase``: what the forecasting and classification tasks share.

The metadata check, the loss from :mod:`stpred.losses`, the model from the registry (and its optional
``torch.compile``), the hyperparameters and version stamps saved in the checkpoint, and the optimisers and schedules
of :mod:`stpred.tasks.optim`. A subclass names its ``kind``, its ``required_metadata`` and the model's target
arguments (``out_frames`` or ``num_classes``); it keeps its own constructor signature, whose arguments are what the
checkpoint's hyperparameters hold.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch.nn as nn

from stpred.errors import ConfigError
from stpred.losses import Loss, create_loss
from stpred.registry import create_model_from_config
from stpred.tasks.optim import build_optimizers

__all__ = ["TaskBase"]


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

    def configure_optimizers(self) -> dict[str, Any]:
        trainer = self.trainer
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        steps = max(1, int(trainer.estimated_stepping_batches) // max_epochs) if trainer.max_epochs else 1
        return build_optimizers(
            self.parameters(), dict(self.hparams.optim or {}), max_epochs=max_epochs, steps_per_epoch=steps
        )
