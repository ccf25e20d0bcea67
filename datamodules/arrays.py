"""Your own gridded data (``data=arrays``): one array file, or a folder of them, trained on by config alone.

Files: ``.npy``, ``.npz`` (``variable`` = the key), HDF5 ``.h5``/``.hdf5`` (``variable`` = the dataset path), Zarr
(``.zarr`` store) or NetCDF ``.nc`` (``variable`` = the data variable). A folder holds files of one format,
concatenated in name order along time (a long series) or along samples. ``variable`` may list several variables of
the same layout: they are stacked as channels. With one array in a file, ``variable`` may be left out.

The array is either one long series ``[T, C, H, W]``, cut into windows of ``t_in + t_out`` consecutive frames
``stride`` frames apart, or samples ``[N, T, C, H, W]``, each cut the same way (a sample of exactly
``t_in + t_out`` frames gives one window). ``layout`` names the file's axes when they are in another order, one
letter per axis: ``N`` samples, ``T`` time, ``C`` channel, ``H`` rows, ``W`` columns (``TCHW``, ``THWC``, ``THW``,
``NTCHW``, ``NTHWC``, ``NTHW`` ...); ``T``, ``H`` and ``W`` are required, a missing ``C`` means one channel.
``layout: null`` takes ``THW``, ``TCHW`` or ``NTCHW`` by the number of axes.

Time stamps (optional, long series only): the ``time`` coordinate of a NetCDF/Zarr variable's ``T`` axis, or an
array/dataset ``times`` (``time_key``) in an ``.npz``/HDF5 file (or a ``times.npy`` beside a ``.npy``):
``datetime64``, ISO strings, or numbers (Unix seconds, UTC). The most common spacing is the step; a larger spacing
is a gap, and no window crosses it. Samples ``x``/``y`` then carry ``time``: the int64 Unix seconds (UTC) of the
first input frame (``datamodules/base.py``).

Splits, in time order and never shuffled across time (``splits``):

* fractions ``[0.8, 0.1, 0.1]`` (train, val, test) of the frames of a series, or of the samples;
* index ranges ``{train: [0, 800], val: [800, 900], test: [900, 1000]}``, half-open, in frames or samples;
* date ranges ``{train: ["2019-01-01", "2019-06-30"], ...}``, inclusive (an end date covers its whole day),
  when the data has time stamps.

No window crosses a split boundary. Normalisation (``normalize: zscore``) is per channel, with the mean and
standard deviation of the training split only (``none``: raw values, mean 0 and std 1).

Missing values (``docs/data.md``, "Masked cells"): NaN values, values equal to ``mask_value`` (a fill value such as
-9999; NetCDF ``_FillValue`` cells arrive as NaN already) and cells where ``mask`` is zero are **masked** by default:
the statistics use observed values only, masked entries of ``x``/``y`` are 0 (the training mean) and samples carry
``x_valid``/``y_valid`` (True = observed), so losses and metrics skip them. ``mask`` is a variable of the data file
(``[H, W]`` or ``[C, H, W]``; nonzero = observed) or a separate ``.npy``/``.npz``/``.nc``
file holding one array of such a shape. Setup says in one line how many cells and values are masked. With
``fill_nan: mean`` (the channel's training mean over observed values) or ``zero`` the missing values are filled
instead and the model treats them as observed; ``metadata()["fill_nan"]`` records it. ``inf`` is not a missing value:
setup refuses it in one line (count, variables, first place in the file's own axes), unless it is ``mask_value``.

Channel names and units: ``channels``/``units`` options; else a NetCDF/Zarr variable's name and ``units``
attribute (``long_name`` is not used); else ``channel_<i>`` and ``unknown``.

All frames are held in memory as float32.

Examples:
    >>> from stpred.datamodules.arrays import ArrayDataModule
    >>> dm = ArrayDataModule("series.npy", t_in=4, t_out=4, layout="THW")  # doctest: +SKIP
    >>> dm.setup()  # doctest: +SKIP
    >>> next(iter(dm.train_dataloader()))["x"].shape  # doctest: +SKIP
    torch.Size([16, 4, 1, 64, 64])
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.errors import UserError, check

__all__ = [
    "ArrayDataModule",
    "ArraySource",
    "ArrayWindows",
    "canonical",
    "parse_layout",
    "read_source",
    "time_segments",
    "to_seconds",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
AXES = "NTCHW"
SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".zarr", ".nc", ".nc4", ".netcdf")
DEFAULT_LAYOUTS = {3: "THW", 4: "TCHW", 5: "NTCHW"}
#: ``[train, val, test]`` fractions in time order when ``splits`` is not given.
DEFAULT_SPLITS = (0.8, 0.1, 0.1)


# -- layout -----------------------------------------------------------------------------------------------------------
def parse_layout(layout: str | None, ndim: int, where: str = "data") -> str:
    """The validated axis letters of an array of ``ndim`` axes (``None``: :data:`DEFAULT_LAYOUTS`).

    Raises:
        UserError: unknown or repeated letters, ``T``/``H``/``W`` missing, or a letter count that is not ``ndim``.
    """
    if layout is None:
        if ndim not in DEFAULT_LAYOUTS:
            raise UserError(f"{where}: an array of {ndim} axes; set data.layout= (e.g. THW, TCHW, NTCHW, THWC)")
        return DEFAULT_LAYOUTS[ndim]
    text = str(layout).strip().upper()
    ok = set(text) <= set(AXES) and len(set(text)) == len(text) and {"T", "H", "W"} <= set(text) and len(text) == ndim
    if not ok:
        raise UserError(
            f"{where}: data.layout={layout!r} does not fit an array of {ndim} axes; give one letter per axis from "
            "N (samples), T (time), C (channel), H, W, with T, H and W present, e.g. TCHW, THWC, THW, NTCHW, NTHWC"
        )
    return text


def canonical(array: np.ndarray, layout: str) -> np.ndarray:
    """``array`` with axes ``layout`` as ``[N, T, C, H, W]`` (a missing ``N`` or ``C`` becomes a length-1 axis)."""
    order = [layout.index(a) for a in AXES if a in layout]
    out = np.transpose(array, order)
    if "N" not in layout:
        out = out[None]
    if "C" not in layout:
        out = out[:, :, None]
    return out


# -- time -------------------------------------------------------------------------------------------------------------
def to_seconds(values: np.ndarray, where: str) -> np.ndarray:
    """int64 Unix seconds (UTC) of ``datetime64`` stamps, ISO strings (bytes too) or numbers (Unix seconds)."""
    values = np.asarray(values).reshape(-1)
    try:
        if np.issubdtype(values.dtype, np.datetime64):
            return values.astype("datetime64[s]").astype(np.int64)
        if np.issubdtype(values.dtype, np.number):
            return np.round(values.astype(np.float64)).astype(np.int64)
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        return np.array(text, dtype="datetime64[s]").astype(np.int64)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise UserError(
            f"{where}: time stamps are not dates ({err}); give datetime64, ISO strings or Unix seconds"
        ) from None


def time_segments(seconds: np.ndarray, where: str = "data") -> tuple[int, list[tuple[int, int]]]:
    """The step (the most common spacing, seconds) and the contiguous runs ``[a, b)`` between gaps.

    Raises:
        UserError: stamps not strictly increasing.
    """
    if len(seconds) < 2:
        return 0, [(0, len(seconds))]
    diffs = np.diff(seconds)
    if np.any(diffs <= 0):
        bad = int(np.argmax(diffs <= 0)) + 1
        raise UserError(f"{where}: time stamps are not strictly increasing at entry {bad} ({_iso(seconds[bad])})")
    values, counts = np.unique(diffs, return_counts=True)
    step = int(values[np.argmax(counts)])
    cuts = (np.flatnonzero(diffs != step) + 1).tolist()
    bounds = [0, *cuts, len(seconds)]
    return step, list(zip(bounds[:-1], bounds[1:]))


def _iso(second: int) -> str:
    return str(np.datetime64(int(second), "s"))


# -- reading ----------------------------------------------------------------------------------------------------------
@dataclass
class ArraySource:
    """What the files hold, as ``[N, T, C, H, W]``.

    Attributes:
        data: float32 ``[N, T, C, H, W]`` (``N = 1`` for a long series).
        series: the files hold one long series (no ``N`` axis).
        seconds: int64 ``[T]`` Unix seconds of the frames of a series, or ``None``.
        names: channel names read from the files (NetCDF/Zarr), or ``None``.
        units: channel units read from the files, or ``None``.
        files: the files read.
        pieces: per file, its length along the axis the files are concatenated on (``T`` of a series, else ``N``)
            and, per variable, ``(key, layout letters, channels)``: where each value came from.
    """

    data: np.ndarray
    series: bool
    seconds: np.ndarray | None
    names: list[str] | None
    units: list[str] | None
    files: list[str]
    pieces: list[tuple[int, list[tuple[str, str, int]]]] = field(default_factory=list)


def resolve_files(path: str | Path) -> list[Path]:
    """``path`` itself, or the data files of a folder in name order (a ``.zarr`` folder is one store)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"data.path={path} does not exist; point it at an array file or a folder of them")
    if path.is_dir() and path.suffix != ".zarr":
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
        files = [p for p in files if p.name != "times.npy"]
        if not files:
            raise UserError(f"data.path={path} is a folder without {'/'.join(SUFFIXES)} files")
        kinds = {_kind(p) for p in files}
        if len(kinds) > 1:
            raise UserError(f"data.path={path} mixes file formats ({sorted(kinds)}); keep one format per folder")
        return files
    return [path]


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    if suffix in (".nc", ".nc4", ".netcdf"):
        return "netcdf"
    if suffix in (".npy", ".npz", ".zarr"):
        return suffix[1:]
    raise UserError(f"{path}: unknown format {suffix!r}; use .npy, .npz, .h5/.hdf5, .zarr or .nc")


def _pick(names: Sequence[str], variable: Sequence[str] | None, time_key: str, path: Path) -> list[str]:
    if variable is None:
        candidates = [n for n in names if n != time_key]
        if len(candidates) != 1:
            raise UserError(f"{path}: holds {sorted(candidates)}; say which with data.variable=")
        return candidates
    missing = [v for v in variable if v not in names]
    if missing:
        raise UserError(f"{path}: no {', '.join(map(repr, missing))} (it has {sorted(names)}); fix data.variable=")
    return list(variable)


def _hdf5_names(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_xarray(path: Path, kind: str) -> Any:
    import xarray as xr

    try:
        if kind == "zarr":
            return xr.open_zarr(path, consolidated=None, decode_times=True)
        return xr.open_dataset(path, engine="netcdf4", decode_times=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is an unreadable file for the user
        raise UserError(f"{path}: not a readable {kind} file ({' '.join(str(err).split())[:200]})") from None


def _read_file(
    path: Path, variable: Sequence[str] | None, time_key: str, header: bool
) -> tuple[list[Any], Any, list[str], list[str | None]]:
    """``(arrays, times, names, units)`` of one file; arrays are shapes only when ``header``."""
    kind = _kind(path)
    if kind == "npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{path}: not a readable .npy ({' '.join(str(err).split())})") from None
        times_file = path.with_name("times.npy")
        times = None if header or not times_file.exists() else np.load(times_file, allow_pickle=False)
        return [array.shape if header else np.asarray(array)], times, [path.stem], [None]
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = _pick(list(f.files), variable, time_key, path)
                if header:
                    return [_npz_shape(path, k) for k in keys], None, keys, [None] * len(keys)
                times = np.asarray(f[time_key]) if time_key in f.files else None
                return [np.asarray(f[k]) for k in keys], times, keys, [None] * len(keys)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise UserError(f"{path}: not a readable .npz ({' '.join(str(err).split())})") from None
    if kind == "hdf5":
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise UserError(f"{path}: not a readable HDF5 file ({' '.join(str(err).split())})") from None
        with f:
            keys = _pick(_hdf5_names(f), variable, time_key, path)
            if header:
                return [f[k].shape for k in keys], None, keys, [None] * len(keys)
            times = np.asarray(f[time_key][()]) if time_key in f else None
            units = [_text(f[k].attrs.get("units")) for k in keys]
            return [np.asarray(f[k][()]) for k in keys], times, keys, units
    ds = _open_xarray(path, kind)
    with ds:
        keys = _pick([str(v) for v in ds.data_vars], variable, time_key, path)
        arrays = [ds[k] for k in keys]
        if header:
            return [a.shape for a in arrays], None, keys, [None] * len(keys)
        times = None
        for dim in arrays[0].dims:
            coord = ds[dim].values if dim in ds.coords else None
            if coord is not None and np.issubdtype(coord.dtype, np.datetime64):
                times = coord
                break
        if times is None and time_key in ds.variables and time_key not in keys:
            times = ds[time_key].values
        return [a.to_numpy() for a in arrays], times, keys, [_text(a.attrs.get("units")) for a in arrays]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return tuple(int(v) for v in read(f)[0])


def header_shape(path: str | Path, variable: Sequence[str] | None, layout: str | None, time_key: str) -> tuple:
    """``(C, H, W)`` of the data, from the first file's header (all variables' channels added)."""
    first = resolve_files(path)[0]
    shapes, _, _, _ = _read_file(first, variable, time_key, header=True)
    channels, grid = 0, None
    for shape in shapes:
        axes = parse_layout(layout, len(shape), str(first))
        channels += int(shape[axes.index("C")]) if "C" in axes else 1
        grid = (int(shape[axes.index("H")]), int(shape[axes.index("W")]))
    return (channels, *grid)  # type: ignore[misc]


def read_source(
    path: str | Path, variable: Sequence[str] | None, layout: str | None, time_key: str = "times"
) -> ArraySource:
    """Read every file, bring it to ``[N, T, C, H, W]``, stack variables as channels and concatenate the files."""
    files = resolve_files(path)
    parts, stamps, series = [], [], None
    pieces: list[tuple[int, list[tuple[str, str, int]]]] = []
    names: list[str] | None = None
    units: list[str | None] = []
    for file in files:
        arrays, times, keys, file_units = _read_file(file, variable, time_key, header=False)
        blocks, origin = [], []
        for array, key in zip(arrays, keys):
            if not np.issubdtype(array.dtype, np.number):
                raise UserError(f"{file}: {key} holds {array.dtype} values, not numbers")
            axes = parse_layout(layout, array.ndim, f"{file} ({key})")
            blocks.append(canonical(array, axes))
            origin.append((key, axes, blocks[-1].shape[2]))
            if series is None:
                series = "N" not in axes
        if len({b.shape[:2] + b.shape[3:] for b in blocks}) > 1:
            raise UserError(f"{file}: variables {keys} have different shapes; they must share N, T, H and W")
        block = np.concatenate(blocks, axis=2) if len(blocks) > 1 else blocks[0]
        if parts and block.shape[2:] != parts[0].shape[2:]:
            raise UserError(
                f"{file}: frames (C, H, W) = {block.shape[2:]} differ from {parts[0].shape[2:]} in {files[0]}"
            )
        if not parts and _kind(file) != "npy":  # a .npy has no variable name to call its channel
            names = keys if all(b.shape[2] == 1 for b in blocks) else None
            units = file_units if names is not None else []
        parts.append(block.astype(np.float32, copy=False))
        pieces.append((block.shape[1] if series else block.shape[0], origin))
        stamps.append(times)
    axis = 1 if series else 0
    data = np.concatenate(parts, axis=axis) if len(parts) > 1 else parts[0]
    seconds = None
    if any(s is not None for s in stamps):
        if not series:
            raise UserError(f"{path}: time stamps are supported for one long series, not samples [N, T, ...]")
        if any(s is None for s in stamps):
            raise UserError(f"{path}: some files have time stamps and some do not; give them all or none")
        seconds = np.concatenate([to_seconds(s, str(path)) for s in stamps])
        if len(seconds) != data.shape[1]:
            raise UserError(f"{path}: {len(seconds)} time stamps for {data.shape[1]} frames; give one per frame")
    known_units = None if not units or all(u is None for u in units) else [u or "unknown" for u in units]
    files_read = [str(f) for f in files]
    return ArraySource(np.ascontiguousarray(data), bool(series), seconds, names, known_units, files_read, pieces)


#: What each layout letter counts, in messages.
AXIS_WORDS = {"N": "sample", "T": "time step", "C": "channel", "H": "row", "W": "column"}


def _label(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s"))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def value_place(source: ArraySource, index: Sequence[int]) -> tuple[str, str, str]:
    """Where the value at ``index`` ``(n, t, c, h, w)`` of ``source.data`` is in its file.

    Returns:
        ``(file, variable, place)``; ``place`` in the file's own axes: ``time 2021-06-01T07:00:00, lat 52, lon 1
        (t2m[7, 2, 5])`` for NetCDF/Zarr (coordinate values), else ``time step 12, row 3, column 1 (series[12, 3, 1],
        layout THW)``.
    """
    n, t, c, h, w = (int(v) for v in index)
    along = t if source.series else n  # the files are concatenated along T (a series) or N (samples)
    k = 0
    while k < len(source.pieces) - 1 and along >= source.pieces[k][0]:
        along -= source.pieces[k][0]
        k += 1
    origin = source.pieces[k][1]
    v = 0
    while v < len(origin) - 1 and c >= origin[v][2]:
        c -= origin[v][2]
        v += 1
    file, (key, axes, _) = source.files[k], origin[v]
    at = {"N": along, "T": along if source.series else t, "C": c, "H": h, "W": w}
    position = [at[a] for a in axes]
    where = f"{key}[{', '.join(map(str, position))}]"
    if _kind(Path(file)) in ("netcdf", "zarr"):
        with _open_xarray(Path(file), _kind(Path(file))) as ds:
            words = []
            for dim, i in zip(ds[key].dims, position):
                coord = ds[dim].values if dim in ds.coords and ds[dim].ndim == 1 else None
                words.append(f"{dim} {_label(coord[i]) if coord is not None else i}")
        return file, key, f"{', '.join(words)} ({where})"
    words = [f"{AXIS_WORDS[a]} {i}" for a, i in zip(axes, position)]
    if source.seconds is not None:
        words[axes.index("T")] += f" ({_iso(source.seconds[t])})"
    return file, key, f"{', '.join(words)} ({where}, layout {axes})"


# -- splits and windows ----------------------------------------------------------------------------------------------
def _date_index(seconds: np.ndarray, start: Any, end: Any, split: str) -> tuple[int, int]:
    import pandas as pd

    index = pd.DatetimeIndex(seconds.astype("datetime64[s]"))
    try:
        sl = index.slice_indexer(str(start), str(end))
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"data.splits.{split}=[{start}, {end}] is not a date range ({err})") from None
    return int(sl.start or 0), int(len(index) if sl.stop is None else sl.stop)


def split_ranges(splits: Any, length: int, seconds: np.ndarray | None) -> dict[str, tuple[int, int]]:
    """Half-open index ranges ``[a, b)`` of train/val/test along frames (series) or samples.

    Raises:
        UserError: malformed splits, overlapping or empty ranges, dates without time stamps.
    """
    if isinstance(splits, Mapping):
        if set(splits) != set(SPLITS):
            raise UserError(f"data.splits has keys {sorted(splits)}; give exactly train, val and test")
        ranges = {}
        for split in SPLITS:
            value = list(splits[split])
            if len(value) != 2:
                raise UserError(f"data.splits.{split}={value} must be [start, end]")
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
                ranges[split] = (max(0, int(value[0])), min(length, int(value[1])))
            elif seconds is None:
                raise UserError(f"data.splits.{split}={value}: date ranges need time stamps, and the data has none")
            else:
                ranges[split] = _date_index(seconds, value[0], value[1], split)
    else:
        fractions = [float(v) for v in splits]
        if len(fractions) != 3 or min(fractions) < 0 or not 0 < sum(fractions) <= 1 + 1e-9:
            raise UserError(f"data.splits={list(splits)} must be three fractions [train, val, test] summing to <= 1")
        cuts = np.round(np.cumsum([0.0, *fractions]) * length).astype(int)
        ranges = {s: (int(cuts[i]), int(cuts[i + 1])) for i, s in enumerate(SPLITS)}
    ordered = sorted(ranges.items(), key=lambda kv: kv[1])
    for (a, (_, a_end)), (b, (b_start, _)) in zip(ordered, ordered[1:]):
        if b_start < a_end:
            raise UserError(f"data.splits: the {a} and {b} ranges overlap; make them disjoint")
    return ranges


def window_starts(lo: int, hi: int, segments: Sequence[tuple[int, int]], length: int, stride: int) -> np.ndarray:
    """Starts of windows of ``length`` frames, ``stride`` apart from each run's start, inside ``[lo, hi)`` and
    inside one of the contiguous ``segments``."""
    starts = []
    for a, b in segments:
        a, b = max(a, lo), min(b, hi)
        starts.extend(range(a, b - length + 1, stride))
    return np.asarray(starts, dtype=np.int64)


class ArrayWindows(Dataset):
    """Windows of one split over normalised frames held in memory (shared by the splits).

    Args:
        frames: float32 ``[N, T, C, H, W]`` normalised frames.
        windows: int64 ``[M, 2]``: ``(sample, first frame)`` of each window.
        t_in: input frames.
        t_out: target frames.
        seconds: int64 ``[T]`` Unix seconds of a series' frames, or ``None``.
        valid: bool ``[N, T, C, H, W]`` (True = observed) when the data has masked values, else ``None``.
    """

    def __init__(
        self,
        frames: torch.Tensor,
        windows: np.ndarray,
        t_in: int,
        t_out: int,
        seconds: np.ndarray | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        self.frames = frames
        self.windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
        self.t_in, self.t_out = t_in, t_out
        self.seconds = seconds
        self.valid = valid

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"x": [T_in, C, H, W], "y": [T_out, C, H, W], "index", "time"}`` (``time`` only with stamps), and
        ``x_valid``/``y_valid`` of the same shapes when the data has masked values."""
        if not 0 <= index < len(self.windows):
            raise IndexError(index)
        n, s = (int(v) for v in self.windows[index])
        window = self.frames[n, s : s + self.t_in + self.t_out]
        item = {"x": window[: self.t_in], "y": window[self.t_in :], "index": int(index)}
        if self.valid is not None:
            valid = self.valid[n, s : s + self.t_in + self.t_out]
            item["x_valid"], item["y_valid"] = valid[: self.t_in], valid[self.t_in :]
        if self.seconds is not None:
            item["time"] = torch.tensor(int(self.seconds[s]), dtype=torch.int64)
        return item


# -- datamodule ------------------------------------------------------------------------------------------------------
def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


class ArrayDataModule(ForecastDataModule):
    """Forecasting windows from your own array files (see the module docstring).

    Args:
        path: an array file or a folder of them.
        variable: the array (npz key, HDF5 dataset, NetCDF/Zarr variable), or a list stacked as channels;
            ``None`` when the file holds one array.
        layout: the file's axis letters (``TCHW``, ``THWC``, ``THW``, ``NTCHW`` ...); ``None``: by axis count.
        t_in: input frames.
        t_out: target frames.
        stride: frames between window starts.
        splits: fractions ``[train, val, test]``, or ``{train: [a, b], ...}`` index or date ranges; ``None``:
            :data:`DEFAULT_SPLITS`.
        time_key: the time-stamp array in an ``.npz``/HDF5 file.
        normalize: ``"zscore"`` (training mean/std per channel) or ``"none"``.
        fill_nan: ``None`` masks missing values; ``"mean"`` (training mean) or ``"zero"`` fills them.
        mask_value: a fill value that marks missing values (e.g. ``-9999``), or ``None``.
        mask: a variable of the data file, or a ``.npy``/``.npz``/``.nc`` file, that is nonzero where values are
            observed (``[H, W]`` or ``[C, H, W]``); ``None``: NaN and ``mask_value`` only.
        channels: channel names; ``None`` reads them from the files or numbers them.
        units: channel units; ``None`` reads them from the files or says ``unknown``.
        name: the dataset name recorded in ``metadata()``.
        frame_shape: ``[C, H, W]`` that :meth:`shapes_from_config` answers while ``path`` does not exist yet;
            unused once the data is there (its header decides).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        path: str,
        *,
        variable: str | Sequence[str] | None = None,
        layout: str | None = None,
        t_in: int = 10,
        t_out: int = 10,
        stride: int = 1,
        splits: Any = DEFAULT_SPLITS,
        time_key: str = "times",
        normalize: Literal["zscore", "none"] = "zscore",
        fill_nan: Literal["mean", "zero"] | None = None,
        mask_value: float | None = None,
        mask: str | None = None,
        channels: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        name: str = "arrays",
        frame_shape: Sequence[int] | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        check(path is not None and str(path) != "", "data.path is not set; point it at your array file or folder")
        check(int(t_in) >= 1 and int(t_out) >= 1, f"data: t_in={t_in}, t_out={t_out} must be at least 1")
        check(int(stride) >= 1, f"data.stride={stride} must be at least 1")
        check(normalize in ("zscore", "none"), f"data.normalize={normalize!r}; use zscore or none")
        check(fill_nan in (None, "mean", "zero"), f"data.fill_nan={fill_nan!r}; use null, mean or zero")
        self.path = str(path)
        self.variable = _as_list(variable)
        self.layout = None if layout is None else str(layout)
        self.t_in, self.t_out, self.stride = int(t_in), int(t_out), int(stride)
        self.splits = DEFAULT_SPLITS if splits is None else splits
        self.time_key = str(time_key)
        self.normalize = normalize
        self.fill_nan = fill_nan
        check(
            mask_value is None or (isinstance(mask_value, (int, float)) and not isinstance(mask_value, bool)),
            f"data.mask_value={mask_value!r}; give the number that marks missing values (e.g. -9999) or null",
        )
        check(
            mask is None or fill_nan is None,
            f"data.mask={mask} and data.fill_nan={fill_nan} contradict each other; give a mask or a fill, not both",
        )
        self.mask_value = None if mask_value is None else float(mask_value)
        self.mask = None if mask is None else str(mask)
        self._static_valid: np.ndarray | None = None
        self._mask_meta: dict[str, Any] | None = None
        self._fill_values: list[float] | None = None
        self.channels = _as_list(channels)
        self.units = _as_list(units)
        self.name = str(name)
        self._frame: tuple[int, int, int] | None = None
        self._meta: dict[str, Any] = {}

    @classmethod
    def shapes_from_config(cls, cfg: Mapping[str, Any]) -> DataShapes:
        """``(t_in, C, H, W)`` -> ``t_out`` from the first file's header (no values read); ``frame_shape`` when
        the file is not there (config checks, benchmarks)."""
        keys = ("path", "variable", "layout", "t_in", "t_out", "time_key", "frame_shape")
        args = {k: cls.config_value(cfg, k) for k in keys}
        if args["path"] is not None and Path(str(args["path"])).expanduser().exists():
            frame = header_shape(args["path"], _as_list(args["variable"]), args["layout"], str(args["time_key"]))
        elif args["frame_shape"] is not None and len(args["frame_shape"]) == 3:
            frame = tuple(int(v) for v in args["frame_shape"])
        else:
            raise UserError(f"data.path={args['path']} does not exist and data.frame_shape=[C, H, W] is not set")
        return DataShapes("forecast", (int(args["t_in"]), *frame), out_frames=int(args["t_out"]))

    def _static_mask(self, source: ArraySource, shape: tuple[int, ...]) -> np.ndarray:
        """``[1, 1, C, H, W]`` bool from ``mask``: a variable of the (first) data file or a file of one array."""
        as_file = Path(str(self.mask)).expanduser()
        if as_file.suffix.lower() in SUFFIXES and as_file.exists():
            arrays, _, names, _ = _read_file(as_file, None, self.time_key, header=False)
            where = str(as_file)
        else:
            arrays, _, names, _ = _read_file(Path(source.files[0]), [str(self.mask)], self.time_key, header=False)
            where = f"{source.files[0]} ({self.mask})"
        array = np.asarray(arrays[0])
        while array.ndim > 3 and array.shape[0] == 1:  # e.g. a [1, 1, H, W] or [time=1, H, W] variable
            array = array[0]
        _, _, c, h, w = shape
        if array.shape not in ((h, w), (c, h, w), (1, h, w)):
            raise UserError(
                f"data.mask: {where} holds an array of shape {tuple(array.shape)}; it must be [H, W] = {[h, w]} or "
                f"[C, H, W] = {[c, h, w]} (nonzero where values are observed)"
            )
        observed = np.nan_to_num(array.astype(np.float64), nan=0.0) != 0
        return observed.reshape(1, 1, -1, h, w)

    def _observed(self, data: np.ndarray, source: ArraySource) -> np.ndarray | None:
        """bool ``[N, T, C, H, W]`` (True = observed) from NaN, ``mask_value`` and ``mask``; ``None`` if all are."""
        observed = ~np.isnan(data)
        if self.mask_value is not None:
            observed &= data != np.float32(self.mask_value)
        if self.mask is not None:
            observed &= self._static_mask(source, data.shape)
        return None if observed.all() else observed

    def _fill(self, data: np.ndarray, observed: np.ndarray, train: np.ndarray, train_obs: np.ndarray) -> None:
        """Fill the missing values in place with the channel's training mean (over observed values) or 0."""
        if self.fill_nan == "mean":
            counts = train_obs.sum(axis=(0, 1, 3, 4))
            self._refuse_empty(counts)  # no mean to fill with: the channel would be a made-up constant
            sums = np.where(train_obs, train, 0.0).sum(axis=(0, 1, 3, 4), dtype=np.float64)
            fill = np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)
        else:
            fill = np.zeros(data.shape[2])
        missing = int((~observed).sum())
        log.warning("%s: filling %d missing values with the %s (data.fill_nan=%s)", self.path, missing,
                    "training mean" if self.fill_nan == "mean" else "value 0", self.fill_nan)
        np.copyto(data, fill.astype(np.float32).reshape(1, 1, -1, 1, 1), where=~observed)
        self._fill_values = [float(v) for v in fill]

    def _masked_statistics(self, train: np.ndarray, train_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and population std over the observed training values."""
        counts = train_obs.sum(axis=(0, 1, 3, 4))
        self._refuse_empty(counts)
        values = np.where(train_obs, train, 0.0)
        mean = values.sum(axis=(0, 1, 3, 4), dtype=np.float64) / counts
        centred = np.where(train_obs, train - mean.reshape(1, 1, -1, 1, 1).astype(np.float32), 0.0)
        std = np.sqrt(np.square(centred, dtype=np.float64).sum(axis=(0, 1, 3, 4)) / counts)
        return mean, std

    def _refuse_empty(self, counts: np.ndarray) -> None:
        """Refuse a channel without one observed training value: it has no statistics and nothing to learn."""
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise UserError(
                f"{self.path}: channel {int(empty[0])} has no observed value in the train split (all missing); "
                "change data.splits or drop the channel with data.variable="
            )

    def _refuse_infinite(self, source: ArraySource) -> None:
        """Refuse inf (but not ``mask_value``): it is no missing value, and it makes the statistics and losses NaN.

        Raises:
            UserError: with the count, the variables, the first value's place in its file and the fix.
        """
        data = source.data
        with np.errstate(invalid="ignore", over="ignore"):
            total = np.sum(data, dtype=np.float64)  # one pass, no copy; finite means no inf and no NaN
        if np.isfinite(total):
            return
        bad = np.isinf(data)
        if self.mask_value is not None and np.isinf(self.mask_value):
            bad &= data != np.float32(self.mask_value)
        count = int(np.count_nonzero(bad))
        if count == 0:
            return
        first = np.unravel_index(int(np.argmax(bad)), bad.shape)
        file, _, place = value_place(source, first)
        per_channel = bad.sum(axis=(0, 1, 3, 4))
        keys, c = [], 0
        for name, _, channels in source.pieces[0][1]:
            if per_channel[c : c + channels].any():
                keys.append(name)
            c += channels
        sign = "-inf" if data[first] < 0 else "inf"
        raise UserError(
            f"{self.path}: {count:,} infinite value{'s' if count != 1 else ''} in {', '.join(keys)}; the first, "
            f"{sign}, is in {Path(file).name} at {place}; inf is not a missing value: replace them in the file with "
            f"NaN (masked) or finite numbers, or set data.mask_value={sign} if {sign} marks missing values"
        )

    def static_valid_mask(self) -> np.ndarray | None:
        return self._static_valid

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        source = read_source(self.path, self.variable, self.layout, self.time_key)
        self._refuse_infinite(source)
        data = source.data
        length = self.t_in + self.t_out
        if source.seconds is not None:
            step, segments = time_segments(source.seconds, self.path)
        else:
            step, segments = 0, [(0, data.shape[1])]
        ranges = split_ranges(self.splits, data.shape[1] if source.series else data.shape[0], source.seconds)

        def windows(split: str) -> np.ndarray:
            lo, hi = ranges[split]
            if source.series:
                starts = window_starts(lo, hi, segments, length, self.stride)
                return np.stack([np.zeros_like(starts), starts], axis=1)
            starts = window_starts(0, data.shape[1], segments, length, self.stride)
            return np.array([(n, s) for n in range(lo, hi) for s in starts], dtype=np.int64).reshape(-1, 2)

        lo, hi = ranges["train"]
        observed = self._observed(data, source)
        if observed is not None and not data.flags.writeable:
            data = data.copy()
        train = data[:, lo:hi] if source.series else data[lo:hi]
        train_obs = None if observed is None else (observed[:, lo:hi] if source.series else observed[lo:hi])
        self._fill_values = None
        if observed is not None and self.fill_nan is not None:
            self._fill(data, observed, train, train_obs)
            observed = train_obs = None
        if observed is not None:
            self._describe_mask(observed, source)
        if self.normalize == "zscore":
            if train_obs is not None:
                mean, std = self._masked_statistics(train, train_obs)
            else:
                mean = train.mean(axis=(0, 1, 3, 4), dtype=np.float64)
                std = train.std(axis=(0, 1, 3, 4), dtype=np.float64)
            std = np.where(std > 0, std, 1.0)  # a constant channel is only shifted
        else:
            mean, std = np.zeros(data.shape[2]), np.ones(data.shape[2])
        scaled = ((data - mean.reshape(1, 1, -1, 1, 1)) / std.reshape(1, 1, -1, 1, 1)).astype(np.float32)
        if observed is not None:
            # Masked entries take the training mean, i.e. exactly 0 once normalised (the model's documented fill).
            scaled[~observed] = 0.0
        frames = torch.from_numpy(scaled)
        info = {}
        for split in SPLITS:
            w = windows(split)
            if len(w) == 0:
                unit = "frames" if source.series else "samples"
                raise UserError(
                    f"{self.path}: the {split} split ({ranges[split][1] - ranges[split][0]} {unit}) holds no window "
                    f"of t_in + t_out = {length} frames{' between time gaps' if len(segments) > 1 else ''}; "
                    "change data.splits, data.t_in or data.t_out"
                )
            valid = None if observed is None else torch.from_numpy(observed)
            self.datasets[split] = ArrayWindows(frames, w, self.t_in, self.t_out, source.seconds, valid)
            info[split] = {"windows": len(w), "range": list(ranges[split])}
        c = data.shape[2]
        self._frame = (c, data.shape[3], data.shape[4])
        names = self.channels or source.names or [f"channel_{i}" for i in range(c)]
        units = self.units or source.units or ["unknown"] * c
        check(len(names) == c, f"data.channels names {len(names)} channels; the data has {c}")
        check(len(units) == c, f"data.units gives {len(units)} units; the data has {c} channels")
        self._meta = {
            "channels": [str(n) for n in names],
            "units": [str(u) for u in units],
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "time_step": float(step) if step else None,
            "first_time": _iso(source.seconds[0]) if source.seconds is not None else None,
            "gaps": len(segments) - 1,
            "splits": info,
            "series": source.series,
            "source_files": [Path(f).name for f in source.files],
            "mask": self._mask_meta,
        }

    def _describe_mask(self, observed: np.ndarray, source: ArraySource) -> None:
        """Keep the static mask and the metadata's ``mask``; say in one line what is masked."""
        self._static_valid = observed.any(axis=(0, 1))
        cells = int(self._static_valid.size)
        static = int((~self._static_valid).sum())
        values = int((~observed).sum())
        further = values - static * observed.shape[0] * observed.shape[1]
        sources = ["NaN"]
        if self.mask_value is not None:
            sources.append(f"value {self.mask_value:g}")
        if self.mask is not None:
            sources.append(f"mask {self.mask}")
        self._mask_meta = {"source": " | ".join(sources), "static_masked": static, "cells": cells,
                           "masked_values": values}
        log.warning(
            "%s: masking %s of %s cells (missing in every step) and %s further values (%s); statistics from observed "
            "values only (set data.fill_nan=mean to fill instead)",
            self.path, f"{static:,}", f"{cells:,}", f"{further:,}", self._mask_meta["source"],
        )

    def _fill_meta(self) -> Any:
        if self._fill_values is None:
            return None
        return {"method": self.fill_nan, "values": self._fill_values}

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        if self._frame is None:
            raise RuntimeError("ArrayDataModule: call setup() before reading in_shape or metadata()")
        return (self.t_in, *self._frame)

    @property
    def out_frames(self) -> int:
        return self.t_out

    def metadata(self) -> dict[str, Any]:
        """The contract keys, plus ``time_step`` (seconds, or ``None`` without stamps), the splits' windows and
        ranges, the layout and the source files."""
        return {
            "dataset": self.name,
            "task": self.task,
            "in_shape": list(self.in_shape),
            "out_frames": self.t_out,
            "data_range": None,
            "pde": False,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "stride": self.stride,
            "layout": self.layout,
            "variable": self.variable,
            "time_key": self.time_key,
            "normalize": self.normalize,
            "fill_nan": self._fill_meta(),
            "mask_value": self.mask_value,
            **self._meta,
        }
