"""Training on your own data by config: ``data=arrays`` (npy, npz, HDF5, Zarr, NetCDF) and ``data=frames``.

Every file is written here; batches are checked against the file's values sliced and normalised independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _hydra import compose_config

from stpred.apps.demo import main as demo_main
from stpred.apps.forecast import main as forecast_main
from stpred.apps.train import train
from stpred.checkpoint import load_predictor
from stpred.datamodules.arrays import ArrayDataModule
from stpred.datamodules.base import shapes_from_data_config
from stpred.datamodules.frames import FramesDataModule, sequence_cuts
from stpred.datamodules.video_io import read_clip, write_video
from stpred.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

SPLITS = ("train", "val", "test")
TINY_TRAIN = [
    "model=fno2d",
    "model.kwargs.modes=3",
    "model.kwargs.width=8",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optim.scheduler=none",
    "data.batch_size=4",
]


def _zscore(train_tchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``[T, C, H, W]`` frames, float64, written out channel by channel."""
    c = train_tchw.shape[1]
    mean = np.array([train_tchw[:, k].astype(np.float64).mean() for k in range(c)])
    std = np.array([train_tchw[:, k].astype(np.float64).std() for k in range(c)])
    return mean, std


def _norm(frames: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (frames - mean[None, :, None, None]) / std[None, :, None, None]


def _windows(ds) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in w) for w in ds.windows]


# -- arrays: values and splits --------------------------------------------------------------------------------------
def test_npy_long_series_windows_are_the_files_frames_normalised_by_the_training_split(tmp_path):
    series = np.random.default_rng(0).normal(3.0, 2.0, (41, 2, 5, 7)).astype(np.float32)  # [T, C, H, W]
    series[:, 1] *= 10.0
    np.save(tmp_path / "s.npy", series)
    cfg = {"path": str(tmp_path / "s.npy"), "t_in": 3, "t_out": 2, "stride": 2, "splits": [0.6, 0.2, 0.2]}
    dm = ArrayDataModule(**cfg, batch_size=4)
    dm.setup()
    # 41 frames: train [0, 25), val [25, 33), test [33, 41)
    assert [dm.metadata()["splits"][s]["range"] for s in SPLITS] == [[0, 25], [25, 33], [33, 41]]
    mean, std = _zscore(series[:25])
    np.testing.assert_allclose(dm.metadata()["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(dm.metadata()["std"], std, rtol=1e-6)
    expected_starts = {"train": range(0, 21, 2), "val": range(25, 29, 2), "test": range(33, 37, 2)}
    for split in SPLITS:
        ds = dm.datasets[split]
        assert [s for _, s in _windows(ds)] == list(expected_starts[split])
        for i in (0, len(ds) - 1):
            s = _windows(ds)[i][1]
            want = _norm(series[s : s + 5], mean, std)
            np.testing.assert_allclose(ds[i]["x"].numpy(), want[:3], atol=1e-5)
            np.testing.assert_allclose(ds[i]["y"].numpy(), want[3:], atol=1e-5)
            assert "time" not in ds[i]
    batch = next(iter(dm.val_dataloader()))
    assert batch["x"].shape == (2, 3, 2, 5, 7) and batch["y"].shape == (2, 2, 2, 5, 7)
    shapes = shapes_from_data_config({"_target_": "stpred.datamodules.arrays.ArrayDataModule", **cfg})
    assert shapes.in_shape == (3, 2, 5, 7) and shapes.out_frames == 2


def test_npz_samples_ntchw_split_by_index_ranges(tmp_path):
    samples = np.random.default_rng(1).uniform(0, 5, (9, 6, 3, 4, 5)).astype(np.float32)  # [N, T, C, H, W]
    np.savez(tmp_path / "d.npz", fields=samples, other=np.zeros(3))
    splits = {"train": [0, 5], "val": [5, 7], "test": [7, 9]}
    dm = ArrayDataModule(str(tmp_path / "d.npz"), variable="fields", layout="NTCHW", t_in=2, t_out=2, splits=splits)
    dm.setup()
    mean, std = _zscore(samples[:5].reshape(-1, 3, 4, 5))
    for split, (lo, hi) in splits.items():
        ds = dm.datasets[split]
        assert _windows(ds) == [(n, s) for n in range(lo, hi) for s in range(3)]
        n, s = _windows(ds)[-1]
        np.testing.assert_allclose(ds[len(ds) - 1]["y"].numpy(), _norm(samples[n, s + 2 : s + 4], mean, std), atol=1e-5)
    samples_used = {split: {n for n, _ in _windows(dm.datasets[split])} for split in SPLITS}
    assert not (samples_used["train"] & samples_used["val"] or samples_used["val"] & samples_used["test"])


def test_hdf5_thwc_layout_is_transposed(tmp_path):
    data = np.random.default_rng(2).normal(size=(20, 4, 6, 3)).astype(np.float32)  # [T, H, W, C]
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["group/values"] = data
    path, splits = str(tmp_path / "d.h5"), [0.7, 0.15, 0.15]  # frames [0, 14), [14, 17), [17, 20)
    dm = ArrayDataModule(path, variable="group/values", layout="THWC", t_in=2, t_out=1, splits=splits)
    dm.setup()
    tchw = data.transpose(0, 3, 1, 2)
    mean, std = _zscore(tchw[:14])
    assert dm.in_shape == (2, 3, 4, 6)
    ds = dm.datasets["test"]
    assert [s for _, s in _windows(ds)] == [17]
    np.testing.assert_allclose(ds[0]["x"].numpy(), _norm(tchw[17:19], mean, std), atol=1e-5)
    np.testing.assert_allclose(ds[0]["y"].numpy(), _norm(tchw[19:20], mean, std), atol=1e-5)
    with pytest.raises(UserError, match="no 'nope'"):
        ArrayDataModule(str(tmp_path / "d.h5"), variable="nope", layout="THWC").setup()


def _netcdf_with_gap(path: Path) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Hourly t2m on 2020-01-01..03 with 02:00..04:00 of day 2 missing (a gap): ``[T, H, W]``."""
    times = pd.date_range("2020-01-01", periods=72, freq="h")
    keep = ~((times >= "2020-01-02T02:00") & (times <= "2020-01-02T04:00"))
    times = times[keep]
    values = (280 + np.random.default_rng(3).standard_normal((len(times), 4, 6))).astype(np.float32)
    coords = {"time": times, "lat": np.linspace(-5.0, 5.0, 4), "lon": np.linspace(0.0, 10.0, 6)}
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), values, {"units": "K"})}, coords)
    ds.to_netcdf(path, engine="netcdf4")
    return values, times


def test_netcdf_date_splits_times_units_and_no_window_across_the_gap(tmp_path):
    values, times = _netcdf_with_gap(tmp_path / "t2m.nc")
    splits = {"train": ["2020-01-01", "2020-01-02"], "val": ["2020-01-03T00:00", "2020-01-03T11:00"],
              "test": ["2020-01-03T12:00", "2020-01-03T23:00"]}  # fmt: skip
    dm = ArrayDataModule(str(tmp_path / "t2m.nc"), t_in=3, t_out=2, splits=splits)
    dm.setup()
    meta = dm.metadata()
    assert meta["channels"] == ["t2m"] and meta["units"] == ["K"] and meta["time_step"] == 3600.0
    assert meta["gaps"] == 1
    seconds = times.values.astype("datetime64[s]").astype(np.int64)
    n_train = int((times < "2020-01-03").sum())
    mean, std = _zscore(values[:n_train, None])
    for split in SPLITS:
        ds = dm.datasets[split]
        for i in range(len(ds)):
            s = _windows(ds)[i][1]
            span = seconds[s : s + 5]
            assert np.all(np.diff(span) == 3600), f"{split} window {i} crosses the gap"
            assert ds[i]["time"].dtype == torch.int64 and int(ds[i]["time"]) == seconds[s]
        frames = {int(seconds[s + k]) for _, s in _windows(ds) for k in range(5)}
        assert frames
        if split == "train":
            assert max(frames) < pd.Timestamp("2020-01-03").timestamp()
        i = len(ds) // 2
        s = _windows(ds)[i][1]
        np.testing.assert_allclose(ds[i]["x"].numpy(), _norm(values[s : s + 3, None], mean, std), atol=1e-4)
    # 26 train frames before the gap and 43 after: windows of 5 at stride 1 on each side, none straddling it
    assert len(dm.datasets["train"]) == (26 - 4) + (n_train - 26 - 4)
    assert int(dm.datasets["train"][0]["time"]) == int(pd.Timestamp("2020-01-01", tz="UTC").timestamp())


def test_zarr_store_and_folder_of_files_concatenated_in_name_order(tmp_path):
    data = np.random.default_rng(4).normal(size=(40, 2, 3, 4)).astype(np.float32)
    ds = xr.Dataset({"v": (("time", "channel", "y", "x"), data)}, {"time": pd.date_range("2021-01-01", periods=40)})
    ds.to_zarr(tmp_path / "d.zarr")
    from_zarr = ArrayDataModule(str(tmp_path / "d.zarr"), variable="v", t_in=2, t_out=2)
    from_zarr.setup()
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, part in (("b.npy", data[12:]), ("a.npy", data[:12])):
        np.save(folder / name, part)
    from_folder = ArrayDataModule(str(folder), t_in=2, t_out=2)
    from_folder.setup()
    for split in SPLITS:
        a, b = from_zarr.datasets[split], from_folder.datasets[split]
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a[len(a) - 1]["y"], b[len(b) - 1]["y"])
    assert int(from_zarr.datasets["train"][1]["time"]) == int(pd.Timestamp("2021-01-02", tz="UTC").timestamp())


# -- arrays: one-line errors -------------------------------------------------------------------------------------------
def test_bad_layout_and_missing_key_are_one_line_errors_and_nan_masked_or_filled(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((10, 4, 4), np.float32))
    for layout in ("TCHW", "TXW", "TTW"):
        with pytest.raises(UserError, match="data.layout=") as err:
            ArrayDataModule(str(tmp_path / "s.npy"), layout=layout, t_in=2, t_out=2).setup()
        assert "\n" not in str(err.value)
    np.savez(tmp_path / "d.npz", a=np.zeros((10, 4, 4)), b=np.zeros((10, 4, 4)))
    with pytest.raises(UserError, match="say which with data.variable="):
        ArrayDataModule(str(tmp_path / "d.npz"), t_in=2, t_out=2).setup()
    with pytest.raises(UserError, match=r"no 'c' \(it has \['a', 'b'\]\)"):
        ArrayDataModule(str(tmp_path / "d.npz"), variable="c", t_in=2, t_out=2).setup()
    series = np.random.default_rng(5).normal(size=(40, 1, 3, 3)).astype(np.float32)
    series[7, 0, 1, 2] = series[9, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", series)
    masked = ArrayDataModule(str(tmp_path / "nan.npy"), t_in=2, t_out=2)
    masked.setup()  # NaN values are masked by default (the contract is tested in tests/test_masks.py)
    assert masked.metadata()["mask"]["masked_values"] == 2 and masked.metadata()["fill_nan"] is None
    dm = ArrayDataModule(str(tmp_path / "nan.npy"), t_in=2, t_out=2, fill_nan="mean")
    dm.setup()
    train = series[:32, 0]
    fill = np.nanmean(train)
    mean = np.where(np.isnan(train), fill, train).mean()
    assert dm.metadata()["mean"][0] == pytest.approx(mean, rel=1e-5)
    x = dm.datasets["train"][6]["x"].numpy()  # frames 6, 7
    assert x[1, 0, 1, 2] == pytest.approx((fill - mean) / dm.metadata()["std"][0], abs=1e-5)
    with pytest.raises(UserError, match="date ranges need time stamps"):
        ArrayDataModule(str(tmp_path / "s.npy"), t_in=2, t_out=2, splits={s: ["2020", "2020"] for s in SPLITS}).setup()


def test_inf_is_refused_in_every_format_with_its_count_variable_and_place(tmp_path):
    """inf is no missing value (NaN is, and is masked): one line with the count, the variable, the first place in
    the file's own axes (coordinate values for NetCDF/Zarr, stamps for a series with times) and the fix."""
    values, times = _netcdf_with_gap(tmp_path / "clean.nc")
    bad = values.copy()
    bad[40, 3, 5] = -np.inf  # 2020-01-02T19:00 (three stamps of day 2 are missing), lat 5, lon 10
    bad[60, 0, 1] = np.inf
    bad[3, 1, 1] = np.nan  # masked, not counted
    coords = {"time": times, "lat": np.linspace(-5.0, 5.0, 4), "lon": np.linspace(0.0, 10.0, 6)}
    ds = xr.Dataset({"t2m": (("time", "lat", "lon"), bad), "sst": (("time", "lat", "lon"), values + 1)}, coords)
    ds.to_netcdf(tmp_path / "t2m.nc", engine="netcdf4")
    ds.to_zarr(tmp_path / "t2m.zarr")
    np.save(tmp_path / "series.npy", bad)
    np.save(tmp_path / "times.npy", times.values)
    series_nchw = np.stack([values, bad])[:, :, None]  # [N, T, C, H, W]: the second sample holds the infs
    np.savez(tmp_path / "samples.npz", field=series_nchw.transpose(0, 1, 3, 4, 2))  # NTHWC
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["group/values"] = bad[:, None]
    place_nc = "is in {} at time 2020-01-02T19:00:00, lat 5, lon 10 (t2m[40, 3, 5])"
    cases = {
        "t2m.nc": ({"variable": ["sst", "t2m"]}, "2 infinite values in t2m; the first, -inf, "
                   + place_nc.format("t2m.nc")),
        "t2m.zarr": ({"variable": "t2m"}, place_nc.format("t2m.zarr")),
        "series.npy": ({"layout": "THW"}, "the first, -inf, is in series.npy at time step 40 (2020-01-02T19:00:00), "
                       "row 3, column 5 (series[40, 3, 5], layout THW)"),
        "samples.npz": ({"layout": "NTHWC"}, "2 infinite values in field; the first, -inf, is in samples.npz at sample "
                        "1, time step 40, row 3, column 5, channel 0 (field[1, 40, 3, 5, 0], layout NTHWC)"),
        "d.h5": ({"variable": "group/values"}, "(group/values[40, 0, 3, 5], layout TCHW)"),
    }  # fmt: skip
    for name, (kwargs, needle) in cases.items():
        for fill in (None, "mean"):
            with pytest.raises(UserError) as err:
                ArrayDataModule(str(tmp_path / name), t_in=2, t_out=2, fill_nan=fill, **kwargs).setup()
            msg = str(err.value)
            assert needle in msg and "\n" not in msg, msg
            assert "inf is not a missing value" in msg and "data.mask_value=-inf if -inf marks missing values" in msg
    # A folder of files: the place names the file that holds it.
    folder = tmp_path / "parts"
    folder.mkdir()
    np.save(folder / "a.npy", values[:30])
    np.save(folder / "b.npy", bad[30:])
    with pytest.raises(UserError, match=r"is in b.npy at time step 10, row 3, column 5 \(b\[10, 3, 5\]"):
        ArrayDataModule(str(folder), t_in=2, t_out=2, layout="THW").setup()


def test_mask_value_inf_masks_that_inf_and_a_truly_constant_channel_is_only_shifted(tmp_path):
    series = np.random.default_rng(8).normal(size=(40, 2, 3, 3)).astype(np.float32)
    series[4, 0, 1, 1] = np.inf
    series[:, 1] = 7.0  # a constant channel: documented as shifted only (std 1), never an error
    np.save(tmp_path / "s.npy", series)
    dm = ArrayDataModule(str(tmp_path / "s.npy"), t_in=2, t_out=2, mask_value=float("inf"))
    dm.setup()
    meta = dm.metadata()
    assert meta["mask"]["masked_values"] == 1 and np.isfinite(meta["mean"]).all() and np.isfinite(meta["std"]).all()
    assert meta["std"][1] == 1.0 and meta["mean"][1] == 7.0
    item = dm.datasets["train"][3]  # frames 3, 4
    assert not bool(item["x_valid"][1, 0, 1, 1]) and float(item["x"][1, 0, 1, 1]) == 0.0
    with pytest.raises(UserError, match="1 infinite value in s; the first, inf"):
        ArrayDataModule(str(tmp_path / "s.npy"), t_in=2, t_out=2, mask_value=float("-inf")).setup()


def test_fill_nan_mean_refuses_a_channel_without_an_observed_training_value(tmp_path):
    series = np.random.default_rng(9).normal(size=(40, 2, 3, 3)).astype(np.float32)
    series[:32, 1] = np.nan  # channel 1: nothing observed in the training frames [0, 32)
    np.save(tmp_path / "s.npy", series)
    with pytest.raises(UserError, match="channel 1 has no observed value in the train split") as err:
        ArrayDataModule(str(tmp_path / "s.npy"), t_in=2, t_out=2, fill_nan="mean").setup()
    assert "\n" not in str(err.value)
    zero = ArrayDataModule(str(tmp_path / "s.npy"), t_in=2, t_out=2, fill_nan="zero")
    zero.setup()  # the user's fill value: asked for, recorded
    assert zero.metadata()["fill_nan"] == {"method": "zero", "values": [0.0, 0.0]}


# -- arrays: train, forecast -------------------------------------------------------------------------------------------
def test_train_on_an_npy_series_then_forecast_from_its_checkpoint(tmp_path, capsys):
    rng = np.random.default_rng(6)
    t = np.arange(60)[:, None, None, None]
    series = (np.sin(0.3 * t + np.linspace(0, 3, 8)[None, None, None]) * np.ones((60, 2, 8, 8))).astype(np.float32)
    series[:, 1] = 5.0 + 2.0 * series[:, 1] + 0.1 * rng.standard_normal((60, 8, 8))
    np.save(tmp_path / "series.npy", series)
    out = tmp_path / "run"
    cfg = compose_config(
        "train",
        ["data=arrays", f"data.path={tmp_path / 'series.npy'}", "data.t_in=4", "data.t_out=2",
         "data.channels=[wave,level]", "data.units=[m,m]", f"paths.output_dir={out}", *TINY_TRAIN],
    )  # fmt: skip
    results = train(cfg)
    assert np.isfinite(results["mse"])
    ckpt = out / "checkpoints" / "last.ckpt"
    predictor = load_predictor(ckpt)
    assert predictor.metadata["channels"] == ["wave", "level"] and predictor.in_shape == (4, 2, 8, 8)
    window = series[30:37]
    np.save(tmp_path / "input.npy", window)
    forecast_main(["--ckpt", str(ckpt), str(tmp_path / "input.npy"), "--out", str(tmp_path / "f.nc")])
    with xr.open_dataset(tmp_path / "f.nc") as ds:
        written = ds["forecast"].values
        assert list(ds["channel"].values) == ["wave", "level"]
    expected = predictor.predict(torch.from_numpy(window[-4:])).numpy()
    assert written.shape == (2, 2, 8, 8)
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-5)


# -- frames ------------------------------------------------------------------------------------------------------------
def _moving_square(n: int, size: int, offset: int) -> np.ndarray:
    """uint8 RGB ``[n, size, size + 8, 3]``: a bright square sliding right, wider than tall (cropped)."""
    frames = np.full((n, size, size + 8, 3), 20, np.uint8)
    for k in range(n):
        x = (offset + 2 * k) % (size + 2)
        frames[k, 4:10, x : x + 6] = (250, 200, 120)
    return frames


def _image_sequences(root: Path, count: int = 5, length: int = 9, size: int = 20) -> dict[str, np.ndarray]:
    seqs = {}
    for i in range(count):
        frames = _moving_square(length, size, i)
        folder = root / f"seq_{i:03d}"
        folder.mkdir(parents=True)
        for k, frame in enumerate(frames):
            cv2.imwrite(str(folder / f"{k + 1:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        seqs[folder.name] = frames
    return seqs


def _grey_crop(frames: np.ndarray, side: int) -> np.ndarray:
    """Independent reference: resize short side to ``side`` (aspect kept), centre crop, OpenCV luma, [0, 1]."""
    h, w = frames.shape[1:3]
    new_w = int(w * side / h + 0.5)
    interp = cv2.INTER_AREA if side < h else cv2.INTER_LINEAR
    out = []
    for f in frames:
        r = cv2.resize(f, (new_w, side), interpolation=interp)
        x0 = (new_w - side) // 2
        out.append(cv2.cvtColor(np.ascontiguousarray(r[:, x0 : x0 + side]), cv2.COLOR_RGB2GRAY))
    return np.stack(out)[:, None].astype(np.float32) / 255.0


def test_frames_image_sequences_split_by_sequence_and_match_the_pixels(tmp_path):
    seqs = _image_sequences(tmp_path / "seqs")
    dm = FramesDataModule(str(tmp_path / "seqs"), t_in=3, t_out=2, stride=2, image_size=16, splits=[0.6, 0.2, 0.2])
    dm.setup()
    names = {split: set(dm.datasets[split].names) for split in SPLITS}
    assert names == {"train": {"seq_000", "seq_001", "seq_002"}, "val": {"seq_003"}, "test": {"seq_004"}}
    ds = dm.datasets["val"]
    assert [s for _, s in _windows(ds)] == [0, 2, 4]
    want = _grey_crop(seqs["seq_003"], 16)
    np.testing.assert_allclose(ds[1]["x"].numpy(), want[2:5], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(ds[1]["y"].numpy(), want[5:7], atol=1 / 255 + 1e-6)
    meta = dm.metadata()
    assert meta["channels"] == ["intensity"] and meta["data_range"] == 1.0 and meta["in_shape"] == [3, 1, 16, 16]
    cfg = {"_target_": "stpred.datamodules.frames.FramesDataModule", "root": "unused", "t_in": 3, "t_out": 2,
           "image_size": 16, "color": "rgb"}  # fmt: skip
    assert shapes_from_data_config(cfg).in_shape == (3, 3, 16, 16)


def test_sequence_splits_give_every_split_a_sequence():
    assert sequence_cuts([0.8, 0.1, 0.1], 5) == [0, 3, 4, 5]
    assert sequence_cuts([0.8, 0.1, 0.1], 10) == [0, 8, 9, 10]
    assert sequence_cuts([0.5, 0.0, 0.5], 4) == [0, 2, 2, 4]
    with pytest.raises(UserError, match="too few"):
        sequence_cuts([0.8, 0.1, 0.1], 2)


def test_frames_train_then_demo_on_a_clip(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    for i in range(4):
        write_video(root / f"clip_{i}.mp4", _moving_square(12, 20, 3 * i), fps=5.0)
    _image_sequences(root / "more", count=1)  # a folder of images below root is not a sequence of root
    out = tmp_path / "run"
    cfg = compose_config(
        "train",
        ["data=frames", f"data.root={root}", "data.t_in=3", "data.t_out=2", "data.image_size=16",
         "data.splits=[0.5,0.25,0.25]", "model.kwargs.modes=3", f"paths.output_dir={out}", *TINY_TRAIN],
    )  # fmt: skip
    results = train(cfg)
    assert np.isfinite(results["mse"])
    ckpt = out / "checkpoints" / "last.ckpt"
    clip = root / "clip_3.mp4"
    demo_main(["--ckpt", str(ckpt), str(clip), "--out", str(tmp_path / "demo"), "--start", "2"])
    report = json.loads((tmp_path / "demo" / "clip_3_forecast.json").read_text())
    predictor = load_predictor(ckpt)
    frames = read_clip(clip, np.arange(2, 7))
    pixels = torch.from_numpy(_grey_crop(frames, 16))
    forecast = predictor.predict(pixels[:3])
    mse = (forecast.double() - pixels[3:].double()).pow(2).flatten(1).mean(1).tolist()
    np.testing.assert_allclose([row["mse"] for row in report["per_lead"]], mse, rtol=1e-5)
