"""Lightning callbacks: the validation picture (input / truth / prediction / error) written each validation epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from stpred.plotting import render_panel

__all__ = ["PredictionPanel", "render_panel"]


class PredictionPanel(L.Callback):
    """Each validation epoch, draw the first ``num_samples`` validation sequences and the model's forecasts.

    The picture is :func:`stpred.plotting.panel_figure`: per channel a colour scale chosen from the data (sequential
    for offset fields such as Kelvin, diverging for anomalies), a prediction - truth row, units from the metadata
    (``channels``, ``units``) and north up when the metadata has ``latitude`` (or ``latitude_order``).

    Args:
        dirpath: folder for ``val_epoch_<NNN>.png``.
        num_samples: sequences drawn.
        every_n_epochs: draw every n-th validation epoch.
        max_frames: frames per row at most.
        max_channels: the first this many channels are drawn.
    """

    def __init__(
        self, dirpath: str, num_samples: int = 3, every_n_epochs: int = 1, max_frames: int = 10, max_channels: int = 4
    ) -> None:
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.max_frames = max_frames
        self.max_channels = max_channels
        self._batch: dict[str, torch.Tensor] | None = None
        self.last_path: Path | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, **_: Any
    ) -> None:
        if batch_idx != 0 or not self._active(trainer) or not isinstance(outputs, dict) or "pred" not in outputs:
            return
        k = self.num_samples
        self._batch = {
            "x": self._masked(pl_module.denormalize(batch["x"][:k]), batch.get("x_valid"), k),
            "y": self._masked(pl_module.denormalize(batch["y"][:k]), batch.get("y_valid"), k),
            "pred": self._masked(pl_module.denormalize(outputs["pred"][:k]), batch.get("y_valid"), k),
        }

    @staticmethod
    def _masked(values: Any, valid: Any, k: int) -> Any:
        """``values`` on the CPU with masked cells NaN (drawn grey), so the filled values are never shown."""
        values = values.float().cpu()
        return values if valid is None else values.masked_fill(~valid[:k].cpu(), float("nan"))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._batch is None or not self._active(trainer):
            return
        meta = pl_module.hparams.get("data", {})
        model_name = pl_module.hparams.get("model", {}).get("name", "")
        channels = self._batch["x"].shape[2]
        self.last_path = render_panel(
            self._batch["x"].numpy(),
            self._batch["y"].numpy(),
            self._batch["pred"].numpy(),
            self.dirpath / f"val_epoch_{trainer.current_epoch:03d}.png",
            names=list(meta.get("channels") or []) or None,
            units=list(meta.get("units") or []) or None,
            latitude=list(meta["latitude"]) if meta.get("latitude") is not None else None,
            latitude_order=meta.get("latitude_order"),
            title=f"{model_name} on {meta.get('dataset', '')}: validation, epoch {trainer.current_epoch}",
            channels=range(min(channels, self.max_channels)),
            max_frames=self.max_frames,
        )
        self._batch = None
