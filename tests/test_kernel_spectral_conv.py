"""Spectral convolution kernels: every implementation against an independent NumPy float64 ground truth.

The op is bilinear in (x, W), so exact gradients of ``L = <g, y>`` come from the truth itself: ``dx`` from the
responses to unit impulses in x, ``dW`` from the responses to unit weights (real and imaginary parts).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stpred.errors import UserError
from stpred.kernels.spectral_conv import select_impl, spectral_conv2d, spectral_conv3d
from stpred.kernels.spectral_conv.matmul import (
    estimate_seconds,
    prefer_matmul,
    spectral_conv2d_matmul,
    spectral_conv3d_matmul,
)
from stpred.kernels.spectral_conv.reference import spectral_conv2d_reference, spectral_conv3d_reference

# --------------------------------------------------------------------------------------------- NumPy ground truth


def np_truth(x: np.ndarray, ws: np.ndarray, n_out: int, norm: str) -> np.ndarray:
    """``x [B, Ci, *grid]`` real, ``ws [J, Ci, Co, *modes]`` complex -> ``[J, B, Co, *grid[:-1], n_out]``."""
    grid = x.shape[2:]
    axes = tuple(range(2, x.ndim))
    modes = ws.shape[3:]
    xf = np.fft.rfftn(x, axes=axes, norm=norm)
    idx = [np.r_[0 : m // 2, n - m // 2 : n] for n, m in zip(grid[:-1], modes[:-1])] + [np.arange(modes[-1])]
    kept = xf[np.ix_(np.arange(x.shape[0]), np.arange(x.shape[1]), *idx)]
    mixed = np.einsum("bi...,jio...->jbo...", kept, ws)
    spec = np.zeros(mixed.shape[:3] + tuple(grid[:-1]) + (n_out // 2 + 1,), dtype=complex)
    spec[np.ix_(*[np.arange(s) for s in mixed.shape[:3]], *idx)] = mixed
    return np.fft.irfftn(spec, s=tuple(grid[:-1]) + (n_out,), axes=tuple(range(3, spec.ndim)), norm=norm)


def np_forward(x: torch.Tensor, w: torch.Tensor, n_out: int, norm: str) -> np.ndarray:
    wc = w.double().numpy()
    return np_truth(x.double().numpy(), (wc[..., 0] + 1j * wc[..., 1])[None], n_out, norm)[0]


def np_grads(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor, n_out: int, norm: str) -> tuple:
    """Exact ``(dx, dW)`` of ``L = sum(g * y)``."""
    xn, wn, gn = x.double().numpy(), w.double().numpy(), g.double().numpy()
    b, c_in = xn.shape[:2]
    wc = (wn[..., 0] + 1j * wn[..., 1])[None]
    n_x = c_in * math.prod(xn.shape[2:])
    impulses = np.eye(n_x).reshape(n_x, c_in, *xn.shape[2:])
    resp = np_truth(impulses, wc, n_out, norm)[0]  # [n_x, Co, *out]
    dx = (gn.reshape(b, -1) @ resp.reshape(n_x, -1).T).reshape(xn.shape)
    n_w = wc[0].size
    units = np.concatenate([np.eye(n_w), 1j * np.eye(n_w)]).reshape(2 * n_w, *wc.shape[1:])
    resp_w = np_truth(xn, units, n_out, norm)  # [2*n_w, B, Co, *out]
    dw_flat = resp_w.reshape(2 * n_w, -1) @ gn.ravel()
    dw = np.stack([dw_flat[:n_w], dw_flat[n_w:]], axis=-1).reshape(wn.shape)
    return dx, dw


def assert_close(actual: torch.Tensor, truth: np.ndarray, rel: float, what: str) -> None:
    a = actual.detach().double().numpy()
    assert a.shape == truth.shape, f"{what}: shape {a.shape} != {truth.shape}"
    assert np.isfinite(a).all(), f"{what}: non-finite values"
    err, scale = np.abs(a - truth).max(), np.abs(truth).max()
    assert err <= rel * scale, f"{what}: max error {err:.3e} > {rel:.0e} * {scale:.3e}"


# --------------------------------------------------------------------------------------------- cases

# (x shape, C_out, modes, out_last, norm): odd and non-power-of-two sizes, modes that do not divide N, m1 = N1/2,
# m2 = N2/2+1 (input and output), longer and shorter out_last, B=1, odd channel counts.
CASES_2D = [
    ((2, 3, 12, 9), 2, (3, 4), None, "backward"),
    ((2, 3, 10, 10), 5, (5, 6), 12, "ortho"),
    ((1, 1, 9, 14), 3, (2, 5), 8, "forward"),
]
CASES_3D = [
    ((1, 3, 6, 5, 7), 2, (2, 2, 3), 10, "backward"),
    ((2, 2, 4, 6, 6), 3, (2, 3, 3), 4, "ortho"),
]
IDS_2D = ["12x9", "edge-modes-longer-t", "B1-shorter-t"]
IDS_3D = ["3d-longer-t", "3d-edge-shorter-t"]


def make(shape, c_out, modes, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    wshape = (shape[1], c_out, *[2 * m for m in modes[:-1]], modes[-1], 2)
    w = (torch.rand(wshape, generator=gen, dtype=torch.float64) - 0.5).to(dtype)
    return x, w


def check_against_truth(fn, shape, c_out, modes, out_last, norm, rel=2e-5, dtype=torch.float32, seed=0):
    x, w = make(shape, c_out, modes, dtype, seed)
    n_out = shape[-1] if out_last is None else out_last
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = fn(xg, wg, out_last, norm)
    assert y.dtype == dtype
    assert_close(y, np_forward(x, w, n_out, norm), rel, "forward")
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    dx, dw = torch.autograd.grad(y, (xg, wg), g)
    tdx, tdw = np_grads(x, w, g, n_out, norm)
    assert_close(dx, tdx, rel, "dx")
    assert_close(dw, tdw, rel, "dW")


TORCH_2D = {"rfft": spectral_conv2d_reference, "matmul": spectral_conv2d_matmul}
TORCH_3D = {"rfft": spectral_conv3d_reference, "matmul": spectral_conv3d_matmul}


@pytest.mark.parametrize("impl", ["rfft", "matmul"])
@pytest.mark.parametrize("case", CASES_2D, ids=IDS_2D)
def test_2d_vs_truth(impl, case):
    check_against_truth(TORCH_2D[impl], *case)
    check_against_truth(TORCH_2D[impl], *case, rel=1e-12, dtype=torch.float64, seed=3)


@pytest.mark.parametrize("impl", ["rfft", "matmul"])
@pytest.mark.parametrize("case", CASES_3D, ids=IDS_3D)
def test_3d_vs_truth(impl, case):
    check_against_truth(TORCH_3D[impl], *case)
    check_against_truth(TORCH_3D[impl], *case, rel=1e-12, dtype=torch.float64, seed=3)


@pytest.mark.parametrize("impl", ["rfft", "matmul"])
@pytest.mark.parametrize(("grid", "modes", "out_last"), [((48, 63), (12, 12), None), ((64, 48), (32, 25), 63)])
def test_fno_sizes_vs_truth(impl, grid, modes, out_last):
    """Realistic odd / non-power-of-two grids; gradients by the exact bilinear identities with random probes."""
    x, w = make((2, 3, *grid), 4, modes)
    n_out = grid[-1] if out_last is None else out_last
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = TORCH_2D[impl](xg, wg, out_last, "backward")
    assert_close(y, np_forward(x, w, n_out, "backward"), 2e-5, "forward")
    g = torch.randn(y.shape, dtype=torch.float32)
    dx, dw = torch.autograd.grad(y, (xg, wg), g)
    for seed in range(2):
        v, vw = make((2, 3, *grid), 4, modes, seed=10 + seed)
        # L(x) = <g, y(x)> is linear in x (and in W): <dx, v> = <g, y(v)>, <dW, vw> = <g, y(x; vw)>.
        want_x = float((g.double().numpy() * np_forward(v, w, n_out, "backward")).sum())
        want_w = float((g.double().numpy() * np_forward(x, vw, n_out, "backward")).sum())
        assert abs(float((dx.double() * v.double()).sum()) - want_x) <= 1e-4 * abs(want_x) + 1e-3
        assert abs(float((dw.double() * vw.double()).sum()) - want_w) <= 1e-4 * abs(want_w) + 1e-3


@pytest.mark.parametrize("fn", [spectral_conv2d_reference, spectral_conv2d_matmul])
def test_gradcheck_2d(fn):
    x, w = make((1, 2, 6, 7), 3, (2, 3), torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, 9, "ortho"), (x, w))


@pytest.mark.parametrize("fn", [spectral_conv3d_reference, spectral_conv3d_matmul])
def test_gradcheck_3d(fn):
    x, w = make((1, 2, 4, 4, 5), 2, (1, 2, 3), torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, 4, "backward"), (x, w))


@pytest.mark.parametrize("impl", ["rfft", "matmul"])
def test_non_contiguous_inputs(impl):
    base, wbase = make((2, 3, 9, 12), 2, (3, 4))
    x = base.transpose(-1, -2)  # [2, 3, 12, 9], not contiguous
    w = wbase.permute(1, 0, 2, 3, 4).contiguous().permute(1, 0, 2, 3, 4)
    assert not x.is_contiguous() and not w.is_contiguous()
    y = spectral_conv2d(x, w, 11, "backward", impl=impl)
    assert_close(y, np_forward(x, w, 11, "backward"), 2e-5, "forward")


def test_determinism_matmul_dw():
    x, w = make((3, 5, 12, 10), 7, (4, 5))
    grads = []
    for _ in range(2):
        wg = w.clone().requires_grad_(True)
        spectral_conv2d_matmul(x, wg, None, "backward").square().sum().backward()
        grads.append(wg.grad)
    assert torch.equal(grads[0], grads[1])


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("impl", ["rfft", "matmul"])
def test_modes_too_large_errors(impl):
    x, w = make((1, 2, 10, 8), 2, (6, 3))  # 2*m1 = 12 > N1 = 10
    with pytest.raises(UserError, match=r"axis 0 keeps 2\*6 modes.*only 10 points"):
        spectral_conv2d(x, w, impl=impl)
    x, w = make((1, 2, 10, 8), 2, (5, 6))  # m2 = 6 > 8//2+1
    with pytest.raises(UserError, match=r"keeps 6 modes but the input length 8 has only 5"):
        spectral_conv2d(x, w, impl=impl)
    x, w = make((1, 2, 10, 12), 2, (5, 6))  # fine for the input, too many for out_last=8
    with pytest.raises(UserError, match=r"output length 8 has only 5"):
        spectral_conv2d(x, w, out_last=8, impl=impl)
    x, w = make((1, 2, 6, 4, 10), 2, (2, 2, 4))  # 2*my = 4 is fine, mt = 4 > out_last 5 // 2 + 1
    with pytest.raises(UserError, match=r"output length 5 has only 3"):
        spectral_conv3d(x, w, out_last=5, impl=impl)


# --------------------------------------------------------------------------------------------- CPU dispatch

# Measured single-threaded on the (shared, noisy) development machine, float32, min of 5 runs:
# (B, C, grid, modes, out_last) -> (rfft/matmul forward time ratio, rfft/matmul forward+backward ratio).
MEASURED = [
    ((2, 4, (32, 32), (8, 8), 32), (0.93, 1.41)),
    ((2, 4, (64, 64), (8, 8), 64), (1.27, 2.03)),
    ((2, 4, (64, 64), (32, 32), 64), (0.65, 0.87)),
    ((2, 4, (128, 128), (16, 16), 128), (1.15, 1.59)),
    ((2, 4, (128, 128), (32, 32), 128), (0.62, 0.79)),
    ((2, 4, (128, 128), (64, 64), 128), (0.36, 0.29)),
    ((2, 4, (256, 256), (8, 8), 256), (4.52, 9.70)),
    ((2, 4, (256, 256), (32, 32), 256), (0.81, 1.17)),
    ((2, 4, (256, 256), (64, 64), 256), (0.38, 0.33)),
    ((8, 16, (32, 32), (8, 8), 32), (1.98, 2.62)),
    ((8, 16, (64, 64), (8, 8), 64), (2.00, 2.59)),
    ((8, 16, (64, 64), (32, 32), 64), (0.84, 1.29)),
    ((8, 16, (128, 128), (16, 16), 128), (1.38, 1.92)),
    ((8, 16, (128, 128), (32, 32), 128), (0.90, 1.22)),
    ((4, 20, (64, 64, 20), (12, 12, 5), 20), (1.56, 1.89)),
    ((1, 20, (64, 64, 20), (12, 12, 5), 41), (2.44, 5.52)),
    ((1, 4, (256, 256, 6), (64, 64, 4), 6), (0.46, 0.71)),
    ((1, 4, (512, 512), (32, 32), 512), (1.32, 1.77)),
    ((8, 32, (64, 64), (12, 12), 64), (1.10, 1.92)),
    ((2, 8, (96, 63), (12, 12), 63), (1.80, 1.98)),
    ((1, 1, (256, 256), (128, 129), 256), (0.12, 0.19)),
    # Two threads, median of 5 (2026-11-21): the FNO benchmark's modes-16 shapes, just above the margin.
    ((32, 32, (64, 64), (16, 16), 64), (1.11, 2.45)),
    ((32, 64, (64, 64), (16, 16), 64), (1.89, 2.51)),
    ((32, 16, (64, 64), (16, 16), 64), (1.13, 1.74)),
    ((16, 16, (128, 128), (24, 24), 128), (1.05, 1.78)),
]


@pytest.mark.parametrize(("case", "ratios"), MEASURED)
def test_cost_model_never_picks_the_slower_path(case, ratios):
    b, c, grid, modes, n_out = case
    if prefer_matmul(b, c, c, grid, modes, n_out):
        assert min(ratios) >= 1.0, f"model picks matmul where it measured slower: {ratios}"


def test_cost_model_shape():
    # Benchmark shapes go to matmul; untruncated or nearly untruncated grids (Spectral-Refiner) to rfft.
    assert prefer_matmul(32, 32, 32, (64, 64), (12, 12), 64)
    assert prefer_matmul(4, 20, 20, (64, 64, 20), (12, 12, 5), 20)
    assert not prefer_matmul(4, 20, 20, (256, 256, 6), (64, 64, 4), 6)
    assert not prefer_matmul(8, 16, 16, (128, 128), (64, 65), 128)
    # Monotone in the modes: once rfft wins, more modes keep it winning.
    picks = [prefer_matmul(4, 8, 8, (128, 128), (m, m), 128) for m in range(2, 65, 2)]
    assert picks[0] and not picks[-1]
    assert picks == sorted(picks, reverse=True)
    assert estimate_seconds("rfft", 1, 1, 1, (64, 64), (8, 8), 64) > 0
    with pytest.raises(ValueError, match="unknown path"):
        estimate_seconds("fft", 1, 1, 1, (64, 64), (8, 8), 64)


def test_select_impl_cpu():
    x, w = torch.empty(32, 32, 64, 64), torch.empty(32, 32, 24, 12, 2)
    assert select_impl("torch", x, w) == "matmul"
    assert select_impl("auto", x, w) == "matmul"
    x, w = torch.empty(1, 4, 128, 128), torch.empty(4, 4, 128, 65, 2)
    assert select_impl("auto", x, w) == "rfft"
    x64, w64 = torch.empty(2, 2, 64, 64, dtype=torch.float64), torch.empty(2, 2, 24, 12, 2, dtype=torch.float64)
    assert select_impl("auto", x64, w64) == "rfft"
    assert select_impl("matmul", x64, w64) == "matmul"
    with pytest.raises(ValueError, match="no float64"):
        select_impl("triton", x64, w64)
    with pytest.raises(ValueError, match="impl must be one of"):
        select_impl("cuda", x, w)


def test_public_bf16_input_matches_float32():
    x, w = make((2, 3, 16, 12), 4, (4, 5))
    y32 = spectral_conv2d(x, w, impl="matmul")
    y16 = spectral_conv2d(x.bfloat16(), w, impl="matmul")
    assert y16.dtype == torch.bfloat16
    assert (y16.float() - y32).abs().max() <= 2e-2 * y32.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_auto = spectral_conv2d(x, w, impl="matmul")
    assert y_auto.dtype == torch.float32 and torch.equal(y_auto, y32)  # the GEMMs did not run in bf16


# --------------------------------------------------------------------------------------------- Triton (interpreter)


@pytest.fixture
def poisoned(monkeypatch):
    """Kernel-allocated outputs start as NaN, so any element a kernel forgets to write shows up."""
    tri = pytest.importorskip("stpred.kernels.spectral_conv.triton")
    monkeypatch.setattr(tri, "_empty", lambda shape, device: torch.full(shape, float("nan"), device=device))
    return tri


@pytest.mark.triton
@pytest.mark.parametrize("case", [CASES_2D[0], CASES_2D[2]], ids=[IDS_2D[0], IDS_2D[2]])
def test_triton_2d_vs_truth(poisoned, case):
    check_against_truth(poisoned.spectral_conv2d_triton, *case)


@pytest.mark.triton
def test_triton_3d_vs_truth(poisoned):
    check_against_truth(poisoned.spectral_conv3d_triton, *CASES_3D[0])


@pytest.mark.triton
def test_triton_vs_reference_channels_over_one_tile(poisoned):
    """C_in = 17 and C_out = 19 span two 16-wide tiles; B = 18 spans two batch tiles (the dW reduction)."""
    x, w = make((18, 17, 6, 5), 19, (1, 2))
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = poisoned.spectral_conv2d_triton(xg, wg, 7, "backward")
    yr = spectral_conv2d_reference(xr, wr, 7, "backward")
    g = torch.randn_like(yr)
    grads = torch.autograd.grad(y, (xg, wg), g)
    grads_r = torch.autograd.grad(yr, (xr, wr), g)
    for a, b, name in zip((y, *grads), (yr, *grads_r), ("y", "dx", "dW")):
        assert torch.isfinite(a).all(), name
        assert (a - b).abs().max() <= 1e-5 * b.abs().max(), name


@pytest.mark.triton
def test_triton_dw_bitwise_deterministic(poisoned):
    x, w = make((5, 3, 8, 6), 2, (2, 3))
    grads = []
    for _ in range(2):
        wg = w.clone().requires_grad_(True)
        poisoned.spectral_conv2d_triton(x, wg).square().sum().backward()
        grads.append(wg.grad)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.triton
def test_triton_non_contiguous(poisoned):
    base, w = make((2, 3, 7, 8), 2, (2, 3))
    x = base.transpose(-1, -2)
    y = poisoned.spectral_conv2d_triton(x, w, None, "backward")
    assert_close(y, np_forward(x, w, 7, "backward"), 2e-5, "forward")


@pytest.mark.triton
def test_triton_edge_modes_and_multi_block_loops(poisoned):
    """K1 = 66 > 64 (two k1 blocks in the analysis, two K1 trips in the synthesis), N1 = 66 and N2 = 34 over
    their 16/32-wide loops, m2 = out_last/2+1, odd C_out."""
    check_against_truth(poisoned.spectral_conv2d_triton, (1, 1, 66, 34), 3, (33, 3), 4, "forward")
    check_against_truth(poisoned.spectral_conv2d_triton, *CASES_2D[1])


@pytest.mark.triton
def test_triton_3d_edge_modes_shorter_t(poisoned):
    check_against_truth(poisoned.spectral_conv3d_triton, *CASES_3D[1])


@pytest.mark.triton
def test_triton_non_contiguous_gradient(poisoned):
    x, w = make((2, 3, 9, 7), 2, (3, 2))
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = poisoned.spectral_conv2d_triton(xg, wg, 10, "ortho")
    g = torch.randn(2, 2, 10, 9).transpose(-1, -2)  # [2, 2, 9, 10], not contiguous
    dx, dw = torch.autograd.grad(y, (xg, wg), g)
    tdx, tdw = np_grads(x, w, g.contiguous(), 10, "ortho")
    assert_close(dx, tdx, 2e-5, "dx")
    assert_close(dw, tdw, 2e-5, "dW")


def _rel_l2(a: torch.Tensor, truth: np.ndarray) -> float:
    a = a.detach().double().numpy()
    return float(np.linalg.norm(a - truth) / np.linalg.norm(truth))


# bf16 keeps 8 significant bits (round to nearest: unit roundoff u = 2^-9 ~ 2e-3). Every stage rounds both of
# its operands (x, the bases, the partial transforms, the spectrum, W): about ten roundings along the forward,
# each an independent relative error <= u, so the relative L2 error is a few u: 5e-3 measured, here and at the
# benchmark shape (README "Precision"). Bound: three times that. A float32 path gives ~1e-7, a biased rounding
# (truncation, which is what the interpreter's own bf16 cast does) 2.5e-2, bf16 bits multiplied as integers O(1).
BF16_REL_L2 = 1.5e-2
# TF32 keeps 11 significant bits and the tensor cores may drop the 13 low ones (truncation, u = 2^-10, the
# conservative assumption emulated here). Measured 2.7-2.9e-3 (the kernels under the interpreter and the PyTorch
# emulation below agree to 1e-7, and the benchmark shape gives the same); bound 8e-3.
TF32_REL_L2 = 8e-3


@pytest.mark.triton
@pytest.mark.parametrize("dims", [2, 3])
def test_triton_bf16_against_float64(poisoned, dims):
    """bf16 operands, float32 accumulation: forward and both gradients within the bf16 bound of float64."""
    if dims == 2:
        shape, c_out, modes, out_last, fn = (2, 5, 16, 11), 3, (5, 6), 12, poisoned.spectral_conv2d_triton
    else:
        shape, c_out, modes, out_last, fn = (1, 3, 6, 8, 7), 2, (2, 3, 3), 9, poisoned.spectral_conv3d_triton
    x, w = make(shape, c_out, modes)
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = fn(xg, wg, out_last, "backward", precision="bf16")
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    dx, dw = torch.autograd.grad(y, (xg, wg), g)
    truths = (np_forward(x, w, out_last, "backward"), *np_grads(x, w, g, out_last, "backward"))
    for a, truth, name in zip((y, dx, dw), truths, ("y", "dx", "dW")):
        err = _rel_l2(a, truth)
        assert 1e-4 < err <= BF16_REL_L2, f"bf16 {name}: relative L2 error {err:.2e}"
    with pytest.raises(ValueError, match="precision must be one of"):
        fn(x, w, precision="fp8")


def emulate_rounded(x: torch.Tensor, w: torch.Tensor, rnd) -> np.ndarray:
    """The Triton 2-D pipeline (norm "backward", out_last = N2) in float64 PyTorch with ``rnd`` applied to every
    ``tl.dot`` operand (complex operands part by part), stage by stage as the kernels do: half axis, first axis,
    mixing, inverse first axis, inverse half axis."""

    def c(t):
        return torch.complex(rnd(t.real), rnd(t.imag))

    n1, n2 = x.shape[2:]
    k1, m2 = w.shape[2], w.shape[3]
    m1 = k1 // 2
    freqs = torch.cat([torch.arange(m1), torch.arange(n1 - m1, n1)]).double()
    f = torch.exp(-2j * math.pi * ((freqs[:, None] * torch.arange(n1).double()[None, :]) % n1) / n1)  # [K1, N1]
    k = torch.arange(m2).double()
    theta_p = 2 * math.pi * ((torch.arange(n2).double()[:, None] * k[None, :]) % n2) / n2  # [N2, M2]
    xr = rnd(x.double())
    z = torch.complex(xr @ rnd(torch.cos(theta_p)), xr @ rnd(-torch.sin(theta_p)))  # [B, C, N1, M2]
    xh = torch.einsum("kn,bcnm->bckm", c(f), c(z))
    wc = torch.complex(w[..., 0].double(), w[..., 1].double())
    yh = torch.einsum("bikm,iokm->bokm", c(xh), c(wc))
    zy = torch.einsum("nk,bokm->bonm", c(f.conj().T / n1), c(yh))
    ck = torch.where((k == 0) | ((n2 % 2 == 0) & (k == n2 // 2)), 1.0, 2.0).double()
    theta = theta_p.T
    rc, rs = ck[:, None] * torch.cos(theta) / n2, -ck[:, None] * torch.sin(theta) / n2
    return (rnd(zy.real) @ rnd(rc) + rnd(zy.imag) @ rnd(rs)).numpy()


def tf32_truncate(t: torch.Tensor) -> torch.Tensor:
    bits = t.float().view(torch.int32) & ~0x1FFF
    return bits.view(torch.float32).double()


def test_tf32_emulation_bound():
    """The PyTorch TF32 emulation (every GEMM operand truncated to 10 mantissa bits) stays within the TF32 bound
    of float64 and is not accidentally exact; without rounding the emulation equals the truth."""
    x, w = make((4, 8, 32, 24), 6, (8, 9))
    truth = np_forward(x, w, 24, "backward")
    assert float(np.linalg.norm(emulate_rounded(x, w, lambda t: t) - truth) / np.linalg.norm(truth)) < 1e-12
    err = float(np.linalg.norm(emulate_rounded(x, w, tf32_truncate) - truth) / np.linalg.norm(truth))
    assert 1e-4 < err <= TF32_REL_L2, f"tf32 emulation: relative L2 error {err:.2e}"


@pytest.mark.triton
def test_triton_tf32_interpreter_matches_emulation(poisoned):
    """Under the interpreter ``precision="tf32"`` truncates the operands inside the kernels; it matches the
    PyTorch emulation to float32 accumulation accuracy and stays within the TF32 bound, gradients included."""
    x, w = make((2, 5, 16, 12), 3, (4, 5))
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = poisoned.spectral_conv2d_triton(xg, wg, precision="tf32")
    assert _rel_l2(y, emulate_rounded(x, w, tf32_truncate)) < 2e-5
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    dx, dw = torch.autograd.grad(y, (xg, wg), g)
    truths = (np_forward(x, w, 12, "backward"), *np_grads(x, w, g, 12, "backward"))
    for a, truth, name in zip((y, dx, dw), truths, ("y", "dx", "dW")):
        err = _rel_l2(a, truth)
        assert 1e-5 < err <= TF32_REL_L2, f"tf32 {name}: relative L2 error {err:.2e}"


@pytest.mark.triton
def test_triton_public_dispatch(poisoned):
    x, w = make((1, 2, 8, 6), 3, (2, 2))
    y = spectral_conv2d(x, w, impl="triton")
    assert_close(y, np_forward(x, w, 6, "backward"), 2e-5, "impl=triton")
    y16 = spectral_conv2d(x.bfloat16(), w, impl="triton")
    assert y16.dtype == torch.bfloat16
    assert _rel_l2(y16.float(), np_forward(x.bfloat16(), w, 6, "backward")) <= BF16_REL_L2 + 2**-8


@pytest.mark.triton
def test_triton_packed_weight_follows_in_place_updates(poisoned):
    """The packed-weight cache is keyed on the tensor and its version: an in-place update (an optimizer step)
    is seen by the next call, and an unchanged weight is not repacked."""
    x, w = make((1, 2, 8, 6), 3, (2, 2))
    assert poisoned.packed_weight(w) is poisoned.packed_weight(w)
    poisoned.spectral_conv2d_triton(x, w)
    with torch.no_grad():
        w.mul_(-0.5).add_(0.1)
    assert_close(poisoned.spectral_conv2d_triton(x, w), np_forward(x, w, 6, "backward"), 2e-5, "after update")


def test_benchmark_rows_name_the_dispatched_path(monkeypatch):
    from stpred.kernels.spectral_conv import benchmark

    assert [c["B"] for c in benchmark.cases()] == [32, 32, 32, 32, 4]
    assert benchmark.cases()[-1] == {
        "op": "spectral_conv3d",
        "B": 4,
        "C": 20,
        "grid": (64, 64, 20),
        "modes": (12, 12, 5),
    }
    tiny = [
        {"op": "spectral_conv2d", "B": 2, "C": 3, "grid": (9, 8), "modes": (3, 4)},
        {"op": "spectral_conv3d", "B": 1, "C": 2, "grid": (8, 7, 6), "modes": (2, 3, 2)},
    ]
    monkeypatch.setattr(benchmark, "cases", lambda quick=False: tiny)
    rows = benchmark.run("cpu", quick=True)
    assert len(rows) == 6
    for case, group in zip(tiny, (rows[:3], rows[3:])):
        x = torch.empty(case["B"], case["C"], *case["grid"])
        w = torch.empty(case["C"], case["C"], *[2 * m for m in case["modes"][:-1]], case["modes"][-1], 2)
        assert [r["impl"] for r in group] == ["rfft", "matmul", f"auto ({select_impl('auto', x, w)})"]
        assert all(r["op"] == case["op"] and r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 for r in group)
        assert group[0]["speedup"] == 1.0
        # the table rounds the speedup to 2 decimals: half a unit of that on top of the timings' own rounding
        ratio = group[0]["fwd_bwd_ms"] / group[1]["fwd_bwd_ms"]
        assert group[1]["speedup"] == pytest.approx(ratio, rel=0.02, abs=0.005)


_COMPILE_CHILD = """
import json
from stpred.kernels.compile_check import compile_case
from stpred.kernels.spectral_conv.compile_cases import compile_cases
cases = [c for c in compile_cases() if c.name == "spectral_conv2d B32 C32 64x64 m12/12 tf32 fwd+bwd"]
print(json.dumps([r.row() | {"required": r.tensor_cores_required} for t in ("sm_80", "sm_90")
                  for r in compile_case(cases[0], t)]))
"""


@pytest.mark.triton
def test_compiled_kernels_use_tensor_cores_without_spills():
    """One benchmark case compiled for sm_80 and sm_90 (Triton's bundled ptxas, no GPU): every kernel of the
    forward and backward uses tensor cores, spills nothing, has no stack and fits at least two blocks per SM."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _COMPILE_CHILD], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    kernels = {(r["kernel"], r["target"]) for r in rows}
    for name in ("dft2_analysis_kernel", "dft2_synthesis_kernel", "cgemm_kernel"):
        assert {(name, "sm_80"), (name, "sm_90")} <= kernels, name
    for r in rows:
        assert not r["error"], r
        assert r["required"] and r["tensor_cores"] == "yes", r
        assert r["spill_bytes"] == 0 and r["stack_bytes"] == 0, r
        assert r["blocks_per_sm"] >= 2, r
