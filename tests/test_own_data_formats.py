"""Each own-data format, trained through ``stpred-train data=arrays`` and forecast with ``stpred-forecast``.

One case per row of the matrix: file format, one series or samples, its layout, with or without time stamps, with or
without a mask. Each writes its file here, trains a tiny FNO for an epoch, forecasts from the file (or, for samples,
from one sample saved as ``.npy``), and checks the NetCDF against the predictor run on the same window read
independently: the values, NaN exactly where the mask says, and the init time from the file's stamps.
(``.npy`` series: tests/test_own_data.py; NetCDF ``time, lat, lon`` with NaN over a region: tests/test_masks.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _hydra import compose_config

from stpred.apps.forecast import main as forecast_main
from stpred.apps.train import train
from stpred.checkpoint import load_predictor

pytestmark = pytest.mark.usefixtures("one_thread")

C, H, W = 2, 5, 6
T_IN, T_OUT = 3, 2
TINY = [
    "model=fno2d", "model.kwargs.modes=2", "model.kwargs.width=6", "trainer.max_epochs=1", "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "optim.scheduler=none", "data.batch_size=4",
    f"data.t_in={T_IN}", f"data.t_out={T_OUT}",
]  # fmt: skip
#: Cells that a mask hides (row, column): the last column, and two cells of the first row.
HIDDEN = np.zeros((H, W), bool)
HIDDEN[:, -1] = True
HIDDEN[0, :2] = True


def _fields(rng: np.random.Generator, *lead: int) -> np.ndarray:
    """float32 ``[*lead, C, H, W]``: a travelling wave per channel, offset like a physical field, plus noise."""
    t = np.arange(int(np.prod(lead))).reshape(*lead)[..., None, None, None]
    x = np.linspace(0, 3, W)[None, None, :]
    wave = np.sin(0.4 * t + x + np.arange(C)[:, None, None])
    return (50.0 + 4.0 * wave + 0.1 * rng.standard_normal((*lead, C, H, W))).astype(np.float32)


@dataclass
class Case:
    """What a writer made: the file, its overrides, and the forecast's input, window and expected mask.

    Attributes:
        path: the training file.
        overrides: ``data.*`` overrides naming the variable, layout, splits and mask options.
        forecast_input: what ``stpred-forecast`` reads (the file itself, or one sample as ``.npy``).
        init_time: ``--init-time`` or ``None`` (the input's last frames).
        window: float32 ``[T_in, C, H, W]`` in physical units, NaN where missing: what the model must see.
        masked: bool ``[C, H, W]`` where the forecast must be NaN.
        init_attr: the forecast's ``init_time`` attribute, or ``None`` without stamps.
    """

    path: Path
    overrides: list[str]
    forecast_input: Path
    init_time: str | None
    window: np.ndarray
    masked: np.ndarray
    init_attr: str | None


def npz_samples_ntchw_with_a_mask_variable(tmp: Path) -> Case:
    samples = _fields(np.random.default_rng(1), 10, 7)  # [N, T, C, H, W]
    land = (~HIDDEN).astype(np.int8)
    samples[:, :, :, HIDDEN] = np.nan  # what a user's land-only file holds under the mask
    np.savez(tmp / "d.npz", fields=samples, lsm=land)
    np.save(tmp / "sample.npy", samples[9])
    return Case(
        tmp / "d.npz",
        ["data.variable=fields", "data.layout=NTCHW", "data.mask=lsm",
         "data.splits={train:[0,6],val:[6,8],test:[8,10]}"],  # fmt: skip
        tmp / "sample.npy",
        None,
        samples[9, -T_IN:],
        np.broadcast_to(HIDDEN, (C, H, W)),
        None,
    )


def hdf5_series_thwc_with_unix_second_stamps(tmp: Path) -> Case:
    series = _fields(np.random.default_rng(2), 40)  # [T, C, H, W]
    seconds = pd.Timestamp("2022-06-01", tz="UTC").timestamp() + 3600 * np.arange(40)
    with h5py.File(tmp / "d.h5", "w") as f:
        f["obs/values"] = series.transpose(0, 2, 3, 1)  # [T, H, W, C]
        f["times"] = seconds.astype(np.int64)
    return Case(
        tmp / "d.h5",
        ["data.variable=obs/values", "data.layout=THWC", "data.splits=[0.6,0.2,0.2]"],
        tmp / "d.h5",
        "2022-06-02T06:00",  # stamp 30
        series[31 - T_IN : 31],
        np.zeros((C, H, W), bool),
        "2022-06-02T06:00",
    )


def hdf5_samples_nthwc_with_a_fill_value(tmp: Path) -> Case:
    samples = _fields(np.random.default_rng(3), 9, 6)
    samples[:, :, :, HIDDEN] = -9999.0  # a declared fill value, in every step
    with h5py.File(tmp / "d.h5", "w") as f:
        f["values"] = samples.transpose(0, 1, 3, 4, 2)  # [N, T, H, W, C]
    window = samples[8, -T_IN:].copy()
    np.save(tmp / "sample.npy", window)  # the user's input keeps the fill value; the forecast knows it
    window[window == -9999.0] = np.nan
    return Case(
        tmp / "d.h5",
        ["data.variable=values", "data.layout=NTHWC", "data.mask_value=-9999", "data.splits=[0.6,0.2,0.2]"],
        tmp / "sample.npy",
        None,
        window,
        np.broadcast_to(HIDDEN, (C, H, W)),
        None,
    )


def zarr_series_tchw_with_dates_and_a_fill_value(tmp: Path) -> Case:
    series = _fields(np.random.default_rng(4), 36)
    series[:, 1, HIDDEN] = -9999.0  # the second channel only
    times = pd.date_range("2021-03-01", periods=36, freq="D")
    ds = xr.Dataset({"v": (("time", "channel", "y", "x"), series, {"units": "mm"})}, {"time": times})
    ds.to_zarr(tmp / "d.zarr")
    window = series[-T_IN:].copy()
    window[window == -9999.0] = np.nan
    masked = np.zeros((C, H, W), bool)
    masked[1] = HIDDEN
    overrides = ["data.variable=v", "data.mask_value=-9999", "data.splits=[0.6,0.2,0.2]"]
    return Case(tmp / "d.zarr", overrides, tmp / "d.zarr", None, window, masked, "2021-04-05T00:00")


def npz_series_thw_with_iso_string_stamps(tmp: Path) -> Case:
    series = _fields(np.random.default_rng(5), 30)[:, 0]  # [T, H, W]
    stamps = np.array([str(t) for t in pd.date_range("2020-02-27", periods=30, freq="6h").values.astype("M8[s]")])
    np.savez(tmp / "d.npz", precip=series, times=stamps)
    return Case(
        tmp / "d.npz",
        ["data.variable=precip", "data.layout=THW", "data.splits=[0.6,0.2,0.2]"],
        tmp / "d.npz",
        "2020-03-01T00:00",  # stamp 12, across the leap day
        series[13 - T_IN : 13, None],
        np.zeros((1, H, W), bool),
        "2020-03-01T00:00",
    )


CASES: dict[str, Callable[[Path], Case]] = {
    f.__name__: f
    for f in (
        npz_samples_ntchw_with_a_mask_variable,
        hdf5_series_thwc_with_unix_second_stamps,
        hdf5_samples_nthwc_with_a_fill_value,
        zarr_series_tchw_with_dates_and_a_fill_value,
        npz_series_thw_with_iso_string_stamps,
    )
}


@pytest.mark.parametrize("name", list(CASES))
def test_train_then_forecast(name: str, tmp_path: Path, capsys) -> None:
    case = CASES[name](tmp_path)
    out = tmp_path / "run"
    cfg = compose_config(
        "train", ["data=arrays", f"data.path={case.path}", *case.overrides, f"paths.output_dir={out}", *TINY]
    )
    results = train(cfg)
    assert np.isfinite(results["mse"]) and np.isfinite(results["mae"])
    ckpt = out / "checkpoints" / "last.ckpt"
    predictor = load_predictor(ckpt)
    assert predictor.in_shape == (T_IN, *case.masked.shape)
    if case.masked.any():
        np.testing.assert_array_equal(predictor.valid_mask.numpy(), ~case.masked)
    capsys.readouterr()

    forecast = tmp_path / "forecast.nc"
    argv = ["--ckpt", str(ckpt), str(case.forecast_input), "--out", str(forecast)]
    forecast_main(argv + (["--init-time", case.init_time] if case.init_time else []))
    printed = capsys.readouterr()
    assert "where the training data had none" not in printed.err
    with xr.open_dataset(forecast) as ds:
        values = ds["forecast"].values  # [T_out, C, H, W]
        assert ds.attrs.get("init_time") == case.init_attr
    assert values.shape == (T_OUT, *case.masked.shape)
    np.testing.assert_array_equal(np.isnan(values), np.broadcast_to(case.masked, values.shape))
    expected = predictor.predict(torch.from_numpy(case.window[None])).numpy()[0]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    if case.masked.any():
        assert "masked    :" in printed.out


def test_forecast_input_windows_are_evenly_spaced_stamps(tmp_path: Path) -> None:
    """A window ending at --init-time (or at the last stamp) must not cross a gap in the file's stamps."""
    from stpred.apps._grid_io import read_array_window
    from stpred.errors import UserError

    series = _fields(np.random.default_rng(6), 12)[:, 0]  # [T, H, W]
    hours = np.r_[0:6, 8:14]  # 06:00 and 07:00 are missing
    stamps = np.array([f"2020-01-01T{h:02d}:00" for h in hours])
    np.savez(tmp_path / "s.npz", v=series, times=stamps)
    meta = {"in_shape": [3, 1, H, W], "variable": "v", "layout": "THW", "time_key": "times", "time_step": 3600.0}
    window = read_array_window(tmp_path / "s.npz", meta)
    np.testing.assert_array_equal(window.frames, series[-3:, None])
    assert [str(t) for t in window.times] == ["2020-01-01T11:00:00", "2020-01-01T12:00:00", "2020-01-01T13:00:00"]
    np.testing.assert_array_equal(read_array_window(tmp_path / "s.npz", meta, "2020-01-01T05:00").frames,
                                  series[3:6, None])  # fmt: skip
    with pytest.raises(UserError, match="has no stamp 2020-01-01T07:00") as err:
        read_array_window(tmp_path / "s.npz", meta, "2020-01-01T09:00")
    assert "\n" not in str(err.value)
