"""Masked cells end to end (docs/data.md, "Masked cells"): a land-only NetCDF written here trains, evaluates and
forecasts without its sea ever being filled in, scored or forecast.

Every expected number is computed independently with NumPy from the file's own values.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _helpers import run_module
from _hydra import compose_config

from stpred.apps.train import train
from stpred.checkpoint import load_predictor
from stpred.datamodules.arrays import ArrayDataModule
from stpred.errors import UserError
from stpred.masking import fill_input, training_fill

pytestmark = pytest.mark.usefixtures("one_thread")

T, H, W = 48, 12, 16
T_IN, T_OUT = 3, 2
SPLITS = [0.6, 0.2, 0.2]
#: The "sea": rows 0..4 (the southern rows of an ascending grid) and columns 10.. of every row: 52% of the cells.
SEA = np.zeros((H, W), bool)
SEA[:5] = True
SEA[:, 10:] = True
#: Sporadic missing land values (frame, row, column): a station outage.
GAPS = [(3, 7, 2), (20, 9, 5), (41, 6, 8)]


def land_temperature() -> np.ndarray:
    """``[T, H, W]`` 2 m temperature in Kelvin, warm south, a daily cycle; NaN over the sea and at the gaps."""
    rng = np.random.default_rng(11)
    t = np.arange(T)[:, None, None]
    lat = np.linspace(45.0, 60.0, H)[None, :, None]
    field = 300.0 - 0.6 * lat + 4.0 * np.sin(2 * np.pi * t / 24 + np.linspace(0, 1, W)[None, None, :])
    field = field + 0.3 * rng.standard_normal((T, H, W))
    field = field.astype(np.float32)
    field[:, SEA] = np.nan
    for k, i, j in GAPS:
        field[k, i, j] = np.nan
    return field


def write_land_netcdf(path, field: np.ndarray) -> None:
    """``lat``/``lon`` names, ascending latitude, hourly stamps, Kelvin, NaN as the netCDF fill value."""
    ds = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), field, {"units": "K", "long_name": "2 m temperature over land"})},
        coords={
            "time": pd.date_range("2020-01-01", periods=len(field), freq="h"),
            "lat": ("lat", np.linspace(45.0, 60.0, H), {"units": "degrees_north"}),
            "lon": ("lon", np.linspace(-8.0, 7.0, W), {"units": "degrees_east"}),
        },
    )
    ds.to_netcdf(path, encoding={"t2m": {"_FillValue": np.float32(-32767.0)}})


@pytest.fixture(scope="module")
def land_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("land") / "t2m_land.nc"
    field = land_temperature()
    write_land_netcdf(path, field)
    return path, field


def masked_stats(train: np.ndarray) -> tuple[float, float]:
    """Mean and population std of the observed values, by boolean indexing in float64."""
    values = train[~np.isnan(train)].astype(np.float64)
    return float(values.mean()), float(values.std())


# -- the datamodule --------------------------------------------------------------------------------------------------
def test_nan_cells_are_the_mask_statistics_come_from_observed_values(land_file, caplog):
    path, field = land_file
    dm = ArrayDataModule(str(path), t_in=T_IN, t_out=T_OUT, splits=SPLITS)
    with caplog.at_level(logging.WARNING, logger="stpred.datamodules.arrays"):
        dm.setup()
    lines = [r.getMessage() for r in caplog.records if "masking" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert f"masking {int(SEA.sum())} of {H * W} cells" in lines[0] and f"and {len(GAPS)} further values" in lines[0]
    meta = dm.metadata()
    lo, hi = meta["splits"]["train"]["range"]
    assert lo == 0 and hi == round(SPLITS[0] * T)
    train = field[lo:hi]
    mean, std = masked_stats(train)
    assert meta["mean"][0] == pytest.approx(mean, rel=1e-6)
    assert meta["std"][0] == pytest.approx(std, rel=1e-6)
    filled_std = np.where(np.isnan(train), np.nanmean(train), train).std()
    assert std > 1.5 * filled_std  # the sea filled in would shrink the spread: the silent damage of the issue
    assert meta["mask"] == {"source": "NaN", "static_masked": int(SEA.sum()), "cells": H * W,
                            "masked_values": int(SEA.sum()) * T + len(GAPS)}  # fmt: skip
    assert meta["fill_nan"] is None and meta["units"] == ["K"]
    np.testing.assert_array_equal(dm.static_valid_mask(), ~SEA[None])
    for split in ("train", "val", "test"):
        ds = dm.datasets[split]
        for index in range(len(ds)):
            item = ds[index]
            start = int(ds.windows[index][1])
            raw = field[start : start + T_IN + T_OUT, None]
            valid = np.concatenate([item["x_valid"].numpy(), item["y_valid"].numpy()])
            np.testing.assert_array_equal(valid, ~np.isnan(raw))
            values = np.concatenate([item["x"].numpy(), item["y"].numpy()])
            assert np.isfinite(values).all() and (values[~valid] == 0).all()
            np.testing.assert_allclose(values[valid], (raw[valid] - mean) / std, rtol=1e-5, atol=1e-5)


def test_fill_nan_fills_says_so_and_declares_no_mask(land_file):
    path, field = land_file
    dm = ArrayDataModule(str(path), t_in=T_IN, t_out=T_OUT, splits=SPLITS, fill_nan="mean")
    dm.setup()
    meta = dm.metadata()
    lo, hi = meta["splits"]["train"]["range"]
    train_mean, _ = masked_stats(field[lo:hi])
    assert meta["mask"] is None and "x_valid" not in dm.datasets["train"][0]
    assert meta["fill_nan"]["method"] == "mean" and meta["fill_nan"]["values"][0] == pytest.approx(train_mean)
    assert training_fill(meta) == pytest.approx([train_mean])


def test_mask_value_and_mask_variable_and_mask_file(tmp_path):
    rng = np.random.default_rng(3)
    series = rng.normal(280.0, 3.0, size=(40, 2, 6, 7)).astype(np.float32)
    series[:, :, 0, :3] = -9999.0  # a declared fill value
    land = np.ones((6, 7), np.int8)
    land[5] = 0  # the last row is masked by a land-sea variable
    np.savez(tmp_path / "d.npz", temp=series, lsm=land)
    dm = ArrayDataModule(
        str(tmp_path / "d.npz"), variable="temp", t_in=2, t_out=2, splits=[0.6, 0.2, 0.2], mask_value=-9999, mask="lsm"
    )
    dm.setup()
    expected = np.ones((2, 6, 7), bool)
    expected[:, 0, :3] = expected[:, 5] = False
    np.testing.assert_array_equal(dm.static_valid_mask(), expected)
    train = series[:24]
    for c in range(2):
        values = train[:, c][:, expected[c]].astype(np.float64)
        assert dm.metadata()["mean"][c] == pytest.approx(values.mean(), rel=1e-6)
        assert dm.metadata()["std"][c] == pytest.approx(values.std(), rel=1e-6)
    assert dm.metadata()["mask"]["source"] == "NaN | value -9999 | mask lsm"
    np.save(tmp_path / "land.npy", land)
    np.save(tmp_path / "temp.npy", series)
    from_file = ArrayDataModule(str(tmp_path / "temp.npy"), t_in=2, t_out=2, splits=[0.6, 0.2, 0.2],
                                mask_value=-9999, mask=str(tmp_path / "land.npy"))  # fmt: skip
    from_file.setup()
    np.testing.assert_array_equal(from_file.static_valid_mask(), expected)
    np.save(tmp_path / "bad.npy", np.ones((5, 5)))
    with pytest.raises(UserError, match=r"data.mask: .*bad.npy holds an array of shape \(5, 5\)") as err:
        ArrayDataModule(str(tmp_path / "temp.npy"), t_in=2, t_out=2, mask=str(tmp_path / "bad.npy")).setup()
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="give a mask or a fill, not both"):
        ArrayDataModule(str(tmp_path / "temp.npy"), t_in=2, t_out=2, mask="lsm", fill_nan="mean")


def test_a_channel_with_no_observed_training_value_is_one_line(tmp_path):
    series = np.random.default_rng(0).normal(size=(20, 1, 4, 4)).astype(np.float32)
    series[:16] = np.nan
    np.save(tmp_path / "s.npy", series)
    with pytest.raises(UserError, match="channel 0 has no observed value in the train split") as err:
        ArrayDataModule(str(tmp_path / "s.npy"), t_in=2, t_out=2).setup()
    assert "\n" not in str(err.value)


# -- the predictor ---------------------------------------------------------------------------------------------------
def test_fill_input_masks_and_reports_independently_of_the_model():
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.normal(size=(2, 3, 2, 5, 6)).astype(np.float32))
    valid_mask = torch.ones(2, 5, 6, dtype=torch.bool)
    valid_mask[0, :2] = False
    x[:, :, 0, :2] = float("nan")  # the trained mask
    x[1, :, 1, 4, 5] = float("nan")  # unobserved in every frame, inside the trained mask
    x[0, 1, 1, 3, 0] = float("nan")  # one frame only
    mean, std = torch.tensor([1.0, -2.0]).view(1, 1, 2, 1, 1), torch.tensor([2.0, 0.5]).view(1, 1, 2, 1, 1)
    normalised, masked, report = fill_input(x, mean, std, valid_mask=valid_mask)
    expected = np.where(np.isnan(x.numpy()), 0.0, (x.numpy() - mean.numpy()) / std.numpy())
    np.testing.assert_allclose(normalised.numpy(), expected, rtol=1e-6)
    want = np.zeros((2, 2, 5, 6), bool)
    want[:, 0, :2] = True
    want[1, 1, 4, 5] = True
    np.testing.assert_array_equal(masked.numpy(), want)
    assert report.unexpected == 3 + 1 and report.first == (0, 1, 1, 3, 0)
    assert report.trained_masked == 12 and "\n" not in report.message()
    _, none, quiet = fill_input(torch.ones(1, 3, 2, 5, 6), mean, std, valid_mask=None)
    assert none is None and quiet.message() is None


def test_mask_report_counts_agree_in_number():
    mean, std = torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1)
    valid_mask = torch.ones(1, 4, 4, dtype=torch.bool)
    valid_mask[0, 0, 0] = False
    x = torch.ones(1, 2, 1, 4, 4)
    x[:, :, 0, 0, 0] = float("nan")  # one masked cell
    x[0, 1, 0, 2, 3] = float("nan")  # one unexpected value
    _, _, one = fill_input(x, mean, std, valid_mask=valid_mask)
    assert "holds 1 NaN value where" in one.message()
    assert "masked: 1 cell per time step" in one.attributes()["stpred_mask"]
    x[0, 0, 0, 1, 1] = float("nan")
    _, _, two = fill_input(x, mean, std, valid_mask=valid_mask)
    assert "holds 2 NaN values where" in two.message()


# -- train, evaluate, forecast ---------------------------------------------------------------------------------------
TINY = [
    "model=fno2d", "model.kwargs.modes=3", "model.kwargs.width=8", "trainer.max_epochs=2", "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "optim.scheduler=none", "data.batch_size=4",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(land_file, tmp_path_factory):
    path, field = land_file
    out = tmp_path_factory.mktemp("masked_run")
    cfg = compose_config(
        "train",
        ["data=arrays", f"data.path={path}", f"data.t_in={T_IN}", f"data.t_out={T_OUT}", "data.splits=[0.6,0.2,0.2]",
         f"paths.output_dir={out}", *TINY],
    )  # fmt: skip
    results = train(cfg)
    return out / "checkpoints" / "last.ckpt", results


def test_training_scores_only_observed_values(trained, land_file):
    ckpt, results = trained
    path, field = land_file
    predictor = load_predictor(ckpt)
    np.testing.assert_array_equal(predictor.valid_mask.numpy(), ~SEA[None])
    dm = ArrayDataModule(str(path), t_in=T_IN, t_out=T_OUT, splits=SPLITS)
    dm.setup()
    errors, abs_errors = [], []
    for start in dm.datasets["test"].windows[:, 1]:
        window = field[start : start + T_IN + T_OUT, None]
        pred = predictor.predict(torch.from_numpy(window[:T_IN])).numpy().astype(np.float64)
        target = window[T_IN:].astype(np.float64)
        seen = ~np.isnan(target)
        assert np.isnan(pred[:, 0, SEA]).all() and np.isfinite(pred[seen]).all()
        errors.append((pred[seen] - target[seen]) ** 2)
        abs_errors.append(np.abs(pred[seen] - target[seen]))
    mse = np.concatenate(errors).mean()
    assert np.isfinite(results["mse"]) and results["mse"] == pytest.approx(mse, rel=1e-4)
    assert results["mae"] == pytest.approx(np.concatenate(abs_errors).mean(), rel=1e-4)


def test_forecast_writes_nan_where_masked_and_says_when_input_is_unexpectedly_missing(trained, land_file, tmp_path):
    ckpt, _ = trained
    path, field = land_file
    out = tmp_path / "forecast.nc"
    done = run_module("stpred.apps.forecast", "--ckpt", ckpt, path, "--init-time", "2020-01-02T20:00", "--out", out,
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "masked    : " in done.stdout and "where the training data had none" not in done.stderr
    with xr.open_dataset(out, mask_and_scale=False) as raw:
        assert np.isnan(raw["forecast"].attrs["_FillValue"])
        assert "NaN (_FillValue) where the input is masked" in raw["forecast"].attrs["stpred_mask"]
    with xr.open_dataset(out) as ds:
        values = ds["forecast"].values  # [T_out, C, H, W]
        assert ds.attrs["init_time"] == "2020-01-02T20:00"
    assert values.shape == (T_OUT, 1, H, W)
    np.testing.assert_array_equal(np.isnan(values), np.broadcast_to(SEA, values.shape))
    end = 44 + 1  # 2020-01-02T20:00 is stamp 44
    expected = load_predictor(ckpt).predict(torch.from_numpy(field[end - T_IN : end, None])).numpy()
    np.testing.assert_allclose(values, expected, rtol=1e-5, equal_nan=True)

    holes = field.copy()
    holes[-2:, 8, 3] = np.nan  # land, where training always had data
    write_land_netcdf(tmp_path / "holes.nc", holes)
    done = run_module("stpred.apps.forecast", "--ckpt", ckpt, tmp_path / "holes.nc", "--out", tmp_path / "h.nc",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "where the training data had none" in line]
    assert len(warning) == 1 and "2 NaN values" in warning[0] and "row 8, column 3" in warning[0]
    with xr.open_dataset(tmp_path / "h.nc") as ds:
        assert "stpred_unexpected_nan" in ds["forecast"].attrs
        assert np.isfinite(ds["forecast"].values[:, 0, 8, 3]).all()  # seen in the first input frame: forecast


# -- the same file through the weather datamodule (data=weatherbench) and stpred-forecast's weather path -------------
WEATHER_SPLITS = "{train:[2020-01-01T00:00,2020-01-02T04:00],val:[2020-01-02T05:00,2020-01-02T13:00],test:[2020-01-02T14:00,2020-01-02T23:00]}"  # noqa: E501
TEST_STARTS = range(38, 48 - T_IN - T_OUT + 1)  # stamps 38..47 are the test period; whole windows inside it


def test_weather_datamodule_trains_scores_and_forecasts_only_observed_cells(land_file, tmp_path):
    path, field = land_file
    out = tmp_path / "run"
    cfg = compose_config(
        "train",
        ["data=weatherbench", "data.root=null", f"data.path={path}", "data.resolution=null", "data.variables=[t2m]",
         f"data.splits={WEATHER_SPLITS}", f"data.t_in={T_IN}", f"data.t_out={T_OUT}", f"paths.output_dir={out}",
         *TINY],
    )  # fmt: skip
    results = train(cfg)
    ckpt = out / "checkpoints" / "last.ckpt"
    predictor = load_predictor(ckpt)
    meta = predictor.metadata
    assert meta["latitude_order"] == "ascending" and meta["mask"]["static_masked"] == int(SEA.sum())
    train_values = field[:29][~np.isnan(field[:29])].astype(np.float64)  # 2020-01-01T00:00 .. 2020-01-02T04:00
    assert meta["mean"][0] == pytest.approx(train_values.mean(), rel=1e-6)
    assert meta["std"][0] == pytest.approx(train_values.std(), rel=1e-5)
    squared, absolute = [], []
    for start in TEST_STARTS:
        window = field[start : start + T_IN + T_OUT, None]
        pred = predictor.predict(torch.from_numpy(window[:T_IN])).numpy().astype(np.float64)
        target = window[T_IN:].astype(np.float64)
        seen = ~np.isnan(target)
        squared.append((pred[seen] - target[seen]) ** 2)
        absolute.append(np.abs(pred[seen] - target[seen]))
    assert results["mse"] == pytest.approx(np.concatenate(squared).mean(), rel=1e-4)
    assert results["mae"] == pytest.approx(np.concatenate(absolute).mean(), rel=1e-4)

    done = run_module("stpred.apps.forecast", "--ckpt", ckpt, path, "--init-time", "2020-01-02T20:00", "--out",
                      tmp_path / "f.nc", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "masked    : " in done.stdout and not done.stderr.strip()
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        t2m = ds["t2m"].sortby("latitude").values[0]  # [lead, lat, lon], south first as in the file
        assert "NaN (_FillValue) where the input is masked" in ds["t2m"].attrs["stpred_mask"]
    np.testing.assert_array_equal(np.isnan(t2m), np.broadcast_to(SEA, t2m.shape))
    expected = predictor.predict(torch.from_numpy(field[45 - T_IN : 45, None])).numpy()[:, 0]
    np.testing.assert_allclose(t2m, expected, rtol=1e-5, equal_nan=True)


def test_a_fill_nan_checkpoint_fills_the_forecast_input_and_says_so(land_file, tmp_path):
    path, field = land_file
    out = tmp_path / "run"
    cfg = compose_config(
        "train",
        ["data=arrays", f"data.path={path}", f"data.t_in={T_IN}", f"data.t_out={T_OUT}", "data.splits=[0.6,0.2,0.2]",
         "data.fill_nan=mean", f"paths.output_dir={out}", *TINY],
    )  # fmt: skip
    train(cfg)
    ckpt = out / "checkpoints" / "last.ckpt"
    predictor = load_predictor(ckpt)
    assert predictor.valid_mask is None
    mean = predictor.metadata["fill_nan"]["values"][0]
    done = run_module("stpred.apps.forecast", "--ckpt", ckpt, path, "--out", tmp_path / "f.nc", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "filled    : missing input values with the checkpoint's fill values" in done.stdout
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        values = ds["forecast"].values
        assert "the checkpoint's fill_nan" in ds["forecast"].attrs["stpred_fill"]
        assert "stpred_mask" not in ds["forecast"].attrs
    assert np.isfinite(values).all()  # filled as training filled: the sea is forecast, and the file says so
    window = np.where(np.isnan(field[-T_IN:, None]), mean, field[-T_IN:, None])
    std = predictor.metadata["std"][0]  # the filled window, normalised by hand, through the network
    with torch.no_grad():
        direct = predictor.net(torch.from_numpy(((window - mean) / std)[None]).float())[0].numpy() * std + mean
    np.testing.assert_allclose(values, direct, rtol=1e-5, atol=1e-4)

    np.save(tmp_path / "whole.npy", window.astype(np.float32))  # no missing value: nothing to record
    done = run_module("stpred.apps.forecast", "--ckpt", ckpt, tmp_path / "whole.npy", "--out", tmp_path / "w.nc",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "filled" not in done.stdout and "masked" not in done.stdout
    with xr.open_dataset(tmp_path / "w.nc") as ds:
        assert not {"stpred_fill", "stpred_mask", "stpred_unexpected_nan"} & set(ds["forecast"].attrs)
