"""Navier-Stokes vorticity forecasting (FNO benchmark, docs/data.md section 5): generated and cached, or read from
``.mat``.

Without ``file``, trajectories are generated with :mod:`stpred.physics.navier_stokes` (FNO forcing, GRF initial
conditions, one frame every ``frame_dt`` from ``t = frame_dt``) and cached as HDF5 under ``root``; the file name
carries the main parameters and a hash of all of them, and the file is written to a temporary name and renamed,
so an interrupted run never leaves a cache that looks complete. With ``file``, an FNO ``.mat`` (v7.3 or older) is
read (:mod:`stpred.datamodules.mat_io`); there is no mask, so a NaN or inf in the trajectories it uses is refused at
setup (count, first place in ``u``, the fix). Generated data is not checked.

Splits are disjoint sets of trajectories: train the first ``n_train``, test the last ``n_test`` (as FNO), and
validation the ``n_val`` just before the test ones. The z-score statistics come from the training frames only.

Generation time (2 shared, busy CPU cores, one thread, Heun at ``dt = 1 / resolution``, 20 frames): 208
trajectories on 32^2 in 3-4 s; 130 on 64^2 in 13-20 s, so the 1300 of the config default in about 2-4 min.

Cache layout (``ns_*.h5``): ``u`` float32 ``[N, T, r, r]`` (frame ``j`` at ``t = (j + 1) frame_dt``), ``a``
float32 ``[N, r, r]`` (the initial vorticity), ``t`` float64 ``[T]``; every generation parameter is an attribute.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from stpred.atomic import atomic_output
from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.datamodules.mat_io import mat_field_names, mat_field_shape, read_fno_trajectories, read_mat_field
from stpred.errors import UserError, check
from stpred.physics.navier_stokes import NavierStokes2D, default_dt, sample_grf, spectral_resize

__all__ = ["NavierStokesDataModule", "NavierStokesWindows", "generate_navier_stokes", "trajectory_initial_condition"]

#: Bumped whenever the generated numbers would change for the same parameters, so old caches are not reused.
CACHE_FORMAT = 1
FORCING = "0.1*(sin(2*pi*(x1+x2)) + cos(2*pi*(x1+x2)))"
GRF = {"alpha": 2.5, "tau": 7.0}


class NavierStokesWindows(Dataset):
    """Forecast windows over trajectories held in memory.

    Args:
        frames: ``[N, T, H, W]`` normalised float32 trajectories.
        t_in: input frames per window.
        t_out: target frames per window.
        starts: first frame of each window within a trajectory (the same for every trajectory).
    """

    def __init__(self, frames: torch.Tensor, t_in: int, t_out: int, starts: list[int]) -> None:
        self.frames = frames
        self.t_in = t_in
        self.t_out = t_out
        self.starts = starts

    def __len__(self) -> int:
        return self.frames.shape[0] * len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        traj, j = divmod(index, len(self.starts))
        s = self.starts[j]
        # [T, H, W] -> [T, 1, H, W]: one channel, vorticity.
        window = self.frames[traj, s : s + self.t_in + self.t_out].unsqueeze(1)
        return {"x": window[: self.t_in], "y": window[self.t_in :]}


def _trajectory_seed(seed: int, index: int) -> int:
    """A seed per trajectory, so trajectory ``index`` is the same whatever ``N`` and the generation batches."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def generate_navier_stokes(
    path: str | Path,
    *,
    n: int,
    n_frames: int,
    frame_dt: float,
    resolution: int,
    solver_resolution: int,
    viscosity: float,
    dt: float,
    scheme: str,
    precision: str,
    seed: int,
    device: str,
    gen_batch_size: int,
    progress: bool,
    attrs: dict[str, Any],
) -> Path:
    """Generate ``n`` trajectories and write them atomically to the HDF5 file ``path`` (layout in the module doc).

    Args:
        path: the final file; written to a temporary file beside it and renamed when complete
            (:func:`stpred.atomic.atomic_output`: an error, Ctrl-C or SIGTERM leaves neither).
        n: trajectories.
        n_frames: frames per trajectory, at ``t = frame_dt, 2 frame_dt, ...``.
        frame_dt: time between frames.
        resolution: saved grid.
        solver_resolution: solver grid (``>= resolution``; frames are Fourier-truncated to ``resolution``).
        viscosity: ``nu``.
        dt: largest solver step.
        scheme: ``"heun"`` or ``"euler"``.
        precision: ``"float32"`` or ``"float64"`` for the solver.
        seed: base seed; trajectory ``i`` draws its initial condition from a generator seeded by ``(seed, i)``.
        device: torch device of the solver.
        gen_batch_size: trajectories solved together.
        progress: show a tqdm bar.
        attrs: attributes to record in the file.

    Returns:
        ``path``.
    """
    path = Path(path)
    dtype = torch.float64 if precision == "float64" else torch.float32
    solver = NavierStokes2D(
        solver_resolution, viscosity=viscosity, dt=dt, forcing="fno", scheme=scheme, device=device, dtype=dtype
    )
    times = [frame_dt * (j + 1) for j in range(n_frames)]
    batches = [(lo, min(n, lo + gen_batch_size)) for lo in range(0, n, gen_batch_size)]
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(batches) * solver.num_steps(times), desc="navier-stokes", unit="step", disable=not progress)
    try:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            u = f.create_dataset("u", (n, n_frames, resolution, resolution), dtype="f4")
            a = f.create_dataset("a", (n, resolution, resolution), dtype="f4")
            f.create_dataset("t", data=np.asarray(times, dtype=np.float64))
            for key, value in attrs.items():
                f.attrs[key] = _h5_attr(value)
            for lo, hi in batches:
                bar.set_postfix_str(f"trajectories {lo}-{hi - 1} of {n}")
                w0 = torch.cat([trajectory_initial_condition(seed, i, solver_resolution) for i in range(lo, hi)])
                frames = solver.solve(w0, times, out_resolution=resolution, progress=False, on_steps=bar.update)
                w0_hat = torch.fft.rfft2(w0.to(dtype=torch.float64))
                a[lo:hi] = spectral_resize(w0_hat, solver_resolution, resolution).float().numpy()
                u[lo:hi] = frames.cpu().float().numpy()
    finally:
        bar.close()
    return path


def trajectory_initial_condition(seed: int, index: int, size: int) -> torch.Tensor:
    """The GRF initial vorticity ``[1, size, size]`` of trajectory ``index`` for generation seed ``seed``."""
    return sample_grf(1, size, generator=torch.Generator().manual_seed(_trajectory_seed(seed, index)))


def _h5_attr(value: Any) -> Any:
    """HDF5 attributes take numbers and strings; ``None`` and containers are stored as JSON text."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return value


def _cache_name(params: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return (
        f"ns_r{params['resolution']}_s{params['solver_resolution']}_nu{params['viscosity']:g}_n{params['n']}"
        f"_T{params['n_frames']}x{params['frame_dt']:g}_seed{params['seed']}_{digest}.h5"
    )


class NavierStokesDataModule(ForecastDataModule):
    """Vorticity forecasting on the periodic unit square: ``[B, t_in, 1, r, r] -> [B, t_out, 1, r, r]``.

    Args:
        root: cache folder for generated data.
        file: an FNO ``.mat`` file to read instead of generating (v7.3 or older).
        resolution: saved grid ``r`` of generated data (a file brings its own).
        solver_resolution: finer solver grid for generation; frames are Fourier-truncated to ``resolution``
            (FNO solved at 256 and saved at 64). Defaults to ``resolution``.
        viscosity: ``nu`` (recorded only, for a file).
        n_train: training trajectories (the first ones).
        n_val: validation trajectories (just before the test ones).
        n_test: test trajectories (the last ones).
        t_in: input frames.
        t_out: target frames.
        n_frames: frames per generated trajectory; defaults to ``t_in + t_out``.
        frame_dt: time between saved frames (generation; a file's ``t`` overrides it).
        dt: largest solver step; defaults to :func:`~stpred.physics.navier_stokes.default_dt`.
        scheme: solver scheme, ``"heun"`` (second order) or ``"euler"`` (FNO's).
        precision: solver precision, ``"float32"`` or ``"float64"`` (frames are stored as float32).
        seed: generation seed.
        normalize: ``"zscore"`` (mean and std of the training frames) or ``"none"``.
        windows: ``"first"`` (FNO: frames ``0..t_in-1`` then the next ``t_out``, one window per trajectory) or
            ``"sliding"`` (every ``window_stride``-th start within each trajectory).
        window_stride: step between sliding windows.
        device: generation device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        gen_batch_size: trajectories solved together.
        num_threads: CPU threads during generation (small batched FFTs gain little from threads, and OpenMP
            threads stall on a busy machine); ``None`` keeps torch's setting.
        progress: show a progress bar while generating.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str | Path = "data/navier_stokes",
        *,
        file: str | Path | None = None,
        resolution: int = 64,
        solver_resolution: int | None = None,
        viscosity: float = 1e-3,
        n_train: int = 1000,
        n_val: int = 100,
        n_test: int = 200,
        t_in: int = 10,
        t_out: int = 10,
        n_frames: int | None = None,
        frame_dt: float = 1.0,
        dt: float | None = None,
        scheme: Literal["heun", "euler"] = "heun",
        precision: Literal["float32", "float64"] = "float32",
        seed: int = 0,
        normalize: Literal["zscore", "none"] = "zscore",
        windows: Literal["first", "sliding"] = "first",
        window_stride: int = 1,
        device: str = "auto",
        gen_batch_size: int = 32,
        num_threads: int | None = 1,
        progress: bool = True,
        batch_size: int = 20,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("t_in", t_in)):
            check(value >= 1, f"NavierStokesDataModule: {name}={value} must be at least 1; set data.{name}=...")
        check(t_out >= 1, f"NavierStokesDataModule: t_out={t_out} must be at least 1; set data.t_out=...")
        check(resolution >= 4, f"NavierStokesDataModule: resolution={resolution} must be >= 4; set data.resolution")
        solver_resolution = solver_resolution or resolution
        check(
            solver_resolution >= resolution,
            f"NavierStokesDataModule: solver_resolution={solver_resolution} is below resolution={resolution}; "
            "set data.solver_resolution to at least data.resolution",
        )
        check(frame_dt > 0, f"NavierStokesDataModule: frame_dt={frame_dt} must be positive; set data.frame_dt")
        check(dt is None or dt > 0, f"NavierStokesDataModule: dt={dt} must be positive; set data.dt or null")
        check(viscosity > 0, f"NavierStokesDataModule: viscosity={viscosity} must be positive; set data.viscosity")
        check(scheme in ("heun", "euler"), f"NavierStokesDataModule: scheme={scheme!r}; use 'heun' or 'euler'")
        check(precision in ("float32", "float64"), f"NavierStokesDataModule: precision={precision!r}; use float32/64")
        check(normalize in ("zscore", "none"), f"NavierStokesDataModule: normalize={normalize!r}; use zscore or none")
        check(windows in ("first", "sliding"), f"NavierStokesDataModule: windows={windows!r}; use first or sliding")
        check(window_stride >= 1, f"NavierStokesDataModule: window_stride={window_stride} must be at least 1")
        check(device in ("auto", "cpu", "cuda"), f"NavierStokesDataModule: device={device!r}; use auto, cpu or cuda")
        check(gen_batch_size >= 1, f"NavierStokesDataModule: gen_batch_size={gen_batch_size} must be at least 1")
        self.root = Path(root)
        self.file = Path(file) if file is not None else None
        self.resolution = resolution
        self.solver_resolution = solver_resolution
        self.viscosity = float(viscosity)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.t_in, self.t_out = t_in, t_out
        self.n_frames = n_frames if n_frames is not None else t_in + t_out
        self.frame_dt = float(frame_dt)
        self.dt = float(dt) if dt is not None else default_dt(solver_resolution, scheme, viscosity)
        self.scheme = scheme
        self.precision = precision
        self.seed = seed
        self.normalize = normalize
        self.windows = windows
        self.window_stride = window_stride
        self.device = device
        self.gen_batch_size = gen_batch_size
        self.num_threads = num_threads
        self.progress = progress
        if self.file is None:
            self._check_length(self.n_frames, "the generated trajectories (data.n_frames)")
        self.mean = 0.0
        self.std = 1.0
        self._shape: tuple[int, int] | None = None

    # -- generation and cache -----------------------------------------------------------------------------------
    def generation_params(self) -> dict[str, Any]:
        """Every parameter that determines the generated numbers (hashed into the cache name)."""
        return {
            "format": CACHE_FORMAT,
            "n": self.n_train + self.n_val + self.n_test,
            "n_frames": self.n_frames,
            "frame_dt": self.frame_dt,
            "resolution": self.resolution,
            "solver_resolution": self.solver_resolution,
            "viscosity": self.viscosity,
            "dt": self.dt,
            "scheme": self.scheme,
            "precision": self.precision,
            "seed": self.seed,
            "forcing": FORCING,
            "grf": GRF,
        }

    @property
    def cache_path(self) -> Path:
        """The HDF5 cache for the current generation parameters."""
        return self.root / _cache_name(self.generation_params())

    def _device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("NavierStokesDataModule: device='cuda' but CUDA is not available; set data.device=auto")
        return self.device

    def prepare_data(self) -> None:
        """Generate the cache unless it exists (or a file is given, whose existence is checked)."""
        if self.file is not None:
            mat_field_shape(self.file, "u")
            return
        path = self.cache_path
        if path.is_file():
            return
        device = self._device()
        params = self.generation_params()
        attrs = {**params, "device": device, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "layout": "u [N, T, r, r]"}
        threads = torch.get_num_threads()
        if self.num_threads is not None and device == "cpu":
            torch.set_num_threads(self.num_threads)
        try:
            generate_navier_stokes(
                path,
                n=params["n"],
                n_frames=self.n_frames,
                frame_dt=self.frame_dt,
                resolution=self.resolution,
                solver_resolution=self.solver_resolution,
                viscosity=self.viscosity,
                dt=self.dt,
                scheme=self.scheme,
                precision=self.precision,
                seed=self.seed,
                device=device,
                gen_batch_size=self.gen_batch_size,
                progress=self.progress,
                attrs=attrs,
            )
        finally:
            torch.set_num_threads(threads)

    # -- reading ----------------------------------------------------------------------------------------------------
    def _check_length(self, n_frames: int, what: str) -> None:
        need = self.t_in + self.t_out
        if need > n_frames:
            raise UserError(
                f"NavierStokesDataModule: t_in + t_out = {need} exceeds the {n_frames} frames of {what}; "
                "lower data.t_in/data.t_out (or raise data.n_frames when generating)"
            )

    def _split_rows(self, n_total: int, source: str) -> dict[str, slice]:
        need = self.n_train + self.n_val + self.n_test
        if need > n_total:
            raise UserError(
                f"NavierStokesDataModule: n_train + n_val + n_test = {need} exceeds the {n_total} trajectories of "
                f"{source}; lower data.n_train/data.n_val/data.n_test"
            )
        test_lo = n_total - self.n_test
        return {
            "train": slice(0, self.n_train),
            "val": slice(test_lo - self.n_val, test_lo),
            "test": slice(test_lo, n_total),
        }

    def _read(self) -> dict[str, np.ndarray]:
        if self.file is not None:
            n_total, s1, s2, n_frames = _u_shape(self.file)
            self._check_length(n_frames, str(self.file))
            rows = self._split_rows(n_total, str(self.file))
            t = read_mat_field(self.file, "t") if "t" in mat_field_names(self.file) else None
            if t is not None and t.size >= 2:
                self.frame_dt = float(np.ravel(t)[1] - np.ravel(t)[0])
            data = {split: read_fno_trajectories(self.file, r) for split, r in rows.items()}
            _refuse_nonfinite(self.file, data, rows)  # a user's file only: generated data is the solver's own
            return data
        path = self.cache_path
        with h5py.File(path, "r") as f:
            rows = self._split_rows(f["u"].shape[0], str(path))
            return {split: f["u"][r] for split, r in rows.items()}

    def _starts(self, n_frames: int) -> list[int]:
        if self.windows == "first":
            return [0]
        return list(range(0, n_frames - self.t_in - self.t_out + 1, self.window_stride))

    def setup(self, stage: str | None = None) -> None:
        """Read (generating first when needed) the three splits and fix the normalisation from the training one."""
        if self.datasets:
            return
        if self.file is None and not self.cache_path.is_file():
            self.prepare_data()
        data = self._read()
        n_frames = data["train"].shape[1]
        starts = self._starts(n_frames)
        used = self.t_in + self.t_out if self.windows == "first" else n_frames
        if self.normalize == "zscore":
            train = data["train"][:, :used].astype(np.float64)
            self.mean, self.std = float(train.mean()), float(train.std())
            if self.std == 0.0:
                raise UserError("NavierStokesDataModule: the training frames are constant; use data.normalize=none")
        self._shape = tuple(data["train"].shape[-2:])
        for split, frames in data.items():
            normed = torch.from_numpy(((frames - self.mean) / self.std).astype(np.float32))
            self.datasets[split] = NavierStokesWindows(normed, self.t_in, self.t_out, starts)

    # -- contract ---------------------------------------------------------------------------------------------------
    @classmethod
    def shapes_from_config(cls, cfg: Any) -> DataShapes:
        """``(t_in, 1, r, r)`` -> ``t_out``; ``r`` is ``resolution``, or the grid in the header of ``file``."""
        t_in, t_out = int(cls.config_value(cfg, "t_in")), int(cls.config_value(cfg, "t_out"))
        file = cls.config_value(cfg, "file")
        if file is None:
            h = w = int(cls.config_value(cfg, "resolution"))
        else:
            _, h, w, _ = _u_shape(Path(file))
        return DataShapes("forecast", (t_in, 1, int(h), int(w)), out_frames=t_out)

    def _grid(self) -> tuple[int, int]:
        if self._shape is None:
            raise RuntimeError("NavierStokesDataModule: call setup() before reading in_shape or metadata()")
        return self._shape

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        h, w = self._grid()
        return (self.t_in, 1, h, w)

    @property
    def out_frames(self) -> int:
        return self.t_out

    def metadata(self) -> dict[str, Any]:
        """Plain values: the contract keys plus viscosity, grid, time step, source and the solver parameters."""
        h, w = self._grid()
        meta: dict[str, Any] = {
            "dataset": "navier_stokes",
            "task": self.task,
            "in_shape": list(self.in_shape),
            "out_frames": self.t_out,
            "channels": ["vorticity"],
            "units": ["1"],
            "mean": [self.mean],
            "std": [self.std],
            "data_range": None,
            "pde": True,
            "viscosity": self.viscosity,
            "resolution": [h, w],
            "frame_dt": self.frame_dt,
            "time_step": self.frame_dt,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "domain": "periodic unit square",
            "forcing": FORCING,
            "windows": self.windows,
            "normalize": self.normalize,
            "splits": {"train": self.n_train, "val": self.n_val, "test": self.n_test},
        }
        if self.file is not None:
            meta["source"] = str(self.file)
        else:
            meta["source"] = "generated"
            meta["cache_file"] = self.cache_path.name
            meta["solver"] = {k: v for k, v in self.generation_params().items() if k not in ("format", "forcing")}
        return meta


def _refuse_nonfinite(path: Path, data: dict[str, np.ndarray], rows: dict[str, slice]) -> None:
    """Refuse NaN or inf in the trajectories read from a user's ``.mat`` file.

    Navier-Stokes training has no mask: one NaN makes the z-score statistics, every loss and every checkpoint NaN.
    The first bad value is named in the file's own terms: ``u`` in MATLAB's ``[N, s, s, T]`` order.

    Args:
        path: the ``.mat`` file.
        data: per split, the trajectories ``[n, T, s, s]`` as read (:func:`read_fno_trajectories`).
        rows: per split, the trajectories of the file it holds.

    Raises:
        UserError: with the count of non-finite values, the first one's place and the fix.
    """
    nan = bad = 0
    first = None
    for split in sorted(data, key=lambda name: rows[name].start):
        frames = data[split]
        with np.errstate(invalid="ignore", over="ignore"):
            if np.isfinite(np.sum(frames, dtype=np.float64)):  # one pass, no copy: the common case
                continue
        finite = np.isfinite(frames)
        bad += int(finite.size - np.count_nonzero(finite))
        nan += int(np.count_nonzero(np.isnan(frames)))
        if first is None:
            in_file = finite.transpose(0, 2, 3, 1)  # back to the file's [n, s, s, T]: "first" is first in the file
            n, i, j, t = (int(v) for v in np.unravel_index(int(np.argmin(in_file)), in_file.shape))
            first = (rows[split].start + n, i, j, t)
    if first is None:
        return
    n, i, j, t = first
    used = sum(len(frames) for frames in data.values())
    raise UserError(
        f"{path}: field 'u' holds {bad:,} non-finite value{'s' if bad != 1 else ''} ({nan:,} NaN, {bad - nan:,} inf) "
        f"in the {used} trajectories used; first at u[{n}, {i}, {j}, {t}] (sample {n}, row {i}, column {j}, time step "
        f"{t}, from 0 in the file's [N, s, s, T] order; MATLAB u({n + 1},{i + 1},{j + 1},{t + 1})); Navier-Stokes "
        "training has no mask: replace them in the file, or save u as an .npz and train with data=arrays "
        "data.layout=NHWT, which masks NaN"
    )


def _u_shape(path: Path) -> tuple[int, int, int, int]:
    shape = mat_field_shape(path, "u")
    if len(shape) != 4 or shape[1] != shape[2]:
        raise UserError(f"{path}: field 'u' has shape {shape}, expected [N, s, s, T]; check data.file=...")
    return shape  # type: ignore[return-value]
