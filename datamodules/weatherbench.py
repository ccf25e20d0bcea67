"""WeatherBench / ERA5 gridded forecasting (docs/data.md section 4): ``[B, t_in, C, H, W] -> [B, t_out, C, H, W]``.

Reads a WeatherBench-1 folder (``root``), a single NetCDF file or a WeatherBench-2 Zarr store (``path``) lazily
through :mod:`stpred.datamodules.weather_io`; one channel per (variable, level), ``H`` = latitude rows in the
data's order (ascending or descending, recorded in ``metadata()["latitude_order"]``), ``W`` = longitude.

- **Splits** are inclusive periods, by years (``[2010, 2015]``) or dates (``["2019-03-01", "2019-03-21"]``,
  pandas partial-string semantics: an end date covers its whole day). They must not overlap.
- **Windows** of ``t_in + t_out`` stamps ``step_hours`` apart start every ``window_stride_hours`` (default
  ``step_hours``, as OpenSTL's subsampled series) and never cross a split boundary or a gap in the time axis.
  With ``N`` stamps in a gap-free split, native step ``d``, ``k = step_hours / d`` and ``s =
  window_stride_hours / d``, a split has ``(N - 1 - (t_in + t_out - 1) k) // s + 1`` windows (481 for 504 hourly
  stamps at 12 -> 12). ``openstl_compat`` reproduces OpenSTL's loader instead: it drops each split's last stamp
  and last window (``N - 25`` hourly windows at 12 -> 12: 52,559 / 8,759 / 17,495) and uses the test split for
  validation (parity claims only: it selects checkpoints on the test set).
- **Normalisation**: a per-channel z-score with the mean and standard deviation (population) of the training
  period over (time, latitude, longitude), after the crop: of the observed values only when values are masked,
  of every value after filling when ``fill_nan`` is set.
- **Masks** (the contract of ``datamodules/base.py``): by default NaN values (a NetCDF ``_FillValue`` decodes to
  NaN) are masked, e.g. the sea of a land-only product. Cells NaN in every stamp of the splits form
  :meth:`WeatherBenchDataModule.static_valid_mask`; samples then carry ``x_valid``/``y_valid`` and hold 0 (the
  training mean) where masked. ``mask_variable`` names a variable of the file (a land-sea mask; 0 = masked) that
  masks cells as well. ``fill_nan`` (a value or ``"mean"``, the channel's training mean) fills NaNs instead.
  ``inf`` is no missing value: setup refuses it in one line (count, channels, first time stamp and grid cell).
- **Crop**: ``crop=[H, W]`` keeps an ``H x W`` block (centred or top-left) so grids fit a model's downsampling
  (the 33 x 49 UK file -> 32 x 48); the coordinates in ``metadata()`` are those of the block.
- **Memory**: ``cache=None`` loads the splits into RAM as normalised float32 when together they take at most
  ``cache_max_gb`` (WeatherBench t2m 5.625 deg 2010-2018: 0.65 GB; the UK file: 5 MB); otherwise each sample
  reads only its window (xarray lazy indexing for a single file or store, dask with the synchronous scheduler for
  a WeatherBench-1 folder), and each DataLoader worker reopens the files itself. Setup makes one dask pass over
  the splits either way (NaN counts, training sums).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dask
import dask.array as darr
import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch.utils.data import Dataset

from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.datamodules.weather_io import (
    ChannelSpec,
    WeatherSource,
    channel_specs,
    long_name,
    parse_variables,
    time_segments,
)
from stpred.errors import UserError, check

__all__ = ["DEFAULT_SPLITS", "WeatherBenchDataModule", "WeatherWindows", "window_starts"]

log = logging.getLogger(__name__)

#: OpenSTL's single-variable WeatherBench periods (docs/data.md section 4.2).
DEFAULT_SPLITS = {"train": [2010, 2015], "val": [2016, 2016], "test": [2017, 2018]}
SPLITS = ("train", "val", "test")


def window_starts(segments: Sequence[tuple[int, int]], length: int, stride: int, step: int) -> np.ndarray:
    """First indices of the windows that fit inside contiguous index ranges.

    Args:
        segments: ``[a, b)`` ranges without gaps.
        length: stamps per window (``t_in + t_out``).
        stride: indices between consecutive window starts.
        step: indices between consecutive stamps of a window.

    Returns:
        int64 start indices; window ``i`` covers ``start_i + step * arange(length)``.
    """
    span = (length - 1) * step
    starts = [np.arange(a, b - span, stride, dtype=np.int64) for a, b in segments if b - a > span]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


class _Block:
    """The frames of one split, normalised: cached in RAM, or read lazily per window.

    Args:
        frames: ``[N, C, H, W]`` normalised float32 (cached), or ``None`` to read lazily.
        source: where to reopen the data (lazy).
        channels: the channels to read (lazy).
        index: ``(time, latitude, longitude)`` slices of the split and crop on the common time axis (lazy).
        mean: per-channel mean ``[C]``.
        std: per-channel standard deviation ``[C]``.
        fill: per-channel NaN fill values ``[C]`` (lazy; cached frames are filled already), or ``None``.
        hide: ``[C, H, W]`` bool, True where ``mask_variable`` masks a cell, set to NaN on reading (lazy; cached
            frames hold NaN there already), or ``None``.
    """

    def __init__(
        self,
        frames: np.ndarray | None,
        *,
        source: WeatherSource | None = None,
        channels: Sequence[ChannelSpec] = (),
        index: tuple[slice, slice, slice] | None = None,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        fill: np.ndarray | None = None,
        hide: np.ndarray | None = None,
    ) -> None:
        self.frames = frames
        self.source = source
        self.channels = list(channels)
        self.index = index
        self.mean = None if mean is None else mean.astype(np.float32).reshape(1, -1, 1, 1)
        self.std = None if std is None else std.astype(np.float32).reshape(1, -1, 1, 1)
        self.fill = fill
        self.hide = hide
        self._arrays: list[xr.DataArray] | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Lazy arrays hold open file handles: a worker process reopens the source instead.
        return {**self.__dict__, "_arrays": None, "_pid": None}

    def _lazy(self) -> list[xr.DataArray]:
        if self._arrays is None or self._pid != os.getpid():
            t, lat, lon = self.index
            arrays = self.source.open_channels(self.channels, use_dask=False)
            self._arrays = [a.isel(time=t, latitude=lat, longitude=lon) for a in arrays]
            self._pid = os.getpid()
        return self._arrays

    def read(self, start: int, stop: int, step: int) -> np.ndarray:
        """Normalised float32 frames ``[T, C, H, W]`` at split indices ``start:stop:step``; NaN where masked."""
        if self.frames is not None:
            return self.frames[start:stop:step]
        with dask.config.set(scheduler="synchronous"):
            window = [a.isel(time=slice(start, stop, step)).to_numpy() for a in self._lazy()]
        x = np.stack(window, axis=1).astype(np.float32, copy=False)
        if self.fill is not None:
            x = np.where(np.isnan(x), self.fill.astype(np.float32).reshape(1, -1, 1, 1), x)
        if self.hide is not None:
            x = np.where(self.hide, np.float32(np.nan), x)
        return (x - self.mean) / self.std


class WeatherWindows(Dataset):
    """Forecast windows over one split.

    Each item is ``{"x": [t_in, C, H, W], "y": [t_out, C, H, W], "time": [], "index": []}``: normalised float32
    frames, the Unix time (int64 seconds, UTC) of the first input frame (the convention of ``datamodules/base.py``;
    :meth:`window_times` gives every frame's stamp), and the window number. With ``masked``, also ``"x_valid"``
    ``[t_in, C, H, W]`` and ``"y_valid"`` ``[t_out, C, H, W]`` bool (True = observed), and masked values of
    ``x``/``y`` are 0.

    Args:
        block: the split's frames.
        times: ``datetime64`` stamp of every split index.
        starts: first split index of every window.
        step: split indices between the stamps of a window.
        t_in: input frames.
        t_out: target frames.
        masked: the block holds NaN where values are masked: give validity masks.
    """

    def __init__(
        self,
        block: _Block,
        times: np.ndarray,
        starts: np.ndarray,
        step: int,
        t_in: int,
        t_out: int,
        masked: bool = False,
    ) -> None:
        self.block = block
        self.masked = masked
        self.times = times.astype("datetime64[ns]")
        self.seconds = (self.times.astype(np.int64) // 1_000_000_000).astype(np.int64)
        self.starts = starts
        self.step = step
        self.t_in = t_in
        self.t_out = t_out

    def __len__(self) -> int:
        return len(self.starts)

    def _span(self, index: int) -> tuple[int, int]:
        start = int(self.starts[index])
        return start, start + (self.t_in + self.t_out - 1) * self.step + 1

    def window_times(self, index: int) -> np.ndarray:
        """The ``datetime64`` stamps of window ``index`` (inputs then targets)."""
        start, stop = self._span(index)
        return self.times[start : stop : self.step]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self.starts):
            raise IndexError(index)
        start, stop = self._span(index)
        frames = self.block.read(start, stop, self.step)
        valid = None
        if self.masked:
            valid = ~np.isnan(frames)
            frames = np.where(valid, frames, np.float32(0.0))  # a copy: cached frames keep their NaNs
        window = torch.from_numpy(np.ascontiguousarray(frames))
        item = {
            "x": window[: self.t_in],
            "y": window[self.t_in :],
            "time": torch.tensor(int(self.seconds[start]), dtype=torch.int64),
            "index": torch.tensor(index),
        }
        if valid is not None:
            valid = torch.from_numpy(valid)
            item["x_valid"], item["y_valid"] = valid[: self.t_in], valid[self.t_in :]
        return item


def _period(split: str, value: Any) -> tuple[str, str]:
    if isinstance(value, (str, int)) or not isinstance(value, Sequence):
        value = [value, value]
    if len(value) != 2:
        raise UserError(f"WeatherBench: data.splits.{split}={list(value)} must be [start, end] (years or dates)")
    return str(value[0]), str(value[1])


def _parse_splits(splits: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    splits = DEFAULT_SPLITS if splits is None else splits
    if set(splits) != set(SPLITS):
        raise UserError(f"WeatherBench: data.splits has keys {sorted(splits)}; give exactly train, val and test")
    return {name: _period(name, splits[name]) for name in SPLITS}


def _hours(delta: np.timedelta64) -> float:
    return float(delta / np.timedelta64(1, "h"))


def _iso(stamp: np.datetime64) -> str:
    return str(np.datetime_as_string(stamp, unit="s"))


@dataclass
class _Plan:
    """What setup decided before reading values: channels, time axis, strides, split ranges, crop, windows."""

    arrays: list[xr.DataArray]
    times: np.ndarray
    native: np.timedelta64
    segments: list[tuple[int, int]]
    step: int
    stride: int
    ranges: dict[str, tuple[int, int]]
    crop: tuple[slice, slice]
    starts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def step_hours(self) -> float:
        return self.step * _hours(self.native)


class WeatherBenchDataModule(ForecastDataModule):
    """Gridded weather forecasting from WeatherBench-1 folders, NetCDF files or WeatherBench-2 Zarr stores.

    Args:
        root: a WeatherBench-1 folder (``<root>/2m_temperature/2m_temperature_2016_5.625deg.nc``, ...).
        path: a single NetCDF file or Zarr store, instead of ``root``.
        variables: names or ``{name, levels, dir}`` mappings, one channel per (variable, level); see
            :mod:`stpred.datamodules.weather_io`.
        resolution: WeatherBench-1 resolution as in the file names (``5.625``); ``None`` accepts the only one found.
        splits: ``{"train": [start, end], "val": ..., "test": ...}``, inclusive years or dates; defaults to
            :data:`DEFAULT_SPLITS` (train 2010-2015, val 2016, test 2017-2018).
        t_in: input frames.
        t_out: target frames.
        step_hours: hours between frames; a multiple of the data's step (``None``: the data's step).
        window_stride_hours: hours between window starts (``None``: ``step_hours``).
        crop: ``[H, W]`` block to keep, e.g. so ``H`` and ``W`` divide the model's downsampling; ``None`` keeps all.
        crop_anchor: ``"center"`` (offsets ``(H0 - H) // 2``, ``(W0 - W) // 2``) or ``"top_left"``.
        normalize: ``"zscore"`` (training statistics) or ``"none"`` (mean 0, std 1: raw physical values).
        fill_nan: ``None`` masks NaN values (samples carry ``x_valid``/``y_valid``; statistics from observed values);
            a number, or ``"mean"`` (the channel's training mean), fills them instead.
        mask_variable: a variable of the file (WeatherBench-1: of ``<root>/constants/``), e.g. a land-sea mask
            ``lsm``, whose zero cells are masked in every channel besides NaNs; ``None`` masks NaNs only.
        on_gap: ``"skip"`` builds windows within the runs between gaps in the time axis; ``"error"`` refuses gaps.
        cache: ``True`` loads the splits into RAM, ``False`` reads windows lazily, ``None`` decides by size.
        cache_max_gb: the size up to which ``cache=None`` loads into RAM (float32, all splits).
        time_chunk: dask chunk length along time for NetCDF files.
        openstl_compat: OpenSTL's windows (last stamp and last window of each split dropped) and val = test.
        name: the dataset name recorded in ``metadata()``.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str | None = None,
        *,
        path: str | None = None,
        variables: Any = ("t2m",),
        resolution: float | str | None = None,
        splits: Mapping[str, Any] | None = None,
        t_in: int = 12,
        t_out: int = 12,
        step_hours: float | None = None,
        window_stride_hours: float | None = None,
        crop: Sequence[int] | None = None,
        crop_anchor: Literal["center", "top_left"] = "center",
        normalize: Literal["zscore", "none"] = "zscore",
        fill_nan: float | str | None = None,
        mask_variable: str | None = None,
        on_gap: Literal["skip", "error"] = "skip",
        cache: bool | None = None,
        cache_max_gb: float = 2.0,
        time_chunk: int = 48,
        openstl_compat: bool = False,
        name: str = "weatherbench",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        check(t_in >= 1 and t_out >= 1, f"WeatherBench: t_in={t_in}, t_out={t_out} must be at least 1")
        check(step_hours is None or step_hours > 0, f"WeatherBench: step_hours={step_hours} must be positive")
        check(
            window_stride_hours is None or window_stride_hours > 0,
            f"WeatherBench: window_stride_hours={window_stride_hours} must be positive",
        )
        check(crop_anchor in ("center", "top_left"), f"WeatherBench: crop_anchor={crop_anchor!r}; use center/top_left")
        check(normalize in ("zscore", "none"), f"WeatherBench: normalize={normalize!r}; use zscore or none")
        check(on_gap in ("skip", "error"), f"WeatherBench: on_gap={on_gap!r}; use skip or error")
        check(
            fill_nan is None
            or fill_nan == "mean"
            or (isinstance(fill_nan, (int, float)) and not isinstance(fill_nan, bool) and np.isfinite(fill_nan)),
            f"WeatherBench: fill_nan={fill_nan!r}; use null, a finite number or 'mean'",
        )
        check(
            fill_nan is None or mask_variable is None,
            f"WeatherBench: fill_nan={fill_nan!r} and mask_variable={mask_variable!r}; set one of them, null the other",
        )
        check(time_chunk >= 1, f"WeatherBench: time_chunk={time_chunk} must be at least 1")
        if crop is not None:
            crop = [int(v) for v in crop]
            check(len(crop) == 2 and min(crop) >= 1, f"WeatherBench: crop={crop} must be [H, W] of positive ints")
        self.variables = parse_variables(variables)
        self.channels = channel_specs(self.variables)
        self.periods = _parse_splits(splits)
        self.source = WeatherSource(
            root=None if root is None else str(root),
            path=None if path is None else str(path),
            resolution=None
            if resolution is None
            else (resolution if isinstance(resolution, str) else f"{resolution:g}"),
            time_chunk=int(time_chunk),
            periods=tuple(self.periods.values()),
        )
        self.t_in, self.t_out = int(t_in), int(t_out)
        self.step_hours = step_hours
        self.window_stride_hours = window_stride_hours
        self.crop = crop
        self.crop_anchor = crop_anchor
        self.normalize = normalize
        self.fill_nan = fill_nan
        self.mask_variable = None if mask_variable is None else str(mask_variable)
        self.on_gap = on_gap
        self.cache = cache
        self.cache_max_gb = float(cache_max_gb)
        self.openstl_compat = bool(openstl_compat)
        self.name = name
        self._meta: dict[str, Any] | None = None
        self._static_valid: np.ndarray | None = None

    # -- setup ----------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Nothing to download: WeatherBench files are fetched by the user (docs/data.md section 4.3)."""

    def _strides(self, native: np.timedelta64) -> tuple[int, int]:
        def ratio(hours: float | None, what: str) -> int:
            if hours is None:
                return 1
            k = float(hours) / _hours(native)
            if k < 1 or abs(k - round(k)) > 1e-9:
                raise UserError(
                    f"WeatherBench: data.{what}={hours} is not a multiple of the data's {_hours(native):g} h step"
                )
            return round(k)

        step = ratio(self.step_hours, "step_hours")
        stride = ratio(self.window_stride_hours, "window_stride_hours") if self.window_stride_hours else step
        return step, stride

    def _split_ranges(self, times: np.ndarray) -> dict[str, tuple[int, int]]:
        index = pd.DatetimeIndex(times)
        ranges = {}
        for split, (start, end) in self.periods.items():
            try:
                sl = index.slice_indexer(start, end)
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(f"WeatherBench: data.splits.{split}=[{start}, {end}] is not a period ({err})") from err
            lo, hi = int(sl.start or 0), int(len(index) if sl.stop is None else sl.stop)
            if hi <= lo:
                raise UserError(
                    f"WeatherBench: no data in the {split} period [{start}, {end}]; the data covers "
                    f"{_iso(times[0])} .. {_iso(times[-1])}; fix data.splits.{split}="
                )
            ranges[split] = (lo, hi)
        ordered = sorted(ranges.items(), key=lambda kv: kv[1])
        for (a, (_, a_hi)), (b, (b_lo, _)) in zip(ordered, ordered[1:]):
            if b_lo < a_hi:
                raise UserError(f"WeatherBench: the {a} and {b} periods overlap; make data.splits disjoint")
        return ranges

    def _crop_slices(self, height: int, width: int) -> tuple[slice, slice]:
        if self.crop is None:
            return slice(0, height), slice(0, width)
        h, w = self.crop
        if h > height or w > width:
            raise UserError(f"WeatherBench: crop={self.crop} is larger than the {height} x {width} grid; fix data.crop")
        r0, c0 = ((height - h) // 2, (width - w) // 2) if self.crop_anchor == "center" else (0, 0)
        return slice(r0, r0 + h), slice(c0, c0 + w)

    def _reductions(self, arrays: dict[str, list[darr.Array]], shift: np.ndarray) -> dict[str, np.ndarray]:
        """In one dask pass: per split the NaN count of every cell ``[C, H, W]`` and the inf count of every channel
        ``[C]``, and the sums of ``x - shift`` and its square over the finite values of the training split ``[C]``."""
        todo: dict[str, Any] = {
            f"nan_{split}": [darr.isnan(a).sum(axis=0) for a in chans] for split, chans in arrays.items()
        }
        for split, chans in arrays.items():
            todo[f"inf_{split}"] = [darr.isinf(a).sum() for a in chans]
        # inf is refused after this pass (_refuse_infinite); kept out of the sums, it raises no warning meanwhile.
        train = [darr.where(darr.isinf(a), np.nan, a).astype(np.float64) - s for a, s in zip(arrays["train"], shift)]
        todo["sum"] = [darr.nansum(a) for a in train]
        todo["sumsq"] = [darr.nansum(a * a) for a in train]
        (done,) = dask.compute(todo)
        return {k: np.asarray(v, dtype=np.float64) for k, v in done.items()}

    def _plan(self) -> _Plan:
        """Open the data lazily; fix the time axis, strides, split ranges, crop and window starts."""
        arrays = self.source.open_channels(self.channels)
        times = arrays[0]["time"].values.astype("datetime64[ns]")
        native, segments = time_segments(times)
        if len(segments) > 1:
            gaps = [f"{_iso(times[b - 1])} -> {_iso(times[b])}" for _, b in segments[:-1]]
            if self.on_gap == "error":
                raise UserError(
                    f"WeatherBench: {len(gaps)} gap(s) in the time axis, first {gaps[0]}; "
                    "set data.on_gap=skip to window around them"
                )
            log.info(f"WeatherBench: {len(gaps)} gap(s) in the time axis; windows do not cross them: {gaps[:5]}")
        step, stride = self._strides(native)
        ranges = self._split_ranges(times)
        crop = self._crop_slices(arrays[0].sizes["latitude"], arrays[0].sizes["longitude"])
        plan = _Plan(arrays, times, native, segments, step, stride, ranges, crop, starts={})
        for split in SPLITS:
            plan.starts[split] = self._split_starts(plan, split)
        return plan

    def _split_starts(self, plan: _Plan, split: str) -> np.ndarray:
        lo, hi = plan.ranges[split]
        last = hi - 1 if self.openstl_compat else hi
        runs = [(max(a, lo) - lo, min(b, last) - lo) for a, b in plan.segments if min(b, last) > max(a, lo)]
        length = self.t_in + self.t_out
        starts = window_starts(runs, length, plan.stride, plan.step)
        starts = starts[:-1] if self.openstl_compat else starts
        if len(starts) == 0:
            raise UserError(
                f"WeatherBench: the {split} period ({_iso(plan.times[lo])} .. {_iso(plan.times[hi - 1])}, "
                f"{hi - lo} stamps) holds no window of {length} frames {plan.step_hours:g} h apart; "
                f"widen data.splits.{split} or lower data.t_in/data.t_out"
            )
        return starts

    def _split_arrays(
        self, plan: _Plan, cache: bool, hide: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], dict[str, list[darr.Array]]]:
        """Per split: the raw frames ``[N, C, H, W]`` when cached, and one dask array per channel for reductions;
        NaN where ``hide`` ``[H, W]`` (the mask variable) masks a cell."""
        frames: dict[str, np.ndarray] = {}
        arrays: dict[str, list[darr.Array]] = {}
        for split, (lo, hi) in plan.ranges.items():
            parts = [a.isel(time=slice(lo, hi), latitude=plan.crop[0], longitude=plan.crop[1]) for a in plan.arrays]
            if not cache:
                data = [p.data for p in parts]
                arrays[split] = data if hide is None else [darr.where(hide, np.float32(np.nan), d) for d in data]
                continue
            block = np.empty((hi - lo, len(parts), *parts[0].shape[1:]), dtype=np.float32)
            for j, part in enumerate(parts):
                block[:, j] = part.to_numpy()
            if hide is not None:
                block[:, :, hide] = np.nan
            frames[split] = block
            chunks = (self.source.time_chunk, *block.shape[2:])
            arrays[split] = [darr.from_array(block[:, j], chunks=chunks) for j in range(len(parts))]
        return frames, arrays

    def _hidden(self, plan: _Plan) -> np.ndarray | None:
        """``[H, W]`` bool after the crop, True where ``mask_variable`` is 0 (masked); ``None`` without one."""
        if self.mask_variable is None:
            return None
        observed = self.source.open_mask(self.mask_variable)
        first = plan.arrays[0]
        for coord in ("latitude", "longitude"):
            if not np.array_equal(observed[coord].values, first[coord].values):
                raise UserError(
                    f"WeatherBench: mask variable '{self.mask_variable}' has another {coord} grid than "
                    f"'{self.channels[0].name}'; give a mask on the data's grid in data.mask_variable="
                )
        return ~np.asarray(observed.values, dtype=bool)[plan.crop]

    def setup(self, stage: str | None = None) -> None:
        """Open the data, cut the splits and windows, find masked values and fix the training statistics."""
        if self.datasets:
            return
        plan = self._plan()
        hide = self._hidden(plan)
        height, width = plan.crop[0].stop - plan.crop[0].start, plan.crop[1].stop - plan.crop[1].start
        nbytes = sum(hi - lo for lo, hi in plan.ranges.values()) * len(self.channels) * height * width * 4
        cache = self.cache if self.cache is not None else nbytes <= self.cache_max_gb * 2**30
        log.info(f"WeatherBench: {'caching' if cache else 'reading lazily'} {nbytes / 2**20:.1f} MiB of frames")
        frames, arrays = self._split_arrays(plan, cache, hide)

        first = [np.asarray(a[0].compute(), dtype=np.float64) for a in arrays["train"]]
        first = [np.where(np.isinf(f), np.nan, f) for f in first]  # inf is refused below, after the one pass
        shift = np.array([np.nanmean(f) if np.isfinite(f).any() else 0.0 for f in first])
        red = self._reductions(arrays, shift)
        self._refuse_infinite(red, plan, arrays)
        has_nan = self._report_nans(red, plan)
        mask = self._mask(red, plan, hide) if has_nan and self.fill_nan is None else None
        mean, std, fill = self._statistics(red, shift, plan, mask is not None)
        self._build(plan, frames, mean, std, fill, hide, mask is not None)
        self._meta = self._metadata(plan, mean, std, fill, cache, mask)

    def _refuse_infinite(self, red: dict[str, np.ndarray], plan: _Plan, arrays: dict[str, list[darr.Array]]) -> None:
        """Refuse inf in the splits: it is no missing value (NaN is), and it makes the statistics and losses NaN.

        Raises:
            UserError: with the count, the channels, the first value's time, latitude and longitude, and the fix.
        """
        counts = {split: red[f"inf_{split}"].reshape(-1) for split in plan.ranges}
        total = int(sum(c.sum() for c in counts.values()))
        if total == 0:
            return
        names = [ch.name for j, ch in enumerate(self.channels) if any(c[j] > 0 for c in counts.values())]
        split = min((s for s in plan.ranges if counts[s].any()), key=lambda s: plan.ranges[s][0])
        best = None  # (time index in the split, channel)
        for j, chan in enumerate(arrays[split]):
            if counts[split][j] > 0:
                with dask.config.set(scheduler="synchronous"):
                    t = int(np.argmax(darr.isinf(chan).any(axis=(1, 2)).compute()))
                best = min(best or (t, j), (t, j))
        t, j = best
        frame = np.asarray(arrays[split][j][t].compute())
        row, col = (int(v) for v in np.unravel_index(int(np.argmax(np.isinf(frame))), frame.shape))
        sign = "-inf" if frame[row, col] < 0 else "inf"
        lo = plan.ranges[split][0]
        r, c = plan.crop[0].start + row, plan.crop[1].start + col
        lat = float(plan.arrays[j]["latitude"].values[r])
        lon = float(plan.arrays[j]["longitude"].values[c])
        raise UserError(
            f"WeatherBench: {total:,} infinite value{'s' if total != 1 else ''} in {', '.join(map(repr, names))} "
            f"over the splits of {os.path.basename(os.path.normpath(self.source.location))}; the first, {sign}, is "
            f"'{self.channels[j].name}' at {_iso(plan.times[lo + t])}, latitude {lat:g}, longitude {lon:g} (time "
            f"index {lo + t}, latitude index {r}, longitude index {c}); inf is not a missing value: replace them in "
            "the file with NaN (masked) or finite numbers"
        )

    def _report_nans(self, red: dict[str, np.ndarray], plan: _Plan) -> bool:
        """Whether any split holds NaN; logs each channel, split and count when ``fill_nan`` fills them."""
        counts = {split: red[f"nan_{split}"].sum(axis=(1, 2)) for split in plan.ranges}
        found = [
            f"'{ch.name}' has {int(counts[split][j])} NaN values in the {split} split "
            f"({_iso(plan.times[lo])} .. {_iso(plan.times[hi - 1])})"
            for split, (lo, hi) in plan.ranges.items()
            for j, ch in enumerate(self.channels)
            if counts[split][j] > 0
        ]
        if found and self.fill_nan is not None:
            log.info(f"WeatherBench: filling NaNs with {self.fill_nan}: {'; '.join(found)}")
        return bool(found)

    def _mask(self, red: dict[str, np.ndarray], plan: _Plan, hide: np.ndarray | None) -> dict[str, Any]:
        """The contract's ``metadata()["mask"]``; keeps the static mask and logs one line."""
        nans = sum(red[f"nan_{split}"] for split in plan.ranges)  # [C, H, W] over every stamp of the splits
        stamps = sum(hi - lo for lo, hi in plan.ranges.values())
        static = nans >= stamps
        self._static_valid = ~static
        static_masked, masked_values = int(static.sum()), int(nans.sum())
        further = masked_values - static_masked * stamps
        source, why, fix = "nan", "NaN in every step", "set data.fill_nan=mean to fill instead"
        if hide is not None:
            source = f"variable {self.mask_variable}"
            source += ", nan" if masked_values > int(hide.sum()) * len(self.channels) * stamps else ""
            why = f"{self.mask_variable} = 0 or NaN in every step"
            fix = "set data.mask_variable=null data.fill_nan=mean to fill NaNs instead"
        log.info(
            f"{os.path.basename(os.path.normpath(self.source.location))}: masking {static_masked:,} of "
            f"{static.size:,} cells ({why}) and {further:,} further NaN values; statistics from observed values "
            f"only ({fix})"
        )
        return {
            "source": source,
            "static_masked": static_masked,
            "cells": int(static.size),
            "masked_values": masked_values,
        }

    def _statistics(
        self, red: dict[str, np.ndarray], shift: np.ndarray, plan: _Plan, masked: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-channel ``(mean, std, fill)`` of the training split as fed to the model: of the observed values when
        ``masked``, else of every value after NaN filling.

        The sums are of ``x - shift`` (``shift`` is close to the mean), so the variance keeps its precision.
        """
        lo, hi = plan.ranges["train"]
        n = float((hi - lo) * red["nan_train"][0].size)
        nan_train = red["nan_train"].sum(axis=(1, 2))
        finite = n - nan_train
        empty = [ch.name for ch, k in zip(self.channels, finite) if k == 0]
        if empty and (masked or self.fill_nan == "mean"):
            raise UserError(
                f"WeatherBench: channel(s) {empty} hold only NaN in the train split ({_iso(plan.times[lo])} .. "
                f"{_iso(plan.times[hi - 1])}), so they have no statistics; widen data.splits.train or drop them "
                "from data.variables"
            )
        total, total_sq = red["sum"].copy(), red["sumsq"].copy()
        count = finite if masked else np.full(len(self.channels), n)
        fill = None
        if self.fill_nan is not None:  # recorded even without NaN, so forecasts fill their inputs the same way
            if self.fill_nan == "mean":
                fill = shift + total / finite
            else:
                fill = np.full(len(self.channels), float(self.fill_nan))
            total += nan_train * (fill - shift)
            total_sq += nan_train * (fill - shift) ** 2
        if self.normalize == "none":
            return np.zeros(len(self.channels)), np.ones(len(self.channels)), fill
        centred = total / count
        std = np.sqrt(np.maximum(total_sq / count - centred**2, 0.0))
        constant = [ch.name for ch, s in zip(self.channels, std) if not s > 0]
        if constant:
            raise UserError(f"WeatherBench: channels {constant} are constant over the train split; use normalize=none")
        return shift + centred, std, fill

    def _build(
        self,
        plan: _Plan,
        frames: dict[str, np.ndarray],
        mean: np.ndarray,
        std: np.ndarray,
        fill: np.ndarray | None,
        hide: np.ndarray | None,
        masked: bool,
    ) -> None:
        """The three datasets; cached frames are filled and normalised in place (masked values stay NaN)."""
        for split, (lo, hi) in plan.ranges.items():
            if frames:
                block_frames = frames[split]
                for j in range(len(self.channels)):
                    chan = block_frames[:, j]
                    if fill is not None:
                        np.copyto(chan, np.float32(fill[j]), where=np.isnan(chan))
                    chan -= np.float32(mean[j])
                    chan /= np.float32(std[j])
                block = _Block(block_frames)
            else:
                index = (slice(lo, hi), *plan.crop)
                block = _Block(
                    None,
                    source=self.source,
                    channels=self.channels,
                    index=index,
                    mean=mean,
                    std=std,
                    fill=fill,
                    hide=hide if masked else None,
                )
            times = plan.times[lo:hi]
            self.datasets[split] = WeatherWindows(
                block, times, plan.starts[split], plan.step, self.t_in, self.t_out, masked=masked
            )
        if self.openstl_compat:
            self.datasets["val"] = self.datasets["test"]

    def static_valid_mask(self) -> np.ndarray | None:
        """``[C, H, W]`` bool after the crop, True where a cell is observed in at least one stamp of the splits;
        ``None`` when nothing is masked (no NaN, or ``fill_nan`` filled them)."""
        self._require()
        return None if self._static_valid is None else self._static_valid.copy()

    # -- contract -------------------------------------------------------------------------------------------------
    def _metadata(
        self,
        plan: _Plan,
        mean: np.ndarray,
        std: np.ndarray,
        fill: np.ndarray | None,
        cached: bool,
        mask: dict[str, Any] | None,
    ) -> dict[str, Any]:
        first = plan.arrays[0]
        lat = [float(v) for v in first["latitude"].values[plan.crop[0]]]
        lon = [float(v) for v in first["longitude"].values[plan.crop[1]]]
        units = [str(a.attrs.get("units", "unknown")) for a in plan.arrays]
        variables = [
            {
                "name": ch.variable.name,
                "source_name": str(a.name),
                "wb2_name": long_name(ch.variable.name),
                "level": ch.level,
                "units": u,
                "long_name": str(a.attrs.get("long_name", "")),
            }
            for ch, a, u in zip(self.channels, plan.arrays, units)
        ]
        splits = {
            split: {
                "requested": list(self.periods[split]),
                "start": _iso(plan.times[lo]),
                "end": _iso(plan.times[hi - 1]),
                "stamps": hi - lo,
                "windows": int(len(plan.starts[split])),
            }
            for split, (lo, hi) in plan.ranges.items()
        }
        crop = None
        if self.crop is not None:
            grid = [first.sizes["latitude"], first.sizes["longitude"]]
            offset = [plan.crop[0].start, plan.crop[1].start]
            crop = {"size": list(self.crop), "anchor": self.crop_anchor, "offset": offset, "grid": grid}
        return {
            "dataset": self.name,
            "task": self.task,
            "in_shape": [self.t_in, len(self.channels), len(lat), len(lon)],
            "out_frames": self.t_out,
            "channels": [ch.name for ch in self.channels],
            "units": units,
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "data_range": None,
            "pde": False,
            "variables": variables,
            "levels": [ch.level for ch in self.channels],
            "latitude": lat,
            "longitude": lon,
            "latitude_order": "descending" if len(lat) > 1 and lat[0] > lat[-1] else "ascending",
            "coordinate_names": {"latitude": "latitude", "longitude": "longitude", "time": "time", "level": "level"},
            "crop": crop,
            "time_step": plan.step_hours,
            "time_step_hours": plan.step_hours,
            "native_step_hours": _hours(plan.native),
            "window_stride_hours": plan.stride * _hours(plan.native),
            "t_in": self.t_in,
            "t_out": self.t_out,
            "splits": splits,
            "gaps": [[_iso(plan.times[b - 1]), _iso(plan.times[b])] for _, b in plan.segments[:-1]],
            "normalize": self.normalize,
            "statistics": "train period, "
            + ("observed values" if mask is not None else "every stamp")
            + ", over (time, latitude, longitude)",
            "mask": mask,
            "mask_variable": self.mask_variable,
            "fill_nan": None if fill is None else [float(v) for v in fill],
            "openstl_compat": self.openstl_compat,
            "source": {
                "layout": self.source.layout,
                "location": self.source.location,
                "resolution": self.source.resolution,
            },
            "cached": bool(cached),
        }

    @classmethod
    def shapes_from_config(cls, cfg: Any) -> DataShapes:
        """``(t_in, C, H, W)`` -> ``t_out``: one channel per variable level; ``H, W`` the crop, else the
        WeatherBench-1 grid of ``resolution`` (``180 / res`` x ``360 / res``), else the grid in ``path``'s header."""
        t_in, t_out = int(cls.config_value(cfg, "t_in")), int(cls.config_value(cfg, "t_out"))
        channels = len(channel_specs(parse_variables(cls.config_value(cfg, "variables"))))
        crop, resolution = cls.config_value(cfg, "crop"), cls.config_value(cfg, "resolution")
        path = cls.config_value(cfg, "path")
        if crop is not None:
            h, w = (int(v) for v in crop)
        elif path is not None:
            with WeatherSource(path=str(path))._open_file(use_dask=False) as ds:
                h, w = int(ds.sizes["latitude"]), int(ds.sizes["longitude"])
        elif resolution is not None:
            h, w = round(180 / float(resolution)), round(360 / float(resolution))
        else:
            raise UserError("WeatherBench: the grid is unknown without data.crop, data.resolution or data.path")
        return DataShapes("forecast", (t_in, channels, h, w), out_frames=t_out)

    def _require(self) -> dict[str, Any]:
        if self._meta is None:
            raise RuntimeError("WeatherBenchDataModule: call setup() before reading in_shape or metadata()")
        return self._meta

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return tuple(self._require()["in_shape"])  # type: ignore[return-value]

    @property
    def out_frames(self) -> int:
        return self.t_out

    def metadata(self) -> dict[str, Any]:
        """Plain values: the contract keys plus grid, levels, units, time step, split periods and source."""
        return dict(self._require())
