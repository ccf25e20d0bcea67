"""Lazy readers for gridded weather data: WeatherBench-1 folders, single NetCDF files and WeatherBench-2 Zarr stores.

Every reader returns one lazy (dask-backed) :class:`xarray.DataArray` per channel with dims
``(time, latitude, longitude)`` in that order, whatever the source's names and layout (docs/data.md section 4):

- **WeatherBench-1 layout** (``root``): ``<root>/<dir>/<dir>_<YYYY>_<res>deg.nc``, dims ``time, lat, lon``
  [+ ``level``], short variable names inside (``t2m`` in ``2m_temperature/``). Only the years the splits need
  are opened, with ``xarray.open_mfdataset(combine="by_coords")``.
- **A single NetCDF file** (``path``), either naming.
- **A Zarr store** (``path`` ending in ``.zarr`` or holding Zarr metadata) with WeatherBench-2 naming: long
  variable names, ``latitude``/``longitude``, pressure ``level``, often laid out ``(time, [level,] longitude,
  latitude)``; every channel is transposed explicitly.

Names are mapped both ways: a variable may be asked for by its short (``t2m``) or long (``2m_temperature``)
name in any layout, and ``lat``/``lon`` become ``latitude``/``longitude`` (WeatherBench-2 names, which stpred
writes). Latitude rows keep the data's order (ascending or descending); nothing is flipped.

Variable specifications (``variables=`` of the datamodule), one channel per (variable, level)::

    ["t2m"]                                                   # one channel
    [{"name": "temperature", "levels": [500, 850]}, "u10"]    # three channels: temperature_500, _850, u10
    [{"name": "z", "levels": [500], "dir": "geopotential_500"}]  # WB1 folder given explicitly
    ["uv10"]                                                  # OpenSTL key: u10 and v10

In the WeatherBench-1 layout a surface key without levels first tries OpenSTL's folder map
(:data:`OPENSTL_DIRS`: ``z`` -> ``geopotential_500``, ``t`` -> ``temperature_850``), then the long name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from stpred.errors import UserError

__all__ = [
    "OPENSTL_DIRS",
    "SHORT_TO_LONG",
    "ChannelSpec",
    "VariableSpec",
    "WeatherSource",
    "channel_specs",
    "long_name",
    "parse_variables",
    "short_name",
    "time_segments",
]

#: Short (ERA5 / WeatherBench-1) variable names and their long (folder / WeatherBench-2) names.
SHORT_TO_LONG = {
    "t2m": "2m_temperature",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "tcc": "total_cloud_cover",
    "tp": "total_precipitation",
    "tisr": "toa_incident_solar_radiation",
    "msl": "mean_sea_level_pressure",
    "sst": "sea_surface_temperature",
    "z": "geopotential",
    "t": "temperature",
    "r": "relative_humidity",
    "q": "specific_humidity",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "w": "vertical_velocity",
    "vo": "vorticity",
    "pv": "potential_vorticity",
}
LONG_TO_SHORT = {v: k for k, v in SHORT_TO_LONG.items()}

#: OpenSTL's key -> WeatherBench-1 folder map (docs/data.md section 4.1), for keys given without levels.
OPENSTL_DIRS = {
    "t2m": "2m_temperature",
    "r": "relative_humidity",
    "tcc": "total_cloud_cover",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "z": "geopotential_500",
    "t": "temperature_850",
    "tp": "total_precipitation",
}

#: OpenSTL keys that stand for several variables.
COMPOSITE = {"uv10": ("u10", "v10")}

_COORD_RENAMES = {"lat": "latitude", "lon": "longitude", "pressure_level": "level", "valid_time": "time"}
_GRID_DIMS = ("time", "latitude", "longitude")


def long_name(name: str) -> str:
    """The WeatherBench-2 (long) name of ``name``; long names map to themselves."""
    return SHORT_TO_LONG.get(name, name)


def short_name(name: str) -> str:
    """The short (ERA5) name of ``name``; short names map to themselves."""
    return LONG_TO_SHORT.get(name, name)


@dataclass(frozen=True)
class VariableSpec:
    """One requested variable.

    Args:
        name: short or long name, as the user wrote it.
        levels: pressure levels (hPa) to stack as channels; ``None`` for a surface variable (or a variable with a
            single level).
        dir: WeatherBench-1 folder holding it; found from the name when ``None``.
    """

    name: str
    levels: tuple[float, ...] | None = None
    dir: str | None = None


@dataclass(frozen=True)
class ChannelSpec:
    """One channel: a variable at one level (or none).

    Args:
        variable: the variable's specification.
        level: the pressure level, or ``None``.
    """

    variable: VariableSpec
    level: float | None

    @property
    def name(self) -> str:
        """``t2m`` or ``temperature_850``: the name as given, with the level appended."""
        if self.level is None:
            return self.variable.name
        return f"{self.variable.name}_{self.level:g}"


def parse_variables(spec: Any) -> list[VariableSpec]:
    """Turn the ``variables`` option (a name, a mapping, or a list of them) into :class:`VariableSpec` objects.

    Raises:
        UserError: on an entry that is neither a name nor a mapping with ``name`` (and optional ``levels``/``dir``).
    """
    entries = [spec] if isinstance(spec, (str, Mapping)) else list(spec or [])
    if not entries:
        raise UserError("WeatherBench: data.variables is empty; give e.g. data.variables=[t2m]")
    out: list[VariableSpec] = []
    for entry in entries:
        if isinstance(entry, str):
            out.extend(VariableSpec(part) for part in COMPOSITE.get(entry, (entry,)))
            continue
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise UserError(
                f"WeatherBench: data.variables entry {entry!r} is neither a name nor {{name: ..., levels: [...]}}"
            )
        unknown = set(entry) - {"name", "levels", "level", "dir"}
        if unknown:
            raise UserError(f"WeatherBench: data.variables entry {dict(entry)} has unknown keys {sorted(unknown)}")
        levels = entry.get("levels", entry.get("level"))
        if levels is not None:
            levels = (levels,) if isinstance(levels, (int, float)) else tuple(levels)
            levels = tuple(float(v) for v in levels)
            if not levels:
                raise UserError(f"WeatherBench: variable '{entry['name']}' has an empty levels list")
        out.append(VariableSpec(str(entry["name"]), levels, entry.get("dir")))
    return out


def channel_specs(variables: Sequence[VariableSpec]) -> list[ChannelSpec]:
    """One :class:`ChannelSpec` per (variable, level), in the order given."""
    return [ChannelSpec(v, lvl) for v in variables for lvl in (v.levels if v.levels is not None else (None,))]


def _years(periods: Sequence[tuple[Any, Any]]) -> set[int] | None:
    """The calendar years the periods touch, to open only those WeatherBench-1 yearly files."""
    years: set[int] = set()
    try:
        for start, end in periods:
            years.update(range(pd.Timestamp(str(start)).year, pd.Timestamp(str(end)).year + 1))
    except (ValueError, TypeError):
        return None
    return years


def _is_zarr(path: Path) -> bool:
    markers = (".zmetadata", ".zgroup", "zarr.json")
    return path.suffix == ".zarr" or (path.is_dir() and any((path / m).exists() for m in markers))


def _normalise_names(ds: xr.Dataset) -> xr.Dataset:
    renames = {old: new for old, new in _COORD_RENAMES.items() if old in ds.variables and new not in ds.variables}
    return ds.rename(renames) if renames else ds


@dataclass(frozen=True)
class WeatherSource:
    """Where the data lives; picklable, so each DataLoader worker can reopen it.

    Args:
        root: a WeatherBench-1 folder (``<root>/<dir>/<dir>_<YYYY>_<res>deg.nc``).
        path: a single NetCDF file or Zarr store (instead of ``root``).
        resolution: WeatherBench-1 resolution in degrees as in the file names (``5.625``); ``None`` accepts any
            single resolution found.
        time_chunk: dask chunk length along time for NetCDF files (Zarr stores keep their own chunks).
        periods: ``(start, end)`` pairs the splits cover; only the yearly files they touch are opened.
    """

    root: str | None = None
    path: str | None = None
    resolution: str | None = None
    time_chunk: int = 48
    periods: tuple[tuple[Any, Any], ...] = ()

    def __post_init__(self) -> None:
        if (self.root is None) == (self.path is None):
            raise UserError(
                "WeatherBench: set exactly one of data.root= (a WeatherBench-1 folder) and data.path= "
                "(a NetCDF file or Zarr store)"
            )

    @property
    def layout(self) -> str:
        """``"wb1"``, ``"zarr"`` or ``"netcdf"``."""
        if self.root is not None:
            return "wb1"
        return "zarr" if _is_zarr(Path(self.path)) else "netcdf"

    @property
    def location(self) -> str:
        return str(self.root if self.root is not None else self.path)

    # -- opening ------------------------------------------------------------------------------------------------
    def _open_file(self, use_dask: bool) -> xr.Dataset:
        path = Path(self.path)
        if not path.exists():
            raise UserError(f"WeatherBench: no NetCDF file or Zarr store at {path}; set data.path= to one")
        try:
            if _is_zarr(path):
                return _normalise_names(xr.open_zarr(path, chunks={} if use_dask else None))
            # No dask yet: each variable gets time chunks aligned with its stored chunks (see _chunked).
            return _normalise_names(xr.open_dataset(path))
        except (OSError, ValueError) as err:
            raise UserError(f"WeatherBench: cannot read {path} as NetCDF or Zarr ({err}); check data.path=") from err

    def _wb1_files(self, folder: Path) -> list[Path]:
        res = "*" if self.resolution is None else self.resolution
        files = sorted(folder.glob(f"{folder.name}_*_{res}deg.nc"))
        if not files:
            raise UserError(
                f"WeatherBench: no files {folder}/{folder.name}_<YYYY>_{res}deg.nc; check data.root= and "
                "data.resolution="
            )
        found = {m.group(1) for f in files if (m := re.search(r"_([0-9.]+)deg\.nc$", f.name))}
        if self.resolution is None and len(found) > 1:
            raise UserError(f"WeatherBench: {folder} holds resolutions {sorted(found)}; set data.resolution= to one")
        years = _years(self.periods)
        if years is not None:
            dated = [(f, re.search(r"_(\d{4})_[0-9.]+deg\.nc$", f.name)) for f in files]
            files = [f for f, m in dated if m is None or int(m.group(1)) in years]
            if not files:
                raise UserError(
                    f"WeatherBench: no yearly file in {folder} covers the split years {sorted(years)}; "
                    "check data.splits= and data.root="
                )
        return files

    def _open_wb1(self, folder: Path) -> xr.Dataset:
        files = self._wb1_files(folder)
        try:
            with xr.open_dataset(files[0]) as first:
                chunk = max((_time_chunk(first[v], self.time_chunk) for v in first.data_vars), default=self.time_chunk)
            ds = xr.open_mfdataset(
                files,
                combine="by_coords",
                chunks={"time": chunk},
                data_vars="minimal",
                coords="minimal",
                compat="override",
                join="exact",
            )
        except (OSError, ValueError) as err:
            raise UserError(f"WeatherBench: cannot combine the files of {folder} ({err}); check data.root=") from err
        return _normalise_names(ds)

    def _wb1_folder(self, channel: ChannelSpec) -> Path:
        root = Path(self.root)
        if not root.is_dir():
            raise UserError(
                f"WeatherBench: data.root={root} is not a folder; point data.root= at a WeatherBench-1 folder "
                "(holding e.g. 2m_temperature/) or set data.path= to a NetCDF file or Zarr store"
            )
        var = channel.variable
        if var.dir is not None:
            candidates = [var.dir]
        else:
            candidates = [OPENSTL_DIRS[var.name]] if var.levels is None and var.name in OPENSTL_DIRS else []
            candidates += [long_name(var.name), var.name]
            if channel.level is not None:
                candidates.append(f"{long_name(var.name)}_{channel.level:g}")
        for name in dict.fromkeys(candidates):
            if (root / name).is_dir():
                return root / name
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UserError(
            f"WeatherBench: variable '{var.name}' not found under {root} (searched folders "
            f"{list(dict.fromkeys(candidates))}); available: {available}; fix data.variables= or data.root="
        )

    def open_channels(self, channels: Sequence[ChannelSpec], *, use_dask: bool = True) -> list[xr.DataArray]:
        """Lazy ``(time, latitude, longitude)`` arrays, one per channel, on a common time axis.

        Channels with different time coverage are cut to the times they all share.

        Args:
            channels: what to read.
            use_dask: dask-backed arrays (for reductions over whole splits); ``False`` gives xarray's lazily
                indexed arrays for a single file or store, whose small reads skip dask's per-call overhead
                (about 1 ms instead of 6 ms per 24-frame window of the UK file). WeatherBench-1 folders always
                use dask, which combines their yearly files.

        Raises:
            UserError: on a missing file, folder, variable or level, or on grids that differ between channels.
        """
        opened: dict[str, xr.Dataset] = {}
        arrays = []
        for channel in channels:
            if self.root is not None:
                folder = self._wb1_folder(channel)
                key, where = str(folder), str(folder)
                if key not in opened:
                    opened[key] = self._open_wb1(folder)
            else:
                key, where = "file", self.location
                if key not in opened:
                    opened[key] = self._open_file(use_dask)
            chunk = self.time_chunk if use_dask or self.root is not None else None
            arrays.append(_select_channel(opened[key], channel, where, chunk))
        return _common_times(arrays, channels)

    def open_mask(self, name: str) -> xr.DataArray:
        """A static validity mask ``(latitude, longitude)`` bool from variable ``name`` (e.g. a land-sea mask):
        True where it is nonzero (and not NaN) at any time or level.

        A single file or store holds it beside the channels; a WeatherBench-1 folder in its ``constants/`` files.

        Raises:
            UserError: when the variable is missing or has no latitude/longitude dimensions.
        """
        if self.root is None:
            ds, where = self._open_file(use_dask=False), self.location
        else:
            folder = Path(self.root) / "constants"
            res = "*" if self.resolution is None else self.resolution
            files = sorted(folder.glob(f"*{res}deg.nc")) or sorted(folder.glob("*.nc"))
            if not files:
                raise UserError(
                    f"WeatherBench: data.mask_variable={name} but no constants file {folder}/constants_{res}deg.nc; "
                    "add it or set data.mask_variable=null"
                )
            ds, where = _normalise_names(xr.open_dataset(files[0])), str(files[0])
        with ds:
            if name not in ds.variables:
                raise UserError(
                    f"WeatherBench: mask variable '{name}' not in {where}; available: "
                    f"{sorted(map(str, ds.data_vars))}; fix data.mask_variable= or set it to null"
                )
            da = ds[name]
            if not {"latitude", "longitude"} <= set(da.dims):
                raise UserError(
                    f"WeatherBench: mask variable '{name}' in {where} has dims {list(da.dims)}; it needs "
                    "latitude/lat and longitude/lon; fix data.mask_variable="
                )
            values = da.load()
        other = [d for d in values.dims if d not in ("latitude", "longitude")]
        observed = (values.notnull() & (values != 0)).any(dim=other) if other else values.notnull() & (values != 0)
        observed = observed.transpose("latitude", "longitude")
        return observed.drop_vars([c for c in observed.coords if c not in ("latitude", "longitude")])


def _find_variable(ds: xr.Dataset, name: str, where: str) -> xr.DataArray:
    for candidate in dict.fromkeys((name, short_name(name), long_name(name))):
        if candidate in ds.data_vars:
            return ds[candidate]
    raise UserError(
        f"WeatherBench: variable '{name}' not in {where}; available: {sorted(map(str, ds.data_vars))}; "
        "fix data.variables="
    )


def _time_chunk(da: xr.DataArray, requested: int) -> int:
    """A time chunk of about ``requested`` stamps holding whole stored chunks, so no stored chunk is read twice."""
    stored = (da.encoding.get("preferred_chunks") or {}).get("time")
    if not stored:
        return requested
    return min(-(-requested // stored) * stored, da.sizes["time"])


def _select_channel(ds: xr.Dataset, channel: ChannelSpec, where: str, time_chunk: int | None) -> xr.DataArray:
    """The channel's ``(time, latitude, longitude)`` array: variable found, level selected, axes transposed.

    ``time_chunk`` makes a lazily indexed array dask-backed; ``None`` leaves it as it is.
    """
    name = channel.variable.name
    da = _find_variable(ds, name, where)
    if time_chunk is not None and da.chunks is None and "time" in da.dims:
        da = da.chunk({"time": _time_chunk(da, time_chunk)})
    level = channel.level
    if "level" in da.dims:
        levels = [float(v) for v in da["level"].values]
        if level is None:
            if len(levels) != 1:
                raise UserError(
                    f"WeatherBench: variable '{name}' in {where} has levels {levels}; choose with "
                    f"data.variables=[{{name: {name}, levels: [...]}}]"
                )
            da = da.isel(level=0)
        else:
            if level not in levels:
                raise UserError(f"WeatherBench: level {level:g} of '{name}' not in {where}; available levels: {levels}")
            da = da.isel(level=levels.index(level))
    elif level is not None:
        scalar = da.coords.get("level")
        if scalar is None or scalar.ndim != 0 or float(scalar) != level:
            raise UserError(
                f"WeatherBench: variable '{name}' in {where} has no level dimension (so no level {level:g}); "
                "drop its levels in data.variables="
            )
    missing = [d for d in _GRID_DIMS if d not in da.dims]
    extra = [d for d in da.dims if d not in _GRID_DIMS]
    if missing or extra:
        raise UserError(
            f"WeatherBench: variable '{name}' in {where} has dims {list(da.dims)}; expected time, latitude/lat, "
            f"longitude/lon [+ level]" + (f" (unexpected {extra})" if extra else "")
        )
    da = da.transpose(*_GRID_DIMS)
    da = da.drop_vars([c for c in da.coords if c not in _GRID_DIMS])
    _check_grid(da, name, where)
    return da


def _check_grid(da: xr.DataArray, name: str, where: str) -> None:
    lat = np.asarray(da["latitude"].values, dtype=np.float64)
    if lat.size >= 2 and not (np.all(np.diff(lat) > 0) or np.all(np.diff(lat) < 0)):
        raise UserError(f"WeatherBench: latitude of '{name}' in {where} is not strictly monotonic; regrid first")
    if not np.issubdtype(da["time"].dtype, np.datetime64):
        raise UserError(
            f"WeatherBench: time of '{name}' in {where} is not a standard-calendar datetime ({da['time'].dtype})"
        )


def _common_times(arrays: list[xr.DataArray], channels: Sequence[ChannelSpec]) -> list[xr.DataArray]:
    first = arrays[0]
    for da, ch in zip(arrays[1:], channels[1:]):
        for coord in ("latitude", "longitude"):
            if not np.array_equal(da[coord].values, first[coord].values):
                raise UserError(
                    f"WeatherBench: channel '{ch.name}' has another {coord} grid than '{channels[0].name}'; "
                    "all variables must share one grid"
                )
    times = first.indexes["time"]
    for da in arrays[1:]:
        times = times.intersection(da.indexes["time"])
    if len(times) == 0:
        raise UserError("WeatherBench: the variables share no time stamps; check data.variables= and the files")
    return [da if len(da.indexes["time"]) == len(times) else da.sel(time=times) for da in arrays]


def time_segments(times: np.ndarray) -> tuple[np.timedelta64, list[tuple[int, int]]]:
    """The native time step and the contiguous runs ``[a, b)`` of a time axis.

    Args:
        times: ``datetime64`` stamps.

    Returns:
        ``(step, segments)``: the most common difference between stamps, and the index ranges between gaps.

    Raises:
        UserError: when the stamps are not strictly increasing, or a difference is not a whole number of steps.
    """
    if times.size < 2:
        raise UserError(f"WeatherBench: only {times.size} time stamp(s); nothing to window")
    diffs = np.diff(times)
    if np.any(diffs <= np.timedelta64(0)):
        bad = int(np.argmax(diffs <= np.timedelta64(0)))
        raise UserError(f"WeatherBench: time stamps are not strictly increasing at {times[bad + 1]}; sort the data")
    # The most common spacing, so one odd stamp is reported rather than turning every other step into a gap.
    values, counts = np.unique(diffs, return_counts=True)
    step = values[np.argmax(counts)]
    irregular = (diffs % step != np.timedelta64(0)) | (diffs < step)
    if np.any(irregular):
        bad = int(np.argmax(irregular))
        raise UserError(
            f"WeatherBench: irregular time axis: {times[bad]} -> {times[bad + 1]} is not a multiple of the "
            f"{step.astype('timedelta64[m]')} step; resample the data to a regular step"
        )
    cuts = (np.flatnonzero(diffs != step) + 1).tolist()
    bounds = [0, *cuts, times.size]
    return step, list(zip(bounds[:-1], bounds[1:]))
