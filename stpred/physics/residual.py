"""The vorticity residual of 2-D Navier-Stokes on the unit torus, and finite-difference time derivatives.

``R = f - dw/dt - (u . grad) w + nu lap(w)`` (:func:`ns_residual`). The spatial terms are spectral: the advection as
in the solver (formed in physical space, 2/3-dealiased; :meth:`NavierStokes2D.advection`), the Laplacian exactly.
``dw/dt`` is a finite difference along the frame axis (:func:`time_derivative`): exact for polynomials in ``t`` of
degree ``<= order``, so on coarse frame spacings the residual of the true solution is ``O(frame_dt^order)``, not 0.

Examples:
    >>> w = torch.zeros(2, 6, 16, 16, dtype=torch.float64)
    >>> ns_residual(w, viscosity=1e-3, frame_dt=0.5, forcing=None).abs().max().item()
    0.0
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from stpred.errors import UserError
from stpred.physics.navier_stokes import NavierStokes2D, fno_forcing, wavenumbers

__all__ = ["finite_difference_matrix", "time_derivative", "ns_residual"]


def finite_difference_matrix(n: int, order: int = 4) -> torch.Tensor:
    """``[n, n]`` float64 first-derivative matrix on unit-spaced points, accurate to ``order`` (capped at ``n - 1``).

    Row ``i`` uses the ``order + 1`` points nearest ``i`` (centred where they fit, shifted at the ends); its weights
    make the stencil exact for polynomials of degree ``<= order``.
    """
    if n < 2:
        raise ValueError(f"finite_difference_matrix needs at least 2 points, got {n}")
    order = max(1, min(order, n - 1))
    d = np.zeros((n, n))
    powers = np.arange(order + 1)
    rhs = (powers == 1).astype(float)
    for i in range(n):
        start = min(max(i - order // 2, 0), n - order - 1)
        offsets = np.arange(start, start + order + 1) - i
        d[i, start : start + order + 1] = np.linalg.solve(offsets[None, :] ** powers[:, None], rhs)
    return torch.from_numpy(d)


def time_derivative(frames: torch.Tensor, frame_dt: float, order: int = 4) -> torch.Tensor:
    """Finite-difference ``d/dt`` of ``frames [B, T, ...]`` spaced ``frame_dt`` (:func:`finite_difference_matrix`)."""
    d = finite_difference_matrix(frames.shape[1], order).to(device=frames.device, dtype=frames.dtype)
    return torch.einsum("st,bt...->bs...", d, frames) / frame_dt


def _forcing(forcing: Literal["fno"] | torch.Tensor | None, size: int, like: torch.Tensor) -> torch.Tensor:
    if forcing is None:
        return torch.zeros(size, size, device=like.device, dtype=like.dtype)
    if isinstance(forcing, str):
        if forcing != "fno":
            raise UserError(f"forcing={forcing!r} must be 'fno', None or a [{size}, {size}] tensor")
        return fno_forcing(size, device=like.device, dtype=like.dtype)
    if tuple(forcing.shape) != (size, size):
        raise UserError(f"forcing shape {tuple(forcing.shape)} must be the grid ({size}, {size})")
    return forcing.to(device=like.device, dtype=like.dtype)


def ns_residual(
    w: torch.Tensor,
    *,
    viscosity: float,
    frame_dt: float,
    forcing: Literal["fno"] | torch.Tensor | None = "fno",
    context: torch.Tensor | None = None,
    w_t: torch.Tensor | None = None,
    time_order: int = 4,
) -> torch.Tensor:
    """Vorticity residual ``R = f - dw/dt - (u . grad) w + nu lap(w)`` of frames ``w [B, T, S, S]``.

    Args:
        w: vorticity frames on the unit torus, spaced ``frame_dt`` (float64 recommended).
        viscosity: ``nu``.
        frame_dt: time between frames.
        forcing: ``"fno"`` (:func:`stpred.physics.navier_stokes.fno_forcing`), ``None`` or a ``[S, S]`` field.
        context: earlier frames ``[B, T_c, S, S]`` directly before ``w``, used only in the time derivative.
        w_t: the time derivative, if known; replaces the finite differences.
        time_order: accuracy order of the finite-difference time derivative.

    Returns:
        ``[B, T, S, S]`` residual in ``w``'s dtype.
    """
    if w.ndim != 4 or w.shape[-1] != w.shape[-2]:
        raise UserError(f"ns_residual expects square vorticity frames [B, T, S, S], got {tuple(w.shape)}")
    size = w.shape[-1]
    if w_t is None:
        full = w if context is None else torch.cat([context.to(w.dtype), w], dim=1)
        w_t = time_derivative(full, frame_dt, time_order)[:, -w.shape[1] :]
    solver = NavierStokes2D(size, viscosity=viscosity, forcing=None, device=w.device, dtype=w.dtype)
    k1, k2 = wavenumbers(size, device=w.device)
    neg_lap = (4.0 * math.pi**2 * (k1**2 + k2**2)).to(w.dtype)
    w_hat = torch.fft.rfft2(w)
    rhs_hat = -solver.advection(w_hat) - viscosity * neg_lap * w_hat
    return _forcing(forcing, size, w) - w_t + torch.fft.irfft2(rhs_hat, s=(size, size))
