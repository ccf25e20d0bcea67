"""The contract every datamodule keeps (datamodules/base.py), checked on tiny data for each of them.

For every entry of :data:`CASES`: the shapes the class answers from the config alone (``shapes_from_config``) are
those of its batches and its ``metadata()``; the metadata holds the keys checkpoints and apps read and is plain
JSON; batches are float32 ``x``/``y`` (or an int64 ``label``) and, where present, an int64 ``time`` in Unix seconds
of the first input frame; train, validation and test share no sample source (digits, trajectories, frames, clips).
A new datamodule needs one entry in :data:`CASES`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from _datafiles import ARM, POOL, flow_stamps, make_cvdf, write_flow_h5, write_netcdf

from stpred.datamodules.base import CLASSIFY_METADATA_KEYS, METADATA_KEYS, shapes_from_data_config
from stpred.datamodules.video_io import write_video

pytestmark = pytest.mark.usefixtures("one_thread")

SPLITS = ("train", "val", "test")
DAY = 86_400


def _utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp())


@dataclass(frozen=True)
class Case:
    """One datamodule on tiny data.

    Attributes:
        config: ``(folder, shared_data, fixtures) -> data config`` with ``_target_`` (files written into ``folder``).
        sources: ``(dataset, split) -> set`` of what a split's samples are made of; must be disjoint across splits.
        first_time: Unix seconds of the first training window's first input frame, for datasets with ``time``.
    """

    config: Callable[[Path, Path, dict[str, Any]], dict[str, Any]]
    sources: Callable[[Any, str], set]
    first_time: int | None = None


# -- configs --------------------------------------------------------------------------------------------------------
def _mmnist(folder: Path, shared: Path, fx: dict) -> dict:
    return {
        "_target_": "stpred.datamodules.moving_mnist.MovingMNISTDataModule",
        "root": str(shared / "mnist"), "t_in": 3, "t_out": 2, "image_size": 36, "epoch_size": 4, "val_size": 3,
        "test_size": 3, "batch_size": 2, "num_workers": 0,
    }  # fmt: skip


def _navier_stokes(folder: Path, shared: Path, fx: dict) -> dict:
    return {
        "_target_": "stpred.datamodules.navier_stokes.NavierStokesDataModule",
        "root": str(folder), "resolution": 12, "n_train": 3, "n_val": 2, "n_test": 2, "t_in": 2, "t_out": 3,
        "device": "cpu", "progress": False, "gen_batch_size": 8, "batch_size": 2,
    }  # fmt: skip


def _taxibj(folder: Path, shared: Path, fx: dict) -> dict:
    stamps = flow_stamps(dt.date(2016, 3, 1), 5)
    data = np.random.default_rng(0).uniform(0, 300, (len(stamps), 2, 6, 10))
    write_flow_h5(folder / "BJ16_M32x32_T30_InOut.h5", stamps, data)
    return {
        "_target_": "stpred.datamodules.taxibj.TaxiBJDataModule",
        "root": str(folder), "t_in": 2, "t_out": 2, "test_days": 2, "val_days": 1, "batch_size": 4,
    }  # fmt: skip


def _weatherbench(folder: Path, shared: Path, fx: dict) -> dict:
    time = pd.date_range("2021-06-01", periods=72, freq="h")
    values = (280 + np.random.default_rng(0).standard_normal((72, 4, 6))).astype(np.float32)
    coords = {"time": time, "lat": np.linspace(-10.0, 10.0, 4), "lon": np.linspace(0.0, 25.0, 6)}
    write_netcdf(folder / "t2m.nc", xr.Dataset({"t2m": (("time", "lat", "lon"), values, {"units": "K"})}, coords))
    return {
        "_target_": "stpred.datamodules.weatherbench.WeatherBenchDataModule",
        "path": str(folder / "t2m.nc"), "variables": ["t2m"], "t_in": 3, "t_out": 2, "batch_size": 4,
        "splits": {"train": ["2021-06-01", "2021-06-01"], "val": ["2021-06-02", "2021-06-02"],
                   "test": ["2021-06-03", "2021-06-03"]},
    }  # fmt: skip


def _era5_uk(folder: Path, shared: Path, fx: dict) -> dict:
    return {
        "_target_": "stpred.datamodules.weatherbench.WeatherBenchDataModule",
        "path": str(shared / "weather" / "era5_t2m_2019-03_uk.nc"), "variables": ["t2m"], "t_in": 2, "t_out": 3,
        "crop": [16, 24], "batch_size": 4,
        "splits": {"train": ["2019-03-01", "2019-03-21"], "val": ["2019-03-22", "2019-03-25"],
                   "test": ["2019-03-26", "2019-03-31"]},
    }  # fmt: skip


def _arrays(folder: Path, shared: Path, fx: dict) -> dict:
    time = pd.date_range("2022-05-01", periods=40, freq="h").delete([20, 21])  # a gap of two hours
    values = np.random.default_rng(0).standard_normal((len(time), 5, 6)).astype(np.float32)
    write_netcdf(folder / "own.nc", xr.Dataset({"v": (("time", "y", "x"), values, {"units": "m"})}, {"time": time}))
    return {
        "_target_": "stpred.datamodules.arrays.ArrayDataModule",
        "path": str(folder / "own.nc"), "t_in": 3, "t_out": 2, "splits": [0.6, 0.2, 0.2], "batch_size": 4,
    }  # fmt: skip


def _frames(folder: Path, shared: Path, fx: dict) -> dict:
    rng = np.random.default_rng(0)
    for i in range(5):
        write_video(folder / f"v{i}.mp4", rng.integers(0, 255, (8, 12, 14, 3), dtype=np.uint8), fps=5.0)
    return {
        "_target_": "stpred.datamodules.frames.FramesDataModule",
        "root": str(folder), "t_in": 2, "t_out": 2, "image_size": 8, "color": "rgb", "splits": [0.6, 0.2, 0.2],
        "batch_size": 2,
    }  # fmt: skip


KINETICS_SPLITS = {
    "train": [(ARM, "aw_train_a"), (POOL, "cp_train_a"), (ARM, "aw_train_b"), (POOL, "cp_train_b")],
    "val": [(ARM, "aw_val"), (POOL, "cp_val")],
    "test": [(POOL, "cp_test"), (ARM, "aw_test")],
}


def _kinetics(task: str) -> Callable[[Path, Path, dict], dict]:
    def config(folder: Path, shared: Path, fx: dict) -> dict:
        make_cvdf(folder, fx["kinetics_clips"], KINETICS_SPLITS)
        cfg = {
            "_target_": "stpred.datamodules.kinetics.KineticsDataModule",
            "root": str(folder), "task": task, "label_map": str(fx["kinetics_label_map"]), "num_classes": 400,
            "short_side": 40, "crop_size": 32, "frame_stride": 2, "test_clips": 1, "test_crops": 1,
            "batch_size": 2,
        }  # fmt: skip
        return {**cfg, "num_frames": 4} if task == "classify" else {**cfg, "t_in": 2, "t_out": 2}

    return config


# -- what the samples of a split are made of --------------------------------------------------------------------------
def _digits(ds, split: str) -> set:
    return set(ds.digit_ids.tolist())


def _trajectories(ds, split: str) -> set:
    return {ds.frames[i, 0].numpy().tobytes() for i in range(ds.frames.shape[0])}


def _flow_frames(ds, split: str) -> set:
    length = ds.t_in + ds.t_out
    return {int(ds[i]["time"]) + 1800 * k for i in range(len(ds)) for k in range(length)}


def _weather_frames(ds, split: str) -> set:
    return {t for i in range(len(ds)) for t in ds.window_times(i).tolist()}


def _clips(ds, split: str) -> set:
    return {Path(e.path).name for e in ds.entries}


def _array_frames(ds, split: str) -> set:
    return {int(ds.seconds[s + k]) for _, s in ds.windows for k in range(ds.t_in + ds.t_out)}


def _sequences(ds, split: str) -> set:
    return set(ds.names)


CASES = {
    "mmnist": Case(_mmnist, _digits),
    "navier_stokes": Case(_navier_stokes, _trajectories),
    "taxibj": Case(_taxibj, _flow_frames, first_time=_utc("2016-03-01T00:00")),
    "weatherbench": Case(_weatherbench, _weather_frames, first_time=_utc("2021-06-01T00:00")),
    "era5_uk": Case(_era5_uk, _weather_frames, first_time=_utc("2019-03-01T00:00")),
    "kinetics": Case(_kinetics("classify"), _clips),
    "kinetics_forecast": Case(_kinetics("forecast"), _clips),
    "arrays": Case(_arrays, _array_frames, first_time=_utc("2022-05-01T00:00")),
    "frames": Case(_frames, _sequences),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request, tmp_path_factory, shared_data, kinetics_clips, kinetics_label_map):
    case = CASES[request.param]
    fixtures = {"kinetics_clips": kinetics_clips, "kinetics_label_map": kinetics_label_map}
    cfg = case.config(tmp_path_factory.mktemp(request.param), shared_data, fixtures)
    shapes = shapes_from_data_config(cfg)  # before any data is read
    dm = hydra.utils.instantiate(cfg)
    dm.setup()
    return case, shapes, dm


def test_shapes_from_config_are_the_datamodule_and_batch_shapes(built):
    _, shapes, dm = built
    assert dm.task == shapes.task and tuple(dm.in_shape) == shapes.in_shape
    batch = next(iter(dm.train_dataloader()))
    b = batch["x"].shape[0]
    assert tuple(batch["x"].shape) == (b, *shapes.in_shape) and batch["x"].dtype == torch.float32
    if shapes.task == "classify":
        assert shapes.out_frames is None and shapes.num_classes == dm.num_classes
        assert batch["label"].shape == (b,) and batch["label"].dtype == torch.int64
        assert int(batch["label"].min()) >= 0 and int(batch["label"].max()) < shapes.num_classes
        assert shapes.target() == {"num_classes": shapes.num_classes}
    else:
        assert shapes.num_classes is None and dm.out_frames == shapes.out_frames
        assert tuple(batch["y"].shape) == (b, shapes.out_frames, *shapes.in_shape[1:])
        assert batch["y"].dtype == torch.float32
        assert shapes.target() == {"out_frames": shapes.out_frames}
    for split in ("val", "test"):
        x = next(iter(getattr(dm, f"{split}_dataloader")()))["x"]
        assert tuple(x.shape[-4:]) == shapes.in_shape and x.dtype == torch.float32


def test_metadata_holds_the_contract_keys_and_agrees_with_the_shapes(built):
    _, shapes, dm = built
    meta = json.loads(json.dumps(dm.metadata()))
    required = METADATA_KEYS + (CLASSIFY_METADATA_KEYS if shapes.task == "classify" else ())
    assert not [k for k in required if k not in meta]
    assert meta["task"] == shapes.task and tuple(meta["in_shape"]) == shapes.in_shape
    assert meta["out_frames"] == shapes.out_frames
    if shapes.task == "classify":
        assert meta["num_classes"] == shapes.num_classes == len(meta["class_names"])
    channels = shapes.in_shape[1]
    assert len(meta["mean"]) == len(meta["std"]) == len(meta["channels"]) == len(meta["units"]) == channels
    assert all(s > 0 for s in meta["std"])


def test_time_is_the_first_input_frames_unix_seconds(built):
    case, _, dm = built
    sample = dm.datasets["train"][0]
    if case.first_time is None:
        assert "time" not in sample
        return
    assert isinstance(sample["time"], torch.Tensor) and sample["time"].dtype == torch.int64
    assert sample["time"].shape == () and sample["time"].item() == case.first_time
    batch = next(iter(dm.train_dataloader()))
    assert batch["time"].dtype == torch.int64 and batch["time"].shape == batch["x"].shape[:1]


def test_splits_share_no_source(built):
    case, _, dm = built
    sources = {split: case.sources(dm.datasets[split], split) for split in SPLITS}
    assert all(sources.values()), {k: len(v) for k, v in sources.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not sources[a] & sources[b], (a, b)
