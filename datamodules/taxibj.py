"""TaxiBJ crowd flows (``taxibj``, docs/data.md §3), and any grid-flow files in the same layout (BikeNYC, TaxiNYC).

Two sources, both giving 4 -> 4 windows ``{"x": [T_in, 2, 32, 32], "y": [T_out, 2, 32, 32]}`` on a [0, 1] scale:

**Raw ST-ResNet / DeepST HDF5 files** (``BJ13_M32x32_T30_InOut.h5`` ... ``BJ16_...``): dataset ``data`` float64
``(T, C, H, W)`` (C = 2: inflow, outflow) and ``date`` bytes ``YYYYMMDDSS``, SS = 01 .. ``slots_per_day`` (48
half-hour slots for TaxiBJ, 24 hourly ones for the NYC files). One file or several (a glob in ``root`` or a list);
their frames are merged and sorted by time stamp (a repeated stamp keeps its first frame, with a warning).

* Windows are runs of ``t_in + t_out`` consecutive slots at stride 1; a window never spans a gap in the stamps
  (a missing slot or day). Slot ``slots_per_day`` of one day is followed by slot 01 of the next day.
  ``drop_incomplete_days=True`` first removes every day with a missing slot, as DeepST does.
* Splits are chronological: test = the windows that start in the last ``test_days`` calendar days of the data (28,
  as DeepST); validation = the contiguous block just before (``val_days`` calendar days, or else the last
  ``val_fraction`` of the remaining windows); train = the windows that end before validation starts. A window
  that would straddle a boundary is dropped, so the splits share no frame.
* Scaling is min-max to [0, 1], ``(v - flow_min) / flow_scale`` with ``flow_scale = flow_max - flow_min``, from the
  frames of the training period only. ``scaling="global"`` (default) uses one minimum and maximum over both
  channels, as DeepST and OpenSTL do; ``"channel"`` one pair per channel. Validation and test values may leave
  [0, 1] slightly. Min-max scaling has no mask: a NaN or inf in a file is refused at setup (count, stamp, cell).

Metrics are therefore in [0, 1] units (``mean = 0``, ``std = 1``, ``data_range = 1``), the units of the published
tables (docs/metrics.md §1). In flow counts: ``mse_counts = mse * flow_scale**2``,
``rmse_counts = rmse * flow_scale`` and
``mae_counts = mae * flow_scale`` (per channel with ``scaling="channel"``); ``flow_min``, ``flow_max`` and
``flow_scale`` are in ``metadata()``.

**OpenSTL's ``dataset.npz``**: ``X_train, Y_train, X_test, Y_test``, each ``(N, 4, 2, 32, 32)`` in [-1, 1], mapped
to [0, 1] by ``(v + 1) / 2`` as OpenSTL does. Its test set is the file's. Validation is the last ``val_fraction`` of
its training windows, and the ``npz_val_gap`` windows before it are dropped: the file's windowing is undocumented,
and if its windows slide by one slot, the last ``t_in + t_out - 1`` training windows share frames with the first
validation one. The file carries no raw extremes, so ``flow_min``/``flow_max``/``flow_scale`` are ``None``.

Augmentation: ``flip=True`` mirrors training windows left-right (the W axis) with probability 1/2, OpenSTL's only
augmentation for TaxiBJ; off by default, since a mirrored city is not a city the model will be asked about.

Examples:
    >>> from stpred.datamodules.taxibj import TaxiBJDataModule
    >>> dm = TaxiBJDataModule("data/taxibj")  # doctest: +SKIP
    >>> dm.setup()  # doctest: +SKIP
    >>> batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
    >>> batch["x"].shape, batch["y"].shape  # doctest: +SKIP
    (torch.Size([16, 4, 2, 32, 32]), torch.Size([16, 4, 2, 32, 32]))
"""

from __future__ import annotations

import datetime as dt
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.errors import UserError, check

__all__ = [
    "DEFAULT_FILES",
    "FlowSeries",
    "FlowWindows",
    "PairedWindows",
    "TaxiBJDataModule",
    "format_stamp",
    "load_flow_series",
    "parse_stamps",
    "read_flow_file",
    "slot_seconds",
    "split_windows",
    "window_starts",
]

log = logging.getLogger(__name__)

DEFAULT_FILES = "BJ*_M32x32_T30_InOut.h5"
#: (C, H, W) of TaxiBJ: what :meth:`TaxiBJDataModule.shapes_from_config` answers when no file is there to ask.
TAXIBJ_GRID = (2, 32, 32)
NPZ_KEYS = ("X_train", "Y_train", "X_test", "Y_test")
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
#: Tolerance on OpenSTL's [-1, 1] range when validating an npz.
NPZ_RANGE_TOL = 1e-3


# -- time stamps ----------------------------------------------------------------------------------------------------
def parse_stamps(stamps: Sequence[bytes | str], slots_per_day: int, source: str = "date") -> np.ndarray:
    """Absolute slot numbers of ``YYYYMMDDSS`` stamps: ``day_ordinal * slots_per_day + (SS - 1)``.

    Consecutive slots differ by one, across midnight too (slot ``slots_per_day`` of a day, then slot 01 of the next).

    Args:
        stamps: ``[T]`` stamps as bytes or str.
        slots_per_day: slots in a day (48 for half-hourly data).
        source: the file named in error messages.

    Returns:
        int64 ``[T]``.

    Raises:
        UserError: a stamp that is not ``YYYYMMDDSS`` with a valid date and ``1 <= SS <= slots_per_day``.
    """
    out = np.empty(len(stamps), dtype=np.int64)
    days: dict[str, int] = {}
    for i, raw in enumerate(stamps):
        text = raw.decode("ascii", "replace") if isinstance(raw, (bytes, np.bytes_)) else str(raw)
        text = text.strip()
        day = days.get(text[:8])
        if day is None:
            try:
                day = dt.datetime.strptime(text[:8], "%Y%m%d").toordinal()
            except ValueError:
                day = -1
            days[text[:8]] = day
        slot = int(text[8:]) if len(text) == 10 and text[8:].isdigit() else 0
        if day < 0 or not 1 <= slot <= slots_per_day:
            raise UserError(
                f"{source}: time stamp {text!r} (entry {i}) is not YYYYMMDDSS with SS in 01..{slots_per_day}; "
                "check the file, or set data.slots_per_day= to the slots in a day"
            )
        out[i] = day * slots_per_day + slot - 1
    return out


def slot_seconds(slots: np.ndarray | int, slots_per_day: int) -> np.ndarray:
    """Unix times (int64 seconds) of the starts of absolute slots: slot ``SS`` of a day starts at
    ``(SS - 1) * 24 h / slots_per_day`` after midnight. The stamps carry no zone (TaxiBJ's are Beijing time); they
    are read as UTC, the batch ``"time"`` convention of ``datamodules/base.py``."""
    day, s = np.divmod(np.asarray(slots, dtype=np.int64), slots_per_day)
    return (day - _EPOCH_ORDINAL) * 86_400 + s * 86_400 // slots_per_day


def format_stamp(slot: int, slots_per_day: int) -> str:
    """The ``YYYYMMDDSS`` stamp of an absolute slot number (inverse of :func:`parse_stamps`)."""
    day, s = divmod(int(slot), slots_per_day)
    return f"{dt.date.fromordinal(day):%Y%m%d}{s + 1:02d}"


# -- files ----------------------------------------------------------------------------------------------------------
def read_flow_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ST-ResNet grid-flow file.

    Args:
        path: HDF5 file with ``data`` ``(T, C, H, W)`` and ``date`` ``(T,)`` ``YYYYMMDDSS`` stamps.

    Returns:
        ``(data, date)``: float64 ``[T, C, H, W]`` and the raw stamps ``[T]``.

    Raises:
        UserError: unreadable file, missing datasets, or shapes that do not match the layout.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({' '.join(str(e).split())}); check data.files=") from None
    with f:
        missing = [k for k in ("data", "date") if k not in f]
        if missing:
            raise UserError(
                f"{path}: no dataset {' or '.join(repr(k) for k in missing)} (it has {sorted(f.keys())}); expected "
                "the ST-ResNet layout data (T, C, H, W) + date YYYYMMDDSS, check data.files="
            )
        data = np.asarray(f["data"][()], dtype=np.float64)
        date = np.asarray(f["date"][()]).reshape(-1)
    if data.ndim != 4 or data.shape[0] != date.shape[0]:
        raise UserError(
            f"{path}: data has shape {data.shape} and date {date.shape}; expected data (T, C, H, W) with one "
            "date per frame"
        )
    return data, date


@dataclass(frozen=True)
class FlowSeries:
    """Frames of one or more files merged in time order.

    Attributes:
        data: float64 ``[T, C, H, W]``.
        slots: int64 ``[T]`` absolute slot numbers, strictly increasing.
        files: the files read, in the order given.
    """

    data: np.ndarray
    slots: np.ndarray
    files: list[str]


def _refuse_nonfinite(path: Path | str, name: str, data: np.ndarray, place: Any, fix: str) -> None:
    """Refuse NaN or inf in ``data``: min-max scaling has no mask, so one NaN makes every scaled frame NaN.

    Args:
        path: the file, for the message.
        name: the array in the file (``data``, ``X_train`` ...).
        data: the values, in the file's axis order.
        place: ``index tuple -> text`` naming the first bad value's place.
        fix: what to do, for the message.

    Raises:
        UserError: with the count of NaN and inf values and the first one's place.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(np.sum(data, dtype=np.float64)):  # one pass, no copy: the common case
            return
    finite = np.isfinite(data)
    bad = int(finite.size - np.count_nonzero(finite))
    nan = int(np.count_nonzero(np.isnan(data)))
    first = tuple(int(v) for v in np.unravel_index(int(np.argmin(finite)), data.shape))
    raise UserError(
        f"{path}: {name} holds {bad:,} non-finite value{'s' if bad != 1 else ''} ({nan:,} NaN, {bad - nan:,} inf); "
        f"first at {place(first)} ({name}[{', '.join(map(str, first))}]); {fix}"
    )


def _frame_place(date: np.ndarray, index: tuple[int, ...]) -> str:
    """``frame 50 (date 2015030203), channel 1, row 2, column 3`` for ``index`` ``(t, c, h, w)`` of a flow file."""
    stamp = date[index[0]]
    stamp = stamp.decode("ascii", "replace") if isinstance(stamp, bytes) else str(stamp)
    return f"frame {index[0]} (date {stamp.strip()}), channel {index[1]}, row {index[2]}, column {index[3]}"


def load_flow_series(
    paths: Sequence[str | Path],
    slots_per_day: int = 48,
    *,
    drop_incomplete_days: bool = False,
    require_finite: bool = False,
) -> FlowSeries:
    """Read, merge and sort grid-flow files (see :func:`read_flow_file`).

    Args:
        paths: the files.
        slots_per_day: slots in a day.
        drop_incomplete_days: remove every day that misses a slot (DeepST's preprocessing).
        require_finite: refuse a file holding NaN or inf (training: min-max scaling has no mask).

    Returns:
        The merged series; a repeated stamp keeps the frame of the first file that has it.

    Raises:
        UserError: unreadable files, grids that differ between files, or NaN/inf with ``require_finite``.
    """
    datas, slots = [], []
    for path in paths:
        data, date = read_flow_file(path)
        if require_finite:
            _refuse_nonfinite(
                path, "data", data, lambda i, date=date: _frame_place(date, i),
                "min-max scaling has no mask: replace them in the file with finite flows, or leave the file out of "
                "data.files",
            )  # fmt: skip
        if datas and data.shape[1:] != datas[0].shape[1:]:
            raise UserError(
                f"{path}: frames (C, H, W) = {data.shape[1:]} differ from {datas[0].shape[1:]} in {paths[0]}; "
                "every file must hold the same grid, pick them with data.files="
            )
        datas.append(data)
        slots.append(parse_stamps(date, slots_per_day, str(path)))
    data = np.concatenate(datas) if len(datas) > 1 else datas[0]
    slot = np.concatenate(slots)
    order = np.argsort(slot, kind="stable")
    data, slot = data[order], slot[order]
    keep = np.ones(len(slot), dtype=bool)
    keep[1:] = slot[1:] != slot[:-1]
    if not keep.all():
        example = format_stamp(slot[~keep][0], slots_per_day)
        log.warning("%d repeated time stamps (e.g. %s); keeping the first frame of each", (~keep).sum(), example)
        data, slot = data[keep], slot[keep]
    if drop_incomplete_days:
        days, counts = np.unique(slot // slots_per_day, return_counts=True)
        full = np.isin(slot // slots_per_day, days[counts == slots_per_day])
        log.info("dropping %d incomplete days (%d frames)", (counts < slots_per_day).sum(), (~full).sum())
        data, slot = data[full], slot[full]
    return FlowSeries(data=data, slots=slot, files=[str(p) for p in paths])


# -- windows and splits -----------------------------------------------------------------------------------------------
def window_starts(slots: np.ndarray, length: int) -> np.ndarray:
    """Indices ``i`` where frames ``i .. i + length - 1`` are consecutive slots (``slots`` strictly increasing).

    Args:
        slots: int64 ``[T]`` absolute slot numbers.
        length: frames per window (``t_in + t_out``).

    Returns:
        int64 ``[N]`` start indices into ``slots``, increasing.
    """
    if len(slots) < length:
        return np.zeros(0, dtype=np.int64)
    span = slots[length - 1 :] - slots[: len(slots) - length + 1]
    return np.flatnonzero(span == length - 1).astype(np.int64)


def split_windows(
    slots: np.ndarray,
    starts: np.ndarray,
    length: int,
    slots_per_day: int,
    *,
    test_days: int,
    val_days: int | None = None,
    val_fraction: float = 0.1,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Chronological train / validation / test windows, no window across a boundary.

    Args:
        slots: int64 ``[T]`` absolute slot numbers.
        starts: ``[N]`` window start indices (:func:`window_starts`).
        length: frames per window.
        slots_per_day: slots in a day.
        test_days: the test period is the last ``test_days`` calendar days of ``slots``.
        val_days: calendar days of validation just before the test period; ``None`` uses ``val_fraction``.
        val_fraction: validation = this fraction of the windows before the test period (the last ones).

    Returns:
        ``(windows, boundaries)``: start indices per split, and the first slot of the validation and test periods
        (``{"val": slot, "test": slot}``).
    """
    first_slot, last_slot = slots[starts], slots[starts + length - 1]
    test_start = (int(slots[-1]) // slots_per_day - test_days + 1) * slots_per_day
    before_test = starts[last_slot < test_start]
    if val_days is not None:
        val_start = test_start - val_days * slots_per_day
    elif len(before_test):
        n_val = max(1, round(val_fraction * len(before_test)))
        val_start = int(slots[before_test[len(before_test) - n_val]])
    else:
        val_start = test_start
    windows = {
        "train": starts[last_slot < val_start],
        "val": starts[(first_slot >= val_start) & (last_slot < test_start)],
        "test": starts[first_slot >= test_start],
    }
    return windows, {"val": int(val_start), "test": int(test_start)}


# -- datasets ---------------------------------------------------------------------------------------------------------
def _maybe_flip(x: torch.Tensor, y: torch.Tensor, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if flip and torch.rand(()) < 0.5:
        return x.flip(-1), y.flip(-1)
    return x, y


class FlowWindows(Dataset):
    """Windows over one scaled series held in memory (shared by the splits).

    Args:
        frames: float32 ``[T, C, H, W]`` scaled frames.
        slots: int64 ``[T]`` absolute slot numbers of the frames.
        starts: ``[N]`` start index of each window in ``frames``.
        t_in: input frames.
        t_out: target frames.
        slots_per_day: slots in a day (for the Unix times of the slots).
        flip: mirror a window left-right with probability 1/2 (training augmentation).
    """

    def __init__(
        self,
        frames: torch.Tensor,
        slots: np.ndarray,
        starts: np.ndarray,
        t_in: int,
        t_out: int,
        slots_per_day: int = 48,
        flip: bool = False,
    ) -> None:
        self.frames = frames
        self.slots = slots
        self.seconds = slot_seconds(slots, slots_per_day)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.t_in = t_in
        self.t_out = t_out
        self.flip = flip

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"x": [T_in, C, H, W], "y": [T_out, C, H, W], "time": [], "index"}``; ``time`` is the int64 Unix time
        of the first input frame's slot start (:func:`slot_seconds`)."""
        s = int(self.starts[index])
        window = self.frames[s : s + self.t_in + self.t_out]
        x, y = _maybe_flip(window[: self.t_in], window[self.t_in :], self.flip)
        return {"x": x, "y": y, "time": torch.tensor(int(self.seconds[s]), dtype=torch.int64), "index": int(index)}


class PairedWindows(Dataset):
    """Pre-cut windows (OpenSTL's npz): rows ``rows`` of ``x`` and ``y``.

    Args:
        x: float32 ``[N, T_in, C, H, W]``.
        y: float32 ``[N, T_out, C, H, W]``.
        rows: ``[M]`` rows of this split.
        flip: mirror a window left-right with probability 1/2 (training augmentation).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, flip: bool = False) -> None:
        self.x = x
        self.y = y
        self.rows = np.asarray(rows, dtype=np.int64)
        self.flip = flip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"x": [T_in, C, H, W], "y": [T_out, C, H, W], "index": row in the file}``."""
        row = int(self.rows[index])
        x, y = _maybe_flip(self.x[row], self.y[row], self.flip)
        return {"x": x, "y": y, "index": row}


# -- datamodule -------------------------------------------------------------------------------------------------------
class TaxiBJDataModule(ForecastDataModule):
    """Grid-flow forecasting ``[B, t_in, C, H, W] -> [B, t_out, C, H, W]`` from ST-ResNet files or OpenSTL's npz.

    Args:
        root: folder of the files.
        files: a glob pattern in ``root``, a file name or path, or a list of them (relative ones are in ``root``).
        npz: OpenSTL's ``dataset.npz`` (relative to ``root`` unless absolute); when given, it is read instead of
            ``files``, and ``test_days``, ``val_days``, ``slots_per_day`` and ``drop_incomplete_days`` do not apply.
        name: dataset name in the metadata (``taxibj``, ``bikenyc``, ...).
        t_in: input frames.
        t_out: target frames.
        slots_per_day: slots in a day (48 half-hourly, 24 hourly).
        test_days: the test windows start in the last ``test_days`` calendar days.
        val_days: calendar days of validation before the test period; ``None`` uses ``val_fraction``.
        val_fraction: without ``val_days``, the last fraction of the remaining windows (raw files) or of the npz
            training windows that goes to validation.
        npz_val_gap: npz training windows dropped between train and validation; ``None`` gives ``t_in + t_out - 1``.
        scaling: ``"global"`` min-max (one pair, DeepST/OpenSTL) or ``"channel"`` (one pair per channel).
        drop_incomplete_days: drop days that miss a slot before windowing (DeepST).
        channels: channel names; ``None`` gives ``["inflow", "outflow"]`` for two channels.
        flip: left-right flip augmentation of training windows (OpenSTL's); off by default.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str | Path = "data/taxibj",
        *,
        files: str | Sequence[str] = DEFAULT_FILES,
        npz: str | Path | None = None,
        name: str = "taxibj",
        t_in: int = 4,
        t_out: int = 4,
        slots_per_day: int = 48,
        test_days: int = 28,
        val_days: int | None = None,
        val_fraction: float = 0.1,
        npz_val_gap: int | None = None,
        scaling: Literal["global", "channel"] = "global",
        drop_incomplete_days: bool = False,
        channels: Sequence[str] | None = None,
        flip: bool = False,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        positive = {"t_in": t_in, "t_out": t_out, "slots_per_day": slots_per_day, "test_days": test_days}
        for key, value in positive.items():
            check(value >= 1, f"TaxiBJDataModule: {key}={value} must be at least 1; set data.{key}=...")
        check(val_days is None or val_days >= 1, f"TaxiBJDataModule: val_days={val_days} must be >= 1 or null")
        check(0 < val_fraction < 1, f"TaxiBJDataModule: val_fraction={val_fraction} must lie in (0, 1)")
        check(npz_val_gap is None or npz_val_gap >= 0, f"TaxiBJDataModule: npz_val_gap={npz_val_gap} must be >= 0")
        check(scaling in ("global", "channel"), f"TaxiBJDataModule: scaling={scaling!r}; use 'global' or 'channel'")
        self.root = Path(root)
        self.files: str | list[str] = files if isinstance(files, str) else [str(f) for f in files]
        self.npz = Path(npz) if npz is not None else None
        self.name = name
        self.t_in, self.t_out = t_in, t_out
        self.slots_per_day = slots_per_day
        self.test_days = test_days
        self.val_days = val_days
        self.val_fraction = float(val_fraction)
        self.npz_val_gap = t_in + t_out - 1 if npz_val_gap is None else npz_val_gap
        self.scaling = scaling
        self.drop_incomplete_days = drop_incomplete_days
        self.channels = list(channels) if channels is not None else None
        self.flip = flip
        self.flow_min: float | list[float] | None = None
        self.flow_max: float | list[float] | None = None
        self.sources: list[str] = []
        self.split_info: dict[str, dict[str, Any]] = {}
        self._frame_shape: tuple[int, int, int] | None = None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], **overrides: Any) -> TaxiBJDataModule:
        """Rebuild the datamodule that produced ``meta`` (its ``init_args``), with loader or path overrides."""
        return cls(**{**meta["init_args"], **overrides})

    # -- files ------------------------------------------------------------------------------------------------------
    def _resolve(self, name: str | Path) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.root / path

    def resolve_files(self) -> list[Path]:
        """The raw files ``files`` names, sorted for a pattern and in the given order for a list."""
        if isinstance(self.files, str) and any(c in self.files for c in "*?["):
            found = sorted(p for p in self.root.glob(self.files) if p.is_file())
            if not found:
                raise UserError(
                    f"TaxiBJDataModule: no files matching {self.files!r} in {self.root.resolve()}; set data.root= to "
                    "the folder of the ST-ResNet .h5 files, or data.files= (or data.npz= for OpenSTL's dataset.npz)"
                )
            return found
        paths = [self._resolve(f) for f in ([self.files] if isinstance(self.files, str) else self.files)]
        if not paths:
            raise UserError("TaxiBJDataModule: data.files is empty; give a glob pattern or a list of .h5 files")
        for path in paths:
            if not path.is_file():
                raise UserError(f"TaxiBJDataModule: file {path} not found; fix data.files= or data.root=")
        return paths

    # -- setup ------------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read the source once and build the three splits (whatever ``stage``)."""
        if self.datasets:
            return
        if self.npz is not None:
            self._setup_npz()
        else:
            self._setup_raw()
        counts = ", ".join(f"{k} {len(v)}" for k, v in self.datasets.items())
        log.info("%s windows: %s (from %s)", self.name, counts, ", ".join(Path(s).name for s in self.sources))

    def _setup_raw(self) -> None:
        paths = self.resolve_files()
        series = load_flow_series(
            paths, self.slots_per_day, drop_incomplete_days=self.drop_incomplete_days, require_finite=True
        )
        length = self.t_in + self.t_out
        starts = window_starts(series.slots, length)
        windows, bounds = split_windows(
            series.slots,
            starts,
            length,
            self.slots_per_day,
            test_days=self.test_days,
            val_days=self.val_days,
            val_fraction=self.val_fraction,
        )
        if min(len(w) for w in windows.values()) == 0:
            first, last = (format_stamp(series.slots[i], self.slots_per_day) for i in (0, -1))
            raise UserError(
                f"TaxiBJDataModule: {len(starts)} windows of {length} consecutive slots in {len(paths)} file(s) "
                f"({first}..{last}) leave train {len(windows['train'])}, val {len(windows['val'])}, test "
                f"{len(windows['test'])}; lower data.test_days/data.val_days/data.val_fraction or add data.files"
            )
        data = series.data
        train = data[: np.searchsorted(series.slots, bounds["val"])]  # slots are sorted: a view, not a copy
        axes = (0, 2, 3) if self.scaling == "channel" else None
        lo, hi = train.min(axis=axes), train.max(axis=axes)
        if np.any(hi <= lo):
            raise UserError(
                f"TaxiBJDataModule: the training frames are constant ({lo} .. {hi}); min-max scaling is undefined, "
                "check data.files"
            )
        shape = (1, -1, 1, 1) if self.scaling == "channel" else ()
        # In place on the freshly read float64 array: no second full-size copy before the float32 one.
        np.subtract(data, np.reshape(lo, shape), out=data)
        np.divide(data, np.reshape(hi - lo, shape), out=data)
        frames = torch.from_numpy(data.astype(np.float32))
        self.flow_min, self.flow_max = _plain(lo), _plain(hi)
        self._frame_shape = tuple(int(v) for v in data.shape[1:])  # type: ignore[assignment]
        self.sources = [str(p) for p in paths]
        for split, split_starts in windows.items():
            self.datasets[split] = FlowWindows(
                frames, series.slots, split_starts, self.t_in, self.t_out, self.slots_per_day,
                flip=self.flip and split == "train",
            )  # fmt: skip
            self.split_info[split] = self._window_info(series.slots, split_starts, length)
        self.split_info["val"]["period_start"] = format_stamp(bounds["val"], self.slots_per_day)
        self.split_info["test"]["period_start"] = format_stamp(bounds["test"], self.slots_per_day)

    def _window_info(self, slots: np.ndarray, starts: np.ndarray, length: int) -> dict[str, Any]:
        return {
            "windows": len(starts),
            "first_window": format_stamp(slots[starts[0]], self.slots_per_day),
            "last_window": format_stamp(slots[starts[-1]], self.slots_per_day),
            "last_frame": format_stamp(slots[starts[-1] + length - 1], self.slots_per_day),
        }

    def _setup_npz(self) -> None:
        path = self._resolve(self.npz)  # type: ignore[arg-type]
        if not path.is_file():
            raise UserError(f"TaxiBJDataModule: npz file {path} not found; fix data.npz= or data.root=")
        arrays = _read_npz(path)
        for key in NPZ_KEYS:
            want_t = self.t_in if key.startswith("X") else self.t_out
            arr = arrays[key]
            if arr.ndim != 5 or arr.shape[1] != want_t or arr.shape[2:] != arrays["X_train"].shape[2:]:
                raise UserError(
                    f"{path}: {key} has shape {arr.shape}, expected (N, {want_t}, C, H, W) like X_train "
                    f"{arrays['X_train'].shape}; set data.t_in/data.t_out to the file's window"
                )
        for key in NPZ_KEYS:
            _refuse_nonfinite(
                path, key, arrays[key],
                lambda i: f"window {i[0]}, frame {i[1]}, channel {i[2]}, row {i[3]}, column {i[4]}",
                "OpenSTL's dataset.npz holds none: use the original file, or the raw .h5 files (data.npz=null)",
            )  # fmt: skip
        lo, hi = min(float(arrays[k].min()) for k in NPZ_KEYS[:2]), max(float(arrays[k].max()) for k in NPZ_KEYS[:2])
        if lo < -1 - NPZ_RANGE_TOL or hi > 1 + NPZ_RANGE_TOL:
            raise UserError(
                f"{path}: training values span {lo:g}..{hi:g}, not OpenSTL's [-1, 1]; use the original dataset.npz "
                "or the raw .h5 files (data.npz=null)"
            )
        n = len(arrays["X_train"])
        n_val = max(1, round(self.val_fraction * n))
        n_train = n - n_val - self.npz_val_gap
        if n_train < 1 or len(arrays["X_test"]) < 1:
            raise UserError(
                f"{path}: {n} training windows leave none for training after {n_val} validation windows and a gap "
                f"of {self.npz_val_gap}; lower data.val_fraction or data.npz_val_gap"
            )
        tensors = {k: torch.from_numpy(((v + 1.0) / 2.0).astype(np.float32)) for k, v in arrays.items()}
        rows = {"train": np.arange(n_train), "val": np.arange(n - n_val, n), "test": np.arange(len(tensors["X_test"]))}
        for split, split_rows in rows.items():
            part = "test" if split == "test" else "train"
            self.datasets[split] = PairedWindows(
                tensors[f"X_{part}"], tensors[f"Y_{part}"], split_rows, flip=self.flip and split == "train"
            )
            self.split_info[split] = {
                "windows": len(split_rows),
                "rows": [int(split_rows[0]), int(split_rows[-1]) + 1],
                "array": f"X_{part}/Y_{part}",
            }
        self._frame_shape = tuple(int(v) for v in arrays["X_train"].shape[2:])  # type: ignore[assignment]
        self.sources = [str(path)]

    # -- contract ---------------------------------------------------------------------------------------------------
    @classmethod
    def shapes_from_config(cls, cfg: Any) -> DataShapes:
        """``(t_in, C, H, W)`` -> ``t_out``: the grid from the header of the first file (or the npz's ``X_train``),
        else, with no file there yet, TaxiBJ's :data:`TAXIBJ_GRID`."""
        args = {k: cls.config_value(cfg, k) for k in ("root", "files", "npz", "t_in", "t_out")}
        files = args["files"] if isinstance(args["files"], str) else list(args["files"])
        dm = cls(args["root"], files=files, npz=args["npz"], t_in=int(args["t_in"]), t_out=int(args["t_out"]))
        try:
            grid = dm._npz_grid() if dm.npz is not None else _h5_grid(dm.resolve_files()[0])
        except UserError:
            grid = TAXIBJ_GRID
        return DataShapes("forecast", (dm.t_in, *grid), out_frames=dm.t_out)

    def _npz_grid(self) -> tuple[int, int, int]:
        path = self._resolve(self.npz)  # type: ignore[arg-type]
        try:
            with zipfile.ZipFile(path) as z, z.open("X_train.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape = read_header(f)[0]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"{path}: no readable X_train ({e})") from None
        return tuple(int(v) for v in shape[2:])  # type: ignore[return-value]

    def _shape(self) -> tuple[int, int, int]:
        if self._frame_shape is None:
            raise RuntimeError("TaxiBJDataModule: call setup() before reading in_shape or metadata()")
        return self._frame_shape

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return (self.t_in, *self._shape())

    @property
    def out_frames(self) -> int:
        return self.t_out

    def channel_names(self) -> list[str]:
        """The channel names: ``channels``, else inflow/outflow for two channels, else ``channel_<i>``."""
        c = self._shape()[0]
        if self.channels is not None:
            if len(self.channels) != c:
                raise UserError(f"TaxiBJDataModule: data.channels names {len(self.channels)} channels, the data {c}")
            return list(self.channels)
        return ["inflow", "outflow"] if c == 2 else [f"channel_{i}" for i in range(c)]

    def time_step(self) -> str:
        """The slot length, e.g. ``"30min"`` for 48 slots a day."""
        minutes = 24 * 60 / self.slots_per_day
        return f"{minutes:g}min"

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that define the data (files resolved), for :meth:`from_metadata`."""
        return {
            "root": str(self.root),
            "files": [str(Path(s).resolve()) for s in self.sources] if self.npz is None else self.files,
            "npz": str(Path(self.sources[0]).resolve()) if self.npz is not None else None,
            "name": self.name,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "slots_per_day": self.slots_per_day,
            "test_days": self.test_days,
            "val_days": self.val_days,
            "val_fraction": self.val_fraction,
            "npz_val_gap": self.npz_val_gap,
            "scaling": self.scaling,
            "drop_incomplete_days": self.drop_incomplete_days,
            "channels": self.channels,
            "flip": self.flip,
        }

    def metadata(self) -> dict[str, Any]:
        """Plain values: the contract keys, the flow extremes, the time step, the splits' windows and the sources."""
        c = self._shape()[0]
        scale = None
        if self.flow_min is not None:
            scale = _plain(np.asarray(self.flow_max) - np.asarray(self.flow_min))
        return {
            "dataset": self.name,
            "task": self.task,
            "in_shape": list(self.in_shape),
            "out_frames": self.t_out,
            "channels": self.channel_names(),
            "units": ["1 (min-max scaled flow)"] * c,
            "mean": [0.0] * c,
            "std": [1.0] * c,
            "data_range": 1.0,
            "pde": False,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "time_step": self.time_step(),
            "slots_per_day": self.slots_per_day,
            "scaling": "openstl (v + 1) / 2" if self.npz is not None else f"min-max {self.scaling}",
            "flow_min": self.flow_min,
            "flow_max": self.flow_max,
            "flow_scale": scale,
            # The task also reports errors in flow counts when one global scale converts them.
            "alt_units": {"counts": scale} if isinstance(scale, float) else {},
            "splits": self.split_info,
            "source_files": [Path(s).name for s in self.sources],
            "flip": self.flip,
            "init_args": self.init_args(),
        }


def _h5_grid(path: Path) -> tuple[int, int, int]:
    """``(C, H, W)`` of an ST-ResNet file's ``data``, from its header."""
    try:
        with h5py.File(path, "r") as f:
            shape = f["data"].shape
    except (OSError, KeyError) as e:
        raise UserError(f"{path}: no readable 'data' dataset ({e})") from None
    return tuple(int(v) for v in shape[1:])  # type: ignore[return-value]


def _plain(value: np.ndarray | float) -> float | list[float]:
    arr = np.asarray(value, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else [float(v) for v in arr]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(f.files)
            arrays = {k: np.asarray(f[k]) for k in NPZ_KEYS if k in names}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npz ({' '.join(str(e).split())}); check data.npz=") from None
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise UserError(
            f"{path}: no {', '.join(missing)} (it has {sorted(names)}); expected OpenSTL's taxibj dataset.npz with "
            "X_train, Y_train, X_test, Y_test"
        )
    return arrays
