"""Input windows and NetCDF output for ``stpred-forecast``: weather grids, ST-ResNet flow files and ``.npy`` arrays.

Reading reuses the datamodules' readers (:class:`~stpred.datamodules.weather_io.WeatherSource` for NetCDF files,
WeatherBench-1 folders and Zarr stores; :func:`~stpred.datamodules.taxibj.load_flow_series` for ``.h5`` flow files),
so a forecast sees its input exactly as training saw its data. Writing builds CF-style :class:`xarray.Dataset` objects
with ``init_time``, ``lead_time`` (a duration) and ``valid_time = init_time + lead_time`` coordinates, and stores them
through a temporary file in the output's folder, so an existing file is replaced whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from stpred.atomic import atomic_output
from stpred.datamodules.taxibj import format_stamp, load_flow_series, parse_stamps
from stpred.datamodules.weather_io import ChannelSpec, VariableSpec, WeatherSource
from stpred.errors import UserError

__all__ = [
    "FlowWindow",
    "check_finite",
    "describe_input",
    "WeatherWindow",
    "array_dataset",
    "flow_dataset",
    "flow_extremes",
    "parse_time",
    "read_array_window",
    "read_flow_window",
    "read_weather_window",
    "scale_flows",
    "slot_time",
    "unscale_flows",
    "weather_dataset",
    "window_indices",
    "write_atomic",
    "write_netcdf",
]

#: Every year pandas can represent: without ``--init-time`` the last stamps may lie in any yearly WeatherBench-1 file.
ALL_YEARS = ((str(pd.Timestamp.min.year + 1), str(pd.Timestamp.max.year - 1)),)
#: Pieces of a datamodule's message that give a training-config fix (``data.variables=``); meaningless here.
_CONFIG_HINT = re.compile(r"\bdata\.\w+")
_COORD_TOLERANCE = 1e-6  # degrees; float32 files against float64 metadata


# -- errors and times -------------------------------------------------------------------------------------------------
def as_forecast_error(err: UserError, hint: str) -> UserError:
    """A datamodule's one-line error with its training-config advice replaced by ``hint``."""
    text = str(err).removeprefix("WeatherBench: ").removeprefix("TaxiBJDataModule: ")
    kept = [part for part in text.split("; ") if not _CONFIG_HINT.search(part)]
    return UserError("; ".join([*kept, hint]))


def parse_time(text: str) -> np.datetime64:
    """An ISO date-time (``2019-03-31T12:00``; a time zone is converted to UTC) as naive ``datetime64[ns]``."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise UserError(f"--init-time {text!r} is not an ISO date-time; write it like 2019-03-31T12:00")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return np.datetime64(stamp.to_datetime64(), "ns")


def iso(stamp: np.datetime64) -> str:
    return str(np.datetime_as_string(np.datetime64(stamp, "s"), unit="m"))


def window_indices(
    stamps: np.ndarray, end: Any, step: Any, length: int, show: Callable[[Any], str], where: str
) -> np.ndarray:
    """Positions in ``stamps`` of the ``length`` stamps ``step`` apart that end at ``end``.

    Args:
        stamps: ``[N]`` strictly increasing stamps (``datetime64`` or integer slots).
        end: the last input stamp (the forecast's initial time).
        step: the spacing the model was trained on.
        length: ``T_in``.
        show: formats a stamp for messages.
        where: the input named in messages.

    Returns:
        int64 ``[length]`` positions, oldest first.

    Raises:
        UserError: ``end`` outside or not among the stamps, fewer than ``length`` stamps up to it, or a missing stamp.
    """
    first, last = stamps[0], stamps[-1]
    if end < first or end > last:
        raise UserError(
            f"--init-time {show(end)} is outside {where}, which covers {show(first)} .. {show(last)}; pick a time in it"
        )
    wanted = end - step * np.arange(length - 1, -1, -1)
    positions = np.searchsorted(stamps, wanted)
    found = stamps[np.minimum(positions, len(stamps) - 1)] == wanted
    if not found[-1]:
        raise UserError(f"--init-time {show(end)} is not a time stamp of {where}; pick one of its stamps")
    if wanted[0] < first:
        raise UserError(
            f"only {int(found.sum())} of the {length} input stamps ending at {show(end)} are in {where}, which starts "
            f"at {show(first)}; pick a later --init-time"
        )
    if not found.all():
        raise UserError(
            f"{where} has no stamp {show(wanted[~found][0])}, one of the {length} evenly spaced input stamps ending at "
            f"{show(end)} that the model needs; pick another --init-time or fill the gap"
        )
    return positions.astype(np.int64)


def check_finite(frames: np.ndarray, where: str, place: Callable[[tuple[int, ...]], str]) -> None:
    """Refuse an input window holding infinite values, naming their count and the first one's place.

    NaN is a missing value (filled and masked as training did); an infinity is no measurement and would turn the
    whole forecast into NaN, so it is the user's to fix.

    Args:
        frames: ``[T_in, C, H, W]`` the window.
        where: the input, for the message.
        place: ``(t, c, h, w)`` index -> words (``time 2019-03-31T19:00, t2m, latitude 55.5, longitude -5``).
    """
    bad = np.isinf(frames)
    count = int(bad.sum())
    if count:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UserError(
            f"{where} holds {count} infinite value{'s' if count > 1 else ''} in the input window (first at "
            f"{place(first)}); replace them with finite values, or with NaN where data are missing"
        )


#: First bytes of the formats an input may have, for telling the user what a file is.
_MAGIC = (
    (b"\x93NUMPY", "a .npy array"),
    (b"CDF\x01", "a NetCDF file"),
    (b"CDF\x02", "a NetCDF file"),
    (b"CDF\x05", "a NetCDF file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 or NetCDF-4 file"),
    (b"PK\x03\x04", "a zip archive (.npz or zipped Zarr)"),
)


def describe_input(path: Path) -> str:
    """What ``path`` is, from its first bytes: ``"a .npy array"``, ``"a NetCDF file"``, ``"a text file"``..."""
    if path.is_dir():
        return "a folder"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return "an unreadable file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head and b"\0" not in head:
        return "a text file"
    return "a file of another format"


def _check_increasing(stamps: np.ndarray, where: str) -> None:
    if len(stamps) > 1 and np.any(np.diff(stamps) <= np.timedelta64(0)):
        raise UserError(f"the time stamps of {where} are not strictly increasing; sort the data first")


def _time_coords(init: np.datetime64, leads: np.ndarray) -> dict[str, Any]:
    """``init_time [1]``, ``lead_time [T_out]`` (``timedelta64``) and ``valid_time [1, T_out]`` coordinates."""
    init = np.asarray([init], dtype="datetime64[ns]")
    leads = np.asarray(leads, dtype="timedelta64[ns]")
    return {
        "init_time": ("init_time", init, {"long_name": "forecast initial time (last input stamp)"}),
        "lead_time": ("lead_time", leads, {"long_name": "forecast lead time", "standard_name": "forecast_period"}),
        "valid_time": (("init_time", "lead_time"), init[:, None] + leads[None], {"long_name": "valid time"}),
    }


# -- weather ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeatherWindow:
    """The model's input read from a weather source.

    Attributes:
        frames: float32 ``[T_in, C, H, W]`` in physical units.
        times: ``datetime64[ns]`` ``[T_in]`` stamps of the frames.
        step: the spacing of the stamps.
    """

    frames: np.ndarray
    times: np.ndarray
    step: np.timedelta64


def weather_source(path: Path, meta: Mapping[str, Any], init: np.datetime64 | None, t_in: int) -> WeatherSource:
    """A NetCDF file or Zarr store (``path``), or a WeatherBench-1 folder, opened as training opened it."""
    if not path.is_dir() or WeatherSource(path=str(path)).layout == "zarr":
        return WeatherSource(path=str(path))
    resolution = (meta.get("source") or {}).get("resolution")
    periods = ALL_YEARS
    if init is not None:
        start = init - (t_in - 1) * weather_step(meta)
        periods = ((str(pd.Timestamp(start).date()), str(pd.Timestamp(init).date())),)
    return WeatherSource(root=str(path), resolution=resolution, periods=periods)


def weather_channels(meta: Mapping[str, Any]) -> list[ChannelSpec]:
    """The checkpoint's channels, one per (variable, level), in training order."""
    channels = []
    for var in meta["variables"]:
        level = None if var.get("level") is None else float(var["level"])
        channels.append(ChannelSpec(VariableSpec(var["name"], None if level is None else (level,)), level))
    return channels


def weather_step(meta: Mapping[str, Any]) -> np.timedelta64:
    hours = float(meta.get("time_step_hours") or meta.get("time_step") or 1.0)
    return np.timedelta64(round(hours * 3600), "s").astype("timedelta64[ns]")


def _span(values: np.ndarray) -> str:
    return f"{values[0]:g}..{values[-1]:g} ({len(values)} points)"


def locate_block(found: np.ndarray, trained: Sequence[float], axis: str, where: str) -> slice:
    """The contiguous block of ``found`` coordinates equal to the ``trained`` ones (the training crop).

    Raises:
        UserError: naming both grids, when ``found`` holds no such block.
    """
    trained = np.asarray(trained, dtype=np.float64)
    found = np.asarray(found, dtype=np.float64)
    n = len(trained)
    for start in np.flatnonzero(np.abs(found - trained[0]) <= _COORD_TOLERANCE):
        block = found[start : start + n]
        if len(block) == n and np.allclose(block, trained, rtol=0, atol=_COORD_TOLERANCE):
            return slice(int(start), int(start) + n)
    raise UserError(
        f"grid mismatch: the checkpoint was trained on {axis} {_span(trained)}, but {where} has {axis} "
        f"{_span(found)} with no such block; regrid the input to the training grid"
    )


def read_weather_window(path: Path, meta: Mapping[str, Any], init_text: str | None) -> WeatherWindow:
    """The checkpoint's channels at its grid and its ``T_in`` stamps ending at ``init_text`` (default: the last).

    Args:
        path: a NetCDF file, a Zarr store or a WeatherBench-1 folder.
        meta: the checkpoint's weather metadata (``variables``, ``latitude``, ``longitude``, ``time_step_hours``,
            ``in_shape``, ``fill_nan``).
        init_text: ``--init-time``, ISO.

    Returns:
        The window, in physical units; missing values stay NaN (the predictor fills and masks them).
    """
    t_in = int(meta["in_shape"][0])
    init = None if init_text is None else parse_time(init_text)
    names = [v["name"] for v in meta["variables"]]
    hint = f"give an input that holds the checkpoint's variables {names} on its grid"
    what = describe_input(path)
    if path.is_file() and path.suffix != ".zarr" and "NetCDF" not in what:  # Zarr stores, WB1 layouts: folders
        raise UserError(
            f"{path} is {what}, but this is a weather checkpoint: it reads {', '.join(names)} on its "
            "latitude/longitude grid from a NetCDF file, a WeatherBench-1 folder or a Zarr store; give one of those"
        )
    try:
        arrays = weather_source(path, meta, init, t_in).open_channels(weather_channels(meta), use_dask=False)
    except UserError as err:
        raise as_forecast_error(err, hint) from None
    times = arrays[0]["time"].values.astype("datetime64[ns]")
    _check_increasing(times, str(path))
    rows = locate_block(arrays[0]["latitude"].values, meta["latitude"], "latitude", str(path))
    cols = locate_block(arrays[0]["longitude"].values, meta["longitude"], "longitude", str(path))
    step = weather_step(meta)
    index = window_indices(times, times[-1] if init is None else init, step, t_in, iso, str(path))
    frames = np.stack([a.isel(time=index, latitude=rows, longitude=cols).to_numpy() for a in arrays], axis=1)
    frames = frames.astype(np.float32)
    lat = arrays[0]["latitude"].values[rows]
    lon = arrays[0]["longitude"].values[cols]
    channels = [str(c) for c in meta.get("channels") or names]

    def place(at: tuple[int, ...]) -> str:
        t, c, h, w = at
        return f"time {iso(times[index][t])}, {channels[c]}, latitude {lat[h]:g}, longitude {lon[w]:g}"

    check_finite(frames, str(path), place)
    return WeatherWindow(frames=frames, times=times[index], step=step)


def _level_dims(variables: Sequence[Mapping[str, Any]], groups: Mapping[str, list[int]]) -> dict[str, str]:
    """The level dimension of each variable with levels: ``level`` when they share one set, else ``level_<name>``."""
    sets = {name: tuple(variables[j]["level"] for j in idx) for name, idx in groups.items()}
    leveled = {name: s for name, s in sets.items() if s[0] is not None}
    shared = len(set(leveled.values())) <= 1
    return {name: "level" if shared else f"level_{name}" for name in leveled}


def weather_dataset(
    forecast: np.ndarray, window: WeatherWindow, meta: Mapping[str, Any], attrs: Mapping[str, Any]
) -> xr.Dataset:
    """The forecast as one variable per source variable, named as in the source.

    Args:
        forecast: float32 ``[T_out, C, H, W]`` in physical units.
        window: the input (its last stamp is the initial time).
        meta: the checkpoint's weather metadata.
        attrs: global attributes.

    Returns:
        Variables ``(init_time, lead_time, [level,] latitude, longitude)``; channels of one variable at several
        pressure levels share a ``level`` dimension.
    """
    variables = meta["variables"]
    groups: dict[str, list[int]] = {}
    for j, var in enumerate(variables):
        groups.setdefault(str(var.get("source_name") or var["name"]), []).append(j)
    level_dims = _level_dims(variables, groups)
    leads = window.step * np.arange(1, forecast.shape[0] + 1)
    coords: dict[str, Any] = {
        **_time_coords(window.times[-1], leads),
        "latitude": ("latitude", np.asarray(meta["latitude"]), {"units": "degrees_north", "long_name": "latitude"}),
        "longitude": ("longitude", np.asarray(meta["longitude"]), {"units": "degrees_east", "long_name": "longitude"}),
    }
    data_vars = {}
    for name, idx in groups.items():
        first = variables[idx[0]]
        var_attrs = {"units": first.get("units", "unknown"), "long_name": first.get("long_name") or name}
        if name in level_dims:
            dim = level_dims[name]
            coords[dim] = (dim, [float(variables[j]["level"]) for j in idx], {"units": "hPa", "long_name": "level"})
            data_vars[name] = (("init_time", "lead_time", dim, "latitude", "longitude"), forecast[None][:, :, idx])
        else:
            data_vars[name] = (("init_time", "lead_time", "latitude", "longitude"), forecast[None][:, :, idx[0]])
        data_vars[name] = (*data_vars[name], var_attrs)
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


# -- grid flows (TaxiBJ layout) ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowWindow:
    """The model's input read from an ST-ResNet flow file.

    Attributes:
        counts: float64 ``[T_in, C, H, W]`` raw flows.
        slots: int64 ``[T_in]`` absolute slot numbers (see :func:`stpred.datamodules.taxibj.parse_stamps`).
        slots_per_day: slots in a day.
    """

    counts: np.ndarray
    slots: np.ndarray
    slots_per_day: int

    @property
    def slot_length(self) -> np.timedelta64:
        return np.timedelta64(24 * 60 * 60 // self.slots_per_day, "s")


def slot_time(slot: int, slots_per_day: int) -> np.datetime64:
    """The start of an absolute slot: slot ``SS`` of a day begins ``(SS - 1)`` slot lengths after midnight."""
    day, index = divmod(int(slot), slots_per_day)
    midnight = np.datetime64(dt.date.fromordinal(day), "s")
    return midnight + index * np.timedelta64(24 * 60 * 60 // slots_per_day, "s")


def parse_slot(text: str, slots_per_day: int) -> int:
    """``--init-time`` as an absolute slot: an ST-ResNet stamp ``YYYYMMDDSS`` or an ISO time on a slot boundary."""
    if re.fullmatch(r"\d{10}", text.strip()):
        try:
            return int(parse_stamps([text], slots_per_day, "--init-time")[0])
        except UserError:
            raise UserError(f"--init-time {text!r} is not a stamp YYYYMMDDSS with SS in 01..{slots_per_day}") from None
    stamp = pd.Timestamp(parse_time(text))
    seconds = stamp.hour * 3600 + stamp.minute * 60 + stamp.second
    length = 24 * 3600 // slots_per_day
    if seconds % length or stamp.microsecond or stamp.nanosecond:
        raise UserError(
            f"--init-time {text!r} is not the start of a {length // 60}-minute slot; give e.g. "
            f"{stamp.floor(f'{length}s'):%Y-%m-%dT%H:%M} or a stamp YYYYMMDDSS"
        )
    return stamp.date().toordinal() * slots_per_day + seconds // length


def read_flow_window(path: Path, meta: Mapping[str, Any], init_text: str | None) -> FlowWindow:
    """The ``T_in`` consecutive slots ending at ``init_text`` (default: the file's last slot) of an ``.h5`` file.

    Args:
        path: an ST-ResNet file: ``data`` ``(T, C, H, W)`` and ``date`` stamps ``YYYYMMDDSS``.
        meta: the checkpoint's flow metadata (``slots_per_day``, ``in_shape``).
        init_text: ``--init-time``: ISO or ``YYYYMMDDSS``.
    """
    slots_per_day = int(meta.get("slots_per_day") or 48)
    t_in, frame = int(meta["in_shape"][0]), tuple(int(v) for v in meta["in_shape"][1:])
    try:
        series = load_flow_series([path], slots_per_day)
    except UserError as err:
        raise as_forecast_error(
            err, f"give an ST-ResNet .h5 file with data (T, {', '.join(map(str, frame))})"
        ) from None
    if series.data.shape[1:] != frame:
        raise UserError(
            f"{path} holds frames (C, H, W) = {series.data.shape[1:]}; the checkpoint was trained on {frame}; give a "
            "file on the training grid"
        )
    end = int(series.slots[-1]) if init_text is None else parse_slot(init_text, slots_per_day)

    def show(slot: int) -> str:
        return f"{iso(slot_time(slot, slots_per_day))} ({format_stamp(slot, slots_per_day)})"

    index = window_indices(series.slots, end, 1, t_in, show, str(path))
    counts = series.data[index]

    def place(at: tuple[int, ...]) -> str:
        t, c, h, w = at
        return f"slot {show(int(series.slots[index][t]))}, channel {c}, row {h}, column {w}"

    check_finite(counts, str(path), place)
    return FlowWindow(counts=counts, slots=series.slots[index], slots_per_day=slots_per_day)


def flow_extremes(meta: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The training ``(flow_min, flow_max - flow_min)``, shaped ``[]`` (global) or ``[C, 1, 1]`` (per channel).

    Raises:
        UserError: a checkpoint trained on OpenSTL's pre-scaled npz, which records no raw extremes.
    """
    if meta.get("flow_min") is None or meta.get("flow_max") is None:
        raise UserError(
            f"the checkpoint was trained on pre-scaled data ({meta.get('scaling', 'unknown scaling')}) and records no "
            "flow_min/flow_max, so raw counts cannot be scaled as in training; use a checkpoint trained on .h5 files"
        )
    low = np.asarray(meta["flow_min"], dtype=np.float64)
    high = np.asarray(meta["flow_max"], dtype=np.float64)
    shape = (-1, 1, 1) if low.ndim else ()
    return low.reshape(shape), (high - low).reshape(shape)


def scale_flows(counts: np.ndarray, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Raw flows ``[T, C, H, W]`` to the training scale ``(v - flow_min) / flow_scale`` as float32."""
    return ((np.asarray(counts, dtype=np.float64) - low) / scale).astype(np.float32)


def unscale_flows(scaled: np.ndarray, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled flows ``[T, C, H, W]`` back to counts, float64."""
    return np.asarray(scaled, dtype=np.float64) * scale + low


def flow_dataset(
    counts: np.ndarray, window: FlowWindow, meta: Mapping[str, Any], attrs: Mapping[str, Any]
) -> xr.Dataset:
    """The forecast as one variable per flow channel (``inflow``, ``outflow``), ``(init_time, lead_time, row, col)``.

    Args:
        counts: ``[T_out, C, H, W]`` forecast flows in counts.
        window: the input (its last slot is the initial time).
        meta: the checkpoint's flow metadata.
        attrs: global attributes.
    """
    names = list(meta.get("channels") or [f"channel_{j}" for j in range(counts.shape[1])])
    leads = window.slot_length * np.arange(1, counts.shape[0] + 1)
    coords = {
        **_time_coords(slot_time(int(window.slots[-1]), window.slots_per_day), leads),
        "row": ("row", np.arange(counts.shape[2]), {"long_name": "grid row"}),
        "col": ("col", np.arange(counts.shape[3]), {"long_name": "grid column"}),
    }
    slot = f"{int(window.slot_length / np.timedelta64(1, 'm'))}min"
    data_vars = {
        name: (
            ("init_time", "lead_time", "row", "col"),
            counts[None, :, j].astype(np.float32),
            {"units": "vehicles per slot", "long_name": f"{name} crowd flow", "slot_length": slot},
        )
        for j, name in enumerate(names)
    }
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


# -- plain arrays -----------------------------------------------------------------------------------------------------
def read_array_window(path: Path, meta: Mapping[str, Any], init_text: str | None = None) -> ArrayWindow:
    """The ``T_in`` frames ending at ``init_text`` (default: the last) of an array input, as float32.

    A ``.npy`` holds ``[T, C, H, W]``; any other format of ``data=arrays`` (``.npz``, HDF5, Zarr, NetCDF) is read as
    training read it (the checkpoint's ``variable`` and ``layout``), and one long series with time stamps lets
    ``init_text`` pick the window. Values equal to the checkpoint's ``mask_value`` become NaN (missing).
    """
    from stpred.datamodules.arrays import read_source

    in_shape = meta["in_shape"]
    t_in, frame = int(in_shape[0]), tuple(int(v) for v in in_shape[1:])
    if path.suffix.lower() == ".npy":
        array, seconds = _read_npy(path), None
    elif not {"layout", "variable", "time_key"} & meta.keys():  # not trained on data=arrays: .npy arrays only
        raise UserError(
            f"{path} is {describe_input(path)}, but this {meta.get('dataset', 'array')} checkpoint reads a .npy "
            f"array [T >= {t_in}, {', '.join(map(str, frame))}] (time, channel, y, x) in physical units; save the "
            "input as one with numpy.save"
        )
    else:
        source = read_source(path, meta.get("variable"), meta.get("layout"), str(meta.get("time_key") or "times"))
        if source.data.shape[0] != 1:
            raise UserError(
                f"{path} holds {source.data.shape[0]} samples [N, T, ...]; forecast from one: save it as a .npy "
                "[T, C, H, W] or a file holding that sample alone"
            )
        array, seconds = source.data[0], source.seconds
    if array.ndim != 4 or array.shape[1:] != frame or array.shape[0] < t_in:
        raise UserError(
            f"{path} holds an array of shape {tuple(array.shape)}; the checkpoint needs [T >= {t_in}, "
            f"{', '.join(map(str, frame))}] (time, channel, y, x) in physical units"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise UserError(f"{path} holds {array.dtype} values; give a numeric array")
    if seconds is None:
        if init_text is not None:
            raise UserError(f"--init-time needs time stamps, and {path} has none; drop --init-time")
        index, times = np.arange(len(array) - t_in, len(array)), None
    else:
        from stpred.datamodules.arrays import time_segments

        stamps = seconds.astype("datetime64[s]").astype("datetime64[ns]")
        step_seconds = meta.get("time_step") or time_segments(seconds, str(path))[0]
        step = np.timedelta64(round(float(step_seconds)), "s").astype("timedelta64[ns]")
        end = stamps[-1] if init_text is None else parse_time(init_text)
        index = window_indices(stamps, end, step, t_in, iso, str(path))  # evenly spaced, no gap inside
        times = seconds[index].astype("datetime64[s]")
    frames = np.array(array[index], dtype=np.float32)
    if meta.get("mask_value") is not None:  # the declared fill value is missing data, as in training
        frames[frames == np.float32(meta["mask_value"])] = np.nan

    def place(at: tuple[int, ...]) -> str:
        t, c, h, w = at
        stamp = "" if times is None else f" ({iso(times[t])})"
        return f"frame {int(index[t])}{stamp}, channel {c}, row {h}, column {w}"

    check_finite(frames, str(path), place)
    return ArrayWindow(frames, times)


@dataclass(frozen=True)
class ArrayWindow:
    """The model's input read from an array file.

    Attributes:
        frames: float32 ``[T_in, C, H, W]`` in the data's units, NaN where missing.
        times: ``datetime64[s]`` ``[T_in]`` stamps, or ``None``.
    """

    frames: np.ndarray
    times: np.ndarray | None


def _read_npy(path: Path) -> np.ndarray:
    what = describe_input(path)
    if what not in ("a .npy array", "a zip archive (.npz or zipped Zarr)"):
        raise UserError(f"{path} is {what}, not a .npy array; save the input with numpy.save as [T, C, H, W]")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        if "pickle" in str(err):  # an object array: numpy's advice to unpickle it does not apply
            raise UserError(f"{path} holds Python objects, not numbers; save a numeric array [T, C, H, W]") from None
        raise UserError(f"cannot read {path} as a .npy array ({' '.join(str(err).split())})") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise UserError(f"{path} is an .npz archive; save the input as one .npy array [T, C, H, W]")
    return array


def array_dataset(forecast: np.ndarray, meta: Mapping[str, Any], attrs: Mapping[str, Any]) -> xr.Dataset:
    """The forecast ``[T_out, C, H, W]`` as one variable ``forecast`` ``(lead_time, channel, y, x)``.

    ``lead_time`` counts model steps (1 .. T_out); ``time_step`` from the metadata gives their length.
    """
    t_out, channels = forecast.shape[:2]
    names = [str(n) for n in (meta.get("channels") or [f"channel_{j}" for j in range(channels)])]
    units = [str(u) for u in (meta.get("units") or ["unknown"] * channels)]
    step = meta.get("time_step")
    lead_attrs = {"long_name": "forecast lead in model steps", "units": "1"}
    if isinstance(step, (int, float)):
        lead_attrs["time_step"] = float(step)
    coords = {
        "lead_time": ("lead_time", np.arange(1, t_out + 1), lead_attrs),
        "channel": ("channel", names, {"long_name": "channel"}),
        "channel_units": ("channel", units, {"long_name": "units of each channel"}),
        "y": ("y", np.arange(forecast.shape[2]), {"long_name": "grid row"}),
        "x": ("x", np.arange(forecast.shape[3]), {"long_name": "grid column"}),
    }
    var_attrs = {"long_name": f"{meta.get('dataset', 'model')} forecast"}
    if len(set(units)) == 1:
        var_attrs["units"] = units[0]
    variable = (("lead_time", "channel", "y", "x"), forecast.astype(np.float32), var_attrs)
    return xr.Dataset({"forecast": variable}, coords=coords, attrs=dict(attrs))


# -- writing ----------------------------------------------------------------------------------------------------------
def _file_mode(out: Path) -> int:
    """The mode ``out`` has, or a new file's under the umask (``mkstemp`` makes its files private)."""
    if out.exists():
        return out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(out: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``out``, then move it over ``out``; nothing half-written stays.

    Raises:
        UserError: ``out``'s folder does not exist.
    """
    folder = out.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {out}: folder {folder} does not exist; create it or pick another --out")
    with atomic_output(out) as tmp:
        write(tmp)
        os.chmod(tmp, _file_mode(out))


def netcdf_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Compressed data variables with ``_FillValue`` NaN, coordinates without fill values, times in minutes and
    leads in hours or minutes."""
    encoding: dict[str, dict[str, Any]] = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    for name, var in ds.data_vars.items():
        if np.issubdtype(var.dtype, np.floating):  # masked cells are NaN, and the file says so
            encoding[name]["_FillValue"] = var.dtype.type(np.nan)
    for name, coord in ds.coords.items():
        if np.issubdtype(coord.dtype, np.datetime64):
            encoding[name] = {"units": "minutes since 1970-01-01 00:00:00"}
        elif np.issubdtype(coord.dtype, np.timedelta64):
            whole_hours = bool(np.all(coord.values % np.timedelta64(1, "h") == np.timedelta64(0)))
            encoding[name] = {"units": "hours" if whole_hours else "minutes"}
        elif np.issubdtype(coord.dtype, np.number):
            encoding[name] = {"_FillValue": None}
    return encoding


def write_netcdf(ds: xr.Dataset, out: Path) -> None:
    """``ds`` as NetCDF-4 at ``out``, written atomically (see :func:`write_atomic`)."""
    encoding = netcdf_encoding(ds)
    write_atomic(out, lambda tmp: ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding))
