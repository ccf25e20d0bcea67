"""stpred-forecast: weather grids from the real ERA5 UK file, TaxiBJ-layout flow files, Navier-Stokes arrays.

Checkpoints are built without training (random weights) around metadata produced by the real datamodules: the
WeatherBench datamodule configured as ``configs/data/era5_uk.yaml`` on the shared ERA5 file, the TaxiBJ datamodule on
synthetic ST-ResNet ``.h5`` files written here, and the Navier-Stokes datamodule on a few solver trajectories. Each
forecast is checked against :meth:`Predictor.predict` on an input window the test selects itself.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import h5py
import hydra
import matplotlib.image
import numpy as np
import pytest
import torch
import xarray as xr
from _helpers import run_module
from _hydra import compose_config

import stpred
import stpred.apps.forecast
from stpred.apps._grid_io import parse_time
from stpred.apps.forecast import main
from stpred.checkpoint import load_predictor
from stpred.datamodules.navier_stokes import NavierStokesDataModule
from stpred.datamodules.taxibj import TaxiBJDataModule
from stpred.datamodules.weatherbench import WeatherBenchDataModule
from stpred.errors import UserError

HOUR = np.timedelta64(1, "h")
SLOT = np.timedelta64(30, "m")
SMALL_SIMVP = {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2}
SMALL_FNO = {"modes": 4, "width": 8, "depth": 1}
UK_LAST = np.datetime64("2019-03-31T23:00", "ns")


pytestmark = pytest.mark.usefixtures("one_thread")


def save_checkpoint(path: Path, name: str, kwargs: dict, meta: dict, **target: int) -> Path:
    """A checkpoint as stpred-train writes it, with freshly initialised weights."""
    target = target or {"out_frames": int(meta["out_frames"])}
    net = stpred.create_model(name, in_shape=tuple(meta["in_shape"]), **target, **kwargs)
    hparams = {"model": {"name": name, "kwargs": kwargs}, "data": meta}
    state = {"net." + k: v for k, v in net.state_dict().items()}
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path


def run_main(args: list[str | Path], capsys) -> tuple[str, str]:
    main([str(a) for a in args])
    captured = capsys.readouterr()
    return captured.out, captured.err


def run_failing(args: list[str | Path], capsys) -> str:
    """The one stderr line of a run that must end with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stpred-forecast: error: "), err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- weather: the real ERA5 file ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uk_path(shared_data) -> Path:
    return shared_data / "weather" / "era5_t2m_2019-03_uk.nc"


@pytest.fixture(scope="module")
def uk_meta(shared_data) -> dict:
    cfg = compose_config("train", ["data=era5_uk", f"paths.data_dir={shared_data}"])
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    return dm.metadata()


@pytest.fixture(scope="module")
def uk_ckpt(uk_meta, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "era5_simvpv2.ckpt", "simvpv2", SMALL_SIMVP, uk_meta)


@pytest.fixture(scope="module")
def uk_predictor(uk_ckpt):
    return load_predictor(uk_ckpt)


def uk_window(uk_path: Path, init: np.datetime64) -> np.ndarray:
    """The 12 hourly t2m frames ending at ``init`` on the top-left 32 x 48 block: ``[12, 1, 32, 48]`` in K."""
    with xr.open_dataset(uk_path) as ds:
        block = ds["t2m"].sel(time=slice(init - 11 * HOUR, init)).isel(latitude=slice(0, 32), longitude=slice(0, 48))
        assert block.sizes["time"] == 12
        return block.to_numpy()[:, None].astype(np.float32)


def expected_forecast(predictor, window: np.ndarray) -> np.ndarray:
    return predictor.predict(torch.from_numpy(window)).numpy()


def test_default_forecast_is_the_last_window_as_cf_netcdf(
    uk_ckpt, uk_path, uk_predictor, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    out_text, _ = run_main(["--ckpt", uk_ckpt, uk_path], capsys)
    out = tmp_path / "era5_t2m_2019-03_uk_forecast.nc"
    with xr.open_dataset(out) as ds, xr.open_dataset(uk_path) as src:
        assert dict(ds.sizes) == {"init_time": 1, "lead_time": 12, "latitude": 32, "longitude": 48}
        assert list(ds.data_vars) == ["t2m"]
        assert ds["t2m"].dims == ("init_time", "lead_time", "latitude", "longitude")
        assert ds["t2m"].attrs["units"] == "K" and ds["t2m"].attrs["long_name"] == "2 metre temperature"
        np.testing.assert_array_equal(ds["latitude"].values, src["latitude"].values[:32])
        np.testing.assert_array_equal(ds["longitude"].values, src["longitude"].values[:48])
        assert ds["latitude"].attrs["units"] == "degrees_north" and ds["longitude"].attrs["units"] == "degrees_east"
        assert ds["init_time"].values.tolist() == [UK_LAST.astype(int)]
        np.testing.assert_array_equal(ds["lead_time"].values, np.arange(1, 13) * HOUR)
        np.testing.assert_array_equal(ds["valid_time"].values[0], UK_LAST + np.arange(1, 13) * HOUR)
        assert ds.attrs["model"] == "simvpv2" and ds.attrs["checkpoint"] == str(uk_ckpt.resolve())
        assert ds.attrs["stpred_version"] == stpred.__version__ and ds.attrs["created_by"] == "stpred-forecast"
        assert ds.attrs["dataset"] == "era5_uk" and ds.attrs["input"] == str(uk_path.resolve())
        written = ds["t2m"].values[0]
    expected = expected_forecast(uk_predictor, uk_window(uk_path, UK_LAST))[:, 0]
    np.testing.assert_allclose(written, expected, rtol=0, atol=1e-5)
    assert 240 < written.min() < written.max() < 320  # kelvin, not normalised values
    assert "2019-03-31T23:00" in out_text and "+1h .. +12h (12)" in out_text and "t2m [K]" in out_text
    assert str(out) in out_text and leftovers(tmp_path) == []


def test_init_time_selects_the_window_ending_there_and_plots(uk_ckpt, uk_path, uk_predictor, tmp_path, capsys):
    out = tmp_path / "uk_10th.nc"
    init = np.datetime64("2019-03-10T05:00", "ns")
    run_main(["--ckpt", uk_ckpt, uk_path, "--init-time", "2019-03-10T05:00", "--out", out, "--plot"], capsys)
    with xr.open_dataset(out) as ds:
        written = ds["t2m"].values[0]
        assert ds["init_time"].values[0] == init
        np.testing.assert_array_equal(ds["valid_time"].values[0], init + np.arange(1, 13) * HOUR)
    expected = expected_forecast(uk_predictor, uk_window(uk_path, init))[:, 0]
    np.testing.assert_allclose(written, expected, rtol=0, atol=1e-5)
    other = expected_forecast(uk_predictor, uk_window(uk_path, init + HOUR))[:, 0]
    assert np.abs(written - other).max() > 1e-3  # the window matters: one hour later forecasts differently
    image = matplotlib.image.imread(tmp_path / "uk_10th.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50  # maps and a colour bar, not a blank page
    assert leftovers(tmp_path) == []


def drawn_colours(fig, ax, png: Path, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``[len(ys), len(xs), 3]`` the colours of the PNG ``fig`` at the plot coordinates ``(x, y)`` of ``ax``."""
    fig.savefig(png, format="png", dpi=fig.dpi)
    page = matplotlib.image.imread(png)[..., :3]
    gx, gy = np.meshgrid(xs, ys)
    points = ax.transData.transform(np.stack([gx.ravel(), gy.ravel()], axis=1))
    cols, rows = np.floor(points[:, 0]).astype(int), np.floor(page.shape[0] - points[:, 1]).astype(int)
    return page[rows, cols].reshape(len(ys), len(xs), 3)


def mapped(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    return matplotlib.colormaps[cmap](np.clip((values - vmin) / (vmax - vmin), 0, 1))[..., :3]


@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_plot_draws_the_era5_input_north_up_on_a_kelvin_scale(
    order, uk_ckpt, uk_path, shared_data, tmp_path, tmp_path_factory
):
    init = "2019-03-10T05:00"
    ckpt, source = uk_ckpt, uk_path
    if order == "ascending":  # the same file with rows stored south to north, and a checkpoint trained on it
        source = tmp_path_factory.mktemp("asc") / "uk_ascending.nc"
        with xr.open_dataset(uk_path) as ds:
            ds.load().isel(latitude=slice(None, None, -1)).to_netcdf(source)
        cfg = compose_config("train", ["data=era5_uk", f"paths.data_dir={shared_data}", f"data.path={source}"])
        dm = hydra.utils.instantiate(cfg.data)
        dm.setup()
        assert dm.metadata()["latitude_order"] == "ascending"
        ckpt = save_checkpoint(tmp_path / "asc.ckpt", "simvpv2", SMALL_SIMVP, dm.metadata())
    result, _ = stpred.apps._forecasting.run_forecast(
        ckpt, source, init_time=init, out=tmp_path / "uk.nc", device="cpu"
    )
    fig, axes = stpred.apps._forecasting.forecast_figure(result)
    ax = axes[(0, f"input {init}")]
    norm = ax.images[0].norm
    assert 260 < norm.vmin < norm.vmax < 295 and norm.vmax - norm.vmin > 3  # kelvin, not symmetric about zero
    assert ax.images[0].cmap.name == "viridis"
    meta = load_predictor(ckpt).metadata
    lat, lon = np.asarray(meta["latitude"]), np.asarray(meta["longitude"])
    with xr.open_dataset(source) as ds:
        truth = ds["t2m"].sel(time=np.datetime64(init, "ns"), latitude=lat, longitude=lon).to_numpy()
    got = drawn_colours(fig, ax, tmp_path / "uk.png", lon, lat)
    np.testing.assert_allclose(got, mapped(truth, "viridis", norm.vmin, norm.vmax), atol=2.5 / 255)
    top = ax.transData.transform((lon[0], lat.max()))[1]
    assert top > ax.transData.transform((lon[0], lat.min()))[1]  # the northern row is drawn higher
    change = axes[(0, "+12h - input")]
    assert change.images[0].cmap.name == "RdBu_r" and change.images[0].norm.vmin == -change.images[0].norm.vmax
    assert "t2m [K]" in {a.get_ylabel() for a in fig.axes}


def test_iso_times_with_a_zone_are_read_as_utc():
    assert parse_time("2019-03-10T06:00+01:00") == np.datetime64("2019-03-10T05:00", "ns")
    with pytest.raises(UserError, match="not an ISO date-time"):
        parse_time("yesterday at noon")


@pytest.mark.parametrize(
    ("init", "needles"),
    [
        ("2019-04-02T00:00", ["outside", "2019-03-01T00:00 .. 2019-03-31T23:00"]),
        ("2019-03-01T05:00", ["only 6 of the 12 input stamps", "pick a later --init-time"]),
        ("2019-03-10T05:30", ["2019-03-10T05:30 is not a time stamp"]),
    ],
)
def test_init_time_errors_leave_an_existing_output_untouched(uk_ckpt, uk_path, tmp_path, capsys, init, needles):
    out = tmp_path / "kept.nc"
    out.write_bytes(b"an earlier forecast")
    line = run_failing(["--ckpt", uk_ckpt, uk_path, "--init-time", init, "--out", out], capsys)
    assert all(n in line for n in needles), line
    assert out.read_bytes() == b"an earlier forecast" and leftovers(tmp_path) == []


def _uk_variant(uk_path: Path, folder: Path, change: str) -> Path:
    """Two days of the real file, altered: a dropped hour, a shifted grid or a renamed variable."""
    with xr.open_dataset(uk_path) as ds:
        part = ds[["t2m"]].sel(time=slice("2019-03-30", "2019-03-31")).load()
    if change == "gap":
        part = part.drop_sel(time=np.datetime64("2019-03-31T20:00", "ns"))
    elif change == "grid":
        part = part.assign_coords(longitude=part["longitude"] + 0.1)
    elif change == "name":
        part = part.rename({"t2m": "temp"})
    path = folder / f"uk_{change}.nc"
    part.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ("gap", ["has no stamp 2019-03-31T20:00", "evenly spaced"]),
        ("grid", ["grid mismatch", "longitude -10..1.75 (48 points)", "-9.9..2.1 (49 points)"]),
        ("name", ["variable 't2m' not in", "available: ['temp']", "['t2m']"]),
    ],
)
def test_input_that_does_not_fit_the_checkpoint_is_one_line(uk_ckpt, uk_path, tmp_path, capsys, change, needles):
    path = _uk_variant(uk_path, tmp_path, change)
    line = run_failing(["--ckpt", uk_ckpt, path, "--out", tmp_path / "out.nc"], capsys)
    assert all(n in line for n in needles), line
    assert "data." not in line  # no training-config advice
    assert not (tmp_path / "out.nc").exists() and leftovers(tmp_path) == []


def _uk_layout(uk_path: Path, folder: Path, layout: str) -> Path:
    """Two days of the real file as a WeatherBench-1 folder (``lat``/``lon``) or a WeatherBench-2 Zarr store
    (long names, ``(time, longitude, latitude)``)."""
    with xr.open_dataset(uk_path) as ds:
        part = ds[["t2m"]].sel(time=slice("2019-03-30", "2019-03-31")).load()
    if layout == "wb1":
        (folder / "2m_temperature").mkdir()
        part.rename({"latitude": "lat", "longitude": "lon"}).to_netcdf(
            folder / "2m_temperature" / "2m_temperature_2019_0.25deg.nc"
        )
        return folder
    store = folder / "uk.zarr"
    part.rename({"t2m": "2m_temperature"}).transpose("time", "longitude", "latitude").to_zarr(
        store, zarr_format=2, consolidated=True
    )
    return store


@pytest.mark.parametrize("layout", ["wb1", "zarr"])
def test_weatherbench_folders_and_zarr_stores_read_like_the_file(
    uk_ckpt, uk_path, uk_predictor, tmp_path, capsys, layout
):
    source = _uk_layout(uk_path, tmp_path, layout)
    out = tmp_path / "layout.nc"
    init = np.datetime64("2019-03-31T20:00", "ns")
    run_main(["--ckpt", uk_ckpt, source, "--init-time", "2019-03-31T20:00", "--out", out], capsys)
    with xr.open_dataset(out) as ds:
        assert ds["init_time"].values[0] == init
        written = ds["t2m"].values[0]  # named as in the checkpoint's source file
    expected = expected_forecast(uk_predictor, uk_window(uk_path, init))[:, 0]
    np.testing.assert_allclose(written, expected, rtol=0, atol=1e-5)


def test_channels_at_pressure_levels_share_a_level_dimension(tmp_path, capsys):
    rng = np.random.default_rng(3)
    times = np.datetime64("2020-01-01T00", "ns") + np.arange(48) * 6 * HOUR
    lat, lon, levels = np.linspace(60.0, 42.5, 8), np.linspace(0.0, 26.25, 8), [500.0, 850.0]
    temperature = 250 + 10 * rng.standard_normal((48, 2, 8, 8))
    ds = xr.Dataset(
        {
            "t": (("time", "level", "latitude", "longitude"), temperature, {"units": "K", "long_name": "Temperature"}),
            "t2m": (("time", "latitude", "longitude"), 280 + rng.standard_normal((48, 8, 8)), {"units": "K"}),
        },
        coords={"time": times, "level": levels, "latitude": lat, "longitude": lon},
        attrs={"title": "synthetic test data (stpred tests)"},
    )
    ds.to_netcdf(tmp_path / "levels.nc")
    splits = {
        "train": ["2020-01-01", "2020-01-06"],
        "val": ["2020-01-07", "2020-01-09"],
        "test": ["2020-01-10", "2020-01-12"],
    }
    dm = WeatherBenchDataModule(
        path=tmp_path / "levels.nc", variables=[{"name": "t", "levels": levels}, "t2m"], splits=splits, t_in=3, t_out=2
    )
    dm.setup()
    ckpt = save_checkpoint(tmp_path / "levels.ckpt", "fno2d", SMALL_FNO, dm.metadata())
    run_main(["--ckpt", ckpt, tmp_path / "levels.nc", "--out", tmp_path / "out.nc"], capsys)
    window = np.concatenate([temperature[-3:], ds["t2m"].values[-3:, None]], axis=1).astype(np.float32)
    expected = load_predictor(ckpt).predict(torch.from_numpy(window)).numpy()
    with xr.open_dataset(tmp_path / "out.nc") as out:
        assert out["t"].dims == ("init_time", "lead_time", "level", "latitude", "longitude")
        assert out["level"].values.tolist() == levels and out["t"].attrs["long_name"] == "Temperature"
        assert out["t2m"].dims == ("init_time", "lead_time", "latitude", "longitude")
        np.testing.assert_array_equal(out["lead_time"].values, np.array([6, 12]) * HOUR)
        np.testing.assert_allclose(out["t"].values[0], expected[:, :2], rtol=0, atol=1e-4)
        np.testing.assert_allclose(out["t2m"].values[0], expected[:, 2], rtol=0, atol=1e-4)


def test_a_classification_checkpoint_is_sent_to_stpred_demo(tmp_path, capsys):
    meta = {
        "dataset": "kinetics",
        "task": "classify",
        "in_shape": [4, 3, 16, 16],
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
    }
    ckpt = save_checkpoint(tmp_path / "cls.ckpt", "simvpv2", SMALL_SIMVP, meta, num_classes=3)
    np.save(tmp_path / "clip.npy", np.zeros((4, 3, 16, 16), np.float32))
    line = run_failing(["--ckpt", ckpt, tmp_path / "clip.npy", "--out", tmp_path / "x.nc"], capsys)
    assert "classification checkpoint" in line and "stpred-demo" in line


@pytest.mark.parametrize("case", ["missing input", "corrupt checkpoint"])
def test_console_errors_are_one_line_with_exit_code_2(uk_ckpt, uk_path, tmp_path, case):
    out = tmp_path / "kept.nc"
    out.write_bytes(b"an earlier forecast")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_text("not a checkpoint")
    args, needles = {
        "missing input": (
            ["--ckpt", uk_ckpt, tmp_path / "missing.nc", "--out", out],
            ["input not found", "missing.nc"],
        ),
        "corrupt checkpoint": (["--ckpt", corrupt, uk_path, "--out", out], ["cannot read checkpoint", "corrupt.ckpt"]),
    }[case]
    result = run_module("stpred.apps.forecast", *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("stpred-forecast: error: ") and all(n in lines[0] for n in needles), lines[0]
    assert result.stdout == "" and out.read_bytes() == b"an earlier forecast" and leftovers(tmp_path) == []


# -- grid flows: ST-ResNet files ---------------------------------------------------------------------------------------
def flow_stamps(first: dt.date, days: int) -> list[str]:
    return [f"{first + dt.timedelta(days=d):%Y%m%d}{s:02d}" for d in range(days) for s in range(1, 49)]


def write_flows(path: Path, stamps: list[str], data: np.ndarray) -> Path:
    """An ST-ResNet grid-flow file: float64 ``data`` (T, C, H, W) and bytes ``date`` (T,)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data.astype(np.float64))
        f.create_dataset("date", data=np.array([s.encode() for s in stamps]))
    return path


@pytest.fixture(scope="module", params=["global", "channel"])
def flows(request, tmp_path_factory) -> dict:
    """A training file (5 days), its datamodule metadata, a checkpoint, and a later day with larger flows."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("flows")
    train_stamps = flow_stamps(dt.date(2016, 3, 1), 5)
    train = rng.uniform(10.0, 500.0, (len(train_stamps), 2, 16, 16))
    train[:, 1] *= 0.5  # outflow smaller, so per-channel extremes differ from the global ones
    write_flows(root / "BJ16_train.h5", train_stamps, train)
    dm = TaxiBJDataModule(root, files="BJ16_train.h5", test_days=1, val_days=1, scaling=request.param)
    dm.setup()
    meta = dm.metadata()
    new_stamps = flow_stamps(dt.date(2016, 3, 8), 1)
    new = rng.uniform(0.0, 1500.0, (len(new_stamps), 2, 16, 16))
    return {
        "meta": meta,
        "ckpt": save_checkpoint(root / f"taxibj_{request.param}.ckpt", "simvpv2", SMALL_SIMVP, meta),
        "input": write_flows(root / "BJ16_new.h5", new_stamps, new),
        "stamps": new_stamps,
        "data": new,
    }


def expected_counts(flows: dict, end_stamp: str) -> np.ndarray:
    """Scale the 4 slots ending at ``end_stamp`` with the training extremes, predict, scale back: ``[4, 2, H, W]``."""
    end = flows["stamps"].index(end_stamp)
    window = flows["data"][end - 3 : end + 1]
    low = np.asarray(flows["meta"]["flow_min"], dtype=np.float64).reshape(-1, 1, 1)
    high = np.asarray(flows["meta"]["flow_max"], dtype=np.float64).reshape(-1, 1, 1)
    scaled = ((window - low) / (high - low)).astype(np.float32)
    predicted = load_predictor(flows["ckpt"]).predict(torch.from_numpy(scaled)).numpy().astype(np.float64)
    return predicted * (high - low) + low


@pytest.mark.parametrize(
    ("init", "stamp", "start"),
    [
        (None, "2016030848", "2016-03-08T23:30"),
        ("2016-03-08T10:30", "2016030822", "2016-03-08T10:30"),
        ("2016030822", "2016030822", "2016-03-08T10:30"),
    ],
)
def test_flow_forecast_is_in_counts_scaled_as_in_training(flows, tmp_path, capsys, init, stamp, start):
    out = tmp_path / "flows.nc"
    run_main(["--ckpt", flows["ckpt"], flows["input"], "--out", out, *(["--init-time", init] if init else [])], capsys)
    expected = expected_counts(flows, stamp)
    with xr.open_dataset(out) as ds:
        assert list(ds.data_vars) == ["inflow", "outflow"]
        assert ds["inflow"].dims == ("init_time", "lead_time", "row", "col")
        assert ds["inflow"].attrs["units"] == "vehicles per slot"
        init_time = np.datetime64(start, "ns")
        assert ds["init_time"].values[0] == init_time
        np.testing.assert_array_equal(ds["lead_time"].values, np.arange(1, 5) * SLOT)
        np.testing.assert_array_equal(ds["valid_time"].values[0], init_time + np.arange(1, 5) * SLOT)
        written = np.stack([ds["inflow"].values[0], ds["outflow"].values[0]], axis=1)
    np.testing.assert_allclose(written, expected, rtol=1e-6, atol=1e-3)
    assert np.abs(written).max() > 5  # counts, not [0, 1] values


def test_flow_window_needs_its_slots(flows, tmp_path, capsys):
    line = run_failing(["--ckpt", flows["ckpt"], flows["input"], "--init-time", "2016030802"], capsys)
    assert "only 2 of the 4 input stamps" in line and "2016-03-08T00:30 (2016030802)" in line
    line = run_failing(["--ckpt", flows["ckpt"], flows["input"], "--init-time", "2016-03-08T10:40"], capsys)
    assert "not the start of a 30-minute slot" in line


# -- any other forecaster: Navier-Stokes arrays -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def vorticity(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ns")
    dm = NavierStokesDataModule(
        root, resolution=16, n_train=2, n_val=1, n_test=1, t_in=4, t_out=3, device="cpu", progress=False
    )
    dm.setup()
    meta = dm.metadata()
    item = dm.datasets["test"][0]
    frames = torch.cat([item["x"], item["y"]]).numpy() * meta["std"][0] + meta["mean"][0]  # [7, 1, 16, 16]
    np.save(root / "vorticity.npy", frames)
    return {"ckpt": save_checkpoint(root / "fno2d.ckpt", "fno2d", SMALL_FNO, meta), "frames": frames, "root": root}


def test_npy_forecast_uses_the_last_t_in_frames(vorticity, tmp_path, capsys):
    out = tmp_path / "ns.nc"
    run_main(["--ckpt", vorticity["ckpt"], vorticity["root"] / "vorticity.npy", "--out", out, "--plot"], capsys)
    expected = load_predictor(vorticity["ckpt"]).predict(torch.from_numpy(vorticity["frames"][-4:])).numpy()
    with xr.open_dataset(out) as ds:
        assert ds["forecast"].dims == ("lead_time", "channel", "y", "x")
        assert ds["channel"].values.tolist() == ["vorticity"] and ds["lead_time"].values.tolist() == [1, 2, 3]
        assert ds["forecast"].attrs["units"] == "1" and ds.attrs["model"] == "fno2d"
        np.testing.assert_allclose(ds["forecast"].values, expected, rtol=0, atol=1e-5)
    first = load_predictor(vorticity["ckpt"]).predict(torch.from_numpy(vorticity["frames"][:4])).numpy()
    assert np.abs(expected - first).max() > 1e-4  # the first frames would forecast differently
    assert (tmp_path / "ns.png").stat().st_size > 1000


def test_plot_of_vorticity_is_diverging_about_zero(vorticity, tmp_path):
    npy = vorticity["root"] / "vorticity.npy"
    result, _ = stpred.apps._forecasting.run_forecast(vorticity["ckpt"], npy, out=tmp_path / "ns.nc", device="cpu")
    fig, axes = stpred.apps._forecasting.forecast_figure(result)
    ax = axes[(0, "input")]
    norm = ax.images[0].norm
    assert ax.images[0].cmap.name == "RdBu_r" and norm.vmin == -norm.vmax and 0 < norm.vmax < 10
    last = vorticity["frames"][-1, 0]  # [16, 16], rows as stored (no latitude)
    rows = cols = np.arange(16)
    got = drawn_colours(fig, ax, tmp_path / "ns.png", cols, rows)
    np.testing.assert_allclose(got, mapped(last, "RdBu_r", norm.vmin, norm.vmax), atol=2.5 / 255)


def test_npy_errors(vorticity, tmp_path, capsys):
    short = tmp_path / "short.npy"
    np.save(short, vorticity["frames"][:3])
    line = run_failing(["--ckpt", vorticity["ckpt"], short], capsys)
    assert "shape (3, 1, 16, 16)" in line and "[T >= 4, 1, 16, 16]" in line
    full = vorticity["root"] / "vorticity.npy"
    line = run_failing(["--ckpt", vorticity["ckpt"], full, "--init-time", "2019-03-01T00:00"], capsys)
    assert "--init-time needs time stamps" in line


def test_a_nan_where_training_had_none_is_filled_said_once_and_the_forecast_stays_finite(vorticity, tmp_path, capsys):
    frames = vorticity["frames"].copy()
    frames[-2, 0, 3, 5] = np.nan  # the Navier-Stokes data have no missing values
    np.save(tmp_path / "holes.npy", frames)
    out = tmp_path / "holes.nc"
    _, err = run_main(["--ckpt", vorticity["ckpt"], tmp_path / "holes.npy", "--out", out], capsys)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stpred-forecast: warning: "), err
    assert "holds 1 NaN value where the training data had none" in lines[0]
    assert "frame 2, channel 0, row 3, column 5" in lines[0]
    predictor = load_predictor(vorticity["ckpt"])
    filled = frames[-4:].copy()
    filled[np.isnan(filled)] = predictor.metadata["mean"][0]  # the training mean
    expected = predictor.predict(torch.from_numpy(filled)).numpy()
    with xr.open_dataset(out) as ds:
        values = ds["forecast"].values
        assert "stpred_unexpected_nan" in ds["forecast"].attrs
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-5)


def test_predict_takes_integer_input_as_float(vorticity):
    predictor = load_predictor(vorticity["ckpt"])
    x = torch.randint(-3, 4, (2, 4, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64
    got = predictor.predict(x)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 1, 16, 16)
    torch.testing.assert_close(got, predictor.predict(x.float()), rtol=0, atol=0)
    single = x[0].numpy().astype(np.int32)  # one sequence [T_in, C, H, W] from numpy
    torch.testing.assert_close(predictor.predict(single), predictor.predict(x[0].float()), rtol=0, atol=0)


def test_predict_fills_an_unexpected_nan_with_one_warning(vorticity):
    predictor = load_predictor(vorticity["ckpt"])
    x = torch.from_numpy(vorticity["frames"][-4:].copy())
    x[1, 0, 7, 2] = float("nan")
    with pytest.warns(UserWarning) as caught:
        got = predictor.predict(x)
    assert len(caught) == 1 and "holds 1 NaN value where the training data had none" in str(caught[0].message)
    assert "frame 1, channel 0, row 7, column 2" in str(caught[0].message)
    assert torch.isfinite(got).all()
