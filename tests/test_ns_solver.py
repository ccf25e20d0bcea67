"""The Navier-Stokes solver against exact solutions, its convergence order, and the FNO random initial conditions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stpred.physics.navier_stokes import (
    NavierStokes2D,
    default_dt,
    enstrophy,
    fno_forcing,
    grf_sqrt_eig,
    kinetic_energy,
    sample_grf,
    spectral_resize,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(size, dtype=F64) / size
    return x[:, None].expand(size, size), x[None, :].expand(size, size)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def shell5(size: int) -> torch.Tensor:
    """A field on the single shell |k|^2 = 5 (modes (1, 2), (2, -1), (1, -2)): an exact unforced solution."""
    x1, x2 = grid(size)
    tp = 2 * math.pi
    return torch.sin(tp * (x1 + 2 * x2)) + torch.cos(tp * (2 * x1 - x2)) + 0.5 * torch.cos(tp * (x1 - 2 * x2))


# -- exact solutions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 15])
@pytest.mark.parametrize("scheme", ["euler", "heun"])
def test_single_shell_decays_exactly(size, scheme):
    """No forcing: w0 on one shell decays as exp(-nu 4 pi^2 |k|^2 t); the advection vanishes identically."""
    nu, dt = 1e-2, 0.05
    lam = nu * 4 * math.pi**2 * 5
    w0 = shell5(size)[None]
    times = [0.3, 1.0]  # 0.3 is not a multiple of dt: the intervals are split into equal shorter steps
    solver = NavierStokes2D(size, viscosity=nu, dt=dt, forcing=None, scheme=scheme, dtype=F64)
    out = solver.solve(w0, times, progress=False)[0]

    # The discrete solution is exactly the Crank-Nicolson factor per step, so space is exact and F == 0.
    steps = [(0.3, 6), (0.7, 14)]
    factor, discrete = 1.0, []
    for interval, n in steps:
        a = 0.5 * lam * interval / n
        factor *= ((1 - a) / (1 + a)) ** n
        discrete.append(factor)
    for i in range(2):
        assert torch.allclose(out[i], discrete[i] * w0[0], rtol=0, atol=1e-12)
    # Against the continuous solution, the error is the CN leading term t lam^3 dt^2 / 12 (relative).
    exact = math.exp(-lam * 1.0) * w0[0]
    err = rel_l2(out[1], exact)
    predicted = 1.0 * lam**3 * dt**2 / 12
    assert 0.8 * predicted < err < 1.2 * predicted, (err, predicted)


def test_advection_vanishes_on_shell_and_matches_closed_form():
    """u.grad(w) of w = A cos(2 pi x1) + B cos(4 pi x2) is -1.5 A B sin(2 pi x1) sin(4 pi x2)."""
    for size in (16, 17):
        x1, x2 = grid(size)
        solver = NavierStokes2D(size, viscosity=1e-3, forcing=None, dtype=F64)
        a, b = 0.7, -1.3
        w = a * torch.cos(2 * math.pi * x1) + b * torch.cos(4 * math.pi * x2)
        adv = torch.fft.irfft2(solver.advection(torch.fft.rfft2(w)), s=(size, size))
        expected = -1.5 * a * b * torch.sin(2 * math.pi * x1) * torch.sin(4 * math.pi * x2)
        assert torch.allclose(adv, expected, atol=1e-12)
        shell = torch.fft.irfft2(solver.advection(torch.fft.rfft2(shell5(size))), s=(size, size))
        assert shell.abs().max() < 1e-12


def forced_shell_errors(dts: list[float], nu: float, t_end: float, dtype=F64) -> list[float]:
    size = 16
    x1, x2 = grid(size)
    w0 = torch.cos(2 * math.pi * (x1 - x2)) + 0.3 * torch.sin(2 * math.pi * (x1 + x2))
    k_sq = 8 * math.pi**2
    w_s = fno_forcing(size, dtype=F64) / (nu * k_sq)
    exact = w_s + (w0 - w_s) * math.exp(-nu * k_sq * t_end)
    errors = []
    for dt in dts:
        solver = NavierStokes2D(size, viscosity=nu, dt=dt, forcing="fno", dtype=dtype)
        out = solver.solve(w0[None].to(dtype), [t_end], progress=False)[0, 0]
        errors.append(rel_l2(out.double(), exact))
    return errors


def test_fno_forcing_shell_exact_and_second_order():
    """With the FNO forcing, w0 on |k| = 2 pi sqrt(2) relaxes to f / (nu |k|^2); CN is second order in dt."""
    nu, t_end = 2e-2, 2.0
    lam = nu * 8 * math.pi**2
    dts = [0.2, 0.1, 0.05]
    errors = forced_shell_errors(dts, nu, t_end)
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(1.95 < p < 2.05 for p in orders), orders
    # Leading-order bound: |w0 - w_s| e^{-lam t} t lam^3 dt^2 / 12, relative to |w(t)| >= |w_s| / 2 here.
    assert errors[-1] < 2 * t_end * lam**3 * dts[-1] ** 2 / 12
    # The FNO setting itself, nu = 1e-3 and float32, with the default step of a 64^2 grid.
    assert forced_shell_errors([default_dt(64)], 1e-3, 10.0, dtype=torch.float32)[0] < 1e-5


def test_nonlinear_convergence_orders():
    """On a random field (advection active) Euler is first order in dt and Heun second order."""
    size, nu, t_end = 16, 1e-2, 1.0
    w0 = 10 * sample_grf(2, size, generator=torch.Generator().manual_seed(3), dtype=F64)  # stronger advection

    def run(scheme: str, dt: float) -> torch.Tensor:
        solver = NavierStokes2D(size, viscosity=nu, dt=dt, scheme=scheme, dtype=F64)
        return solver.solve(w0, [t_end], progress=False)[:, 0]

    reference = run("heun", 1.0 / 1280)
    for scheme, expected in (("euler", 1.0), ("heun", 2.0)):
        errors = [rel_l2(run(scheme, dt), reference) for dt in (1.0 / 20, 1.0 / 40, 1.0 / 80)]
        orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
        assert all(abs(p - expected) < 0.1 for p in orders), (scheme, errors, orders)


# -- nonlinear behaviour ---------------------------------------------------------------------------------------------
def dealiased_grf(n: int, size: int, seed: int) -> torch.Tensor:
    w0 = sample_grf(n, size, generator=torch.Generator().manual_seed(seed), dtype=F64)
    solver = NavierStokes2D(size, forcing=None, dtype=F64)
    return torch.fft.irfft2(torch.fft.rfft2(w0) * solver._dealias, s=(size, size))


def test_inviscid_advection_conserves_energy_and_enstrophy():
    """nu = 0: the dealiased advection moves the field a lot but conserves energy and enstrophy, up to the time
    scheme: Heun's drift falls as dt^3, Euler's grows the energy and falls as dt."""
    size = 32
    w0 = 3 * dealiased_grf(2, size, seed=4)

    def drifts(scheme: str, dt: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        solver = NavierStokes2D(size, viscosity=0.0, dt=dt, forcing=None, scheme=scheme, dtype=F64)
        w1 = solver.solve(w0, [1.0], progress=False)[:, 0]
        drift_e = kinetic_energy(w1) / kinetic_energy(w0) - 1
        drift_z = enstrophy(w1) / enstrophy(w0) - 1
        return drift_e, drift_z, rel_l2(w1, w0)

    e1, z1, change = drifts("heun", 4e-3)
    e2, z2, _ = drifts("heun", 2e-3)
    assert change > 0.4
    assert e1.abs().max() < 1e-8 and z1.abs().max() < 2e-7
    assert ((e1 / e2 > 6) & (e1 / e2 < 10) & (z1 / z2 > 6) & (z1 / z2 < 10)).all(), (e1 / e2, z1 / z2)
    e1, _, _ = drifts("euler", 4e-3)
    e2, _, _ = drifts("euler", 2e-3)
    assert (e2 > 0).all() and ((e1 / e2 > 1.8) & (e1 / e2 < 2.2)).all(), (e1, e2)


def test_viscous_random_field_energy_budget():
    """Unforced, nu = 1e-3: energy and enstrophy decrease, the energy follows dE/dt = -2 nu Z (advection moves no
    energy), and the field ends far from the pure-diffusion solution (advection is active)."""
    size, nu, h = 32, 1e-3, 0.05
    w0 = 10 * dealiased_grf(4, size, seed=5)
    times = [h * (i + 1) for i in range(100)]
    solver = NavierStokes2D(size, viscosity=nu, forcing=None, scheme="heun", dtype=F64)
    w = torch.cat([w0[:, None], solver.solve(w0, times, progress=False)], 1)
    energy, ens = kinetic_energy(w), enstrophy(w)
    assert (energy.diff(dim=1) < 0).all() and (ens.diff(dim=1) < 0).all()
    simpson = h / 3 * (ens[:, 0] + ens[:, -1] + 4 * ens[:, 1:-1:2].sum(1) + 2 * ens[:, 2:-1:2].sum(1))
    budget = (energy[:, -1] - energy[:, 0]) / (-2 * nu * simpson) - 1
    assert budget.abs().max() < 1e-3, budget
    assert (1 - energy[:, -1] / energy[:, 0] > 0.3).all()
    diffused = torch.fft.irfft2(torch.fft.rfft2(w0) * torch.exp(-nu * solver._neg_lap * times[-1]), s=(size, size))
    assert all(rel_l2(w[i, -1], diffused[i]) > 0.4 for i in range(4))


def test_fno_setting_stays_bounded():
    """FNO forcing and GRF at the default step: the forcing pumps the energy up to a bounded level, no NaN."""
    w0 = sample_grf(4, 32, generator=torch.Generator().manual_seed(6))
    w = NavierStokes2D(32, viscosity=1e-3).solve(w0, [5.0, 10.0, 20.0], progress=False)
    assert torch.isfinite(w).all()
    energy = kinetic_energy(w)
    assert (energy[:, -1] > 5 * kinetic_energy(w0)).all() and energy.max() < 0.02


# -- initial conditions -----------------------------------------------------------------------------------------------
def test_grf_matches_fno_formula():
    """The same random numbers through a literal transcription of the FNO GaussianRF(dim=2) give the same field."""
    size, n = 8, 3
    w0 = sample_grf(n, size, generator=torch.Generator().manual_seed(7), dtype=F64)
    xi = torch.randn(n, size, size, 2, generator=torch.Generator().manual_seed(7), dtype=F64).numpy()
    alpha, tau = 2.5, 7.0
    sigma = tau ** (0.5 * (2 * alpha - 2))
    k = np.concatenate([np.arange(0, size // 2), np.arange(-size // 2, 0)])
    kx, ky = np.meshgrid(k, k, indexing="ij")
    sqrt_eig = size**2 * math.sqrt(2) * sigma * (4 * math.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    expected = np.fft.ifft2(sqrt_eig * (xi[..., 0] + 1j * xi[..., 1])).real
    np.testing.assert_allclose(w0.numpy(), expected, rtol=0, atol=1e-14)
    assert grf_sqrt_eig(size)[1, 2] == pytest.approx(64 * math.sqrt(2) * 7**1.5 * (20 * math.pi**2 + 49) ** -1.25)


def test_grf_spectrum_and_statistics():
    """Zero mean per field; E|fft2(w)_k|^2 = sqrt_eig(k)^2; pointwise variance
    2 sigma^2 sum_k (4 pi^2 |k|^2 + tau^2)^-alpha."""
    size, n = 16, 800
    w0 = sample_grf(n, size, generator=torch.Generator().manual_seed(8), dtype=F64)
    assert w0.mean(dim=(-2, -1)).abs().max() < 1e-12
    power = (torch.fft.fft2(w0).abs() ** 2).mean(0)
    eig = grf_sqrt_eig(size) ** 2
    ratio = power[eig > 0] / eig[eig > 0]
    assert abs(float(ratio.mean()) - 1) < 0.01  # 255 modes x 800 draws
    # Per shell (modes grouped by |k|^2), averaged over the shell's modes and the draws.
    k = torch.fft.fftfreq(size, 1 / size, dtype=F64)
    k_sq = (k[:, None] ** 2 + k[None, :] ** 2).round().long()
    for shell in (1, 2, 4, 5, 25):
        mask = k_sq == shell
        assert abs(float((power[mask] / eig[mask]).mean()) - 1) < 4 / math.sqrt(n * int(mask.sum()))
    k_sq_f = k_sq.double()[k_sq > 0]
    variance = 2 * 7.0**3 * ((4 * math.pi**2 * k_sq_f + 49) ** -2.5).sum()
    assert float(w0.var()) == pytest.approx(float(variance), rel=0.03)


# -- grids -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size_out", [20, 21, 16])
def test_spectral_resize_exact_for_band_limited(size_out):
    x1, x2 = grid(64)
    c1, c2 = grid(size_out)
    field = lambda a, b: torch.sin(2 * math.pi * (3 * a - 2 * b)) + torch.cos(2 * math.pi * (5 * b))  # noqa: E731
    coarse = spectral_resize(torch.fft.rfft2(field(x1, x2)), 64, size_out)
    assert torch.allclose(coarse, field(c1, c2), atol=1e-12)


def test_solve_on_fine_grid_saves_coarse_frames():
    size, out = 48, 16
    w0 = sample_grf(2, size, generator=torch.Generator().manual_seed(9), dtype=F64)
    solver = NavierStokes2D(size, viscosity=1e-3, dtype=F64)
    fine = solver.solve(w0, [0.5, 1.0], progress=False)
    coarse = solver.solve(w0, [0.5, 1.0], out_resolution=out, progress=False)
    assert coarse.shape == (2, 2, out, out)
    expected = spectral_resize(torch.fft.rfft2(fine), size, out)
    assert torch.allclose(coarse, expected, atol=1e-12)
    # Subsampling the fine frames differs from truncation only through the small modes above the coarse band.
    assert rel_l2(coarse, fine[..., ::3, ::3]) < 0.05


def test_solver_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scheme"):
        NavierStokes2D(16, scheme="rk4")
    with pytest.raises(ValueError, match="increasing"):
        NavierStokes2D(16).solve(torch.zeros(1, 16, 16), [1.0, 0.5], progress=False)
    with pytest.raises(ValueError, match="must be"):
        NavierStokes2D(16).solve(torch.zeros(1, 8, 8), [1.0], progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    w0 = sample_grf(4, 32, generator=torch.Generator().manual_seed(10), dtype=F64)
    cpu = NavierStokes2D(32, dtype=F64).solve(w0, [1.0, 2.0], progress=False)
    gpu = NavierStokes2D(32, dtype=F64, device="cuda").solve(w0, [1.0, 2.0], progress=False)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-10)
