"""The DataModule contract shared by every dataset (architecture.md, "DataModule").

A datamodule, once ``setup()`` ran, exposes ``in_shape = (T_in, C, H, W)``, ``out_frames``, ``task`` and
``metadata()``: plain values (normalisation statistics from the training split, channel names, units, grid,
time step) that the task stores in the checkpoint. Batches are dicts ``{"x": [B, T_in, C, H, W],
"y": [B, T_out, C, H, W]}`` of normalised float32 tensors.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

__all__ = ["ForecastDataModule", "METADATA_KEYS"]

#: Keys every forecasting ``metadata()`` carries. ``mean``/``std`` are per channel, so that
#: ``physical = normalised * std + mean``; ``data_range`` is the de-normalised value range for SSIM/PSNR
#: (``None`` where they mean nothing, e.g. physical fields); ``pde`` asks for relative-L2 metrics. Optional keys the
#: task reads: ``latitude`` (row latitudes, for latitude-weighted errors) and ``alt_units`` (``{name: scale}``: errors
#: are also reported in other units, ``mse_<name> = mse * scale**2``, ``mae_<name> = mae * scale``).
METADATA_KEYS = ("dataset", "task", "in_shape", "out_frames", "channels", "units", "mean", "std", "data_range", "pde")


class ForecastDataModule(L.LightningDataModule):
    """Base class: subclasses build ``self.datasets = {"train": ..., "val": ..., "test": ...}`` in ``setup``.

    Args:
        batch_size: training batch size (per process).
        eval_batch_size: validation/test batch size; defaults to ``batch_size``.
        num_workers: DataLoader workers.
        pin_memory: pin host memory (useful on GPU).
    """

    task = "forecast"

    def __init__(
        self,
        *,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, Dataset] = {}

    # -- contract -------------------------------------------------------------------------------------------
    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        raise NotImplementedError

    @property
    def out_frames(self) -> int:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Plain-valued description saved in checkpoints; see :data:`METADATA_KEYS`."""
        raise NotImplementedError

    # -- loaders --------------------------------------------------------------------------------------------
    def _loader(self, split: str, *, shuffle: bool, batch_size: int) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: split '{split}' is not set up; call setup() first")
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
