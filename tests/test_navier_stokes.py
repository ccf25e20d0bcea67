"""NavierStokesDataModule: generation cache, splits, normalisation, batches, metadata and the FNO ``.mat`` reader.

The ``.mat`` fixtures are synthetic, written here in the exact layouts of the FNO files: MATLAB v7.3 (HDF5 with a
512-byte userblock and column-major, i.e. axis-reversed, datasets) and MATLAB v5 (``scipy.io.savemat``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from _datafiles import write_mat_v73

from stpred.datamodules import METADATA_KEYS
from stpred.datamodules import navier_stokes as ns
from stpred.datamodules.mat_io import read_mat_field
from stpred.datamodules.navier_stokes import NavierStokesDataModule
from stpred.errors import UserError
from stpred.physics.navier_stokes import NavierStokes2D, spectral_resize

SMALL = {
    "resolution": 16,
    "n_train": 6,
    "n_val": 2,
    "n_test": 3,
    "t_in": 3,
    "t_out": 2,
    "frame_dt": 0.5,
    "gen_batch_size": 4,
    "progress": False,
    "batch_size": 4,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> NavierStokesDataModule:
    dm = NavierStokesDataModule(tmp_path_factory.mktemp("ns"), device="cpu", **SMALL)
    dm.setup()
    return dm


def cache_frames(dm: NavierStokesDataModule) -> np.ndarray:
    with h5py.File(dm.cache_path, "r") as f:
        return f["u"][:]


def denormalised(dm: NavierStokesDataModule, split: str) -> np.ndarray:
    return dm.datasets[split].frames.double().numpy() * dm.std + dm.mean


# -- generation and cache ----------------------------------------------------------------------------------------
def test_cache_layout_and_contents(generated):
    dm = generated
    path = dm.cache_path
    assert path.parent == dm.root and path.suffix == ".h5" and "nu0.001" in path.name and "seed0" in path.name
    assert sorted(p.name for p in dm.root.iterdir()) == [path.name]  # no temporary file left behind
    with h5py.File(path, "r") as f:
        assert f["u"].shape == (11, 5, 16, 16) and f["u"].dtype == np.float32
        assert f["a"].shape == (11, 16, 16)
        np.testing.assert_allclose(f["t"][:], [0.5, 1.0, 1.5, 2.0, 2.5])
        assert f.attrs["viscosity"] == 1e-3 and f.attrs["n"] == 11 and f.attrs["scheme"] == "heun"
        assert f.attrs["dt"] == pytest.approx(0.05) and f.attrs["seed"] == 0
        assert json.loads(f.attrs["grf"]) == {"alpha": 2.5, "tau": 7.0}
        u, a = f["u"][:], f["a"][:]
    # Trajectory 7 is the solver run from its own seeded GRF draw.
    w0 = ns.trajectory_initial_condition(0, 7, 16)
    np.testing.assert_allclose(a[7], w0[0].numpy(), atol=1e-6)
    frames = NavierStokes2D(16, viscosity=1e-3).solve(w0, [0.5, 1.0, 1.5, 2.0, 2.5], progress=False)
    np.testing.assert_allclose(u[7], frames[0].numpy(), atol=1e-5)


def test_trajectories_do_not_depend_on_n_or_batching(generated, tmp_path):
    params = {**SMALL, "n_train": 2, "n_val": 1, "n_test": 1, "gen_batch_size": 3}
    dm = NavierStokesDataModule(tmp_path, device="cpu", **params)
    dm.prepare_data()
    assert dm.cache_path != generated.cache_path
    np.testing.assert_allclose(cache_frames(dm), cache_frames(generated)[:4], atol=1e-6)


def test_cache_reused_not_regenerated(generated, monkeypatch):
    before = generated.cache_path.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(ns, "generate_navier_stokes", lambda *a, **k: calls.append(1))
    dm = NavierStokesDataModule(generated.root, device="cpu", **SMALL)
    dm.prepare_data()
    dm.setup()
    assert calls == [] and generated.cache_path.stat().st_mtime_ns == before
    np.testing.assert_array_equal(dm.datasets["test"].frames.numpy(), generated.datasets["test"].frames.numpy())
    # A changed generation parameter is a different cache.
    other = NavierStokesDataModule(generated.root, device="cpu", **{**SMALL, "seed": 1})
    assert other.cache_path != generated.cache_path
    other.prepare_data()
    assert calls == [1]


def test_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    solve = NavierStokes2D.solve
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(NavierStokes2D, "solve", interrupted)
    dm = NavierStokesDataModule(tmp_path, device="cpu", **SMALL)
    with pytest.raises(KeyboardInterrupt):
        dm.setup()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(NavierStokes2D, "solve", solve)
    dm.setup()
    assert [p.name for p in tmp_path.iterdir()] == [dm.cache_path.name]


def test_finer_solver_grid_is_truncated(tmp_path):
    params = {**SMALL, "resolution": 12, "n_train": 1, "n_val": 1, "n_test": 1}
    dm = NavierStokesDataModule(tmp_path, solver_resolution=24, device="cpu", **params)
    dm.setup()
    assert dm.in_shape == (3, 1, 12, 12) and dm.dt == pytest.approx(1 / 24)
    w0 = ns.trajectory_initial_condition(0, 2, 24)
    fine = NavierStokes2D(24).solve(w0, [0.5, 1.0, 1.5, 2.0, 2.5], progress=False)
    expected = spectral_resize(torch.fft.rfft2(fine.double()), 24, 12)[0]
    np.testing.assert_allclose(cache_frames(dm)[2], expected.numpy(), atol=1e-5)


# -- splits, normalisation, batches, metadata ------------------------------------------------------------------------
def test_splits_are_disjoint_trajectories(generated):
    u = cache_frames(generated)
    splits = {s: denormalised(generated, s) for s in ("train", "val", "test")}
    np.testing.assert_allclose(splits["train"], u[:6], atol=1e-5)
    np.testing.assert_allclose(splits["val"], u[6:8], atol=1e-5)
    np.testing.assert_allclose(splits["test"], u[8:], atol=1e-5)
    first = np.concatenate([splits[s][:, 0] for s in ("train", "val", "test")])  # [11, H, W]
    distance = np.abs(first[:, None] - first[None]).max(axis=(-2, -1))
    assert (distance + np.eye(11) > 1e-3).all()


def test_normalisation_from_training_split_only(generated):
    u = cache_frames(generated).astype(np.float64)
    assert generated.mean == pytest.approx(u[:6].mean(), abs=1e-12)
    assert generated.std == pytest.approx(u[:6].std(), rel=1e-12)
    assert abs(generated.std - u.std()) > 1e-3 * u.std()
    train = generated.datasets["train"].frames.double()
    assert float(train.mean()) == pytest.approx(0.0, abs=1e-6) and float(train.std()) == pytest.approx(1.0, rel=1e-2)
    raw = NavierStokesDataModule(generated.root, device="cpu", normalize="none", **SMALL)
    raw.setup()
    assert raw.mean == 0.0 and raw.std == 1.0
    np.testing.assert_allclose(raw.datasets["val"].frames.numpy(), u[6:8], atol=1e-6)


def test_batches_and_windows(generated):
    batch = next(iter(generated.train_dataloader()))
    assert set(batch) == {"x", "y"}
    assert batch["x"].shape == (4, 3, 1, 16, 16) and batch["y"].shape == (4, 2, 1, 16, 16)
    assert batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.float32
    assert len(generated.datasets["test"]) == 3 and generated.in_shape == (3, 1, 16, 16) and generated.out_frames == 2
    item = generated.datasets["val"][1]
    frames = generated.datasets["val"].frames[1]
    assert torch.equal(item["x"][:, 0], frames[:3]) and torch.equal(item["y"][:, 0], frames[3:5])

    # The same 5-frame trajectories (same cache), cut into 2 -> 1 windows starting at frames 0, 1 and 2.
    sliding = NavierStokesDataModule(
        generated.root, device="cpu", windows="sliding", n_frames=5, **{**SMALL, "t_in": 2, "t_out": 1}
    )
    assert sliding.cache_path == generated.cache_path
    sliding.setup()
    assert len(sliding.datasets["train"]) == 6 * 3
    item = sliding.datasets["train"][3 * 4 + 2]  # trajectory 4, start 2
    assert torch.equal(item["x"][:, 0], sliding.datasets["train"].frames[4, 2:4])
    assert torch.equal(item["y"][:, 0], sliding.datasets["train"].frames[4, 4:5])
    # Sliding statistics use every frame of the training trajectories.
    assert sliding.mean == pytest.approx(cache_frames(generated)[:6].astype(np.float64).mean(), abs=1e-12)


def test_metadata_plain_and_complete(generated):
    meta = generated.metadata()
    assert set(METADATA_KEYS) <= set(meta)
    assert json.loads(json.dumps(meta)) == meta
    assert meta["dataset"] == "navier_stokes" and meta["task"] == "forecast" and meta["pde"] is True
    assert meta["channels"] == ["vorticity"] and meta["data_range"] is None
    assert meta["in_shape"] == [3, 1, 16, 16] and meta["out_frames"] == 2
    assert meta["mean"] == [generated.mean] and meta["std"] == [generated.std]
    assert meta["viscosity"] == 1e-3 and meta["resolution"] == [16, 16] and meta["frame_dt"] == 0.5
    assert meta["source"] == "generated" and meta["cache_file"] == generated.cache_path.name
    assert meta["solver"]["dt"] == pytest.approx(0.05) and meta["solver"]["seed"] == 0


# -- FNO .mat files ------------------------------------------------------------------------------------------------
N, S, T = 7, 6, 8


def fno_arrays() -> dict[str, np.ndarray]:
    """u[n, i, j, t] = 1000 n + 100 t + 10 i + j, so every axis is recognisable; a = u at t = 0 minus 1."""
    n, i, j, t = np.meshgrid(np.arange(N), np.arange(S), np.arange(S), np.arange(T), indexing="ij")
    u = (1000.0 * n + 100.0 * t + 10.0 * i + j).astype(np.float32)
    return {"a": u[..., 0] - 1, "u": u, "t": np.arange(1, T + 1, dtype=np.float64)[None, :] * 0.25}


@pytest.fixture(params=["v7.3", "v5"])
def mat_file(request, tmp_path) -> Path:
    arrays = fno_arrays()
    path = tmp_path / f"ns_V1e-3_N{N}_T{T}_{request.param}.mat"
    if request.param == "v7.3":
        write_mat_v73(path, arrays)
        assert h5py.is_hdf5(path)
    else:
        scipy.io.savemat(path, arrays)
        assert not h5py.is_hdf5(path)
    return path


def test_read_mat_fields_in_matlab_order(mat_file):
    arrays = fno_arrays()
    for name in ("a", "u"):
        np.testing.assert_array_equal(read_mat_field(mat_file, name), arrays[name])
    np.testing.assert_array_equal(read_mat_field(mat_file, "u", slice(2, 5)), arrays["u"][2:5])


def test_datamodule_reads_fno_file(mat_file, tmp_path):
    dm = NavierStokesDataModule(
        tmp_path / "unused", file=mat_file, n_train=3, n_val=2, n_test=2, t_in=3, t_out=4, batch_size=2
    )
    dm.prepare_data()
    dm.setup()
    assert not (tmp_path / "unused").exists()
    assert dm.in_shape == (3, 1, S, S) and dm.frame_dt == pytest.approx(0.25)
    u = fno_arrays()["u"].transpose(0, 3, 1, 2)  # [N, T, s, s]
    for split, rows in (("train", slice(0, 3)), ("val", slice(3, 5)), ("test", slice(5, 7))):
        np.testing.assert_allclose(denormalised(dm, split), u[rows], rtol=1e-6, atol=1e-3)
    # Axis check on one value: trajectory 6, frame 2, row 4, column 1.
    item = dm.datasets["test"][1]
    assert float(item["x"][2, 0, 4, 1]) * dm.std + dm.mean == pytest.approx(6000 + 200 + 40 + 1, rel=1e-6)
    assert dm.mean == pytest.approx(u[:3, :7].astype(np.float64).mean())
    meta = dm.metadata()
    assert meta["source"] == str(mat_file) and meta["frame_dt"] == pytest.approx(0.25)
    assert json.loads(json.dumps(meta)) == meta


def test_user_errors(tmp_path, mat_file):
    missing = tmp_path / "nowhere" / "ns_V1e-3_N5000_T50.mat"
    with pytest.raises(UserError, match=r"does not exist.*data\.file=") as err:
        NavierStokesDataModule(tmp_path, file=missing).setup()
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"t_in \+ t_out = 9 exceeds the 8 frames"):
        NavierStokesDataModule(tmp_path, file=mat_file, n_train=3, n_val=1, n_test=1, t_in=5, t_out=4).setup()
    with pytest.raises(UserError, match=r"n_train \+ n_val \+ n_test = 8 exceeds the 7 trajectories"):
        NavierStokesDataModule(tmp_path, file=mat_file, n_train=5, n_val=1, n_test=2, t_in=3, t_out=3).setup()
    with pytest.raises(UserError, match=r"t_in \+ t_out = 5 exceeds the 4 frames"):
        NavierStokesDataModule(tmp_path, n_frames=4, **SMALL)
    no_u = tmp_path / "no_u.mat"
    scipy.io.savemat(no_u, {"a": np.zeros((2, 4, 4))})
    with pytest.raises(UserError, match="no field 'u'"):
        NavierStokesDataModule(tmp_path, file=no_u).setup()
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(UserError, match="garbage.mat"):
        NavierStokesDataModule(tmp_path, file=garbage).setup()
    with pytest.raises(UserError, match="windows"):
        NavierStokesDataModule(tmp_path, windows="random")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_a_mat_file_are_refused_with_count_and_place(mat_file, tmp_path, bad):
    """No mask here: one NaN would make the statistics, every loss and every checkpoint NaN."""
    arrays = fno_arrays()
    arrays["u"][6, 4, 1, 5] = bad  # the test trajectory: training statistics alone would look fine
    arrays["u"][1, 2, 3, 7] = bad  # train, a frame past t_in + t_out
    arrays["u"][3, 0, 0, 0] = np.nan  # the trajectory no split reads (train 0-2, val 4-5, test 6)
    if h5py.is_hdf5(mat_file):
        write_mat_v73(mat_file, arrays)
    else:
        scipy.io.savemat(mat_file, arrays)
    dm = NavierStokesDataModule(tmp_path, file=mat_file, n_train=3, n_val=2, n_test=1, t_in=3, t_out=2, progress=False)
    dm.prepare_data()
    with pytest.raises(UserError) as err:
        dm.setup()
    msg = str(err.value)
    kind = "0 NaN, 2 inf" if np.isinf(bad) else "2 NaN, 0 inf"
    assert f"{mat_file}: field 'u' holds 2 non-finite values ({kind}) in the 6 trajectories used" in msg, msg
    assert "first at u[1, 2, 3, 7] (sample 1, row 2, column 3, time step 7" in msg and "MATLAB u(2,3,4,8)" in msg
    assert "replace them in the file" in msg and "data=arrays data.layout=NHWT" in msg and "\n" not in msg
    assert not dm.datasets


def test_a_finite_mat_file_is_read_unchanged_and_a_constant_one_refused(mat_file, tmp_path, monkeypatch):
    calls, check = [], ns._refuse_nonfinite
    monkeypatch.setattr(ns, "_refuse_nonfinite", lambda *args: calls.append(args) or check(*args))
    dm = NavierStokesDataModule(tmp_path, file=mat_file, n_train=3, n_val=2, n_test=2, t_in=3, t_out=4)
    dm.setup()
    assert len(calls) == 1 and np.isfinite(dm.mean) and np.isfinite(dm.std)
    constant = {**fno_arrays(), "u": np.full((N, S, S, T), 2.5, dtype=np.float32)}
    path = tmp_path / "constant.mat"
    scipy.io.savemat(path, constant)
    with pytest.raises(UserError, match="the training frames are constant; use data.normalize=none"):
        NavierStokesDataModule(tmp_path, file=path, n_train=3, n_val=2, n_test=2, t_in=3, t_out=4).setup()


def test_generated_data_is_never_checked_for_non_finite_values(tmp_path, monkeypatch):
    """The check is for a user's file: the project's own generated trajectories go straight to training."""

    def refuse(*args):
        raise AssertionError("generated data went through the .mat check")

    monkeypatch.setattr(ns, "_refuse_nonfinite", refuse)
    dm = NavierStokesDataModule(tmp_path, device="cpu", **{**SMALL, "n_train": 2, "n_val": 1, "n_test": 1})
    dm.setup()
    assert np.isfinite(dm.mean) and dm.std > 0
    np.testing.assert_allclose(denormalised(dm, "train"), cache_frames(dm)[:2], rtol=1e-5, atol=1e-5)
