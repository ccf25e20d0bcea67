"""Bad-input cases for data values: NaN and inf in a user's data files, and truly constant training data.

NaN is a missing value where a datamodule masks (``data=arrays``, WeatherBench/ERA5: docs/data.md "Masked cells"), so
only the cases where nothing can be learnt end in an error there; inf is never a missing value. Where a datamodule
has no mask (Navier-Stokes ``.mat``, TaxiBJ), any non-finite value is refused at set-up with its count, its first
place in the file's own terms and the fix. Every case fails in the datamodule's ``setup()``, before any training step.
Cases are run by ``tests/_bad_inputs.py`` (``Script``: one ``stpred-train: error: ...`` line, exit code 2).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.io
import xarray as xr
from _bad_inputs import Script
from _datafiles import write_mat_v73

__all__ = ["CASES"]

#: Fast, quiet runs whose folder stays inside the case's folder.
RUN = ("hydra.run.dir={tmp}/run", "trainer.max_epochs=1", "trainer.accelerator=cpu",
       "trainer.enable_progress_bar=false")  # fmt: skip

# -- Navier-Stokes .mat ----------------------------------------------------------------------------------------------
NS_N, NS_S, NS_T = 6, 8, 12


def _ns_u() -> np.ndarray:
    """``u`` ``[N, s, s, T]`` (MATLAB order) float32, smooth and varied."""
    n, i, j, t = np.meshgrid(np.arange(NS_N), np.arange(NS_S), np.arange(NS_S), np.arange(NS_T), indexing="ij")
    return np.sin(0.3 * n + 0.5 * i - 0.2 * j + 0.1 * t).astype(np.float32)


def _ns_arrays(u: np.ndarray) -> dict[str, np.ndarray]:
    return {"a": u[..., 0], "u": u, "t": np.arange(1, NS_T + 1, dtype=np.float64)[None, :]}


def _ns_nan_v5(tmp: Path) -> None:
    u = _ns_u()
    u[1, 2, 3, 4] = np.nan  # sample 1 (train), row 2, column 3, time step 4
    u[4, 0, 0, 0] = np.nan
    scipy.io.savemat(tmp / "ns.mat", _ns_arrays(u))


def _ns_inf_v73(tmp: Path) -> None:
    u = _ns_u()
    u[5, 7, 6, 9] = np.inf  # the test trajectory only: training statistics are finite, forecasts would not be
    write_mat_v73(tmp / "ns.mat", _ns_arrays(u))


def _ns_constant(tmp: Path) -> None:
    scipy.io.savemat(tmp / "ns.mat", _ns_arrays(np.full((NS_N, NS_S, NS_S, NS_T), 0.5, dtype=np.float32)))


NS = ("stpred-train", "data=navier_stokes", "data.file={tmp}/ns.mat", "data.n_train=4", "data.n_val=1",
      "data.n_test=1", "data.t_in=4", "data.t_out=4", "data.progress=false", "model=fno2d", "model.kwargs.modes=2",
      "model.kwargs.width=4", *RUN)  # fmt: skip

# -- data=arrays ------------------------------------------------------------------------------------------------------
AR_T, AR_H, AR_W = 72, 6, 8
TIMES = pd.date_range("2021-06-01", periods=AR_T, freq="h")
LAT = np.linspace(50.0, 55.0, AR_H)
LON = np.linspace(-4.0, 3.0, AR_W)


def _field(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(AR_T)[:, None, None]
    return (280.0 + np.sin(0.2 * t + LON[None, None, :]) + 0.1 * rng.standard_normal((AR_T, AR_H, AR_W))).astype(
        np.float32
    )


def _netcdf(path: Path, **variables: np.ndarray) -> None:
    data = {name: (("time", "lat", "lon"), v, {"units": "K"}) for name, v in variables.items()}
    xr.Dataset(data, {"time": TIMES, "lat": LAT, "lon": LON}).to_netcdf(path, engine="netcdf4")


def _nc_inf(tmp: Path) -> None:
    t2m = _field()
    t2m[7, 2, 5] = np.inf
    t2m[30, 0, 0] = -np.inf
    _netcdf(tmp / "t2m.nc", t2m=t2m)


def _nc_nan_channel(tmp: Path) -> None:
    """Two variables; ``sst`` is NaN everywhere: masked cells, but nothing to learn it from."""
    _netcdf(tmp / "two.nc", t2m=_field(), sst=np.full((AR_T, AR_H, AR_W), np.nan, dtype=np.float32))


def _npy_inf(tmp: Path) -> None:
    series = _field()
    series[12, 3, 1] = np.inf
    np.save(tmp / "series.npy", series)


def _npz_inf(tmp: Path) -> None:
    samples = np.stack([_field(k) for k in range(5)])[:, :12]  # [N, T, H, W]
    samples[3, 2, 4, 4] = -np.inf
    np.savez(tmp / "samples.npz", field=samples)


def _h5_inf(tmp: Path) -> None:
    series = _field()[:, None]  # [T, C, H, W]
    series[20, 0, 5, 7] = np.inf
    with h5py.File(tmp / "series.h5", "w") as f:
        f["field"] = series


def _npz_nan_all(tmp: Path) -> None:
    np.savez(tmp / "gaps.npz", field=np.full((AR_T, AR_H, AR_W), np.nan, dtype=np.float32))


ARRAYS = ("stpred-train", "data=arrays", "data.t_in=3", "data.t_out=2", "model=fno2d", "model.kwargs.modes=2",
          "model.kwargs.width=4", *RUN)  # fmt: skip

# -- WeatherBench / ERA5 ----------------------------------------------------------------------------------------------
#: One day each: train 2021-06-01, val 2021-06-02, test 2021-06-03 (the files hold 72 hourly stamps).
WB_SPLITS = ("data.splits.train=[2021-06-01,2021-06-01]", "data.splits.val=[2021-06-02,2021-06-02]",
             "data.splits.test=[2021-06-03,2021-06-03]")  # fmt: skip
WB = ("stpred-train", "data=weatherbench", "data.root=null", "data.path={tmp}/t2m.nc", "data.resolution=null",
      "data.variables=[t2m]", *WB_SPLITS, "data.t_in=3", "data.t_out=2", "model=fno2d", "model.kwargs.modes=2",
      "model.kwargs.width=4", *RUN)  # fmt: skip
#: The ERA5 config (``data=era5_uk``) pointed at a small file: no crop, NaN filled with the training mean.
ERA5 = ("stpred-train", "data=era5_uk", "data.path={tmp}/t2m.nc", "data.crop=null", "data.fill_nan=mean",
        *WB_SPLITS, "data.t_in=3", "data.t_out=2", "model=fno2d", "model.kwargs.modes=2", "model.kwargs.width=4",
        *RUN)  # fmt: skip


def _wb_inf(tmp: Path) -> None:
    t2m = _field()
    t2m[5, 1, 2] = np.inf  # 2021-06-01T05:00, in the train period
    _netcdf(tmp / "t2m.nc", t2m=t2m)


def _wb_inf_first_frame(tmp: Path) -> None:
    t2m = _field()
    t2m[0, 0, 3] = -np.inf  # the first training frame, from which the statistics' shift is taken
    t2m[33, 4, 4] = np.inf
    _netcdf(tmp / "t2m.nc", t2m=t2m)


def _wb_all_nan(tmp: Path) -> None:
    t2m = _field()
    t2m[:24] = np.nan  # the whole train day
    _netcdf(tmp / "t2m.nc", t2m=t2m)


def _wb_constant(tmp: Path) -> None:
    _netcdf(tmp / "t2m.nc", t2m=np.full((AR_T, AR_H, AR_W), 280.0, dtype=np.float32))


# -- TaxiBJ -----------------------------------------------------------------------------------------------------------
def _stamps(days: int) -> list[bytes]:
    start = pd.Timestamp("2015-03-01")
    return [f"{(start + pd.Timedelta(days=d)):%Y%m%d}{s:02d}".encode() for d in range(days) for s in range(1, 49)]


def _flow_h5(path: Path, data: np.ndarray, stamps: list[bytes]) -> None:
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["date"] = np.array(stamps)


def _flows(days: int = 4, seed: int = 0) -> tuple[np.ndarray, list[bytes]]:
    stamps = _stamps(days)
    return np.random.default_rng(seed).uniform(0, 200, (len(stamps), 2, 8, 8)), stamps


def _taxibj_nan(tmp: Path) -> None:
    data, stamps = _flows()
    data[50, 1, 2, 3] = np.nan  # 2015030203: the second day, slot 3
    data[60:62, 0, 0, 0] = np.nan
    _flow_h5(tmp / "BJ15_M32x32_T30_InOut.h5", data, stamps)


def _taxibj_inf(tmp: Path) -> None:
    data, stamps = _flows()
    data[170, 0, 7, 7] = np.inf  # in the test days: training extremes would be finite
    _flow_h5(tmp / "BJ15_M32x32_T30_InOut.h5", data, stamps)


def _taxibj_constant(tmp: Path) -> None:
    data, stamps = _flows()
    _flow_h5(tmp / "BJ15_M32x32_T30_InOut.h5", np.full_like(data, 7.0), stamps)


def _taxibj_npz_nan(tmp: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {k: rng.uniform(-1, 1, (n, 4, 2, 8, 8)) for k, n in (("X_train", 30), ("Y_train", 30),
                                                                  ("X_test", 6), ("Y_test", 6))}  # fmt: skip
    arrays["Y_train"][11, 2, 0, 5, 6] = np.nan
    np.savez(tmp / "dataset.npz", **arrays)


TAXIBJ = ("stpred-train", "data=taxibj", "data.root={tmp}", "data.test_days=1", "data.val_days=1", "model=fno2d",
          "model.kwargs.modes=2", "model.kwargs.width=4", *RUN)  # fmt: skip

CASES = [
    # Navier-Stokes: no mask, so any non-finite value is refused; the project's generated data is never checked.
    Script(
        "train-ns-mat-nan",
        NS,
        prepare=_ns_nan_v5,
        expect="field 'u' holds 2 non-finite values (2 NaN, 0 inf) in the 6 trajectories used; "
        "first at u[1, 2, 3, 4] (sample 1, row 2, column 3, time step 4",
    ),  # fmt: skip
    Script(
        "train-ns-mat-v73-inf",
        NS,
        prepare=_ns_inf_v73,
        expect="1 non-finite value (0 NaN, 1 inf) in the 6 trajectories used; first at u[5, 7, 6, 9]",
    ),  # fmt: skip
    Script("train-ns-mat-constant", NS, expect="the training frames are constant", prepare=_ns_constant),
    # data=arrays: NaN is masked; inf is refused in every format, also when fill_nan would fill NaN.
    Script(
        "train-arrays-nc-inf",
        (*ARRAYS, "data.path={tmp}/t2m.nc"),
        prepare=_nc_inf,
        expect="2 infinite values in t2m; the first, inf, is in t2m.nc at time 2021-06-01T07:00:00, lat 52, lon 1 "
        "(t2m[7, 2, 5])",
    ),  # fmt: skip
    Script(
        "train-arrays-nc-inf-fill-mean",
        (*ARRAYS, "data.path={tmp}/t2m.nc", "data.fill_nan=mean"),
        expect="2 infinite values in t2m",
        prepare=_nc_inf,
    ),  # fmt: skip
    Script(
        "train-arrays-nc-inf-mask-value",
        (*ARRAYS, "data.path={tmp}/t2m.nc", "data.mask_value=inf"),
        expect="1 infinite value in t2m; the first, -inf, is in t2m.nc at time 2021-06-02T06:00:00",
        prepare=_nc_inf,
    ),  # fmt: skip
    Script(
        "train-arrays-npy-inf",
        (*ARRAYS, "data.path={tmp}/series.npy", "data.layout=THW"),
        prepare=_npy_inf,
        expect="1 infinite value in series; the first, inf, is in series.npy at time step 12, row 3, column 1 "
        "(series[12, 3, 1], layout THW)",
    ),  # fmt: skip
    Script(
        "train-arrays-npz-inf",
        (*ARRAYS, "data.path={tmp}/samples.npz", "data.layout=NTHW"),
        prepare=_npz_inf,
        expect="the first, -inf, is in samples.npz at sample 3, time step 2, row 4, column 4",
    ),  # fmt: skip
    Script(
        "train-arrays-h5-inf",
        (*ARRAYS, "data.path={tmp}/series.h5"),
        prepare=_h5_inf,
        expect="1 infinite value in field; the first, inf, is in series.h5 at time step 20, channel 0, row 5, column 7",
    ),  # fmt: skip
    Script(
        "train-arrays-nc-all-nan-channel",
        (*ARRAYS, "data.path={tmp}/two.nc", "data.variable=[t2m,sst]"),
        expect="channel 1 has no observed value in the train split",
        prepare=_nc_nan_channel,
    ),  # fmt: skip
    Script(
        "train-arrays-npz-all-nan-fill-mean",
        (*ARRAYS, "data.path={tmp}/gaps.npz", "data.fill_nan=mean"),
        expect="channel 0 has no observed value in the train split",
        prepare=_npz_nan_all,
    ),  # fmt: skip
    # WeatherBench / ERA5: inf is neither a missing value nor a constant channel.
    Script(
        "train-weatherbench-nc-inf",
        WB,
        prepare=_wb_inf,
        expect="1 infinite value in 't2m' over the splits of t2m.nc; the first, inf, is 't2m' at "
        "2021-06-01T05:00:00, latitude 51, longitude -2",
    ),  # fmt: skip
    Script(
        "train-era5-nc-inf-fill-mean",
        ERA5,
        prepare=_wb_inf_first_frame,
        expect="2 infinite values in 't2m' over the splits of t2m.nc; the first, -inf, is 't2m' at 2021-06-01T00:00:00",
    ),  # fmt: skip
    Script(
        "train-weatherbench-fill-nan-inf",
        (*WB, "data.fill_nan=inf"),
        prepare=_wb_inf,
        expect="fill_nan=inf; use null, a finite number or 'mean'",
    ),  # fmt: skip
    Script("train-weatherbench-nc-all-nan", WB, expect="hold only NaN in the train split", prepare=_wb_all_nan),
    Script("train-weatherbench-nc-constant", WB, expect="constant over the train split", prepare=_wb_constant),
    # TaxiBJ: min-max scaling has no mask; NaN and inf are refused with the stamp, channel and cell.
    Script(
        "train-taxibj-h5-nan",
        TAXIBJ,
        prepare=_taxibj_nan,
        expect="data holds 3 non-finite values (3 NaN, 0 inf); first at frame 50 (date 2015030203), channel 1, "
        "row 2, column 3",
    ),  # fmt: skip
    Script(
        "train-taxibj-h5-inf",
        TAXIBJ,
        prepare=_taxibj_inf,
        expect="1 non-finite value (0 NaN, 1 inf); first at frame 170 (date 2015030427), channel 0, row 7, column 7",
    ),  # fmt: skip
    Script("train-taxibj-h5-constant", TAXIBJ, expect="the training frames are constant", prepare=_taxibj_constant),
    Script(
        "train-taxibj-npz-nan",
        (*TAXIBJ, "data.npz=dataset.npz"),
        prepare=_taxibj_npz_nan,
        expect="Y_train holds 1 non-finite value (1 NaN, 0 inf); first at window 11, frame 2, channel 0, row 5, "
        "column 6",
    ),  # fmt: skip
]
