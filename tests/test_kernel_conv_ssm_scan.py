"""conv_ssm_scan: reference vs complex128 ground truth, fast PyTorch path and Triton vs reference
(docs/kernels.md §4)."""

from __future__ import annotations

import pytest
import torch

from stpred.kernels.conv_ssm_scan import (
    conv_ssm_scan,
    conv_ssm_scan_planar,
    conv_ssm_scan_planar_torch,
    conv_ssm_step,
    conv_ssm_step_planar,
)
from stpred.kernels.conv_ssm_scan.reference import conv_ssm_scan_planar_reference, conv_ssm_scan_reference

# (B, L, P, H, W): odd sizes, B=1, L in {1, 7, 63}, P and H·W not multiples of the tile.
SHAPES = [(1, 1, 3, 5, 3), (2, 7, 5, 3, 7), (1, 63, 3, 3, 5)]
# H·W = 529 > 512 spans two n-tiles, and P = 5 > 1024 // 512 spans three p-tiles: tile seams and partial dΛ̄ sums.
TILE_SEAM_SHAPE = (2, 7, 5, 23, 23)


@pytest.fixture
def poison(monkeypatch):
    """Fill every float tensor from torch.empty/empty_like with NaN, so an unwritten output element shows."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def nan_filled(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() or t.is_complex() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_filled(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_filled(real_empty_like(*a, **k)))


def _gate(p: int, dtype=torch.float32) -> torch.Tensor:
    """Λ̄ as [P, 2]: radii from 0.5 up to 1 - 1e-4 (slow modes), angles over (-π, π)."""
    radius = torch.exp(-torch.rand(p, dtype=torch.float64) * 0.7 - 1e-4)
    radius[0] = 1 - 1e-4
    angle = (torch.rand(p, dtype=torch.float64) * 2 - 1) * torch.pi
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1).to(dtype)


def _planar_inputs(shape, with_x0: bool, dtype=torch.float32):
    b, length, p, h, w = shape
    lam = _gate(p, dtype)
    bu = torch.randn(b, length, 2, p, h, w, dtype=dtype)
    x0 = torch.randn(b, 2, p, h, w, dtype=dtype) if with_x0 else None
    return lam, bu, x0


def _run(fn, inputs, g_xs, g_last):
    """Outputs and the gradient of every tensor input for the loss <xs, g_xs> + <x_last, g_last>."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    xs, x_last = fn(*leaves)
    loss = (xs * g_xs).sum() + (x_last * g_last).sum()
    grads = torch.autograd.grad(loss, [t for t in leaves if t is not None], materialize_grads=True)
    return (xs.detach(), x_last.detach()), grads


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str) -> None:
    """max |actual - expected| <= rtol · max |expected| (relative to the tensor's scale)."""
    assert actual.shape == expected.shape, name
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = (actual.to(expected.dtype) - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rtol * max(scale, 1e-12), f"{name}: max error {err:.3e} vs scale {scale:.3e}"


def _ground_truth(lam: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None):
    """Closed form in complex128: x_t = a^{t+1} x0 + sum_{j<=t} a^{t-j} Bu_j, via an explicit power matrix."""
    length = bu.shape[1]
    t = torch.arange(length)
    expo = (t[:, None] - t[None, :]).clamp(min=0)
    powers = lam[:, None, None] ** expo.to(lam.dtype)  # [P, L, L]
    powers = powers * (t[:, None] >= t[None, :])
    xs = torch.einsum("ptj,bjphw->btphw", powers, bu)
    if x0 is not None:
        decay = (lam[:, None] ** (t + 1).to(lam.dtype)).t()  # [L, P]: a^{t+1}
        xs = xs + decay[None, :, :, None, None] * x0[:, None]
    return xs, xs[:, -1]


# ------------------------------------------------------------------------------------------------ reference


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_x0", [False, True])
def test_reference_matches_complex128_closed_form(shape, with_x0):
    b, length, p, h, w = shape
    lam_p = _gate(p, torch.float64)
    lam = torch.complex(lam_p[:, 0], lam_p[:, 1])
    bu = torch.randn(b, length, p, h, w, dtype=torch.complex128)
    x0 = torch.randn(b, p, h, w, dtype=torch.complex128) if with_x0 else None
    g_xs, g_last = torch.randn_like(bu), torch.randn_like(bu[:, 0])

    def real_loss_grads(fn, inputs):
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
        xs, x_last = fn(*leaves)
        loss = (xs * g_xs.conj()).real.sum() + (x_last * g_last.conj()).real.sum()
        return (xs, x_last), torch.autograd.grad(loss, [t for t in leaves if t is not None], materialize_grads=True)

    truth, truth_grads = real_loss_grads(_ground_truth, (lam, bu, x0))
    low = (lam.to(torch.complex64), bu.to(torch.complex64), None if x0 is None else x0.to(torch.complex64))
    out, grads = real_loss_grads(conv_ssm_scan_reference, low)
    for name, a, e in zip(("xs", "x_last"), out, truth):
        _assert_close(a.detach(), e.detach(), 1e-5, f"reference {name}")
    for name, a, e in zip(("dlam_bar", "dbu", "dx0"), grads, truth_grads):
        _assert_close(a, e, 1e-5, f"reference {name}")


def test_gradcheck_reference_and_fast_path_float64():
    lam, bu, x0 = _planar_inputs((2, 4, 3, 3, 2), with_x0=True, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (lam, bu, x0)]
    assert torch.autograd.gradcheck(conv_ssm_scan_planar_reference, leaves)
    assert torch.autograd.gradcheck(conv_ssm_scan_planar_torch, leaves)
    assert torch.autograd.gradcheck(lambda a, u: conv_ssm_scan_planar_torch(a, u), leaves[:2])
    lam_c = torch.complex(lam[:, 0], lam[:, 1]).requires_grad_()
    bu_c = torch.complex(bu[:, :, 0], bu[:, :, 1]).requires_grad_()
    assert torch.autograd.gradcheck(conv_ssm_scan_reference, [lam_c, bu_c])
    assert torch.autograd.gradcheck(lambda a, u: conv_ssm_scan(a, u, impl="torch"), [lam_c, bu_c])


# ------------------------------------------------------------------------------------ fast path and Triton


def _triton_scan(lam, bu, x0=None):
    return conv_ssm_scan_planar(lam, bu, x0, impl="triton")


def _torch_scan(lam, bu, x0=None):
    return conv_ssm_scan_planar(lam, bu, x0, impl="torch")


IMPLS = [
    pytest.param(_torch_scan, id="torch"),
    pytest.param(_triton_scan, id="triton", marks=pytest.mark.triton),
]


def _compare_with_reference(scan, lam, bu, x0, rtol=1e-5):
    g_xs = torch.randn(bu.shape)
    g_last = torch.randn(bu[:, 0].shape)
    out, grads = _run(scan, (lam, bu, x0), g_xs, g_last)
    ref_out, ref_grads = _run(conv_ssm_scan_planar_reference, (lam, bu, x0), g_xs, g_last)
    for name, a, e in zip(("xs", "x_last"), out, ref_out):
        _assert_close(a, e, rtol, name)
    for name, a, e in zip(("dlam_bar", "dbu", "dx0"), grads, ref_grads):
        _assert_close(a, e, rtol, name)


@pytest.mark.parametrize("scan", IMPLS)
@pytest.mark.parametrize("shape", SHAPES + [TILE_SEAM_SHAPE])
@pytest.mark.parametrize("with_x0", [False, True])
def test_matches_reference(poison, scan, shape, with_x0):
    lam, bu, x0 = _planar_inputs(shape, with_x0)
    _compare_with_reference(scan, lam, bu, x0)


@pytest.mark.triton
@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("shape", [(1, 1, 3, 5, 3), (2, 2, 5, 3, 7), (1, 3, 3, 3, 5), TILE_SEAM_SHAPE])
def test_triton_prefetch_depths_match_reference(poison, monkeypatch, depth, shape):
    """Every software-pipelining depth, at L = 1, 2, 3 (prefetches past either end of the sequence) and tile seams."""
    from stpred.kernels.conv_ssm_scan import triton as scan_triton

    real_blocks = scan_triton._blocks
    monkeypatch.setattr(scan_triton, "_blocks", lambda *a: (*real_blocks(*a)[:3], depth))
    lam, bu, x0 = _planar_inputs(shape, with_x0=True)
    _compare_with_reference(_triton_scan, lam, bu, x0)
    _compare_with_reference(_triton_scan, lam, bu, None)


@pytest.mark.triton
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_x0", [False, True])
def test_triton_bfloat16_inputs_match_float64_reference(shape, with_x0):
    """bf16 Bu, x0 and incoming gradients; the state is float32. The reference runs in float64 on the same
    (bf16-rounded) values, so the error left is the kernel's: float32 arithmetic (~1e-6 relative over 63 steps)
    plus one bf16 rounding of each stored element, at most one bf16 ulp = 2^-7 of it (the GPU rounds to nearest,
    half that; Triton's interpreter truncates, a full ulp). So xs, dBu and dx0 (all bf16) are held to 8e-3 of
    their max; x_last (float32) to 1e-5; and dΛ̄ = Σ_t dBu_t·conj(x_{t-1}), which reads the bf16-rounded xs
    back, to 2^-7 · Σ_t |dBu_t|·|x_{t-1}| per channel (the rounding does not scale with the possibly cancelling
    sum) plus 1e-5 of its max."""
    lam, bu, x0 = _planar_inputs(shape, with_x0)
    bu_h = bu.to(torch.bfloat16)
    x0_h = None if x0 is None else x0.to(torch.bfloat16)
    g_xs = torch.randn(bu.shape).to(torch.bfloat16)
    g_last = torch.randn(bu[:, 0].shape)
    (xs, x_last), grads = _run(_triton_scan, (lam, bu_h, x0_h), g_xs, g_last)
    as64 = (lam.double(), bu_h.double(), None if x0 is None else x0_h.double())
    (ref_xs, ref_last), ref_grads = _run(conv_ssm_scan_planar_reference, as64, g_xs.double(), g_last.double())
    assert xs.dtype == torch.bfloat16 and x_last.dtype == torch.float32
    _assert_close(xs, ref_xs, 8e-3, "xs (bf16)")
    _assert_close(x_last, ref_last, 1e-5, "x_last")
    for name, a, e in zip(("dbu", "dx0"), grads[1:], ref_grads[1:]):
        assert a.dtype == torch.bfloat16, name
        _assert_close(a, e, 8e-3, f"{name} (bf16)")
    dlam, ref_dlam, ref_dbu = grads[0], ref_grads[0], ref_grads[1]
    assert dlam.dtype == torch.float32
    # x_{t-1} for every t that contributes (t >= 1, and t = 0 through x0 when there is one), with its dBu_t.
    if x0 is None:
        prev, dbu_t = ref_xs[:, :-1], ref_dbu[:, 1:]
    else:
        prev, dbu_t = torch.cat([as64[2][:, None], ref_xs[:, :-1]], dim=1), ref_dbu
    mag = (dbu_t.abs().sum(2) * prev.abs().sum(2)).sum(dim=(0, 1, 3, 4))  # [P]
    bound = 2**-7 * mag[:, None] + 1e-5 * ref_dlam.abs().max()
    err = (dlam.double() - ref_dlam).abs()
    assert (err <= bound).all(), f"dlam_bar: error {err.max():.3e} over bound {(err - bound).max():.3e}"


@pytest.mark.parametrize("scan", IMPLS)
def test_non_contiguous_inputs(poison, scan):
    b, length, p, h, w = 2, 7, 5, 5, 3
    lam = _gate(p, torch.float64).to(torch.float32)
    lam = torch.stack([lam[:, 0], lam[:, 1]], dim=0).t()  # [P, 2] with strides (1, P)
    # bu: time slice of a longer sequence with B and L swapped in memory, and H/W transposed.
    store = torch.randn(length + 3, b, 2, p, w, h)
    bu = store.permute(1, 0, 2, 3, 5, 4)[:, 2 : 2 + length]
    x0 = torch.randn(b, 2, p, h, 2 * w)[..., ::2]
    assert not bu.is_contiguous() and not x0.is_contiguous() and not lam.is_contiguous()
    _compare_with_reference(scan, lam, bu, x0)


@pytest.mark.parametrize("scan", IMPLS)
def test_only_last_state_used(scan):
    """A loss on x_last alone (no gradient reaches xs) and one on xs alone."""
    lam, bu, x0 = _planar_inputs((1, 7, 3, 3, 5), with_x0=True)
    for pick in (1, 0):
        leaves = [t.clone().requires_grad_() for t in (lam, bu, x0)]
        ref_leaves = [t.clone().requires_grad_() for t in (lam, bu, x0)]
        scan(*leaves)[pick].sum().backward()
        conv_ssm_scan_planar_reference(*ref_leaves)[pick].sum().backward()
        for name, a, e in zip(("dlam_bar", "dbu", "dx0"), leaves, ref_leaves):
            _assert_close(a.grad, e.grad, 1e-5, f"pick {pick} {name}")


@pytest.mark.parametrize("scan", IMPLS)
def test_dlam_bar_bitwise_deterministic(scan):
    lam, bu, x0 = _planar_inputs(TILE_SEAM_SHAPE, with_x0=True)
    g_xs = torch.randn(bu.shape)
    g_last = torch.randn(bu[:, 0].shape)
    first = _run(scan, (lam, bu, x0), g_xs, g_last)[1][0]
    second = _run(scan, (lam, bu, x0), g_xs, g_last)[1][0]
    assert torch.equal(first, second)


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
def test_complex_api_matches_reference(impl):
    b, length, p, h, w = 2, 7, 3, 5, 3
    lam_p = _gate(p)
    lam = torch.complex(lam_p[:, 0], lam_p[:, 1])
    bu = torch.randn(b, length, p, h, w, dtype=torch.complex64)
    x0 = torch.randn(b, p, h, w, dtype=torch.complex64)
    g_xs, g_last = torch.randn_like(bu), torch.randn_like(x0)

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (lam, bu, x0)]
        xs, x_last = fn(*leaves)
        loss = (xs * g_xs.conj()).real.sum() + (x_last * g_last.conj()).real.sum()
        return [xs, x_last, *torch.autograd.grad(loss, leaves)]

    got = grads(lambda *a: conv_ssm_scan(*a, impl=impl))
    want = grads(conv_ssm_scan_reference)
    for name, a, e in zip(("xs", "x_last", "dlam_bar", "dbu", "dx0"), got, want):
        _assert_close(a.detach(), e.detach(), 1e-5, name)


def test_fast_path_bfloat16_inputs_keep_float32_state():
    lam, bu, x0 = _planar_inputs((1, 7, 3, 3, 5), with_x0=True)
    xs, x_last = conv_ssm_scan_planar(lam, bu.to(torch.bfloat16), x0, impl="torch")
    ref_xs, ref_last = conv_ssm_scan_planar_reference(lam, bu.to(torch.bfloat16).float(), x0)
    assert xs.dtype == torch.bfloat16 and x_last.dtype == torch.float32
    _assert_close(x_last, ref_last, 1e-5, "x_last")
    _assert_close(xs.float(), ref_xs, 1e-2, "xs (bf16 rounding)")


def test_auto_dispatch_on_cpu_uses_torch_path_and_validates():
    lam, bu, x0 = _planar_inputs((1, 3, 3, 3, 3), with_x0=True)
    auto = conv_ssm_scan_planar(lam, bu, x0)
    fast = conv_ssm_scan_planar_torch(lam, bu, x0)
    assert all(torch.equal(a, f) for a, f in zip(auto, fast))
    with pytest.raises(ValueError, match="impl"):
        conv_ssm_scan_planar(lam, bu, x0, impl="cuda")
    with pytest.raises(ValueError, match="float64"):
        conv_ssm_scan_planar(lam.double(), bu.double(), impl="triton")
    with pytest.raises(ValueError, match=r"lam_bar must be \[P, 2\]"):
        conv_ssm_scan_planar(lam[:2], bu)
    with pytest.raises(ValueError, match="x0 must be"):
        conv_ssm_scan_planar(lam, bu, x0[:, :, :2])


def test_steps_reproduce_the_scan():
    lam, bu, x0 = _planar_inputs((2, 7, 3, 3, 5), with_x0=True)
    xs, x_last = conv_ssm_scan_planar_reference(lam, bu, x0)
    x = x0
    for t in range(bu.shape[1]):
        x = conv_ssm_step_planar(lam, bu[:, t], x)
        _assert_close(x, xs[:, t], 1e-6, f"planar step {t}")
    _assert_close(conv_ssm_step_planar(lam, bu[:, 0]), bu[:, 0], 0.0, "step from zero state")

    lam_c = torch.complex(lam[:, 0], lam[:, 1])
    bu_c = torch.complex(bu[:, :, 0], bu[:, :, 1])
    xc = None
    for t in range(bu.shape[1]):
        xc = conv_ssm_step(lam_c, bu_c[:, t], xc)
    _assert_close(xc, conv_ssm_scan_reference(lam_c, bu_c)[1], 1e-6, "complex steps")


def test_benchmark_rows_on_tiny_shapes(monkeypatch):
    from stpred.kernels.conv_ssm_scan import benchmark

    assert benchmark.shapes("cpu") == [(8, 100, 128, 16, 16), (8, 300, 128, 16, 16), (8, 8, 128, 64, 64)]
    assert all(b * p * h * w >= 4 * 2**20 for b, _, p, h, w in benchmark.shapes("cuda")[2:])
    monkeypatch.setattr(benchmark, "shapes", lambda device, quick=False: [(1, 5, 3, 5, 3)])
    rows = benchmark.run("cpu", quick=True)
    assert [r["impl"] for r in rows] == ["reference", "torch", "torch-inplace"]
    keys = {"op", "shape", "impl", "fwd_ms", "fwd_bwd_ms", "gbps", "pct_copy_bw", "speedup"}
    keys |= {"fwd_gbps", "pct_copy_fwd", "bwd_gbps", "pct_copy_bwd"}
    state_bytes = 1 * 5 * 2 * 3 * 5 * 3 * 4
    for row in rows:
        assert set(row) == keys and row["op"] == "conv_ssm_scan" and row["shape"] == (1, 5, 3, 5, 3)
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0 and row["gbps"] > 0 and row["pct_copy_bw"] > 0
        # forward: read Bu + write xs; backward: read grad + read xs + write dBu (state-sized float32 buffers).
        assert row["fwd_gbps"] == pytest.approx(2 * state_bytes / (row["fwd_ms"] * 1e6))
        bwd_ms = row["fwd_bwd_ms"] - row["fwd_ms"]
        if bwd_ms > 0:
            assert row["bwd_gbps"] == pytest.approx(3 * state_bytes / (bwd_ms * 1e6))
            assert row["pct_copy_bwd"] / row["pct_copy_fwd"] == pytest.approx(row["bwd_gbps"] / row["fwd_gbps"])
        else:
            assert row["bwd_gbps"] is None and row["pct_copy_bwd"] is None
    assert rows[0]["speedup"] == 1.0
    assert rows[1]["speedup"] == pytest.approx(rows[0]["fwd_bwd_ms"] / rows[1]["fwd_bwd_ms"])


@pytest.mark.parametrize(
    "impl",
    ["torch", "torch-inplace", pytest.param("triton", marks=pytest.mark.triton),
     pytest.param("triton-inplace", marks=pytest.mark.triton)],
)  # fmt: skip
def test_benchmark_cases_compute_the_scan_and_its_gradients(impl):
    """Every timed case (the in-place ones adopt pre-filled buffers instead of copying) returns the reference's xs
    and gradients, call after call."""
    from stpred.kernels.conv_ssm_scan import benchmark

    lam_bar, bu = benchmark._inputs((2, 7, 3, 5, 3), "cpu")
    grad = torch.randn_like(bu)
    expected_xs, _ = conv_ssm_scan_planar_reference(lam_bar, bu)
    lam_ref, bu_ref = lam_bar.clone().requires_grad_(), bu.clone().requires_grad_()
    expected = torch.autograd.grad(conv_ssm_scan_planar_reference(lam_ref, bu_ref)[0], (lam_ref, bu_ref), grad)
    scan, inputs, setup = benchmark._case(impl, lam_bar, bu)
    for _ in range(2):
        if setup is not None:
            setup(grad)
        xs, _ = scan(*inputs)
        got_xs = xs.detach().clone()
        grads = torch.autograd.grad(xs, inputs, grad)
        _assert_close(got_xs, expected_xs, 1e-6, f"{impl} xs")
        for name, got, want in zip(("dlam_bar", "dbu"), grads, expected):
            _assert_close(got, want, 1e-5, f"{impl} {name}")


# ------------------------------------------------------------------------------------------------ in-place scan


def _inplace_run(inputs, inplace: bool, flat_base: bool, g_xs, g_last, impl: str = "torch"):
    """Like _run, but bu is a non-leaf temporary (ConvSSM's case): a flat [B·L, 2P, H, W] tensor viewed as 6-D, or a
    6-D tensor; returns also whether xs shares bu's storage."""
    lam, bu, x0 = (None if t is None else t.detach().clone().requires_grad_() for t in inputs)
    b, length, _, p, h, w = bu.shape
    src = bu.reshape(b * length, 2 * p, h, w) if flat_base else bu
    tmp = (src * 1.0).view(bu.shape)
    xs, x_last = conv_ssm_scan_planar(lam, tmp, x0, impl=impl, inplace=inplace)
    shares = xs.data_ptr() == tmp.data_ptr()
    loss = (xs * g_xs).sum() + (x_last * g_last).sum()
    leaves = [t for t in (lam, bu, x0) if t is not None]
    grads = torch.autograd.grad(loss, leaves, materialize_grads=True)
    return (xs.detach(), x_last.detach()), grads, shares


INPLACE_IMPLS = [
    pytest.param("torch", torch.float32, id="torch-fp32"),
    pytest.param("torch", torch.float64, id="torch-fp64"),
    pytest.param("triton", torch.float32, id="triton-fp32", marks=pytest.mark.triton),
]


@pytest.mark.parametrize("with_x0", [False, True])
@pytest.mark.parametrize("flat_base", [False, True])
@pytest.mark.parametrize(("impl", "dtype"), INPLACE_IMPLS)
def test_inplace_equals_out_of_place_exactly_and_reuses_bu(with_x0, flat_base, impl, dtype):
    inputs = _planar_inputs((2, 7, 5, 3, 4), with_x0, dtype)
    g_xs, g_last = torch.randn_like(inputs[1]), torch.randn_like(inputs[1][:, 0])
    out_ref, grads_ref, shares_ref = _inplace_run(inputs, False, flat_base, g_xs, g_last, impl)
    out, grads, shares = _inplace_run(inputs, True, flat_base, g_xs, g_last, impl)
    assert shares and not shares_ref
    for name, a, e in zip(("xs", "x_last", "dlam_bar", "dbu", "dx0"), out + grads, out_ref + grads_ref):
        assert torch.equal(a, e), name


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
def test_inplace_allocates_no_state_sized_buffer(monkeypatch, impl):
    """Out of place the scan allocates xs and dBu; in place neither (the loss's own grads are allocated in C++)."""
    inputs = _planar_inputs((2, 7, 5, 3, 4), with_x0=True)
    numel = inputs[1].numel()
    g_xs, g_last = torch.randn_like(inputs[1]), torch.randn_like(inputs[1][:, 0])
    real_empty = torch.empty
    big = []

    def spy(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        big.extend([t.numel()] if t.numel() >= numel else [])
        return t

    monkeypatch.setattr(torch, "empty", spy)
    _inplace_run(inputs, False, True, g_xs, g_last, impl)
    assert big == [numel, numel]
    big.clear()
    _inplace_run(inputs, True, True, g_xs, g_last, impl)
    assert big == []


def test_inplace_falls_back_where_it_may_not_overwrite():
    """A leaf bu that requires grad, a bf16 bu and a broadcast incoming gradient are left intact."""
    lam, bu, x0 = _planar_inputs((1, 5, 3, 2, 3), with_x0=True)
    leaf = bu.clone().requires_grad_()
    xs, _ = conv_ssm_scan_planar(lam, leaf, x0, impl="torch", inplace=True)
    assert xs.data_ptr() != leaf.data_ptr() and torch.equal(leaf.detach(), bu)
    expected = conv_ssm_scan_planar(lam, bu, x0, impl="torch")[0]
    assert torch.equal(xs, expected)

    half = bu.to(torch.bfloat16)
    xs_h, _ = conv_ssm_scan_planar(lam, half.clone(), x0, impl="torch", inplace=True)
    assert torch.equal(xs_h, conv_ssm_scan_planar(lam, half, x0, impl="torch")[0])

    ones = torch.ones(()).expand(bu.shape)  # the stride-0 gradient of xs.sum() must not be written
    src = bu.clone().requires_grad_()
    xs, _ = conv_ssm_scan_planar(lam, src * 1.0, x0, impl="torch", inplace=True)
    (dbu,) = torch.autograd.grad(xs, src, ones)
    assert torch.equal(ones, torch.ones(bu.shape))
    _, (_, dbu_ref, _), _ = _inplace_run((lam, bu, x0), False, False, torch.ones(bu.shape), torch.zeros_like(bu[:, 0]))
    assert torch.equal(dbu, dbu_ref)


@pytest.mark.parametrize("with_x0", [False, True])
def test_compile_custom_op_passes_opcheck(with_x0: bool) -> None:
    """The op torch.compile runs (fake shapes/strides, autograd registration, schema) is consistent."""
    torch.manual_seed(0)
    lam = torch.randn(3, 2) * 0.5
    bu = torch.randn(2, 5, 2, 3, 4, 3, requires_grad=True)
    x0 = torch.randn(2, 2, 3, 4, 3, requires_grad=True) if with_x0 else None
    torch.library.opcheck(torch.ops.stpred.conv_ssm_scan_planar.default, (lam.requires_grad_(), bu, x0, False))
