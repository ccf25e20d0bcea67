"""Bad inputs of the reading and writing scripts (stpred-bench, -demo, -forecast, -import, -zoo) and of
``load_predictor`` / ``Predictor.predict``: each must end in one line (exit code 2, or a ``UserError``) before any
heavy work, leaving nothing behind. Run by tests/test_bad_inputs.py (see ``_bad_inputs.py``).

Checkpoints are the shipped ones (``zoo:<name>``); inputs come from ``STPRED_DATA`` (``{data}``) or are written by a
case's ``prepare``. An unwritable folder cannot be made with ``chmod`` when the tests run as root (root writes
anywhere), so there the cases write under ``/proc/sys``, which the kernel keeps unwritable for everyone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from _bad_inputs import Call, Script, damaged_checkpoint

ZOO_ARRAY = "zoo:ns-fno2d"  # an array forecaster: [10, 1, 32, 32] vorticity from a .npy
ZOO_WEATHER = "zoo:era5-t2m-simvpv2"  # a weather forecaster: t2m on the UK grid from NetCDF, WB1 or Zarr
ZOO_VIDEO = "zoo:mmnist-simvpv2"  # a video forecaster: [10, 1, 64, 64]
ERA5 = "{data}/weather/era5_t2m_2019-03_uk.nc"
CLIP = "{data}/video/kinetics_arm_wrestling.mp4"
NO_CUDA = not torch.cuda.is_available()

if os.geteuid() == 0:
    LOCKED = "/proc/sys"  # no one, root included, may create anything here

    def _lock(tmp: Path) -> None:
        pass

else:
    LOCKED = "{tmp}/locked"

    def _lock(tmp: Path) -> None:
        (tmp / "locked").mkdir()
        (tmp / "locked").chmod(0o500)


def _file(tmp: Path) -> None:
    (tmp / "file.txt").write_text("a file, not a folder\n")


def _folder(tmp: Path) -> None:
    (tmp / "folder").mkdir()


def _random_ckpt(tmp: Path) -> None:
    (tmp / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))


def _text_ckpt(tmp: Path) -> None:
    (tmp / "notes.ckpt").write_text("these are my notes, not a checkpoint\n")


def _vorticity(tmp: Path, name: str = "vorticity.npy", bad: float | None = None) -> Path:
    frames = np.random.default_rng(0).standard_normal((12, 1, 32, 32)).astype(np.float32)
    if bad is not None:
        frames[-3, 0, 5, 7] = bad
        frames[-1, 0, 9, 2] = bad
    np.save(tmp / name, frames)
    return tmp / name


def _era5_with_inf(tmp: Path) -> None:
    import xarray as xr

    with xr.open_dataset(Path(os.environ["STPRED_DATA"]) / "weather/era5_t2m_2019-03_uk.nc") as ds:
        cut = ds.isel(time=slice(-24, None)).load()
    values = cut["t2m"].values
    values[-5, 10, 20] = np.inf
    values[-2, 11, 3] = -np.inf
    cut.to_netcdf(tmp / "era5_inf.nc")


def _bench(*args: str) -> tuple[str, ...]:
    return ("stpred-bench", *args)


def _forecast(*args: str) -> tuple[str, ...]:
    return ("stpred-forecast", *args)


def _demo(*args: str) -> tuple[str, ...]:
    return ("stpred-demo", *args)


def _load(tmp: Path, path: object, **kwargs: object) -> object:
    from stpred import load_predictor

    return load_predictor(path, **kwargs)


def _predict(x: object) -> object:
    from stpred import load_predictor

    return load_predictor(ZOO_ARRAY).predict(x)


CASES: list[Script | Call] = [
    # -- stpred-bench: numbers, folders and devices checked before any benchmark runs ----------------------------------
    Script("bench-no-command", _bench(), expect="give a command: kernels, models, generation or gpu"),
    Script("bench-unknown-command", _bench("speed"), expect="invalid choice: 'speed'"),
    Script("bench-models-batch-0", _bench("models", "--batch", "0"), expect="--batch must be at least 1, got 0"),
    Script("bench-models-batch-negative", _bench("models", "--batch", "-1"), expect="--batch must be at least 1"),
    Script("bench-models-steps-0", _bench("models", "--steps", "0"), expect="--steps must be at least 1, got 0"),
    Script("bench-gpu-batch-0", _bench("gpu", "--batch", "0"), expect="--batch must be at least 1, got 0"),
    Script("bench-models-batch-text", _bench("models", "--batch", "four"), expect="--batch: invalid int value"),
    Script("bench-models-unknown-mode", _bench("models", "--modes", "fp16"), expect="unknown mode(s) fp16"),
    Script(
        "bench-models-unknown-experiment",
        _bench("models", "--experiments", "quickstart,no_such_preset"),
        expect="no_such_preset",
    ),
    Script(
        "bench-generation-frames-text",
        _bench("generation", "--frames", "abc"),
        expect="--frames must be comma-separated whole numbers",
    ),
    Script(
        "bench-generation-frames-negative",
        _bench("generation", "--frames", "-5"),
        expect="--frames must be comma-separated whole numbers",
    ),
    Script("bench-generation-frames-1", _bench("generation", "--frames", "1,10"), expect="frames >= 2"),
    Script(
        "bench-generation-frames-empty",
        _bench("generation", "--frames", ","),
        expect="--frames must be comma-separated whole numbers",
    ),
    Script(
        "bench-models-out-under-file",
        _bench("models", "--experiments", "quickstart", "--out", "{tmp}/file.txt/bench"),
        expect="file.txt is a file",
        prepare=_file,
    ),
    Script(
        "bench-kernels-out-is-file",
        _bench("kernels", "--quick", "--out", "{tmp}/file.txt"),
        expect="is a file, not a folder",
        prepare=_file,
    ),
    Script(
        "bench-generation-out-unwritable",
        _bench("generation", "--frames", "10", "--out", f"{LOCKED}/bench"),
        expect="not writable",
        prepare=_lock,
    ),
    Script("bench-kernels-device-tpu", _bench("kernels", "--device", "tpu"), expect="--device tpu"),
    Script("bench-models-device-cuda-99", _bench("models", "--device", "cuda:99"), expect="cuda:99"),
    Script(
        "bench-gpu-doc-under-file",
        _bench("gpu", "--doc", "{tmp}/file.txt/benchmarks.md"),
        expect="file.txt is a file",
        prepare=_file,
    ),
    # -- stpred-demo: the output folder is checked before a clip is decoded --------------------------------------------
    Script(
        "demo-out-under-file",
        _demo("--ckpt", ZOO_VIDEO, CLIP, "--out", "{tmp}/file.txt/demo"),
        expect="file.txt is a file",
        prepare=_file,
    ),
    Script(
        "demo-out-is-file",
        _demo("--ckpt", ZOO_VIDEO, CLIP, "--out", "{tmp}/file.txt"),
        expect="is a file, not a folder",
        prepare=_file,
    ),
    Script(
        "demo-out-unwritable",
        _demo("--ckpt", ZOO_VIDEO, CLIP, "--out", f"{LOCKED}/demo"),
        expect="not writable",
        prepare=_lock,
    ),
    Script("demo-clip-missing", _demo("--ckpt", ZOO_VIDEO, "{tmp}/missing.mp4"), expect="missing.mp4 not found"),
    Script(
        "demo-ckpt-random-bytes",
        _demo("--ckpt", "{tmp}/random.ckpt", CLIP),
        expect="random.ckpt is not a checkpoint",
        prepare=_random_ckpt,
    ),
    Script(
        "demo-ckpt-text",
        _demo("--ckpt", "{tmp}/notes.ckpt", CLIP),
        expect="notes.ckpt is a text file",
        prepare=_text_ckpt,
    ),
    Script("demo-weather-ckpt", _demo("--ckpt", ZOO_WEATHER, CLIP), expect="use stpred-forecast"),
    Script("demo-horizon-0", _demo("--ckpt", ZOO_VIDEO, CLIP, "--horizon", "0"), expect="--horizon must be >= 1"),
    # -- stpred-forecast: output, input format and values checked before the model runs --------------------------------
    Script(
        "forecast-out-under-file",
        _forecast("--ckpt", ZOO_WEATHER, ERA5, "--out", "{tmp}/file.txt/uk.nc"),
        expect="file.txt is a file",
        prepare=_file,
    ),
    Script(
        "forecast-out-is-folder",
        _forecast("--ckpt", ZOO_WEATHER, ERA5, "--out", "{tmp}/folder"),
        expect="is a folder",
        prepare=_folder,
    ),
    Script(
        "forecast-out-unwritable",
        _forecast("--ckpt", ZOO_WEATHER, ERA5, "--out", f"{LOCKED}/uk.nc"),
        expect="not writable",
        prepare=_lock,
    ),
    Script(
        "forecast-plot-under-file",
        _forecast("--ckpt", ZOO_WEATHER, ERA5, "--out", "{tmp}/uk.nc", "--plot"),
        expect="uk.png is a folder",
        prepare=lambda tmp: (tmp / "uk.png").mkdir(),
    ),
    Script(
        "forecast-array-ckpt-netcdf-input",
        _forecast("--ckpt", ZOO_ARRAY, ERA5),
        expect="reads a .npy array [T >= 10, 1, 32, 32]",
    ),
    Script(
        "forecast-weather-ckpt-npy-input",
        _forecast("--ckpt", ZOO_WEATHER, "{tmp}/vorticity.npy"),
        expect="reads t2m on its latitude/longitude grid from a NetCDF file",
        prepare=_vorticity,
    ),
    Script(
        "forecast-netcdf-inf",
        _forecast("--ckpt", ZOO_WEATHER, "{tmp}/era5_inf.nc"),
        expect="2 infinite values",
        prepare=_era5_with_inf,
    ),
    Script(
        "forecast-npy-inf",
        _forecast("--ckpt", ZOO_ARRAY, "{tmp}/vorticity.npy"),
        expect="2 infinite values",
        prepare=lambda tmp: _vorticity(tmp, bad=np.inf),
    ),
    Script(
        "forecast-ckpt-random-bytes",
        _forecast("--ckpt", "{tmp}/random.ckpt", ERA5),
        expect="random.ckpt is not a checkpoint",
        prepare=_random_ckpt,
    ),
    Script(
        "forecast-ckpt-text",
        _forecast("--ckpt", "{tmp}/notes.ckpt", ERA5),
        expect="notes.ckpt is a text file",
        prepare=_text_ckpt,
    ),
    Script(
        "forecast-npy-text",
        _forecast("--ckpt", ZOO_ARRAY, "{tmp}/vorticity.npy"),
        expect="vorticity.npy is a text file, not a .npy array",
        prepare=lambda tmp: (tmp / "vorticity.npy").write_text("0.1 0.2 0.3\n"),
    ),
    Script(
        "forecast-npy-objects",
        _forecast("--ckpt", ZOO_ARRAY, "{tmp}/vorticity.npy"),
        expect="holds Python objects, not numbers",
        prepare=lambda tmp: np.save(tmp / "vorticity.npy", np.array([{"frame": 0}] * 12, dtype=object)),
    ),
    Script(
        "forecast-npy-wrong-grid",
        _forecast("--ckpt", ZOO_ARRAY, "{tmp}/vorticity.npy"),
        expect="the checkpoint needs [T >= 10, 1, 32, 32]",
        prepare=lambda tmp: np.save(tmp / "vorticity.npy", np.zeros((12, 1, 64, 64), np.float32)),
    ),
    Script(
        "forecast-ckpt-damaged",
        _forecast("--ckpt", "{tmp}/damaged.ckpt", ERA5),
        expect="fails its CRC-32 check",
        prepare=lambda tmp: damaged_checkpoint(tmp, "era5-t2m-simvpv2"),
    ),
    Script(
        "demo-ckpt-damaged",
        _demo("--ckpt", "{tmp}/damaged.ckpt", CLIP),
        expect="fails its CRC-32 check",
        prepare=lambda tmp: damaged_checkpoint(tmp, "mmnist-simvpv2"),
    ),
    Script("forecast-ckpt-unknown-zoo", _forecast("--ckpt", "zoo:no-such-entry", ERA5), expect="no-such-entry"),
    Script("forecast-input-missing", _forecast("--ckpt", ZOO_WEATHER, "{tmp}/missing.nc"), expect="input not found"),
    Script(
        "forecast-out-is-input",
        _forecast("--ckpt", ZOO_ARRAY, "{tmp}/vorticity.npy", "--out", "{tmp}/vorticity.npy"),
        expect="is the input itself",
        prepare=_vorticity,
    ),
    # -- load_predictor and Predictor.predict --------------------------------------------------------------------------
    Call(
        "load-predictor-damaged",
        lambda tmp: _load(tmp, tmp / "damaged.ckpt"),
        expect="fails its CRC-32 check",
        prepare=damaged_checkpoint,
    ),
    Call("load-predictor-int", lambda tmp: _load(tmp, 3), expect="got int"),
    Call("load-predictor-dict", lambda tmp: _load(tmp, {"path": "x.ckpt"}), expect="got dict"),
    Call("load-predictor-none", lambda tmp: _load(tmp, None), expect="got None"),
    Call("load-predictor-device-tpu", lambda tmp: _load(tmp, ZOO_ARRAY, map_location="tpu"), expect="map_location"),
    Call(
        "load-predictor-random-bytes",
        lambda tmp: _load(tmp, tmp / "random.ckpt"),
        expect="is not a checkpoint",
        prepare=_random_ckpt,
    ),  # fmt: skip
    Call(
        "load-predictor-text", lambda tmp: _load(tmp, tmp / "notes.ckpt"), expect="is a text file", prepare=_text_ckpt
    ),  # fmt: skip
    Call(
        "load-predictor-empty-file",
        lambda tmp: _load(tmp, tmp / "empty.ckpt"),
        expect="the file is empty",
        prepare=lambda tmp: (tmp / "empty.ckpt").write_bytes(b""),
    ),  # fmt: skip
    Call(
        "load-predictor-pickled-module",
        lambda tmp: _load(tmp, tmp / "module.ckpt"),
        expect="holds a pickled Python object (torch.nn.modules.linear.Linear)",
        prepare=lambda tmp: torch.save(torch.nn.Linear(2, 2), tmp / "module.ckpt"),
    ),  # fmt: skip
    Call("load-predictor-missing", lambda tmp: _load(tmp, tmp / "missing.ckpt"), expect="checkpoint not found"),
    Call("predict-wrong-shape", lambda tmp: _predict(torch.zeros(1, 4, 1, 32, 32)), expect="does not fit"),
    Call("predict-wrong-rank", lambda tmp: _predict(torch.zeros(32, 32)), expect="does not fit"),
    Call("predict-text", lambda tmp: _predict("vorticity.npy"), expect="a tensor or array of numbers"),
    # -- stpred-zoo and stpred-import ----------------------------------------------------------------------------------
    Script("zoo-show-unknown", ("stpred-zoo", "show", "no-such-entry"), expect="no-such-entry"),
    Script("zoo-unknown-command", ("stpred-zoo", "download"), expect="invalid choice: 'download'"),
    Script("zoo-no-command", ("stpred-zoo",), expect="give a command: list, show, train or clips"),
    Script("zoo-show-no-name", ("stpred-zoo", "show"), expect="show: the following arguments are required: name"),
    Script("zoo-train-unknown", ("stpred-zoo", "train", "ns-fno2d", "no-such-entry"), expect="no-such-entry"),
    Script(
        "import-missing-weights",
        ("stpred-import", "{tmp}/missing.pth", "--out", "{tmp}/imported.ckpt"),
        expect="missing.pth",
    ),
    Script(
        "import-random-bytes",
        ("stpred-import", "{tmp}/random.ckpt", "--out", "{tmp}/imported.ckpt"),
        expect="random.ckpt is not a checkpoint",
        prepare=_random_ckpt,
    ),
    Script(
        "import-text",
        ("stpred-import", "{tmp}/notes.ckpt", "--out", "{tmp}/imported.ckpt"),
        expect="notes.ckpt is a text file",
        prepare=_text_ckpt,
    ),
    Script(
        "import-out-under-file",
        (
            "stpred-import",
            "{data}/peer_weights/openstl_simvp_gsta_mmnist_small.pth",
            "--out",
            "{tmp}/file.txt/x.ckpt",
            "--in-shape",
            "10,1,64,64",
        ),
        expect="file.txt is a file, not a folder",
        prepare=_file,
    ),  # fmt: skip
    Script("import-no-out", ("stpred-import", "{tmp}/random.ckpt"), expect="--out", prepare=_random_ckpt),
]

if NO_CUDA:  # on a GPU machine these would run
    CASES += [
        Script("bench-models-device-cuda", _bench("models", "--device", "cuda"), expect="no CUDA device"),
        Script("demo-device-cuda", _demo("--ckpt", ZOO_VIDEO, CLIP, "--device", "cuda"), expect="no CUDA device"),
        Script(
            "forecast-device-cuda", _forecast("--ckpt", ZOO_WEATHER, ERA5, "--device", "cuda"), expect="no CUDA device"
        ),  # fmt: skip
        Call("load-predictor-cuda", lambda tmp: _load(tmp, ZOO_ARRAY, map_location="cuda"), expect="no CUDA device"),
    ]
