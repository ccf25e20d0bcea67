"""The DataModule contract shared by every dataset (docs/architecture.md, "DataModule").

A datamodule, once ``setup()`` ran, exposes ``in_shape = (T_in, C, H, W)``, ``out_frames``, ``task`` and
``metadata()``: plain values (normalisation statistics from the training split, channel names, units, grid,
time step) that the task stores in the checkpoint. Batches are dicts ``{"x": [B, T_in, C, H, W],
"y": [B, T_out, C, H, W]}`` of normalised float32 tensors (classification: ``{"x", "label"}``).

Shapes come from the config alone: :meth:`ForecastDataModule.shapes_from_config` answers ``in_shape`` and the
target (``out_frames`` or ``num_classes``) without reading data, and :func:`shapes_from_data_config` asks the class
a config's ``_target_`` names. Benchmarks and config checks use it; a datamodule's batches and ``metadata()`` agree
with it (tests/test_datamodule_contract.py).

Masks (docs/data.md, "Masked cells"): a forecasting datamodule whose data has missing values (NaN, a declared fill
value, or a mask variable or file) declares them instead of inventing values. ``metadata()["mask"]`` is then a dict
(``source``, ``static_masked`` cells, ``cells``, ``masked_values``) and every sample also holds ``"x_valid"``
``[T_in, C, H, W]`` and ``"y_valid"`` ``[T_out, C, H, W]`` bool (True = observed); the masked entries of ``x`` and
``y`` are 0 (the training mean, once normalised) and the statistics come from observed values only.
:meth:`ForecastDataModule.static_valid_mask` gives the cells observed at least once, which checkpoints keep. When
the user asks for filling (``fill_nan``) the values are filled, ``mask`` is ``None`` and ``metadata()["fill_nan"]``
says with what. Without missing values ``mask`` is ``None`` and the ``*_valid`` keys are absent.

Time convention: where a dataset has wall-clock stamps, a sample's ``"time"`` is the int64 Unix time in seconds
(UTC; naive stamps such as TaxiBJ's local ones are read as UTC) of the window's first input frame (batches:
``[B]``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from stpred.datamodules.resumable import training_loader
from stpred.errors import UserError

__all__ = [
    "CLASSIFY_METADATA_KEYS",
    "DataShapes",
    "ForecastDataModule",
    "METADATA_KEYS",
    "eval_sampler",
    "shapes_from_data_config",
]

#: Keys every forecasting ``metadata()`` carries. ``mean``/``std`` are per channel, so that
#: ``physical = normalised * std + mean``; ``data_range`` is the de-normalised value range for SSIM/PSNR
#: (``None`` where they mean nothing, e.g. physical fields); ``pde`` asks for relative-L2 metrics. Optional keys the
#: task reads: ``latitude`` (row latitudes, for latitude-weighted errors) and ``alt_units`` (``{name: scale}``: errors
#: are also reported in other units, ``mse_<name> = mse * scale**2``, ``mae_<name> = mae * scale``).
METADATA_KEYS = ("dataset", "task", "in_shape", "out_frames", "channels", "units", "mean", "std", "data_range", "pde")
#: Further keys of a classification ``metadata()`` (``out_frames`` is then ``None``).
CLASSIFY_METADATA_KEYS = ("num_classes", "class_names")


@dataclass(frozen=True)
class DataShapes:
    """What a model needs to know about a dataset: the task, ``in_shape = (T_in, C, H, W)`` and the target.

    Attributes:
        task: ``"forecast"`` or ``"classify"``.
        in_shape: ``(T_in, C, H, W)`` of one sample's ``x``.
        out_frames: forecast only: ``T_out`` of ``y``.
        num_classes: classify only.
    """

    task: str
    in_shape: tuple[int, int, int, int]
    out_frames: int | None = None
    num_classes: int | None = None

    def target(self) -> dict[str, int]:
        """``{"out_frames": n}`` or ``{"num_classes": k}``: the model factory's keyword arguments."""
        if self.task == "classify":
            return {"num_classes": int(self.num_classes)}  # type: ignore[arg-type]
        return {"out_frames": int(self.out_frames)}  # type: ignore[arg-type]


def shapes_from_data_config(cfg: Mapping[str, Any]) -> DataShapes:
    """The shapes of the datamodule a data config (with ``_target_``) builds, asked of its class, reading no data."""
    from hydra.utils import get_class

    target = cfg.get("_target_")
    if not target:
        raise UserError("the data config has no _target_ naming its datamodule class")
    cls = get_class(str(target))
    if not (isinstance(cls, type) and issubclass(cls, ForecastDataModule)):
        raise UserError(f"data._target_={target} is not a stpred datamodule (a ForecastDataModule subclass)")
    return cls.shapes_from_config(cfg)


def _data_parallel_ranks(trainer: Any = None) -> tuple[int, int]:
    """``(W, r)``: how many processes share the data and this one's rank among them; ``(1, 0)`` in one process.

    With a trainer, Lightning's ``distributed_sampler_kwargs`` (its strategy's data-parallel world: all nodes'
    processes under DDP), nothing when the user turned ``use_distributed_sampler`` off; without one, the initialised
    default process group of :mod:`torch.distributed` (a loop of the user's own under ``torchrun``)."""
    if trainer is not None:
        if not getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", True):
            return 1, 0
        kwargs = trainer.distributed_sampler_kwargs or {}
        return int(kwargs.get("num_replicas", 1)), int(kwargs.get("rank", 0))
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def eval_sampler(dataset: Dataset, trainer: Any = None, split: str = "eval") -> Sampler | None:
    """The sampler of a validation or test loader: ``None`` (the samples in order) in one process; under W processes
    rank r reads samples r, r + W, r + 2W, ... (Lightning's ``UnrepeatedDistributedSampler``, not shuffled).

    Every sample is read exactly once over all processes, so the sum-reduced metric states
    (:class:`stpred.metrics.ForecastMetrics`, torchmetrics' accuracy) equal one process's. Lightning's own
    ``DistributedSampler``, which it would put in otherwise, pads an uneven split with repeated samples, and those
    would be counted twice; it leaves a loader whose sampler already is a ``DistributedSampler`` as it is. Ranks may
    then get one sample and one batch fewer, which evaluation allows: it has no gradient sync, and the tasks'
    ``sync_dist`` logs of evaluation steps reduce once, at epoch end.

    Args:
        dataset: the split, with ``__len__``.
        trainer: the Lightning trainer the datamodule is attached to, if any (see :func:`_data_parallel_ranks`).
        split: the split's name, for the error message.

    Raises:
        UserError: the split has fewer samples than there are processes (one would have no batch, which Lightning
            refuses and a collective at epoch end would wait on forever).
    """
    replicas, rank = _data_parallel_ranks(trainer)
    if replicas <= 1:
        return None
    n = len(dataset)  # type: ignore[arg-type]
    if 0 < n < replicas:
        raise UserError(
            f"the {split} split has {n} samples, fewer than the {replicas} processes that share it; every process "
            f"needs at least one (use fewer devices, or a larger {split} split)"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=False)


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

    def static_valid_mask(self) -> np.ndarray | None:
        """``[C, H, W]`` bool, True where a cell is observed at least once (e.g. land of a land-only product), or
        ``None`` when nothing is masked. Checkpoints keep it; forecasts are NaN outside it."""
        return None

    @classmethod
    def shapes_from_config(cls, cfg: Mapping[str, Any]) -> DataShapes:
        """The task, ``in_shape`` and target this datamodule gives for the options ``cfg`` (a data config or a
        mapping of constructor arguments), without reading data; at most a file header or a label map."""
        raise NotImplementedError(f"{cls.__name__} does not answer shapes_from_config")

    @classmethod
    def config_value(cls, cfg: Mapping[str, Any], key: str) -> Any:
        """``cfg[key]``, else the constructor's default for ``key``."""
        if key in cfg:
            return cfg[key]
        param = inspect.signature(cls.__init__).parameters.get(key)
        if param is None or param.default is inspect.Parameter.empty:
            raise UserError(f"{cls.__name__}: the data config has no '{key}' and the class no default for it")
        return param.default

    # -- loaders --------------------------------------------------------------------------------------------
    def _loader(self, split: str, *, shuffle: bool, batch_size: int) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: split '{split}' is not set up; call setup() first")
        # Evaluation splits read each sample once over all processes (eval_sampler); training keeps Lightning's
        # shuffling DistributedSampler, whose padding only repeats a few training samples.
        sampler = None if shuffle else eval_sampler(self.datasets[split], self.trainer, split)
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > batch_size,
        )

    def data_parallel_size(self) -> int:
        """How many processes share the data (1 in one process), as the loaders split it."""
        return _data_parallel_ranks(self.trainer)[0]

    def train_dataloader(self) -> DataLoader:
        """Shuffled by ``(seed, epoch)``; resumable mid-epoch in one process (:mod:`stpred.datamodules.resumable`)."""
        if "train" not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: split 'train' is not set up; call setup() first")
        return training_loader(
            self.datasets["train"],
            batch_size=self.batch_size,
            processes=self.data_parallel_size(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
