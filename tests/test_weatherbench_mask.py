"""WeatherBench masks (issue 11): NaN values of a gridded NetCDF are masked by default instead of refused.

The files are small synthetic land-only products written here (dims ``time, lat, lon``, ascending latitude,
6-hourly): NaN over a rectangular "sea" plus a few sporadic NaNs over land. Every expectation is recomputed with
NumPy from the values written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _datafiles import assert_one_line, write_netcdf
from torch.utils.data import DataLoader

from stpred.datamodules.weatherbench import WeatherBenchDataModule
from stpred.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

LAT = np.linspace(40.0, 52.0, 7)  # ascending, 7 rows
LON = np.linspace(-8.0, 8.0, 9)  # 9 columns
TIME = pd.date_range("2021-01-01", periods=40, freq="6h")  # 10 days
SPLITS = {
    "train": ["2021-01-01", "2021-01-05"],
    "val": ["2021-01-06", "2021-01-07"],
    "test": ["2021-01-08", "2021-01-10"],
}
RANGES = {"train": (0, 20), "val": (20, 28), "test": (28, 40)}
T_IN, T_OUT = 2, 3
SEA = (slice(0, 4), slice(4, 9))  # rows 0-3, columns 4-8: 20 cells
COAST = (1, 5)  # a sea cell observed once (in the test split): not statically masked
SPORADIC = [(3, 5, 1), (7, 6, 2), (21, 4, 0), (30, 2, 3), (33, 6, 8)]  # (time, row, column) over land


def _values(seed: int = 0) -> np.ndarray:
    """``[time, lat, lon]`` float32 Kelvin: a smooth field plus noise, NaN over the sea and at :data:`SPORADIC`."""
    rng = np.random.default_rng(seed)
    base = 275.0 + 0.8 * LAT[None, :, None] - 38.0 + 0.3 * LON[None, None, :]
    values = (base + 3.0 * rng.standard_normal((len(TIME), len(LAT), len(LON)))).astype(np.float32)
    values[:, SEA[0], SEA[1]] = np.nan
    values[35, COAST[0], COAST[1]] = 281.5
    for t, r, c in SPORADIC:
        values[t, r, c] = np.nan
    return values


def _write(path: Path, variables: dict[str, np.ndarray], **extra: tuple) -> Path:
    data = {name: (("time", "lat", "lon"), v, {"units": "K"}) for name, v in variables.items()}
    ds = xr.Dataset({**data, **extra}, {"time": TIME, "lat": LAT, "lon": LON})
    return write_netcdf(path, ds)


def _module(path: Path, **kwargs) -> WeatherBenchDataModule:
    kwargs = {"path": path, "splits": SPLITS, "t_in": T_IN, "t_out": T_OUT, **kwargs}
    dm = WeatherBenchDataModule(**kwargs)
    dm.setup()
    return dm


def _check_samples(dm: WeatherBenchDataModule, raw: np.ndarray, mean: float, std: float) -> None:
    """Every window of every split: validity is ``~isnan`` of the raw window, values are z-scores or 0."""
    for split, (lo, _) in RANGES.items():
        ds = dm.datasets[split]
        assert len(ds) == RANGES[split][1] - lo - (T_IN + T_OUT) + 1
        for i in range(len(ds)):
            item = ds[i]
            window = raw[lo + i : lo + i + T_IN + T_OUT, None]  # [T, 1, H, W]
            valid = ~np.isnan(window)
            got_valid = torch.cat([item["x_valid"], item["y_valid"]]).numpy()
            assert item["x_valid"].dtype == torch.bool and item["x_valid"].shape == (T_IN, 1, 7, 9)
            assert item["y_valid"].shape == (T_OUT, 1, 7, 9)
            np.testing.assert_array_equal(got_valid, valid)
            got = torch.cat([item["x"], item["y"]]).numpy()
            assert got.dtype == np.float32
            assert np.all(got[~valid] == 0.0)
            expected = (window.astype(np.float64) - mean) / std
            np.testing.assert_allclose(got[valid], expected[valid], rtol=0, atol=2e-5)


@pytest.mark.parametrize("cache", [True, False])
def test_nan_cells_are_the_mask_by_default(tmp_path, caplog, cache):
    raw = _values()
    path = _write(tmp_path / "land_t2m.nc", {"t2m": raw})
    with caplog.at_level(logging.INFO, logger="stpred.datamodules.weatherbench"):
        dm = _module(path, cache=cache)
    meta = dm.metadata()
    assert meta["cached"] is cache

    expected_static = np.ones((1, 7, 9), dtype=bool)
    expected_static[0, SEA[0], SEA[1]] = False
    expected_static[0, COAST[0], COAST[1]] = True
    static = dm.static_valid_mask()
    assert static.dtype == np.bool_ and static.shape == (1, 7, 9)
    np.testing.assert_array_equal(static, expected_static)

    masked_values = int(np.isnan(raw).sum())
    assert meta["mask"] == {"source": "nan", "static_masked": 19, "cells": 63, "masked_values": masked_values}
    assert meta["fill_nan"] is None
    further = masked_values - 19 * len(TIME)
    assert further == 39 + len(SPORADIC)  # the coast cell's NaN stamps and the sporadic NaNs

    train = raw[:20].astype(np.float64)
    observed = train[~np.isnan(train)]
    mean, std = observed.mean(), observed.std()  # population std over observed values only
    assert meta["mean"][0] == pytest.approx(mean, rel=1e-12)
    assert meta["std"][0] == pytest.approx(std, rel=1e-9)
    filled = np.where(np.isnan(train), mean, train)
    assert std > filled.std() * 1.05  # the sea filled with the mean would shrink the std

    lines = [r.getMessage() for r in caplog.records if "masking" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0] == (
        f"land_t2m.nc: masking 19 of 63 cells (NaN in every step) and {further} further NaN values; "
        "statistics from observed values only (set data.fill_nan=mean to fill instead)"
    )
    _check_samples(dm, raw, mean, std)

    batch = next(iter(DataLoader(dm.datasets["train"], batch_size=4)))
    assert batch["x_valid"].shape == (4, T_IN, 1, 7, 9) and batch["y_valid"].dtype == torch.bool
    assert torch.isfinite(batch["x"]).all() and torch.isfinite(batch["y"]).all()


@pytest.mark.parametrize("cache", [True, False])
def test_fill_nan_still_fills_and_records_the_fill(tmp_path, cache):
    raw = _values(1)
    path = _write(tmp_path / "land_t2m.nc", {"t2m": raw})
    dm = _module(path, cache=cache, fill_nan="mean")
    meta = dm.metadata()
    assert meta["mask"] is None and dm.static_valid_mask() is None
    train = raw[:20].astype(np.float64)
    fill = np.nanmean(train)
    assert meta["fill_nan"] == [pytest.approx(fill, rel=1e-12)]
    assert meta["mean"][0] == pytest.approx(fill, rel=1e-12)
    assert meta["std"][0] == pytest.approx(np.where(np.isnan(train), fill, train).std(), rel=1e-9)
    item = dm.datasets["train"][0]
    assert "x_valid" not in item and "y_valid" not in item
    assert torch.isfinite(item["x"]).all()
    assert item["x"][0, 0, 0, 8].item() == pytest.approx(0.0, abs=1e-5)  # a sea cell: the mean, 0 once normalised


@pytest.mark.parametrize("cache", [True, False])
def test_a_file_without_nan_has_no_mask(tmp_path, cache):
    raw = np.nan_to_num(_values(2), nan=280.0)
    path = _write(tmp_path / "full.nc", {"t2m": raw})
    dm = _module(path, cache=cache)
    meta = dm.metadata()
    assert meta["mask"] is None and meta["fill_nan"] is None and dm.static_valid_mask() is None
    item = dm.datasets["val"][1]
    assert set(item) == {"x", "y", "time", "index"}
    train = raw[:20].astype(np.float64)
    window = (raw[21 : 21 + T_IN].astype(np.float64) - train.mean()) / train.std()
    np.testing.assert_allclose(item["x"][:, 0].numpy(), window, rtol=0, atol=2e-5)


def test_a_channel_all_nan_in_training_is_refused_in_one_line(tmp_path):
    raw = _values(3)
    other = np.full_like(raw, 290.0) + np.arange(len(TIME), dtype=np.float32)[:, None, None]
    other[:20] = np.nan
    path = _write(tmp_path / "two.nc", {"t2m": raw, "sst": other})
    for kwargs in ({}, {"fill_nan": "mean"}):
        with pytest.raises(UserError) as err:
            _module(path, variables=["t2m", "sst"], **kwargs)
        assert_one_line(err, "['sst']", "only NaN in the train split", "2021-01-01T00:00:00 .. 2021-01-05T18:00:00")
        assert_one_line(err, "data.splits.train", "data.variables")


@pytest.mark.parametrize("cache", [True, False])
def test_mask_variable_masks_its_zero_cells_after_the_crop(tmp_path, caplog, cache):
    rng = np.random.default_rng(4)
    raw = (280.0 + 2.0 * rng.standard_normal((len(TIME), 7, 9))).astype(np.float32)
    raw[:, SEA[0], SEA[1]] += 15.0  # the "sea" holds values, far from the land's, that must not enter statistics
    for t, r, c in SPORADIC:
        raw[t, r, c] = np.nan
    lsm = np.ones((7, 9), dtype=np.float32)
    lsm[SEA[0], SEA[1]] = 0.0
    lsm[2, 4] = 0.3  # a coastal fraction counts as land
    path = _write(tmp_path / "t2m_lsm.nc", {"t2m": raw}, lsm=(("lat", "lon"), lsm))
    with caplog.at_level(logging.INFO, logger="stpred.datamodules.weatherbench"):
        dm = _module(path, cache=cache, mask_variable="lsm", crop=[6, 8], crop_anchor="top_left")
    keep = lsm[:6, :8] != 0
    np.testing.assert_array_equal(dm.static_valid_mask(), keep[None])
    cropped = np.where(keep[None], raw[:, :6, :8], np.nan)  # what the model sees as observed
    meta = dm.metadata()
    assert meta["mask"] == {
        "source": "variable lsm, nan",
        "static_masked": int((~keep).sum()),
        "cells": 48,
        "masked_values": int(np.isnan(cropped).sum()),
    }
    assert meta["mask_variable"] == "lsm" and meta["in_shape"] == [T_IN, 1, 6, 8]
    train = cropped[:20].astype(np.float64)
    mean, std = np.nanmean(train), np.nanstd(train)
    assert meta["mean"][0] == pytest.approx(mean, rel=1e-12)
    assert meta["std"][0] == pytest.approx(std, rel=1e-9)
    assert [r.getMessage() for r in caplog.records if "masking" in r.getMessage()] == [
        f"t2m_lsm.nc: masking {int((~keep).sum())} of 48 cells (lsm = 0 or NaN in every step) and "
        f"{int(np.isnan(cropped).sum()) - int((~keep).sum()) * len(TIME)} further NaN values; statistics from "
        "observed values only (set data.mask_variable=null data.fill_nan=mean to fill NaNs instead)"
    ]
    item = dm.datasets["test"][3]
    window = cropped[28 + 3 : 28 + 3 + T_IN + T_OUT, None]
    np.testing.assert_array_equal(torch.cat([item["x_valid"], item["y_valid"]]).numpy(), ~np.isnan(window))
    got = torch.cat([item["x"], item["y"]]).numpy()
    valid = ~np.isnan(window)
    assert np.all(got[~valid] == 0.0)
    np.testing.assert_allclose(got[valid], ((window - mean) / std)[valid], rtol=0, atol=2e-5)


def test_mask_variable_errors(tmp_path):
    path = _write(tmp_path / "t2m.nc", {"t2m": np.nan_to_num(_values(5), nan=280.0)})
    with pytest.raises(UserError) as err:
        _module(path, mask_variable="lsm")
    assert_one_line(err, "mask variable 'lsm' not in", "data.mask_variable=")
    with pytest.raises(UserError) as err:
        WeatherBenchDataModule(path=path, splits=SPLITS, mask_variable="lsm", fill_nan="mean")
    assert_one_line(err, "fill_nan='mean'", "mask_variable='lsm'")


def test_fill_nan_is_recorded_without_nan(tmp_path):
    raw = np.nan_to_num(_values(6), nan=280.0)
    dm = _module(_write(tmp_path / "full.nc", {"t2m": raw}), fill_nan=-1.5)
    assert dm.metadata()["fill_nan"] == [-1.5] and dm.metadata()["mask"] is None
    assert dm.metadata()["mean"][0] == pytest.approx(raw[:20].astype(np.float64).mean(), rel=1e-12)


def test_wb1_folder_takes_the_mask_variable_from_its_constants(tmp_path):
    lat, lon = np.arange(-87.1875, 90.0, 5.625)[:5], np.arange(0.0, 360.0, 5.625)[:7]
    rng = np.random.default_rng(7)
    years = {}
    for year in (2016, 2017, 2018):
        time = pd.date_range(f"{year}-01-01", periods=12, freq="h")
        years[year] = (280.0 + rng.standard_normal((12, 5, 7))).astype(np.float32)
        ds = xr.Dataset(
            {"t2m": (("time", "lat", "lon"), years[year], {"units": "K"})}, {"time": time, "lat": lat, "lon": lon}
        )
        write_netcdf(tmp_path / "2m_temperature" / f"2m_temperature_{year}_5.625deg.nc", ds)
    lsm = (rng.random((5, 7)) > 0.5).astype(np.float32)
    lsm[0, 0] = 1.0
    write_netcdf(
        tmp_path / "constants" / "constants_5.625deg.nc",
        xr.Dataset({"lsm": (("lat", "lon"), lsm)}, {"lat": lat, "lon": lon}),
    )
    splits = {"train": [2016, 2016], "val": [2017, 2017], "test": [2018, 2018]}
    dm = WeatherBenchDataModule(tmp_path, resolution=5.625, splits=splits, t_in=2, t_out=2, mask_variable="lsm")
    dm.setup()
    np.testing.assert_array_equal(dm.static_valid_mask(), (lsm != 0)[None])
    land = years[2016][:, lsm != 0].astype(np.float64)
    assert dm.metadata()["mean"][0] == pytest.approx(land.mean(), rel=1e-12)
    assert dm.metadata()["std"][0] == pytest.approx(land.std(), rel=1e-9)
    assert dm.metadata()["mask"]["source"] == "variable lsm"
    item = dm.datasets["val"][0]
    np.testing.assert_array_equal(item["x_valid"][0, 0].numpy(), lsm != 0)


@pytest.mark.parametrize("cache", [True, False])
def test_inf_is_refused_with_count_time_and_place_not_called_constant(tmp_path, cache):
    """inf is no missing value: it used to make the statistics NaN and be reported as a constant channel."""
    raw = _values(5)  # NaN over the sea and at SPORADIC: masked, not counted
    raw[25, 5, 7] = np.inf  # val split, 2021-01-07T06:00, latitude 50, longitude 6
    raw[33, 6, 3] = -np.inf  # test split
    other = _values(6)
    other[0, 4, 1] = np.inf  # the first training frame, from which the statistics' shift is taken; cropped away
    path = _write(tmp_path / "uk.nc", {"t2m": raw, "sst": other})
    # A 6 x 8 crop (centred or not: offsets 0, 0) keeps rows 0-5 and columns 0-7, so the -inf at row 6 is dropped.
    for kwargs, count in (({}, "2 infinite values"), ({"fill_nan": "mean"}, "2 infinite values"),
                          ({"crop": [6, 8]}, "1 infinite value")):  # fmt: skip
        with pytest.raises(UserError) as err:
            _module(path, variables=["t2m"], cache=cache, **kwargs)
        assert_one_line(
            err, f"WeatherBench: {count} in 't2m' over the splits of uk.nc; the first, inf, is 't2m' at "
            "2021-01-07T06:00:00, latitude 50, longitude 6 (time index 25, latitude index 5, longitude index 7); inf "
            "is not a missing value: replace them in the file with NaN (masked) or finite numbers",
        )  # fmt: skip
    with pytest.raises(UserError) as err:
        _module(path, variables=["t2m", "sst"], cache=cache)
    assert_one_line(err, "3 infinite values in 't2m', 'sst'", "the first, inf, is 'sst' at 2021-01-01T00:00:00")
    # A centred 5 x 7 crop keeps rows 1-5 and columns 1-7: sst's (4, 1) and t2m's (5, 7) stay, t2m's (6, 3) goes;
    # the place is given in the file's rows and columns, not the crop's.
    with pytest.raises(UserError) as err:
        _module(path, variables=["sst", "t2m"], cache=cache, crop=[5, 7], crop_anchor="center")
    assert_one_line(err, "2 infinite values in 'sst', 't2m'", "is 'sst' at 2021-01-01T00:00:00, latitude 48, "
                    "longitude -6 (time index 0, latitude index 4, longitude index 1)")  # fmt: skip


@pytest.mark.parametrize("cache", [True, False])
def test_a_truly_constant_channel_is_still_refused_and_fill_nan_must_be_finite(tmp_path, cache):
    constant = np.full((len(TIME), len(LAT), len(LON)), 280.0, dtype=np.float32)
    constant[:, SEA[0], SEA[1]] = np.nan  # constant over the observed cells
    path = _write(tmp_path / "flat.nc", {"t2m": _values(7), "flat": constant})
    with pytest.raises(UserError) as err:
        _module(path, variables=["t2m", "flat"], cache=cache)
    assert_one_line(err, "WeatherBench: channels ['flat'] are constant over the train split; use normalize=none")
    dm = _module(path, variables=["t2m", "flat"], cache=cache, normalize="none")
    assert dm.metadata()["std"] == [1.0, 1.0]
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(UserError, match="use null, a finite number or 'mean'"):
            WeatherBenchDataModule(path=path, variables=["t2m"], splits=SPLITS, fill_nan=bad)
