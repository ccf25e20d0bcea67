"""``ForecastTask``: sequence-to-sequence forecasting ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]``."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MinMetric

from stpred._version import __version__
from stpred.metrics import ForecastMetrics, WeightedMean
from stpred.tasks.base import TaskBase

__all__ = ["ForecastTask", "REQUIRED_METADATA"]

REQUIRED_METADATA = ("in_shape", "out_frames", "mean", "std")


class ForecastTask(TaskBase):
    """Trains a registered predictor on normalised sequences; reports metrics in physical units.

    Everything it takes is a plain value, so checkpoints load with ``weights_only=True`` and
    :func:`stpred.load_predictor` can rebuild the model with nothing else at hand.

    Args:
        model: ``{"name": registry name, "kwargs": {...}}``; ``in_shape``/``out_frames`` come from ``data``.
        data: the datamodule's ``metadata()`` (shapes, per-channel ``mean``/``std``, ``data_range``, ``pde``,
            optional ``latitude`` for latitude-weighted errors, ``mask`` when the data has masked cells: batches then
            carry ``x_valid``/``y_valid`` and the loss and metrics skip masked values; the static mask is kept in
            the checkpoint as the buffer ``valid_mask`` ``[C, H, W]``).
        optim: optimiser and schedule, see :data:`stpred.tasks.optim.OPTIM_DEFAULTS`.
        loss: a forecast loss of :func:`stpred.losses.list_losses`: ``"mse"`` (default), ``"mse+l1"`` or
            ``"convs5"`` on normalised values, ``"rel_l2"`` (FNO's relative L2) on de-normalised values.
        compile: compile the network in place (``self.net.compile``) in ``configure_model``.
        compile_kwargs: keyword arguments for ``torch.compile``.
        datamodule: the datamodule's config (plain dict), kept so evaluation can rebuild the data.
        stpred_version: the library version that wrote the checkpoint.
    """

    kind = "forecast"
    required_metadata = REQUIRED_METADATA

    def __init__(
        self,
        model: dict[str, Any],
        data: dict[str, Any],
        optim: dict[str, Any] | None = None,
        loss: str = "mse",
        compile: bool = False,
        compile_kwargs: dict[str, Any] | None = None,
        datamodule: dict[str, Any] | None = None,
        stpred_version: str = __version__,
    ) -> None:
        super().__init__(model, data, loss)
        self.out_frames = int(data["out_frames"])
        self.build_net(out_frames=self.out_frames)
        channels = int(data["in_shape"][1])
        mean = torch.as_tensor(data["mean"], dtype=torch.float32).reshape(1, 1, channels, 1, 1)
        std = torch.as_tensor(data["std"], dtype=torch.float32).reshape(1, 1, channels, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.val_metrics = ForecastMetrics.from_metadata(data)
        self.test_metrics = ForecastMetrics.from_metadata(data)
        # Evaluation losses as exact sums over all processes (Lightning's mean sync truncates uneven batch counts).
        self.val_loss, self.test_loss = WeightedMean(), WeightedMean()
        if data.get("mask"):
            # The cells observed at least once; filled from the datamodule in setup(), restored from checkpoints.
            frame = tuple(int(v) for v in data["in_shape"][1:])
            self.register_buffer("valid_mask", torch.ones(frame, dtype=torch.bool))
        self.val_mse_best = MinMetric()
        self.test_per_lead: dict[str, list[float]] = {}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        static = datamodule.static_valid_mask() if hasattr(datamodule, "static_valid_mask") else None
        if hasattr(self, "valid_mask") and static is not None:
            self.valid_mask.copy_(torch.as_tensor(static, dtype=torch.bool))

    # -- model ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``[B, T_in, C, H, W]`` -> normalised ``[B, T_out, C, H, W]``."""
        return self.net(x)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.std + self.mean

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """The configured loss; ``valid`` (bool, True = observed) leaves masked cells out."""
        if self.loss_fn.physical_units:
            return self.loss_fn(self.denormalize(pred), self.denormalize(target), valid=valid)
        return self.loss_fn(pred, target, valid=valid)

    # -- steps ----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if getattr(self.net, "supports_teacher_forcing", False):
            # Next-frame training over the whole sequence (ConvS5): frames 0..L-2 predict 1..L-1.
            frames = torch.cat([batch["x"], batch["y"]], dim=1)
            pred, target = self.net.teacher_forced(frames[:, :-1]), frames[:, 1:]
            valid = torch.cat([batch["x_valid"], batch["y_valid"]], dim=1)[:, 1:] if "y_valid" in batch else None
        else:
            pred, target, valid = self(batch["x"]), batch["y"], batch.get("y_valid")
        loss = self._loss(pred, target, valid)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=pred.shape[0])
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str, metrics: ForecastMetrics) -> dict:
        pred, valid = self(batch["x"]), batch.get("y_valid")
        loss = self._loss(pred, batch["y"], valid)
        getattr(self, f"{stage}_loss").update(loss, weight=pred.shape[0])  # logged at epoch end, no per-step sync
        metrics.update(self.denormalize(pred), self.denormalize(batch["y"]), valid=valid)
        return {"pred": pred.detach()}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step(batch, "test", self.test_metrics)

    def _with_alt_units(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add errors in the metadata's other units (e.g. TaxiBJ flow counts): squares scale by scale**2."""
        out = dict(values)
        for unit, scale in (self.hparams.data.get("alt_units") or {}).items():
            for key, power in (("mse", 2), ("mae", 1), ("rmse", 1), ("mse_frame", 2), ("mae_frame", 1)):
                if key in values:
                    out[f"{key}_{unit}"] = values[key] * float(scale) ** power
        return out

    def on_validation_epoch_end(self) -> None:
        values = self._with_alt_units(self.val_metrics.compute())
        self.val_metrics.reset()
        loss = self.val_loss.compute()
        self.val_loss.reset()
        # compute() already reduced the states across processes; sync_dist averages identical values.
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log_dict({f"val/{k}": v.float() for k, v in values.items()}, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.val_mse_best.update(values["mse"])
            self.log("val/mse_best", self.val_mse_best.compute(), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        values = self._with_alt_units(self.test_metrics.compute())
        self.test_per_lead = {k: v.double().tolist() for k, v in self.test_metrics.per_lead().items()}
        self.test_metrics.reset()
        loss = self.test_loss.compute()
        self.test_loss.reset()
        self.log("test/loss", loss, sync_dist=True)
        self.log_dict({f"test/{k}": v.float() for k, v in values.items()}, sync_dist=True)
