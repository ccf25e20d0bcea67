"""Writers of small data files in the real layouts, shared by the data tests (imported like ``_hydra``).

Every writer takes the destination and the values, and returns the path it wrote.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

#: ``title`` attribute of the synthetic NetCDF files, so no one mistakes them for real data.
SYNTHETIC = "synthetic test data (stpred tests), WeatherBench layout"
#: Kinetics names of the two shared clips, and the cvdf annotation header.
ARM, POOL = "arm wrestling", "cleaning pool"
CSV_HEADER = "label,youtube_id,time_start,time_end,split,is_cc"


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    """The error message is one line and holds every needle; returns it."""
    msg = str(err.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def flow_stamps(first: dt.date, days: int, slots_per_day: int = 48) -> list[str]:
    """``YYYYMMDDSS`` stamps of ``days`` whole days from ``first`` (SS = 01 .. slots_per_day)."""
    out = []
    for d in range(days):
        day = first + dt.timedelta(days=d)
        out += [f"{day:%Y%m%d}{s:02d}" for s in range(1, slots_per_day + 1)]
    return out


def write_flow_h5(path: Path, stamps: list[str], data: np.ndarray) -> Path:
    """An ST-ResNet grid-flow file: float64 ``data`` (T, C, H, W) and bytes ``date`` (T,)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data.astype(np.float64))
        f.create_dataset("date", data=np.array([s.encode() for s in stamps]))
    return path


def write_netcdf(path: Path, ds: xr.Dataset) -> Path:
    """``ds`` as NetCDF-4 at ``path`` (folders created), titled :data:`SYNTHETIC`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.attrs["title"] = SYNTHETIC
    ds.to_netcdf(path, engine="netcdf4")
    return path


def make_cvdf(root: Path, clips, splits: dict[str, list[tuple[str, str]]], header=CSV_HEADER, own=()) -> Path:
    """``root/annotations/<split>.csv`` and ``root/<split>/<id>_<start>_<end>.mp4`` symlinks, columns by ``header``.

    ``clips`` maps a label to a real clip; ``splits`` lists ``(label, youtube_id)`` rows. Clip ``k`` of a split spans
    seconds ``10k .. 10k + 10``; ids in ``own`` get no file (the test writes it).
    """
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    columns = header.split(",")
    for split, rows in splits.items():
        (root / split).mkdir(exist_ok=True)
        lines = [header]
        for k, (label, youtube_id) in enumerate(rows):
            start, end = 10 * k, 10 * k + 10
            values = {"label": label, "youtube_id": youtube_id, "time_start": str(start), "time_end": str(end)}
            values.update(split=split, is_cc="0")
            lines.append(",".join(f'"{values[c]}"' if c == "label" else values[c] for c in columns))
            if label in clips and youtube_id not in own:
                os.symlink(clips[label], root / split / f"{youtube_id}_{start:06d}_{end:06d}.mp4")
        (root / "annotations" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_mat_v73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """MATLAB v7.3 layout: HDF5 after a 512-byte userblock holding the MATLAB header; column-major arrays."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            dset = f.create_dataset(name, data=np.transpose(value, tuple(reversed(range(value.ndim)))))
            dset.attrs["MATLAB_class"] = np.bytes_("single" if value.dtype == np.float32 else "double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")
