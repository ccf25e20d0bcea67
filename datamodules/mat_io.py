"""Reading the FNO Navier-Stokes ``.mat`` files (docs/data.md section 5.4), MATLAB v7.3 (HDF5) and older (v5).

The files hold ``a`` ``[N, s, s]`` (the initial vorticity), ``u`` ``[N, s, s, T]`` (the trajectory, one frame per
unit time) and ``t`` (the recorded times), all in MATLAB's axis order. A v7.3 file is HDF5 written column-major,
so h5py sees every array with its axes reversed (``u`` as ``[T, s, s, N]``); reversing them back, as FNO's
``MatReader`` does, restores the MATLAB order. Older files go through ``scipy.io.loadmat``, which already returns
the MATLAB order.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from stpred.errors import UserError

__all__ = ["mat_field_names", "mat_field_shape", "read_mat_field", "read_fno_trajectories"]


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(
            f"Navier-Stokes file {path} does not exist; set data.file=<path to an FNO .mat file> "
            "or data.file=null to generate the data"
        )


def _missing_field(path: Path, name: str, present: list[str]) -> UserError:
    return UserError(
        f"{path} has no field '{name}' (it has {sorted(present)}); pass an FNO Navier-Stokes .mat file with "
        "'a' [N, s, s] and 'u' [N, s, s, T] through data.file=..."
    )


def _corrupt(path: Path, err: Exception) -> UserError:
    return UserError(f"{path} is not a readable MATLAB .mat file ({err}); re-download it or fix data.file=...")


def mat_field_names(path: str | Path) -> list[str]:
    """Names of the variables in a ``.mat`` file."""
    path = Path(path)
    _check_file(path)
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            return list(f.keys())
    try:
        return [name for name, _, _ in scipy.io.whosmat(path)]
    except (ValueError, OSError, TypeError) as err:
        raise _corrupt(path, err) from err


def mat_field_shape(path: str | Path, name: str) -> tuple[int, ...]:
    """Shape of field ``name`` in MATLAB axis order, without reading the data.

    Args:
        path: the ``.mat`` file.
        name: the variable, e.g. ``"u"``.

    Returns:
        The shape, e.g. ``(N, s, s, T)`` for ``u``.
    """
    path = Path(path)
    _check_file(path)
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if name not in f:
                raise _missing_field(path, name, list(f.keys()))
            return tuple(reversed(f[name].shape))
    try:
        info = {n: shape for n, shape, _ in scipy.io.whosmat(path)}
    except (ValueError, OSError, TypeError) as err:
        raise _corrupt(path, err) from err
    if name not in info:
        raise _missing_field(path, name, list(info))
    return tuple(info[name])


def read_mat_field(path: str | Path, name: str, rows: slice | None = None) -> np.ndarray:
    """Read field ``name`` in MATLAB axis order, optionally only the rows ``rows`` of its first axis.

    Args:
        path: the ``.mat`` file (v7.3 is read lazily, so only the requested rows leave the disk).
        name: the variable.
        rows: a slice of the first (MATLAB) axis, e.g. trajectories; all when ``None``.

    Returns:
        The array in MATLAB axis order, e.g. ``[n, s, s, T]`` for ``u``.
    """
    path = Path(path)
    _check_file(path)
    rows = rows if rows is not None else slice(None)
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if name not in f:
                raise _missing_field(path, name, list(f.keys()))
            dset = f[name]
            data = dset[(Ellipsis, rows)] if dset.ndim > 1 else dset[rows]
        return np.transpose(data, tuple(reversed(range(data.ndim))))
    try:
        mat = scipy.io.loadmat(path, variable_names=[name])
    except (ValueError, OSError, TypeError, NotImplementedError) as err:
        raise _corrupt(path, err) from err
    if name not in mat:
        raise _missing_field(path, name, mat_field_names(path))
    return np.asarray(mat[name])[rows]


def read_fno_trajectories(path: str | Path, rows: slice) -> np.ndarray:
    """Trajectories ``u`` of an FNO Navier-Stokes file in stpred's layout.

    Args:
        path: the ``.mat`` file.
        rows: which trajectories (a slice of ``N``).

    Returns:
        ``[n, T, s, s]`` float32, frame ``j`` being MATLAB's ``u(:, :, :, j)``.
    """
    u = read_mat_field(path, "u", rows)
    if u.ndim != 4 or u.shape[1] != u.shape[2]:
        raise UserError(f"{path}: field 'u' has shape {u.shape}, expected [N, s, s, T]; check data.file=...")
    return np.ascontiguousarray(np.transpose(u, (0, 3, 1, 2)), dtype=np.float32)
