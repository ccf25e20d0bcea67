"""WeatherBenchDataModule on the real ERA5 UK file and on synthetic files in the exact WeatherBench layouts.

Real: ``$STPRED_DATA/weather/era5_t2m_2019-03_uk.nc`` (744 hourly stamps, 33 x 49, latitude descending 58..50).
Synthetic (labelled so in their ``title`` attribute, written here with fresh random values): WeatherBench-1 yearly
NetCDF files (``2m_temperature/2m_temperature_2016_5.625deg.nc``, ``temperature/...`` with ``level``,
``geopotential_500/...``; dims ``time, lat, lon``; latitude ascending in one tree, descending in another) and a
WeatherBench-2 Zarr store (long names, ``(time, [level,] longitude, latitude)``, latitude ascending).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _datafiles import SYNTHETIC, write_netcdf
from _hydra import compose_config
from torch.utils.data import DataLoader

from stpred.apps.train import train
from stpred.datamodules import METADATA_KEYS
from stpred.datamodules.weatherbench import WeatherBenchDataModule
from stpred.errors import UserError
from stpred.metrics import latitude_area_weights

UK_SPLITS = {
    "train": ["2019-03-01", "2019-03-21"],
    "val": ["2019-03-22", "2019-03-25"],
    "test": ["2019-03-26", "2019-03-31"],
}
HOUR = np.timedelta64(1, "h")
LAT = np.arange(-87.1875, 90.0, 5.625)  # WeatherBench-1 5.625 deg centres, 32 rows
LON = np.arange(0.0, 360.0, 5.625)  # 64 columns


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the real ERA5 file --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uk_path(shared_data) -> Path:
    return shared_data / "weather" / "era5_t2m_2019-03_uk.nc"


@pytest.fixture(scope="module")
def uk(uk_path) -> WeatherBenchDataModule:
    dm = WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, crop=[32, 48])
    dm.setup()
    return dm


def test_uk_shapes_and_window_counts(uk, uk_path):
    assert uk.in_shape == (12, 1, 32, 48) and uk.out_frames == 12
    batch = next(iter(uk.train_dataloader()))
    assert batch["x"].shape == (16, 12, 1, 32, 48) and batch["y"].shape == (16, 12, 1, 32, 48)
    assert batch["x"].dtype == torch.float32 and batch["time"].shape == (16,) and batch["time"].dtype == torch.int64
    hours = {"train": 21 * 24, "val": 4 * 24, "test": 6 * 24}
    meta = uk.metadata()
    for split, n in hours.items():
        # Gap-free hourly split of N stamps, 24-stamp windows starting every hour: N - 23.
        assert len(uk.datasets[split]) == n - 23 == meta["splits"][split]["windows"]
        assert meta["splits"][split]["stamps"] == n


def test_uk_windows_stay_inside_their_disjoint_periods(uk):
    seen = {}
    for split in ("train", "val", "test"):
        lo, hi = (np.datetime64(uk.metadata()["splits"][split][k]) for k in ("start", "end"))
        ds, stamps = uk.datasets[split], set()
        for i in range(len(ds)):
            t = ds.window_times(i).astype("datetime64[s]")
            assert np.all(np.diff(t) == HOUR), "frames of a window must be consecutive hours"
            assert t.min() >= lo and t.max() <= hi, f"{split} window outside {lo}..{hi}"
            stamps.update(t.tolist())
        seen[split] = stamps
        # batch "time": the first input frame's stamp in Unix seconds
        first = next(iter(DataLoader(ds, batch_size=64)))["time"]
        expected = [ds.window_times(i)[0].astype("datetime64[s]").astype(np.int64) for i in range(64)]
        assert first.tolist() == [int(v) for v in expected]
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]
    assert min(seen["val"]) == np.datetime64("2019-03-22T00:00").astype(object)
    assert max(seen["test"]) == np.datetime64("2019-03-31T23:00").astype(object)


def test_uk_statistics_come_from_the_training_period_only(uk, uk_path):
    with xr.open_dataset(uk_path) as ds:
        block = ds["t2m"].isel(latitude=slice(0, 32), longitude=slice(0, 48)).astype("float64").load()
    train = block.sel(time=slice("2019-03-01", "2019-03-21"))
    meta = uk.metadata()
    assert meta["mean"][0] == pytest.approx(float(train.mean()), rel=1e-12, abs=1e-9)
    assert meta["std"][0] == pytest.approx(float(train.std()), rel=1e-9)
    assert abs(meta["mean"][0] - float(block.mean())) > 0.1  # the whole month's mean differs
    assert abs(meta["std"][0] - float(block.std())) > 0.01
    # A sample de-normalises to the file's values at its time stamps.
    item = uk.datasets["test"][7]
    stamps = uk.datasets["test"].window_times(7)
    assert item["time"].item() == pd.Timestamp(stamps[0]).timestamp()
    expected = block.sel(time=stamps.astype("datetime64[ns]")).to_numpy()
    frames = torch.cat([item["x"], item["y"]])[:, 0].double().numpy() * meta["std"][0] + meta["mean"][0]
    np.testing.assert_allclose(frames, expected, rtol=0, atol=1e-4)


def test_uk_metadata_coordinates_and_lazy_reading(uk, uk_path):
    with xr.open_dataset(uk_path) as ds:
        lat, lon = ds["latitude"].values, ds["longitude"].values
    meta = uk.metadata()
    assert set(METADATA_KEYS) <= set(meta) and json.loads(json.dumps(meta)) == meta
    assert meta["latitude"] == lat[:32].tolist() and meta["longitude"] == lon[:48].tolist()
    assert meta["latitude_order"] == "descending" and meta["units"] == ["K"] and meta["time_step_hours"] == 1.0
    assert meta["crop"]["grid"] == [33, 49] and meta["data_range"] is None
    full = WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, cache=False)
    full.setup()
    assert full.metadata()["latitude"] == lat.tolist() and full.in_shape == (12, 1, 33, 49)
    assert not full.metadata()["cached"] and uk.metadata()["cached"]
    lazy = WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, crop=[32, 48], cache=False)
    lazy.setup()
    assert lazy.metadata()["mean"] == uk.metadata()["mean"] and lazy.metadata()["std"] == uk.metadata()["std"]
    for i in (0, 200, 480):
        a, b = lazy.datasets["train"][i], uk.datasets["train"][i]
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) and torch.equal(a["time"], b["time"])


def test_uk_openstl_compat_drops_the_last_hour_and_window(uk_path):
    dm = WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, crop=[32, 48], openstl_compat=True)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "test")] == [504 - 25, 144 - 25]
    assert dm.datasets["val"] is dm.datasets["test"]


def test_uk_step_hours_and_overlapping_splits(uk_path):
    dm = WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, t_in=4, t_out=2, step_hours=3, crop=[32, 48])
    dm.setup()
    ds = dm.datasets["val"]
    assert len(ds) == (96 - 1 - 5 * 3) // 3 + 1
    assert np.all(np.diff(ds.window_times(0)) == 3 * HOUR) and np.all(np.diff(ds.starts) == 3)
    assert dm.metadata()["time_step_hours"] == 3.0
    with pytest.raises(UserError, match="overlap"):
        WeatherBenchDataModule(path=uk_path, splits={**UK_SPLITS, "val": ["2019-03-21", "2019-03-25"]}).setup()
    with pytest.raises(UserError, match="multiple"):
        WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, step_hours=1.5).setup()
    with pytest.raises(UserError, match=r"'z' not in .*available: \['t2m'\]"):
        WeatherBenchDataModule(path=uk_path, splits=UK_SPLITS, variables=["z"]).setup()


def test_uk_training_run_reports_latitude_weighted_errors(uk_path, shared_data, tmp_path):
    cfg = compose_config(
        "train",
        [
            "data=era5_uk",
            "model=simvpv2",
            f"paths.data_dir={shared_data}",
            f"paths.output_dir={tmp_path}",
            "model.kwargs.hid_S=8",
            "model.kwargs.hid_T=16",
            "model.kwargs.N_S=2",
            "model.kwargs.N_T=2",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
            "trainer.num_sanity_val_steps=0",
            "trainer.enable_progress_bar=false",
            "~callbacks.prediction_panel",
        ],
    )
    results = train(cfg)
    assert {"rmse", "rmse_lat", "mae_lat"} <= set(results)
    assert math.isfinite(results["rmse_lat"]) and 0.0 < results["rmse_lat"] < 50.0
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/rmse_lat" in header and "test/rmse_lat" in header
    hp = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["hyper_parameters"]
    with xr.open_dataset(uk_path) as ds:
        assert hp["data"]["latitude"] == ds["latitude"].values[:32].tolist()
    assert hp["data"]["dataset"] == "era5_uk" and hp["data"]["in_shape"] == [12, 1, 32, 48]


def test_uk_latitude_weights_are_near_one_on_a_regional_grid(uk):
    weights = latitude_area_weights(uk.metadata()["latitude"])
    # Area weights on 50-58 N vary like cos(latitude): within about +-10 % of their mean.
    assert float(weights.min()) > 0.85 and float(weights.max()) < 1.15


# -- synthetic WeatherBench-1 folders ----------------------------------------------------------------------------
def write_wb1(root: Path, years: tuple[int, ...], hours: int, descending: bool) -> dict[str, dict]:
    """WeatherBench-1 yearly files (synthetic); returns ``{key: {year: values}}`` as written, dims as on disk."""
    rng = np.random.default_rng()
    lat = LAT[::-1] if descending else LAT
    truth: dict[str, dict] = {"t2m": {}, "t": {}, "z": {}, "lat": lat}
    for year in years:
        time = pd.date_range(f"{year}-01-01", periods=hours, freq="h")
        t2m = (270 + 10 * rng.standard_normal((hours, LAT.size, LON.size))).astype(np.float32)
        t = (250 + 5 * rng.standard_normal((hours, 2, LAT.size, LON.size))).astype(np.float32)
        z = (5e4 + 100 * rng.standard_normal((hours, LAT.size, LON.size))).astype(np.float32)
        coords = {"time": time, "lat": lat, "lon": LON}
        write_netcdf(
            root / "2m_temperature" / f"2m_temperature_{year}_5.625deg.nc",
            xr.Dataset(
                {"t2m": (("time", "lat", "lon"), t2m, {"units": "K", "long_name": "2 metre temperature"})}, coords
            ),
        )
        write_netcdf(
            root / "temperature" / f"temperature_{year}_5.625deg.nc",
            xr.Dataset(
                {"t": (("time", "level", "lat", "lon"), t, {"units": "K", "long_name": "Temperature"})},
                {**coords, "level": np.array([500, 850], dtype=np.int32)},
            ),
        )
        write_netcdf(
            root / "geopotential_500" / f"geopotential_500_{year}_5.625deg.nc",
            xr.Dataset(
                {"z": (("time", "lat", "lon"), z, {"units": "m**2 s**-2", "long_name": "Geopotential"})},
                {**coords, "level": np.int32(500)},
            ),
        )
        truth["t2m"][year], truth["t"][year], truth["z"][year] = t2m, t, z
    return truth


WB1_SPLITS = {"train": [2016, 2016], "val": [2017, 2017], "test": [2018, 2018]}


@pytest.mark.parametrize("descending", [False, True], ids=["lat_ascending", "lat_descending"])
def test_wb1_layout_levels_and_values_in_place(tmp_path, descending):
    truth = write_wb1(tmp_path, (2016, 2017, 2018), hours=20, descending=descending)
    variables = ["t2m", {"name": "t", "levels": [850, 500]}, "z"]
    dm = WeatherBenchDataModule(
        tmp_path, variables=variables, resolution=5.625, splits=WB1_SPLITS, t_in=4, t_out=3, normalize="none"
    )
    dm.setup()
    meta = dm.metadata()
    assert dm.in_shape == (4, 4, 32, 64) and meta["channels"] == ["t2m", "t_850", "t_500", "z"]
    assert meta["levels"] == [None, 850.0, 500.0, None] and meta["units"] == ["K", "K", "K", "m**2 s**-2"]
    assert meta["latitude"] == truth["lat"].tolist() and meta["longitude"] == LON.tolist()
    assert meta["latitude_order"] == ("descending" if descending else "ascending")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [20 - 6] * 3
    json.dumps(meta)
    # Window 5 of val (2017) starts at 05:00: every value as written, channel by channel.
    item = dm.datasets["val"][5]
    frames = torch.cat([item["x"], item["y"]]).numpy()
    assert item["time"].item() == pd.Timestamp("2017-01-01T05:00").timestamp()
    hours = slice(5, 12)
    np.testing.assert_array_equal(frames[:, 0], truth["t2m"][2017][hours])
    np.testing.assert_array_equal(frames[:, 1], truth["t"][2017][hours, 1])  # 850 hPa is the file's second level
    np.testing.assert_array_equal(frames[:, 2], truth["t"][2017][hours, 0])
    np.testing.assert_array_equal(frames[:, 3], truth["z"][2017][hours])
    # A known point: lat +87.1875 (the last row when ascending, the first when descending), lon 5.625.
    row, col = meta["latitude"].index(87.1875), meta["longitude"].index(5.625)
    assert row == (0 if descending else 31)
    assert frames[2, 0, row, col] == truth["t2m"][2017][7, row, col]


def test_wb1_zscore_uses_training_years_and_opens_only_needed_files(tmp_path):
    truth = write_wb1(tmp_path, (2015, 2016, 2017, 2018), hours=16, descending=True)
    (tmp_path / "2m_temperature" / "2m_temperature_2015_5.625deg.nc").write_bytes(b"not netcdf: must not be opened")
    dm = WeatherBenchDataModule(tmp_path, splits=WB1_SPLITS, t_in=2, t_out=2)
    dm.setup()
    train = truth["t2m"][2016].astype(np.float64)
    assert dm.metadata()["mean"][0] == pytest.approx(train.mean(), rel=1e-12)
    assert dm.metadata()["std"][0] == pytest.approx(train.std(), rel=1e-9)
    assert dm.metadata()["source"]["layout"] == "wb1"
    item = dm.datasets["test"][0]
    expected = (truth["t2m"][2018][:2] - train.mean()) / train.std()
    np.testing.assert_allclose(item["x"][:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    # Lazy reads (dask over the yearly files, reopened in a worker process) give the same batches.
    lazy = WeatherBenchDataModule(tmp_path, splits=WB1_SPLITS, t_in=2, t_out=2, cache=False, num_workers=1)
    lazy.setup()
    assert not lazy.metadata()["cached"] and lazy.metadata()["mean"] == pytest.approx(dm.metadata()["mean"])
    for got, want in zip(lazy.test_dataloader(), dm.test_dataloader()):
        torch.testing.assert_close(got["x"], want["x"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["y"], want["y"], rtol=1e-6, atol=1e-6)


def test_wb1_missing_variable_and_missing_files(tmp_path):
    write_wb1(tmp_path, (2016, 2017, 2018), hours=10, descending=False)
    with pytest.raises(UserError, match=r"'sst' not found .*available: \['2m_temperature', 'geopotential_500'"):
        WeatherBenchDataModule(tmp_path, variables=["sst"], splits=WB1_SPLITS, t_in=2, t_out=2).setup()
    with pytest.raises(UserError, match=r"level 300 of 't' not in .*\[500.0, 850.0\]"):
        WeatherBenchDataModule(
            tmp_path, variables=[{"name": "t", "levels": [300]}], splits=WB1_SPLITS, t_in=2, t_out=2
        ).setup()
    with pytest.raises(UserError, match=r"1.40625deg.nc; check data.root= and data.resolution="):
        WeatherBenchDataModule(tmp_path, resolution=1.40625, splits=WB1_SPLITS, t_in=2, t_out=2).setup()
    with pytest.raises(UserError, match=r"data.root=.*nowhere is not a folder"):
        WeatherBenchDataModule(tmp_path / "nowhere", splits=WB1_SPLITS).setup()
    with pytest.raises(UserError, match=r"no NetCDF file or Zarr store at .*missing.nc; set data.path="):
        WeatherBenchDataModule(path=tmp_path / "missing.nc", splits=WB1_SPLITS).setup()


# -- synthetic WeatherBench-2 Zarr store --------------------------------------------------------------------------
def test_wb2_zarr_is_transposed_to_lat_lon(tmp_path):
    rng = np.random.default_rng()
    time = pd.date_range("2020-01-01", periods=48, freq="6h")
    t2m = (270 + 10 * rng.standard_normal((48, LON.size, LAT.size))).astype(np.float32)
    temp = (250 + 5 * rng.standard_normal((48, 3, LON.size, LAT.size))).astype(np.float32)
    ds = xr.Dataset(
        {
            "2m_temperature": (("time", "longitude", "latitude"), t2m, {"units": "K"}),
            "temperature": (("time", "level", "longitude", "latitude"), temp, {"units": "K"}),
        },
        {"time": time, "longitude": LON, "latitude": LAT, "level": np.array([250, 500, 850], dtype=np.int64)},
        attrs={"title": SYNTHETIC},
    )
    store = tmp_path / "1959-2022-6h-64x32_equiangular_conservative.zarr"
    ds.chunk({"time": 8}).to_zarr(store, zarr_format=2, consolidated=True)
    splits = {"train": ["2020-01-01", "2020-01-07"], "val": ["2020-01-08", "2020-01-09"], "test": "2020-01-10"}
    variables = ["t2m", {"name": "temperature", "levels": [500]}]
    dm = WeatherBenchDataModule(path=store, variables=variables, splits=splits, t_in=2, t_out=2, normalize="none")
    dm.setup()
    meta = dm.metadata()
    assert dm.in_shape == (2, 2, 32, 64) and meta["time_step_hours"] == 6.0 and meta["source"]["layout"] == "zarr"
    assert meta["latitude"] == LAT.tolist() and meta["latitude_order"] == "ascending"
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [28 - 3, 8 - 3, 4 - 3]
    item = dm.datasets["val"][2]  # starts 2020-01-08T12 = stamp 30
    assert item["time"].item() == pd.Timestamp("2020-01-08T12:00").timestamp()
    row, col = int(np.flatnonzero(LAT == -42.1875)[0]), int(np.flatnonzero(LON == 101.25)[0])
    assert item["x"][1, 0, row, col].item() == t2m[31, col, row]
    assert item["y"][0, 1, row, col].item() == temp[32, 1, col, row]
    np.testing.assert_array_equal(item["y"][:, 0].numpy(), t2m[32:34].transpose(0, 2, 1))
    lazy = WeatherBenchDataModule(
        path=store, variables=variables, splits=splits, t_in=2, t_out=2, normalize="none", cache=False
    )
    lazy.setup()
    assert torch.equal(lazy.datasets["val"][2]["y"], item["y"])
    with pytest.raises(UserError, match=r"'u10' not in .*available: \['2m_temperature', 'temperature'\]"):
        WeatherBenchDataModule(path=store, variables=["u10"], splits=splits).setup()


# -- NaNs and gaps (single NetCDF files, WeatherBench-1 naming) ----------------------------------------------------
def _hourly_file(path: Path, values: np.ndarray, time: pd.DatetimeIndex) -> Path:
    ds = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values, {"units": "K"})}, {"time": time, "lat": LAT[:4], "lon": LON[:6]}
    )
    write_netcdf(path, ds)
    return path


DAY_SPLITS = {"train": ["2021-06-01", "2021-06-01"], "val": "2021-06-02", "test": "2021-06-03"}


def test_nans_are_masked_or_filled(tmp_path):
    rng = np.random.default_rng()
    values = (280 + rng.standard_normal((72, 4, 6))).astype(np.float32)
    values[30, 1, 2] = values[31, 0, 0] = values[40, 3, 5] = np.nan  # 3 in val (2 June)
    values[5, 2, 2] = np.nan  # 1 in train
    path = _hourly_file(tmp_path / "nan.nc", values, pd.date_range("2021-06-01", periods=72, freq="h"))
    masked = WeatherBenchDataModule(path=path, splits=DAY_SPLITS, t_in=3, t_out=3)  # default: NaN is the mask
    masked.setup()
    assert masked.metadata()["mask"] == {"source": "nan", "static_masked": 0, "cells": 24, "masked_values": 4}
    assert masked.static_valid_mask().all() and not masked.datasets["train"][5]["x_valid"][0, 0, 2, 2]
    dm = WeatherBenchDataModule(path=path, splits=DAY_SPLITS, t_in=3, t_out=3, fill_nan="mean")
    dm.setup()
    train = values[:24].astype(np.float64)
    mean = np.nanmean(train)
    assert dm.metadata()["mean"][0] == pytest.approx(mean, rel=1e-12)
    assert dm.metadata()["std"][0] == pytest.approx(np.sqrt(np.nanvar(train) * (train.size - 1) / train.size))
    assert dm.metadata()["fill_nan"] == [pytest.approx(mean)]
    for split in ("train", "val", "test"):
        for batch in DataLoader(dm.datasets[split], batch_size=32):
            assert torch.isfinite(batch["x"]).all() and torch.isfinite(batch["y"]).all()
    item = dm.datasets["val"][30 - 24 - 3]  # frame 3 (the first target) is stamp 30
    assert item["y"][0, 0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)  # filled with the mean: 0 after z-score
    zero = WeatherBenchDataModule(path=path, splits=DAY_SPLITS, t_in=3, t_out=3, fill_nan=0.0, normalize="none")
    zero.setup()
    assert zero.datasets["train"][5]["x"][0, 0, 2, 2].item() == 0.0


def test_windows_never_cross_a_gap(tmp_path):
    time = pd.date_range("2021-06-01", periods=72, freq="h").delete(range(10, 14))  # 10:00-13:00 on 1 June missing
    values = np.random.default_rng().standard_normal((68, 4, 6)).astype(np.float32) + 280
    path = _hourly_file(tmp_path / "gap.nc", values, time)
    dm = WeatherBenchDataModule(path=path, splits=DAY_SPLITS, t_in=2, t_out=2)
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) == (10 - 3) + (10 - 3)  # runs 00-09 and 14-23 on 1 June
    for i in range(len(train)):
        assert np.all(np.diff(train.window_times(i)) == HOUR)
    assert dm.metadata()["gaps"] == [["2021-06-01T09:00:00", "2021-06-01T14:00:00"]]
    with pytest.raises(UserError, match="1 gap"):
        WeatherBenchDataModule(path=path, splits=DAY_SPLITS, t_in=2, t_out=2, on_gap="error").setup()
    irregular = pd.DatetimeIndex([*time[:5], time[5] + pd.Timedelta("30min"), *time[6:]])
    path = _hourly_file(tmp_path / "irregular.nc", values, irregular)
    with pytest.raises(UserError, match="irregular time axis"):
        WeatherBenchDataModule(path=path, splits=DAY_SPLITS, t_in=2, t_out=2).setup()
