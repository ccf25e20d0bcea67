"""Training loaders that resume where a checkpoint left them, in the middle of an epoch too (docs/training.md,
"Kill and resume").

The order of an epoch depends on ``(seed, epoch)`` alone (:class:`SeededShuffleSampler`, or a dataset's own
epoch sampler), and :class:`ResumableLoader` tells Lightning how many batches of the current epoch were consumed:
Lightning keeps that in the checkpoint (``loops.fit_loop.state_dict.combined_loader``) and hands it back on resume,
and the loader then skips those batches' indices without loading them. Together with a seed per training step
(:class:`stpred.resume.SeedEachStep`), a run killed and resumed ends at the weights of an uninterrupted one.

One process only: under DDP, Lightning's distributed sampler (seeded by epoch) replaces the sampler and a run
resumes at the start of the checkpoint's epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

__all__ = ["ResumableLoader", "SeededShuffleSampler", "training_loader"]


class SeededShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` for each epoch, drawn from ``(seed, epoch)`` alone.

    Args:
        n: dataset length.
        seed: base seed; Lightning sets the epoch through :meth:`set_epoch` before every epoch.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class _SkippingBatchSampler(BatchSampler):
    """A :class:`BatchSampler` whose next pass starts ``skip`` batches in (index lists only, no data is read)."""

    def __init__(self, sampler: Sampler[int] | Sized, batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for i, batch in enumerate(super().__iter__()):
            if i >= skip:
                yield batch


class ResumableLoader(DataLoader):
    """A training :class:`DataLoader` that Lightning saves and restores (its ``state_dict`` interface).

    The state is the sampler's epoch and the batches of that epoch handed out; a resumed loader skips them when the
    first epoch it serves is that same epoch (a checkpoint written at an epoch's end resumes at the next one).
    """

    def __init__(
        self, dataset: Dataset, *, sampler: Sampler[int], batch_size: int, drop_last: bool, **kwargs: Any
    ) -> None:
        super().__init__(dataset, batch_sampler=_SkippingBatchSampler(sampler, batch_size, drop_last), **kwargs)
        self._epoch: int | None = None
        self._served = 0
        self._pending: dict[str, int] | None = None

    def _sampler_epoch(self) -> int | None:
        epoch = getattr(self.batch_sampler.sampler, "epoch", None)
        return None if epoch is None else int(epoch)

    def __iter__(self) -> Iterator[Any]:
        epoch, pending, self._pending = self._sampler_epoch(), self._pending, None
        skip = pending["batches"] if pending and pending["epoch"] == epoch and pending["batches"] < len(self) else 0
        self.batch_sampler.skip = skip
        self._epoch, self._served = epoch, skip
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": -1 if self._epoch is None else self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pending = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


def training_loader(
    dataset: Dataset, *, batch_size: int, processes: int, sampler: Sampler[int] | None = None, **kwargs: Any
) -> DataLoader:
    """The training loader: resumable in one process (``sampler`` defaults to a :class:`SeededShuffleSampler` from
    torch's initial seed, which ``stpred-train`` sets from ``seed``), a plain shuffling one under DDP, where
    Lightning installs its distributed sampler (``processes``: how many share the data,
    :meth:`~stpred.datamodules.base.ForecastDataModule.data_parallel_size`). The last incomplete batch is dropped
    when there is more than one."""
    drop_last = len(dataset) > batch_size
    if processes > 1:
        if sampler is None:
            return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last, **kwargs)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **kwargs)
    sampler = sampler if sampler is not None else SeededShuffleSampler(len(dataset), torch.initial_seed())
    return ResumableLoader(dataset, sampler=sampler, batch_size=batch_size, drop_last=drop_last, **kwargs)
