"""Pseudo-spectral solver for 2-D incompressible Navier-Stokes in vorticity form, and its random initial conditions.

The equation (docs/data.md section 5.1), on the periodic unit torus with coordinates ``x1`` (rows, axis ``-2``) and
``x2`` (columns, axis ``-1``)::

    dw/dt + u . grad(w) = nu * lap(w) + f,    u = (d psi/dx2, -d psi/dx1),    -lap(psi) = w

is advanced as in the FNO generator (Li et al. 2021, ``navier_stokes_2d``): the advection is formed in physical
space, 2/3-dealiased, and treated explicitly together with the forcing, while the diffusion is Crank-Nicolson.
``scheme="euler"`` is that scheme exactly (first order in time through the advection); ``scheme="heun"``, the
default, adds a corrector (the advection averaged over the start and the predicted end of the step), which makes
the whole step second order for one extra evaluation of the advection, and allows a 2x larger stable step with
errors ~100x smaller (see :func:`default_dt`).

Initial conditions are the FNO ``GaussianRF(dim=2, alpha=2.5, tau=7)`` draws (docs/data.md section 5.2). Everything
is batched over trajectories, runs on any torch device, in float32 or float64, on any grid size.

Examples:
    >>> gen = torch.Generator().manual_seed(0)
    >>> w0 = sample_grf(4, 32, generator=gen)
    >>> solver = NavierStokes2D(32, viscosity=1e-3)
    >>> solver.solve(w0, times=[1.0, 2.0], progress=False).shape
    torch.Size([4, 2, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

__all__ = [
    "NavierStokes2D",
    "default_dt",
    "fno_forcing",
    "grf_sqrt_eig",
    "kinetic_energy",
    "enstrophy",
    "sample_grf",
    "spectral_resize",
    "wavenumbers",
]

Scheme = Literal["euler", "heun"]

#: Largest default step, reached on coarse grids where the CFL bound below is looser.
_DT_MAX = 5e-2
#: ``dt * resolution`` of the default step per scheme: CFL numbers ``max|u| dt / dx`` of about 0.28 (Heun) and
#: 0.14 (Euler) with the measured ``max|u| ~ 0.28`` of the FNO setting; both blow up between 2.5x and 5x that.
_DT_TIMES_RES = {"heun": 1.0, "euler": 0.5}


def wavenumbers(size: int, *, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers of a real 2-D FFT (``torch.fft.rfft2``) on a ``size x size`` grid.

    Args:
        size: grid points per side (any positive integer).
        device: tensor device.

    Returns:
        ``(k1, k2)``: ``[size, 1]`` along rows (full spectrum, negative half last) and ``[1, size // 2 + 1]``
        along columns (non-negative half), float64.
    """
    k1 = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64, device=device).round()
    k2 = torch.fft.rfftfreq(size, d=1.0 / size, dtype=torch.float64, device=device).round()
    return k1[:, None], k2[None, :]


def grf_sqrt_eig(size: int, *, alpha: float = 2.5, tau: float = 7.0) -> torch.Tensor:
    """Square-root eigenvalues of the FNO Gaussian random field on the full FFT grid.

    ``sqrt_eig(k) = s^2 * sqrt(2) * sigma * (4 pi^2 |k|^2 + tau^2)^(-alpha / 2)`` with
    ``sigma = tau^(0.5 (2 alpha - d))``, ``d = 2``, and ``sqrt_eig(0) = 0``.

    Args:
        size: grid points per side.
        alpha: smoothness exponent.
        tau: inverse length scale.

    Returns:
        ``[size, size]`` float64.
    """
    k = torch.fft.fftfreq(size, d=1.0 / size, dtype=torch.float64).round()
    k_sq = k[:, None] ** 2 + k[None, :] ** 2
    sigma = tau ** (0.5 * (2.0 * alpha - 2.0))
    sqrt_eig = size**2 * math.sqrt(2.0) * sigma * (4.0 * math.pi**2 * k_sq + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    return sqrt_eig


def sample_grf(
    n: int,
    size: int,
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw FNO Gaussian-random-field initial vorticities, ``w0 = Re(ifftn(sqrt_eig * xi))``.

    ``xi`` has independent standard normal real and imaginary parts, drawn as ``randn(n, size, size, 2)`` like
    the FNO code. The draws come from ``generator`` on the CPU, so a seed gives the same fields on every device.

    Args:
        n: number of fields.
        size: grid points per side.
        alpha: smoothness exponent.
        tau: inverse length scale.
        generator: CPU random generator (the global one when ``None``).
        device: device of the result.
        dtype: ``torch.float32`` or ``torch.float64``.

    Returns:
        ``[n, size, size]`` fields with zero mean.
    """
    xi = torch.randn(n, size, size, 2, generator=generator, dtype=torch.float64)
    coeff = torch.view_as_complex(xi) * grf_sqrt_eig(size, alpha=alpha, tau=tau)
    return torch.fft.ifftn(coeff, dim=(-2, -1)).real.to(device=device, dtype=dtype)


def fno_forcing(size: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
    """The FNO forcing ``f = 0.1 (sin 2 pi (x1 + x2) + cos 2 pi (x1 + x2))`` on the grid ``x = j / size``.

    Returns:
        ``[size, size]``.
    """
    x = torch.arange(size, dtype=torch.float64) / size
    phase = 2.0 * math.pi * (x[:, None] + x[None, :])
    return (0.1 * (torch.sin(phase) + torch.cos(phase))).to(device=device, dtype=dtype)


def spectral_resize(w_hat: torch.Tensor, size_in: int, size_out: int) -> torch.Tensor:
    """Evaluate a field given by its ``rfft2`` on a coarser grid by truncating its Fourier series.

    Modes with ``|k1|, |k2| <= (size_out - 1) // 2`` are kept, so the Nyquist mode of an even output grid is
    dropped; on the kept band the result equals the fine field at the coarse points up to aliasing of the
    dropped modes, which the GRF spectrum and the viscosity make small.

    Args:
        w_hat: ``[..., size_in, size_in // 2 + 1]`` complex coefficients (unnormalised ``rfft2``).
        size_in: grid of ``w_hat``.
        size_out: target grid, ``<= size_in``.

    Returns:
        ``[..., size_out, size_out]`` real field.
    """
    if size_out == size_in:
        return torch.fft.irfft2(w_hat, s=(size_in, size_in))
    if size_out > size_in:
        raise ValueError(f"spectral_resize: size_out={size_out} must not exceed size_in={size_in}")
    kc = (size_out - 1) // 2
    out = w_hat.new_zeros(*w_hat.shape[:-2], size_out, size_out // 2 + 1)
    out[..., : kc + 1, : kc + 1] = w_hat[..., : kc + 1, : kc + 1]
    if kc > 0:
        out[..., size_out - kc :, : kc + 1] = w_hat[..., size_in - kc :, : kc + 1]
    return torch.fft.irfft2(out * (size_out / size_in) ** 2, s=(size_out, size_out))


def default_dt(resolution: int, scheme: Scheme = "heun", viscosity: float = 1e-3) -> float:
    """The default solver step: ``1 / resolution`` (Heun) or ``0.5 / resolution`` (Euler), at most 0.05; below
    ``nu = 1e-3`` scaled by ``sqrt(nu / 1e-3)`` (Heun) or ``nu / 1e-3`` (Euler).

    Checked on the FNO setting (nu = 1e-3, FNO forcing and GRF, t <= 50, float32) against a float64 Heun run at
    ``dt = 2.5e-3``. The flow reaches ``max|u| ~ 0.28``, so these steps are CFL numbers ``max|u| dt / dx`` of
    0.28 and 0.14. Relative L2 errors at t = 20 (t = 50):

    - 32^2: Heun ``dt = 1/32`` ~2e-5 (~1e-4); Euler ``dt = 1/64`` ~1.6e-3 (~1.3e-2). Both stay stable at 2.5x
      the step; the energy saturates near 46x its initial value in every run.
    - 64^2: Heun ``dt = 1/64`` 1.5e-5 (5e-5); Euler ``dt = 1/128`` ~1e-3 (~6e-3). Both stay stable at 2.5x
      the step and blow up (NaN before t = 50) at 5x.

    Euler is first order, so its error is dominated by the step; Heun's by float32 rounding. Lower viscosities
    give faster, rougher flows (``max|u| ~ 0.54`` at 1e-4, 0.6 at 1e-5) and the unscaled steps blow up on 64^2.
    Forward-Euler advection is only damped by the viscosity (a mode grows by ``(dt u k)^2 / 2`` per step and is
    damped by ``dt nu k^2``, so ``dt < 2 nu / max|u|^2``), hence its linear scaling. With the scaling, runs on
    64^2 to t = 30 stay bounded for Heun at nu = 1e-4 and 1e-5 and for Euler at 1e-4; that is a stability check
    only, so check accuracy (e.g. against ``dt / 4``) before relying on these viscosities.

    Args:
        resolution: solver grid points per side.
        scheme: ``"heun"`` or ``"euler"``.
        viscosity: ``nu``.

    Returns:
        The step ``dt``.
    """
    ratio = min(1.0, viscosity / 1e-3)
    return min(_DT_MAX, _DT_TIMES_RES[scheme] / resolution) * (math.sqrt(ratio) if scheme == "heun" else ratio)


def kinetic_energy(w: torch.Tensor) -> torch.Tensor:
    """Mean kinetic energy ``<|u|^2> / 2`` of vorticity fields ``[..., s, s]``, via ``|u_k|^2 = |w_k|^2/|2 pi k|^2``."""
    size = w.shape[-1]
    k1, k2 = wavenumbers(size, device=w.device)
    lap = 4.0 * math.pi**2 * (k1**2 + k2**2)
    lap[0, 0] = math.inf
    return 0.5 * _parseval_mean(torch.fft.rfft2(w.double()).abs() ** 2 / lap, size)


def enstrophy(w: torch.Tensor) -> torch.Tensor:
    """Mean enstrophy ``<w^2> / 2`` of vorticity fields ``[..., s, s]``."""
    return 0.5 * (w.double() ** 2).mean(dim=(-2, -1))


def _parseval_mean(power: torch.Tensor, size: int) -> torch.Tensor:
    """Spatial mean of a squared field from its ``rfft2`` power, counting the mirrored half of the spectrum."""
    weight = torch.full((power.shape[-1],), 2.0, dtype=power.dtype, device=power.device)
    weight[0] = 1.0
    if size % 2 == 0:
        weight[-1] = 1.0
    return (power * weight).sum(dim=(-2, -1)) / size**4


class NavierStokes2D:
    """Batched pseudo-spectral solver on the unit torus (FNO scheme; see the module docstring).

    Args:
        resolution: solver grid points per side (any size; odd sizes have no Nyquist mode).
        viscosity: kinematic viscosity ``nu``.
        dt: largest time step; each interval between recorded times is split into equal steps no longer than
            this. Defaults to :func:`default_dt` (``1 / resolution`` for Heun, ``0.5 / resolution`` for Euler).
        forcing: ``"fno"`` for :func:`fno_forcing`, ``None`` for none, or a ``[resolution, resolution]`` tensor.
        scheme: ``"heun"`` (explicit Heun predictor-corrector advection, Crank-Nicolson diffusion; second
            order in time) or ``"euler"`` (the FNO scheme exactly: explicit Euler advection, first order).
        device: torch device of the computation.
        dtype: ``torch.float32`` or ``torch.float64``.
    """

    def __init__(
        self,
        resolution: int,
        *,
        viscosity: float = 1e-3,
        dt: float | None = None,
        forcing: Literal["fno"] | torch.Tensor | None = "fno",
        scheme: Scheme = "heun",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if resolution < 4:
            raise ValueError(f"NavierStokes2D: resolution={resolution} must be at least 4")
        if scheme not in ("euler", "heun"):
            raise ValueError(f"NavierStokes2D: scheme={scheme!r} must be 'euler' or 'heun'")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"NavierStokes2D: dtype={dtype} must be torch.float32 or torch.float64")
        self.resolution = resolution
        self.viscosity = float(viscosity)
        self.dt = float(dt) if dt is not None else default_dt(resolution, scheme, viscosity)
        self.scheme = scheme
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128

        k1, k2 = wavenumbers(resolution, device=self.device)
        self._neg_lap = (4.0 * math.pi**2 * (k1**2 + k2**2)).to(dtype)  # symbol of -lap
        inv_lap = 1.0 / self._neg_lap
        inv_lap[0, 0] = 0.0  # the mean of psi is arbitrary and never differentiated
        self._inv_lap = inv_lap
        # The Nyquist mode of an even grid has no real odd derivative; zeroing it keeps u, v and grad w real.
        nyq = resolution // 2 if resolution % 2 == 0 else None
        k1d, k2d = k1.clone(), k2.clone()
        if nyq is not None:
            k1d[k1d.abs() == nyq] = 0.0
            k2d[k2d.abs() == nyq] = 0.0
        self._d1 = (2j * math.pi * k1d).to(cdtype)
        self._d2 = (2j * math.pi * k2d).to(cdtype)
        kmax = resolution // 2
        self._dealias = ((k1.abs() <= 2.0 / 3.0 * kmax) & (k2.abs() <= 2.0 / 3.0 * kmax)).to(dtype)

        if isinstance(forcing, str):
            if forcing != "fno":
                raise ValueError(f"NavierStokes2D: forcing={forcing!r} must be 'fno', None or a tensor")
            forcing = fno_forcing(resolution, device=self.device, dtype=dtype)
        if forcing is None:
            self._f_hat = None
        else:
            if tuple(forcing.shape) != (resolution, resolution):
                raise ValueError(f"NavierStokes2D: forcing shape {tuple(forcing.shape)} must be {(resolution,) * 2}")
            self._f_hat = torch.fft.rfft2(forcing.to(device=self.device, dtype=dtype))

    def velocity(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u1, u2) = (d psi/dx2, -d psi/dx1)`` of ``w_hat`` ``[..., s, s//2+1]``; each ``[..., s, s]``."""
        psi_hat = w_hat * self._inv_lap
        size = (self.resolution, self.resolution)
        return torch.fft.irfft2(self._d2 * psi_hat, s=size), torch.fft.irfft2(-self._d1 * psi_hat, s=size)

    def advection(self, w_hat: torch.Tensor) -> torch.Tensor:
        """Dealiased ``rfft2`` of ``u . grad(w)`` for ``w_hat`` ``[..., s, s//2+1]`` (same shape)."""
        size = (self.resolution, self.resolution)
        psi_hat = w_hat * self._inv_lap
        # Separate inverse FFTs: one stacked call is several times slower on CPU once it outgrows the cache.
        prod = torch.fft.irfft2(self._d2 * psi_hat, s=size) * torch.fft.irfft2(self._d1 * w_hat, s=size)
        prod -= torch.fft.irfft2(self._d1 * psi_hat, s=size) * torch.fft.irfft2(self._d2 * w_hat, s=size)
        return torch.fft.rfft2(prod) * self._dealias

    def _explicit(self, w_hat: torch.Tensor, adv_hat: torch.Tensor, dt: float, half_diff: torch.Tensor):
        # FNO's [(1 - a) w - dt F + dt f] / (1 + a), written as an increment: in float32, 1 - a and 1 + a lose
        # the digits of a ~ 1e-3, which moved the forced steady state by ~4e-5 (relative) at nu = 1e-3.
        increment = -dt * adv_hat - 2.0 * half_diff * w_hat
        if self._f_hat is not None:
            increment = increment + dt * self._f_hat
        return w_hat + increment / (1.0 + half_diff)

    def step(self, w_hat: torch.Tensor, dt: float | None = None) -> torch.Tensor:
        """Advance ``w_hat`` ``[..., s, s//2+1]`` by one step of length ``dt`` (default ``self.dt``)."""
        dt = self.dt if dt is None else dt
        half_diff = 0.5 * dt * self.viscosity * self._neg_lap
        adv0 = self.advection(w_hat)
        w_pred = self._explicit(w_hat, adv0, dt, half_diff)
        if self.scheme == "euler":
            return w_pred
        adv1 = self.advection(w_pred)
        return self._explicit(w_hat, 0.5 * (adv0 + adv1), dt, half_diff)

    def num_steps(self, times: Sequence[float]) -> int:
        """Steps :meth:`solve` takes to reach ``times``."""
        return sum(n for _, n in self._intervals(times))

    def _intervals(self, times: Sequence[float]) -> list[tuple[float, int]]:
        times = [float(t) for t in times]
        if not times or any(t <= 0 for t in times) or any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"NavierStokes2D: times {times} must be non-empty, positive and increasing")
        intervals = [b - a for a, b in zip([0.0, *times], times)]
        # The 1e-9 keeps intervals that are whole multiples of dt (up to rounding) at that many steps.
        return [(iv, max(1, math.ceil(iv / self.dt - 1e-9))) for iv in intervals]

    def solve(
        self,
        w0: torch.Tensor,
        times: Sequence[float],
        *,
        out_resolution: int | None = None,
        progress: bool = True,
        desc: str = "navier-stokes",
        on_steps: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Integrate from ``t = 0`` and record the vorticity at ``times``.

        Each interval between consecutive recorded times is split into ``ceil(interval / dt)`` equal steps, so
        every time is hit exactly.

        Args:
            w0: ``[N, s, s]`` initial vorticity on the solver grid.
            times: increasing positive times to record.
            out_resolution: grid of the recorded frames (Fourier truncation, :func:`spectral_resize`); the
                solver grid when ``None``.
            progress: show a tqdm bar over time steps.
            desc: bar label.
            on_steps: called with the number of steps just taken after each recorded time (for an outer bar).

        Returns:
            ``[N, len(times), r, r]`` recorded vorticity on ``self.device`` in ``self.dtype``.
        """
        s = self.resolution
        r = out_resolution or s
        if w0.ndim != 3 or tuple(w0.shape[1:]) != (s, s):
            raise ValueError(f"NavierStokes2D.solve: w0 shape {tuple(w0.shape)} must be [N, {s}, {s}]")
        intervals = self._intervals(times)
        w_hat = torch.fft.rfft2(w0.to(device=self.device, dtype=self.dtype))
        frames = torch.empty(w0.shape[0], len(intervals), r, r, device=self.device, dtype=self.dtype)
        total = sum(n for _, n in intervals)
        with tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step") as bar:
            for i, (interval, n) in enumerate(intervals):
                for _ in range(n):
                    w_hat = self.step(w_hat, interval / n)
                bar.update(n)
                if on_steps is not None:
                    on_steps(n)
                frames[:, i] = spectral_resize(w_hat, s, r)
        return frames
