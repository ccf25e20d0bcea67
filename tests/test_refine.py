"""Sobolev norms (stpred.losses) against closed forms, the Navier-Stokes residual operator against an exact forced
solution and solver trajectories, and the Spectral-Refiner fine-tuning on a small Navier-Stokes problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stpred import UserError
from stpred.losses import SobolevLoss, sobolev_norm
from stpred.models.fno import FNO3d
from stpred.models.sfno import SFNO
from stpred.physics.navier_stokes import NavierStokes2D, fno_forcing, sample_grf
from stpred.physics.residual import finite_difference_matrix, ns_residual, time_derivative
from stpred.tasks.refine import refine

F64 = torch.float64
TWO_PI = 2 * math.pi


pytestmark = pytest.mark.usefixtures("one_thread")


def grid(nx: int, ny: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.arange(nx, dtype=F64) / nx)[:, None].expand(nx, ny), (torch.arange(ny, dtype=F64) / ny)[None, :]


# -- Sobolev norms ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nx, ny", [(16, 16), (15, 12), (8, 9)])
@pytest.mark.parametrize("s, alpha", [(0.0, 1.0), (1.0, 1.0), (-1.0, 10**-1.5), (0.5, 2.0), (-2.0, 0.3)])
def test_single_mode_has_the_closed_form_norm(nx: int, ny: int, s: float, alpha: float) -> None:
    """A cos(2 pi (k.x)) + c has |v_hat| = A/2 at +-k and c at 0: ||v||^2 = (a + 4pi^2|k|^2)^s A^2/2 + a^s c^2."""
    x1, x2 = grid(nx, ny)
    amp, const, k = 1.7, -0.4, (2, -3)
    v = amp * torch.cos(TWO_PI * (k[0] * x1 + k[1] * x2)) + const
    expected = math.sqrt((alpha + 4 * math.pi**2 * 13) ** s * amp**2 / 2 + alpha**s * const**2)
    assert sobolev_norm(v, s, alpha).item() == pytest.approx(expected, rel=1e-12)


def test_h1_and_h_minus_1_against_physical_space() -> None:
    """H^1 (alpha = 1): mean(v^2) + mean|grad v|^2; H^-1: mean(v * phi) with (alpha - lap) phi = v, via numpy."""
    rng = np.random.default_rng()
    n = 24
    coeff = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    k = np.fft.fftfreq(n, 1 / n)
    k_sq = k[:, None] ** 2 + k[None, :] ** 2
    coeff[np.sqrt(k_sq) > 7] = 0  # band-limited, so the grid derivatives are exact
    v = np.fft.ifft2(coeff).real
    gx = np.fft.ifft2(2j * np.pi * k[:, None] * np.fft.fft2(v)).real
    gy = np.fft.ifft2(2j * np.pi * k[None, :] * np.fft.fft2(v)).real
    h1 = math.sqrt(np.mean(v**2) + np.mean(gx**2 + gy**2))
    alpha = 0.05
    phi = np.fft.ifft2(np.fft.fft2(v) / (alpha + 4 * np.pi**2 * k_sq)).real
    h_minus_1 = math.sqrt(np.mean(v * phi))
    vt = torch.from_numpy(v)
    assert sobolev_norm(vt, 1.0, 1.0).item() == pytest.approx(h1, rel=1e-12)
    assert sobolev_norm(vt, -1.0, alpha).item() == pytest.approx(h_minus_1, rel=1e-12)
    assert sobolev_norm(vt, 0.0).item() == pytest.approx(math.sqrt(np.mean(v**2)), rel=1e-12)


def test_legacy_exponent_is_half_the_order() -> None:
    w = torch.randn(3, 20, 20, dtype=F64)
    for s in (-1.0, 1.0, 2.0):
        legacy = sobolev_norm(w, s, 0.1, legacy_exponent=True)
        torch.testing.assert_close(legacy, sobolev_norm(w, s / 2, 0.1), rtol=1e-12, atol=0)
        assert (legacy - sobolev_norm(w, s, 0.1)).abs().min() > 1e-3 * legacy.min()
    torch.testing.assert_close(sobolev_norm(w, 0.0, legacy_exponent=True), sobolev_norm(w, 0.0))


def test_time_average_relative_and_loss_reduction() -> None:
    v = torch.randn(4, 6, 16, 16, dtype=F64)  # [B, T, X, Y]
    target = torch.randn(4, 6, 16, 16, dtype=F64)
    per_step = sobolev_norm(v, -1.0, 0.2)  # [B, T]
    rms = sobolev_norm(v, -1.0, 0.2, time_average=True, time_dim=1)
    torch.testing.assert_close(rms, per_step.square().mean(dim=1).sqrt())
    rel = sobolev_norm(v, 0.0, relative=True, target=target, time_average=True, time_dim=1)
    expected = (v - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)  # trajectory relative L2
    torch.testing.assert_close(rel, expected)
    five = v[:, :, None]  # [B, T, C, X, Y]
    loss = SobolevLoss(s=-1.0, alpha=0.2, time_average=True, time_dim=1)
    torch.testing.assert_close(loss(five), rms.mean())
    assert SobolevLoss(reduction="none", time_average=True, time_dim=1)(five, five).abs().max() == 0
    with pytest.raises(ValueError, match="target"):
        sobolev_norm(v, relative=True)
    with pytest.raises(ValueError, match="time_dim"):
        sobolev_norm(v, time_average=True, time_dim=-2)


# -- residual operator -----------------------------------------------------------------------------------------------
def test_finite_differences_are_exact_on_polynomials() -> None:
    t = torch.arange(9, dtype=F64)
    for order in (2, 4):
        d = finite_difference_matrix(9, order)
        for degree in range(order + 1):
            exact = degree * t ** max(degree - 1, 0) if degree else torch.zeros(9, dtype=F64)
            torch.testing.assert_close(d @ t**degree, exact, rtol=1e-9, atol=1e-9)
        assert (d @ t ** (order + 1) - (order + 1) * t**order).abs().max() > 1e-3
    assert finite_difference_matrix(3, 4).shape == (3, 3)  # the order is capped at n - 1


def _forced_shell(nu: float, times: torch.Tensor, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """w(t) = w_s + (w0 - w_s) exp(-lam t) on |k|^2 = 2 with the FNO forcing: an exact Navier-Stokes solution."""
    x1, x2 = grid(size, size)
    w0 = torch.cos(TWO_PI * (x1 - x2)) + 0.3 * torch.sin(TWO_PI * (x1 + x2))
    lam = nu * 8 * math.pi**2
    w_s = fno_forcing(size, dtype=F64) / lam
    decay = torch.exp(-lam * times)[None, :, None, None]
    return w_s + (w0 - w_s) * decay, -lam * (w0 - w_s) * decay


def test_exact_solution_has_zero_residual() -> None:
    nu = 1e-3
    times = torch.arange(1, 21, dtype=F64)
    w, w_t = _forced_shell(nu, times)
    scale = fno_forcing(16, dtype=F64).abs().max()
    res = ns_residual(w, viscosity=nu, frame_dt=1.0, w_t=w_t)
    assert res.abs().max() < 1e-13 * scale  # every term is O(|f|) here
    # The finite-difference derivative: 4th order in frame_dt, with the first frames as context.
    errors = []
    for dt in (1.0, 0.25, 0.125):
        w, _ = _forced_shell(nu, torch.arange(1, 21, dtype=F64) * dt)
        res = ns_residual(w[:, 5:], viscosity=nu, frame_dt=dt, context=w[:, :5])
        errors.append(res.abs().max().item())
    assert errors[0] < 1e-5 * scale  # at the data's frame spacing
    assert 2**3.5 < errors[1] / errors[2] < 2**4.5
    wrong_nu = ns_residual(w[:, 5:], viscosity=2 * nu, frame_dt=0.125, context=w[:, :5])
    assert wrong_nu.abs().max() > 1e3 * errors[2]


def test_solver_trajectory_has_small_residual() -> None:
    """A nonlinear GRF trajectory from the data solver (Heun, float64): the residual is small against every term."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    w0 = sample_grf(2, 16, generator=gen, dtype=F64)
    solver = NavierStokes2D(16, viscosity=1e-3, dtype=F64)
    dt = 0.25
    traj = solver.solve(w0, [dt * (j + 1) for j in range(16)], progress=False)
    res = ns_residual(traj[:, 6:], viscosity=1e-3, frame_dt=dt, context=traj[:, :6])
    w_t = time_derivative(traj, dt)[:, 6:]
    assert sobolev_norm(res, -1.0, 10**-1.5).max() < 1e-3 * sobolev_norm(w_t, -1.0, 10**-1.5).min()


# -- the fine-tuning -------------------------------------------------------------------------------------------------
def _trained_tiny_sfno() -> tuple[SFNO, torch.Tensor, torch.Tensor, float]:
    torch.manual_seed(0)
    size, dt = 16, 0.25
    w0 = sample_grf(4, size, generator=torch.Generator().manual_seed(1), dtype=F64)
    traj = NavierStokes2D(size, viscosity=1e-3, dtype=F64).solve(w0, [dt * (j + 1) for j in range(30)], progress=False)
    traj = traj.float()
    xs = torch.stack([traj[:, s : s + 10] for s in range(11)], 1).flatten(0, 1)[:, :, None]
    ys = torch.stack([traj[:, s + 10 : s + 20] for s in range(11)], 1).flatten(0, 1)[:, :, None]
    model = SFNO(in_shape=(10, 1, size, size), out_frames=10, modes=4, modes_t=3, width=8, latent_steps=6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        idx = torch.randint(0, xs.shape[0], (4,))
        loss = (model(xs[idx]) - ys[idx]).norm() / ys[idx].norm()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, traj[:2, :10, None], traj[:2, 10:20, None].double(), dt


def test_refine_decreases_the_residual() -> None:
    model, x, y, dt = _trained_tiny_sfno()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x).double()
    pred, history = refine(model, x, viscosity=1e-3, frame_dt=dt)
    assert pred.shape == (2, 10, 1, 16, 16) and pred.dtype == F64
    assert len(history) == 51
    assert history[-1] < 0.6 * history[0]
    assert sum(b < a for a, b in zip(history, history[1:])) >= 45  # Adam descends almost every step
    # The error to the true trajectory does not get worse while the residual falls.
    err_before = ((before - y).norm() / y.norm()).item()
    err_after = ((pred - y).norm() / y.norm()).item()
    assert err_after < 1.01 * err_before
    # The caller's model is untouched; the history's end is the residual of the returned prediction.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    res = ns_residual(pred[:, :, 0], viscosity=1e-3, frame_dt=dt, context=x[:, :, 0].double())
    assert sobolev_norm(res, -1.0, 10**-1.5, time_average=True, time_dim=1).mean().item() == pytest.approx(
        history[-1], rel=1e-9
    )


def test_refine_rejects_what_it_cannot_refine() -> None:
    with pytest.raises(UserError, match="SFNO"):
        fno = FNO3d(in_shape=(10, 1, 16, 16), out_frames=4, modes=4, width=4)
        refine(fno, torch.zeros(1, 10, 1, 16, 16), viscosity=1e-3, frame_dt=1)
    velocity = SFNO(in_shape=(10, 2, 16, 16), out_frames=4, modes=4, modes_t=3, width=8)
    with pytest.raises(UserError, match="vorticity"):
        refine(velocity, torch.zeros(1, 10, 2, 16, 16), viscosity=1e-3, frame_dt=1.0)
