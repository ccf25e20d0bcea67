"""TaxiBJDataModule: ST-ResNet HDF5 files, OpenSTL's npz, windows, chronological splits, scaling, metadata, errors.

Every file here is synthetic, written by the tests in the exact raw layouts: ST-ResNet ``.h5`` with float64 ``data``
``(T, C, H, W)`` and bytes ``date`` ``YYYYMMDDSS`` (two "years", a missing slot and a missing day), a BikeNYC-like
16x8 hourly file, and OpenSTL's ``dataset.npz`` (``X_train, Y_train, X_test, Y_test`` in [-1, 1]).

Frames carry their own identity: pixel ``(0, 0, 0)`` of frame ``k`` (in the test's chronological list of stamps) is
``SIGNATURE_BASE + SIGNATURE_STEP * k``, so a window's frames are traced back to their stamps through the values
alone, independently of the datamodule's bookkeeping.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _datafiles import assert_one_line, flow_stamps, write_flow_h5
from _hydra import compose_config

from stpred.apps.train import train
from stpred.datamodules.base import METADATA_KEYS
from stpred.datamodules.taxibj import TaxiBJDataModule, format_stamp, load_flow_series, parse_stamps
from stpred.errors import UserError

SIGNATURE_BASE, SIGNATURE_STEP = 20.0, 0.2
LOW, HIGH = 10.0, 500.0  # raw values before the test period
TEST_LOW, TEST_HIGH = 0.0, 1500.0  # the test period's, so whole-data extremes differ from the training ones
MISSING_SLOT = "2016030317"
MISSING_DAY = dt.date(2016, 3, 5)


def stamps_for(first: dt.date, days: int, slots_per_day: int = 48, skip: frozenset[str] = frozenset()) -> list[str]:
    out = flow_stamps(first, days, slots_per_day)
    return [s for s in out if s not in skip and dt.datetime.strptime(s[:8], "%Y%m%d").date() != MISSING_DAY]


def stamp_time(stamp: str, slots_per_day: int = 48) -> dt.datetime:
    minutes = 24 * 60 // slots_per_day
    return dt.datetime.strptime(stamp[:8], "%Y%m%d") + dt.timedelta(minutes=minutes * (int(stamp[8:]) - 1))


def flows(rng: np.random.Generator, stamps: list[str], first_index: int, grid=(2, 32, 32), test_from=None):
    """Random flows; frames on or after ``test_from`` are drawn from a wider range; pixel (0,0,0) is the signature."""
    data = rng.uniform(LOW, HIGH, size=(len(stamps), *grid))
    if test_from is not None:
        late = np.array([stamp_time(s).date() >= test_from for s in stamps])
        data[late] = rng.uniform(TEST_LOW, TEST_HIGH, size=(late.sum(), *grid))
    data[:, 0, 0, 0] = SIGNATURE_BASE + SIGNATURE_STEP * (first_index + np.arange(len(stamps)))
    return data


@pytest.fixture(scope="module")
def taxibj(tmp_path_factory):
    """Two synthetic "years": BJ15 (4 days) and BJ16 (35 days, slot 2016030317 and the day 2016-03-05 missing)."""
    rng = np.random.default_rng()
    root = tmp_path_factory.mktemp("taxibj")
    s15 = stamps_for(dt.date(2015, 3, 1), 4)
    s16 = stamps_for(dt.date(2016, 3, 1), 35, skip=frozenset({MISSING_SLOT}))
    last_day = dt.date(2016, 3, 1) + dt.timedelta(days=34)
    test_from = last_day - dt.timedelta(days=27)
    d15 = flows(rng, s15, 0)
    d16 = flows(rng, s16, len(s15), test_from=test_from)
    # BJ16 first on disk and in the listing order: the reader must sort by time, not by file.
    write_flow_h5(root / "BJ16_M32x32_T30_InOut.h5", s16, d16)
    write_flow_h5(root / "BJ15_M32x32_T30_InOut.h5", s15, d15)
    return {"root": root, "stamps": s15 + s16, "data": np.concatenate([d15, d16]), "test_from": test_from}


@pytest.fixture(scope="module")
def dm(taxibj) -> TaxiBJDataModule:
    module = TaxiBJDataModule(taxibj["root"], num_workers=0)
    module.setup("fit")
    return module


def window_stamps(dm: TaxiBJDataModule, split: str, index: int, stamps: list[str]) -> list[str]:
    """The stamps of a window's frames, read from the signature pixel of the de-scaled values."""
    sample = dm.datasets[split][index]
    frames = torch.cat([sample["x"], sample["y"]]).double().numpy()
    raw = frames[:, 0, 0, 0] * (dm.flow_max - dm.flow_min) + dm.flow_min
    k = (raw - SIGNATURE_BASE) / SIGNATURE_STEP
    np.testing.assert_allclose(k, np.round(k), atol=0.01)
    return [stamps[int(i)] for i in np.round(k)]


def expected_windows(stamps: list[str], length: int, slots_per_day: int = 48) -> list[str]:
    """First stamps of every run of ``length`` consecutive slots, by datetime arithmetic."""
    step = dt.timedelta(minutes=24 * 60 // slots_per_day)
    times = [stamp_time(s, slots_per_day) for s in stamps]
    return [
        stamps[i] for i in range(len(times) - length + 1) if times[i + length - 1] - times[i] == step * (length - 1)
    ]


# -- time stamps -----------------------------------------------------------------------------------------------------
def test_stamps_count_slots_across_midnight_and_round_trip():
    slots = parse_stamps([b"2016033147", b"2016033148", b"2016040101", "2016040102"], 48)
    assert np.diff(slots).tolist() == [1, 1, 1]
    assert [format_stamp(s, 48) for s in slots] == ["2016033147", "2016033148", "2016040101", "2016040102"]
    hourly = parse_stamps([b"2014123124", b"2015010101"], 24)
    assert np.diff(hourly).tolist() == [1]
    with pytest.raises(UserError) as err:
        parse_stamps([b"2016033149"], 48, "BJ16.h5")
    assert_one_line(err, "BJ16.h5", "2016033149", "data.slots_per_day=")


# -- windows and splits ----------------------------------------------------------------------------------------------
def test_windows_have_the_published_shape_and_batches_are_float32(dm):
    assert dm.in_shape == (4, 2, 32, 32) and dm.out_frames == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (16, 4, 2, 32, 32) and batch["y"].shape == (16, 4, 2, 32, 32)
    assert batch["x"].dtype == torch.float32 and batch["time"].shape == (16,) and batch["time"].dtype == torch.int64


def test_every_window_is_eight_consecutive_slots_and_all_such_runs_are_used(dm, taxibj):
    stamps = taxibj["stamps"]
    seen = []
    for split in ("train", "val", "test"):
        for i in range(len(dm.datasets[split])):
            got = window_stamps(dm, split, i, stamps)
            times = [stamp_time(s) for s in got]
            assert all(b - a == dt.timedelta(minutes=30) for a, b in zip(times, times[1:])), got
            # "time": Unix seconds of the first input frame's slot start, the naive stamp read as UTC
            expected = stamp_time(got[0]).replace(tzinfo=dt.timezone.utc).timestamp()
            assert dm.datasets[split][i]["time"].item() == expected
            seen.append((split, got))
    starts = [g[0] for _, g in seen]
    assert len(set(starts)) == len(starts)
    every = expected_windows(stamps, 8)
    # Windows dropped at the two split boundaries: at most 7 each; nothing else is lost.
    assert set(starts) <= set(every) and len(every) - 14 <= len(starts) < len(every)
    frames = {s for _, g in seen for s in g}
    assert MISSING_SLOT not in frames and not any(s.startswith("20160305") for s in frames)
    crossing = [g for _, g in seen if g[0][:8] != g[-1][:8]]
    assert any(g[-1].endswith("01") and g[-2].endswith("48") for g in crossing), "no window across midnight"


def test_splits_are_chronological_disjoint_and_test_is_the_last_28_days(dm, taxibj):
    stamps, test_from = taxibj["stamps"], taxibj["test_from"]
    frames = {}
    for split in ("train", "val", "test"):
        ws = [window_stamps(dm, split, i, stamps) for i in range(len(dm.datasets[split]))]
        frames[split] = sorted({stamp_time(s) for w in ws for s in w})
    assert frames["train"][-1] < frames["val"][0] and frames["val"][-1] < frames["test"][0]
    assert frames["test"][0] == dt.datetime.combine(test_from, dt.time())
    test_starts = [s for s in expected_windows(stamps, 8) if stamp_time(s).date() >= test_from]
    assert len(dm.datasets["test"]) == len(test_starts)
    n_val, n_train = len(dm.datasets["val"]), len(dm.datasets["train"])
    assert 0.07 < n_val / (n_val + n_train) < 0.13  # val_fraction 0.1 of the windows before the test period
    info = dm.metadata()["splits"]
    assert info["test"]["first_window"] == f"{test_from:%Y%m%d}01" and info["test"]["last_frame"] == stamps[-1]
    assert info["train"]["first_window"] == stamps[0] and info["val"]["windows"] == n_val


def test_val_days_sets_a_calendar_block_before_the_test_period(taxibj):
    module = TaxiBJDataModule(taxibj["root"], val_days=2, test_days=27)
    module.setup()
    val = [window_stamps(module, "val", i, taxibj["stamps"]) for i in range(len(module.datasets["val"]))]
    test_from = dt.date(2016, 4, 4) - dt.timedelta(days=26)
    days = {stamp_time(s).date() for w in val for s in w}
    assert days == {test_from - dt.timedelta(days=2), test_from - dt.timedelta(days=1)}
    assert len(val) == 2 * 48 - 7


def test_scaling_uses_the_training_period_only(dm, taxibj):
    stamps, data = taxibj["stamps"], taxibj["data"]
    val_start = stamp_time(dm.metadata()["splits"]["val"]["period_start"])
    train = data[[stamp_time(s) < val_start for s in stamps]]
    assert dm.flow_min == train.min() and dm.flow_max == train.max()
    assert data.min() < dm.flow_min and data.max() > 2 * dm.flow_max  # built to differ
    # Values are (v - min) / (max - min) with those extremes, in every split.
    sample = dm.datasets["test"][5]
    idx = stamps.index(window_stamps(dm, "test", 5, stamps)[0])
    expected = (data[idx : idx + 4] - train.min()) / (train.max() - train.min())
    np.testing.assert_allclose(sample["x"].numpy(), expected, rtol=1e-6, atol=1e-6)
    train_values = torch.stack([dm.datasets["train"][i]["x"] for i in range(0, len(dm.datasets["train"]), 7)])
    assert 0.0 <= float(train_values.min()) and float(train_values.max()) <= 1.0


def test_per_channel_scaling(taxibj):
    module = TaxiBJDataModule(taxibj["root"], scaling="channel")
    module.setup()
    meta = module.metadata()
    stamps, data = taxibj["stamps"], taxibj["data"]
    val_start = stamp_time(meta["splits"]["val"]["period_start"])
    train = data[[stamp_time(s) < val_start for s in stamps]]
    assert meta["flow_min"] == [float(train[:, c].min()) for c in range(2)]
    assert meta["flow_max"] == [float(train[:, c].max()) for c in range(2)]
    assert meta["flow_scale"] == pytest.approx([float(np.ptp(train[:, c])) for c in range(2)])


def test_drop_incomplete_days_removes_the_day_with_a_missing_slot(taxibj):
    module = TaxiBJDataModule(taxibj["root"], drop_incomplete_days=True)
    module.setup()
    full = TaxiBJDataModule(taxibj["root"])
    full.setup()
    days = {
        s[:8]
        for split in ("train", "val")
        for i in range(len(module.datasets[split]))
        for s in window_stamps(module, split, i, taxibj["stamps"])
    }
    assert "20160303" not in days and "20160302" in days and "20160304" in days
    assert len(module.datasets["train"]) + len(module.datasets["val"]) < len(full.datasets["train"]) + len(
        full.datasets["val"]
    )


def test_flip_mirrors_training_windows_only(taxibj):
    module = TaxiBJDataModule(taxibj["root"], flip=True)
    module.setup()
    plain = TaxiBJDataModule(taxibj["root"])
    plain.setup()
    ref = plain.datasets["train"][3]["x"]
    outcomes = set()
    for _ in range(40):
        x = module.datasets["train"][3]["x"]
        assert torch.equal(x, ref) or torch.equal(x, ref.flip(-1))
        outcomes.add(torch.equal(x, ref))
    assert outcomes == {True, False}
    for _ in range(10):
        assert torch.equal(module.datasets["val"][3]["x"], plain.datasets["val"][3]["x"])


# -- metadata --------------------------------------------------------------------------------------------------------
def test_metadata_is_plain_and_rebuilds_the_same_datamodule(dm, taxibj):
    meta = json.loads(json.dumps(dm.metadata()))
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["dataset"] == "taxibj" and meta["channels"] == ["inflow", "outflow"] and meta["time_step"] == "30min"
    assert meta["mean"] == [0.0, 0.0] and meta["std"] == [1.0, 1.0] and meta["data_range"] == 1.0
    assert meta["in_shape"] == [4, 2, 32, 32] and meta["out_frames"] == 4 and meta["pde"] is False
    assert meta["flow_scale"] == pytest.approx(meta["flow_max"] - meta["flow_min"])
    assert meta["source_files"] == ["BJ15_M32x32_T30_InOut.h5", "BJ16_M32x32_T30_InOut.h5"]
    rebuilt = TaxiBJDataModule.from_metadata(meta, root="/nonexistent")
    rebuilt.setup()
    again = json.loads(json.dumps(rebuilt.metadata()))
    assert again["init_args"].pop("root") == "/nonexistent" and meta["init_args"].pop("root") == str(taxibj["root"])
    assert again == meta
    for split in ("train", "val", "test"):
        assert torch.equal(rebuilt.datasets[split][7]["y"], dm.datasets[split][7]["y"])


# -- other grids -----------------------------------------------------------------------------------------------------
def test_bikenyc_like_hourly_16x8_files(tmp_path):
    rng = np.random.default_rng()
    s1 = stamps_for(dt.date(2014, 4, 1), 6, slots_per_day=24)
    s2 = stamps_for(dt.date(2014, 4, 7), 4, slots_per_day=24)
    d1, d2 = rng.uniform(0, 80, (len(s1), 2, 16, 8)), rng.uniform(0, 80, (len(s2), 2, 16, 8))
    # The second file repeats the first one's last day with other values: the first file's frames are kept.
    write_flow_h5(tmp_path / "NYC_a.h5", s1, d1)
    write_flow_h5(tmp_path / "NYC_b.h5", s1[-24:] + s2, np.concatenate([d1[-24:] + 1000.0, d2]))
    module = TaxiBJDataModule(
        tmp_path, files=["NYC_a.h5", "NYC_b.h5"], name="bikenyc", slots_per_day=24, test_days=3, val_days=2
    )
    module.setup()
    meta = module.metadata()
    assert module.in_shape == (4, 2, 16, 8) and meta["dataset"] == "bikenyc" and meta["time_step"] == "60min"
    assert meta["flow_max"] < 1000.0
    windows = [(ds, i) for ds in module.datasets.values() for i in range(len(ds))]
    assert len(windows) == 10 * 24 - 7 - 14
    for ds, i in windows:
        first = dt.datetime.fromtimestamp(ds[i]["time"].item(), dt.timezone.utc).replace(tzinfo=None)
        assert first >= dt.datetime(2014, 4, 1) and first + dt.timedelta(hours=7) <= dt.datetime(2014, 4, 10, 23)
    assert module.metadata()["splits"]["test"]["first_window"] == "2014040801"


# -- OpenSTL npz -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def npz_file(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng()
    arrays = {
        "X_train": rng.uniform(-1, 1, (60, 4, 2, 32, 32)),
        "Y_train": rng.uniform(-1, 1, (60, 4, 2, 32, 32)),
        "X_test": rng.uniform(-1, 1, (10, 4, 2, 32, 32)),
        "Y_test": rng.uniform(-1, 1, (10, 4, 2, 32, 32)),
    }
    path = tmp_path_factory.mktemp("taxibj_npz") / "dataset.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_npz_maps_to_unit_range_with_a_validation_split_apart_from_test(npz_file):
    path, arrays = npz_file
    module = TaxiBJDataModule(path.parent, npz="dataset.npz")
    module.setup()
    train, val, test = (module.datasets[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (60 - 6 - 7, 6, 10)
    np.testing.assert_allclose(train[0]["x"].numpy(), (arrays["X_train"][0] + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(val[0]["y"].numpy(), (arrays["Y_train"][54] + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(test[9]["x"].numpy(), (arrays["X_test"][9] + 1) / 2, rtol=1e-6)
    test_x = torch.stack([test[i]["x"] for i in range(len(test))])
    for i in range(len(val)):
        assert not (test_x == val[i]["x"]).flatten(1).all(1).any()
    assert {train[i]["index"] for i in range(len(train))}.isdisjoint({val[i]["index"] for i in range(len(val))})
    meta = json.loads(json.dumps(module.metadata()))
    assert meta["flow_min"] is None and meta["data_range"] == 1.0 and meta["source_files"] == ["dataset.npz"]
    assert meta["splits"]["val"]["rows"] == [54, 60] and meta["splits"]["test"]["array"] == "X_test/Y_test"
    rebuilt = TaxiBJDataModule.from_metadata(meta)
    rebuilt.setup()
    assert torch.equal(rebuilt.datasets["val"][2]["x"], val[2]["x"])


def test_npz_errors(tmp_path, npz_file):
    _, arrays = npz_file
    np.savez(tmp_path / "scaled.npz", **{**arrays, "X_train": arrays["X_train"] * 300})
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, npz="scaled.npz").setup()
    assert_one_line(err, "scaled.npz", "[-1, 1]")
    np.savez(tmp_path / "partial.npz", X_train=arrays["X_train"], Y_train=arrays["Y_train"])
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, npz="partial.npz").setup()
    assert_one_line(err, "partial.npz", "X_test", "Y_test")
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, npz="missing.npz").setup()
    assert_one_line(err, "missing.npz", "data.npz=")


# -- errors ----------------------------------------------------------------------------------------------------------
def test_missing_files_name_the_folder_and_the_options(tmp_path):
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path / "nowhere").setup()
    assert_one_line(err, str((tmp_path / "nowhere").resolve()), "BJ*_M32x32_T30_InOut.h5", "data.root=", "data.files=")
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, files=["BJ13_M32x32_T30_InOut.h5"]).setup()
    assert_one_line(err, "BJ13_M32x32_T30_InOut.h5", "data.files=")


def test_file_without_date_names_its_datasets(tmp_path):
    with h5py.File(tmp_path / "BJ14_M32x32_T30_InOut.h5", "w") as f:
        f.create_dataset("data", data=np.zeros((8, 2, 32, 32)))
        f.create_dataset("timestamps", data=np.zeros(8))
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path).setup()
    assert_one_line(err, "BJ14_M32x32_T30_InOut.h5", "'date'", "['data', 'timestamps']")


def test_grids_that_differ_between_years_are_refused(tmp_path):
    rng = np.random.default_rng()
    s = stamps_for(dt.date(2013, 7, 1), 1)
    write_flow_h5(tmp_path / "BJ13_M32x32_T30_InOut.h5", s, rng.uniform(0, 1, (48, 2, 32, 32)))
    write_flow_h5(tmp_path / "BJ14_M32x32_T30_InOut.h5", s, rng.uniform(0, 1, (48, 2, 16, 8)))
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path).setup()
    assert_one_line(err, "BJ14_M32x32_T30_InOut.h5", "(2, 16, 8)", "(2, 32, 32)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_flows_are_refused_with_count_stamp_and_cell(tmp_path, bad):
    """Min-max scaling has no mask: a NaN made flow_min/flow_max and every scaled frame NaN, silently."""
    rng = np.random.default_rng(3)
    s13, s14 = stamps_for(dt.date(2013, 7, 1), 2), stamps_for(dt.date(2014, 3, 1), 4)
    write_flow_h5(tmp_path / "BJ13_M32x32_T30_InOut.h5", s13, rng.uniform(0, 50, (len(s13), 2, 8, 8)))
    data = rng.uniform(0, 50, (len(s14), 2, 8, 8))
    data[150, 1, 6, 2] = bad  # 2014030407, in the test days: the training extremes alone would be finite
    data[180, 0, 0, 0] = bad
    write_flow_h5(tmp_path / "BJ14_M32x32_T30_InOut.h5", s14, data)
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, test_days=1, val_days=1).setup()
    kind = "0 NaN, 2 inf" if np.isinf(bad) else "2 NaN, 0 inf"
    assert_one_line(
        err, f"BJ14_M32x32_T30_InOut.h5: data holds 2 non-finite values ({kind}); first at frame 150 (date "
        "2014030407), channel 1, row 6, column 2 (data[150, 1, 6, 2]); min-max scaling has no mask: replace them in "
        "the file with finite flows, or leave the file out of data.files",
    )  # fmt: skip
    # Reading a file for a forecast is not training: load_flow_series keeps the values as they are by default.
    series = load_flow_series([tmp_path / "BJ14_M32x32_T30_InOut.h5"])
    assert np.array_equal(series.data[150, 1, 6, 2], bad, equal_nan=True)


def test_non_finite_npz_values_are_refused_and_a_constant_file_still_is(tmp_path, npz_file):
    _, arrays = npz_file
    y_test = arrays["Y_test"].copy()
    y_test[7, 3, 0, 31, 30] = -np.inf
    np.savez(tmp_path / "inf.npz", **{**arrays, "Y_test": y_test})
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, npz="inf.npz").setup()
    assert_one_line(err, "inf.npz: Y_test holds 1 non-finite value (0 NaN, 1 inf); first at window 7, frame 3, "
                    "channel 0, row 31, column 30 (Y_test[7, 3, 0, 31, 30])", "data.npz=null")  # fmt: skip
    stamps = stamps_for(dt.date(2015, 3, 1), 4)
    write_flow_h5(tmp_path / "BJ15_M32x32_T30_InOut.h5", stamps, np.full((len(stamps), 2, 8, 8), 3.0))
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(tmp_path, test_days=1, val_days=1).setup()
    assert_one_line(err, "the training frames are constant (3.0 .. 3.0); min-max scaling is undefined")


def test_too_few_windows_for_the_splits(taxibj):
    with pytest.raises(UserError) as err:
        TaxiBJDataModule(taxibj["root"], test_days=500).setup()
    assert_one_line(err, "train 0", "data.test_days")


# -- training end to end ---------------------------------------------------------------------------------------------
def test_train_app_fits_and_tests_simvpv2_on_taxibj(taxibj, tmp_path):
    overrides = [
        "data=taxibj",
        "model=simvpv2",
        f"data.root={taxibj['root']}",
        "data.num_workers=0",
        "model.kwargs.hid_S=8",
        "model.kwargs.hid_T=16",
        "model.kwargs.N_S=2",
        "model.kwargs.N_T=2",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"paths.output_dir={tmp_path}",
    ]
    results = train(compose_config("train", overrides))
    assert {"mse", "mae", "ssim", "psnr"} <= set(results)
    # An untrained net on noise targets that reach 3 on the training scale (TEST_HIGH / HIGH): mse of order 1 and
    # no structure to match.
    assert 0.01 < results["mse"] < 9.0 and results["mae"] < 3.0 and abs(results["ssim"]) < 0.2
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["data"]["dataset"] == "taxibj"
    scale = ckpt["hyper_parameters"]["data"]["flow_scale"]
    assert scale > 0
    # Errors are also reported in flow counts.
    assert results["mse_counts"] == pytest.approx(results["mse"] * scale**2, rel=1e-5)
    assert results["mae_counts"] == pytest.approx(results["mae"] * scale, rel=1e-5)
