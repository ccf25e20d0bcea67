"""ForecastMetrics against independent numpy/scipy references (OpenSTL, Wang et al., SimVP v1, FNO, WB2)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from stpred.errors import ConfigError
from stpred.metrics import ForecastMetrics, latitude_area_weights, relative_l2, ssim_per_frame

# ---------------------------------------------------------------------------------------------------------------
# Independent references in numpy (written from the definitions in docs/metrics.md, not from stpred.metrics).


def np_openstl_mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean((pred - true) ** 2, axis=(0, 1)).sum())


def np_openstl_mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true), axis=(0, 1)).sum())


def np_psnr_float(pred: np.ndarray, true: np.ndarray, cap: float = 100.0) -> np.ndarray:
    """OpenSTL >= 0.2: per frame on the clipped prediction, float, 20·log10(1/sqrt(mse))."""
    pred = np.clip(pred, 0.0, 1.0).astype(np.float64)
    out = []
    for n in range(pred.shape[0]):
        for t in range(pred.shape[1]):
            mse = np.mean((pred[n, t] - true[n, t].astype(np.float64)) ** 2)
            out.append(cap if mse == 0 else min(cap, 20.0 * np.log10(1.0 / np.sqrt(mse))))
    return np.array(out).reshape(pred.shape[:2])


def np_psnr_uint8(pred: np.ndarray, true: np.ndarray, cap: float = 100.0) -> np.ndarray:
    """SimVP v1 quantisation (np.uint8(x * 255)) with the difference taken in float."""
    qp = np.uint8(np.clip(pred, 0, 1) * 255).astype(np.float64)
    qt = np.uint8(true * 255).astype(np.float64)
    out = np.empty(pred.shape[:2])
    for n in range(pred.shape[0]):
        for t in range(pred.shape[1]):
            mse = np.mean((qp[n, t] - qt[n, t]) ** 2)
            out[n, t] = cap if mse == 0 else min(cap, 20 * np.log10(255.0) - 10 * np.log10(mse))
    return out


def np_ssim_frame(x: np.ndarray, y: np.ndarray, data_range: float, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. (2004) SSIM of one [C, H, W] frame: Gaussian window, valid region, mean over channels."""
    ax = np.arange(size) - size // 2
    g1 = np.exp(-(ax**2) / (2.0 * sigma**2))
    win = np.outer(g1, g1)
    win /= win.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for c in range(x.shape[0]):
        a, b = x[c].astype(np.float64), y[c].astype(np.float64)

        def filt(img: np.ndarray) -> np.ndarray:
            return correlate2d(img, win, mode="valid")

        mu_a, mu_b = filt(a), filt(b)
        s_aa = filt(a * a) - mu_a**2
        s_bb = filt(b * b) - mu_b**2
        s_ab = filt(a * b) - mu_a * mu_b
        num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
        den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
        vals.append((num / den).mean())
    return float(np.mean(vals))


def _image_data(n: int = 7, t: int = 4, c: int = 2, h: int = 16, w: int = 18, noise: float = 0.15, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.random((n, t, c, h, w), dtype=np.float32)
    # Predictions leave [0, 1], so clipped (PSNR/SSIM) and unclipped (MSE/MAE) definitions really differ.
    pred = (true + noise * rng.standard_normal(true.shape)).astype(np.float32)
    return pred, true


def _stream(metric: ForecastMetrics, pred: np.ndarray, true: np.ndarray, sizes: list[int]) -> ForecastMetrics:
    assert sum(sizes) == pred.shape[0]
    start = 0
    for size in sizes:
        metric.update(torch.from_numpy(pred[start : start + size]), torch.from_numpy(true[start : start + size]))
        start += size
    return metric


# ---------------------------------------------------------------------------------------------------------------
# OpenSTL parity and streaming


def test_openstl_parity_streamed_in_uneven_batches():
    pred, true = _image_data()
    streamed = _stream(ForecastMetrics(4, data_range=1.0), pred, true, [3, 1, 2, 1]).compute()
    one_shot = _stream(ForecastMetrics(4, data_range=1.0), pred, true, [7]).compute()

    p64, t64 = pred.astype(np.float64), true.astype(np.float64)
    mse = float(np.mean((p64 - t64) ** 2))
    expected = {
        "mse_frame": np_openstl_mse(p64, t64),
        "mae_frame": np_openstl_mae(p64, t64),
        "mse": mse,
        "mae": float(np.mean(np.abs(p64 - t64))),
        "rmse": math.sqrt(mse),
        "psnr": float(np_psnr_float(pred, true).mean()),
    }
    for key, value in expected.items():
        assert streamed[key].item() == pytest.approx(value, rel=1e-5), key
    for key in one_shot:
        assert streamed[key].item() == pytest.approx(one_shot[key].item(), rel=1e-6, abs=1e-7), key
    # The OpenSTL table value is the per-frame sum: P = C·H·W times the per-element mean.
    assert streamed["mse_frame"].item() == pytest.approx(2 * 16 * 18 * streamed["mse"].item(), rel=1e-6)
    # MSE is on the unclipped prediction: clipping would lower it on this data.
    clipped_mse = float(np.mean((np.clip(p64, 0, 1) - t64) ** 2))
    assert streamed["mse"].item() > clipped_mse * 1.05


def test_keys_depend_on_options():
    base = {"mse", "mae", "rmse", "mse_frame", "mae_frame"}
    image = {"ssim", "psnr", "psnr_capped", "psnr_uint8", "psnr_uint8_capped"}
    x = torch.rand(2, 3, 1, 12, 12)
    m = ForecastMetrics(3)
    m.update(x, x * 0.5)
    assert set(m.compute()) == base
    m = ForecastMetrics(3, data_range=1.0, pde=True, lat_weights=[1.0] * 12)
    m.update(x, x * 0.5)
    assert set(m.compute()) == base | image | {"rel_l2", "rel_l2_step", "rmse_lat", "mae_lat"}
    assert set(m.per_lead()) == {"mse", "mae", "rmse", "ssim", "psnr", "psnr_uint8", "rel_l2_step", "rmse_lat"} | {
        "mae_lat"
    }


# ---------------------------------------------------------------------------------------------------------------
# SSIM


def test_ssim_matches_independent_reference_and_avoids_5d_trap():
    # Six channels at different levels (a weather-like stack): torchmetrics reads [B, T, C, H, W] as
    # [B, C', D, H, W], i.e. T as channels and C as depth, and its 3-D window then mixes the channels.
    rng = np.random.default_rng(3)
    levels = np.linspace(0.1, 0.9, 6, dtype=np.float32).reshape(1, 1, 6, 1, 1)
    true = (levels + 0.05 * rng.standard_normal((1, 6, 6, 20, 23))).astype(np.float32)
    pred = (true + 0.05 * rng.standard_normal(true.shape)).astype(np.float32)
    m = ForecastMetrics(6, data_range=1.0)
    m.update(torch.from_numpy(pred), torch.from_numpy(true))
    ours = m.compute()["ssim"].item()

    clipped = np.clip(pred, 0, 1)
    ref = [np_ssim_frame(clipped[0, t], true[0, t], 1.0) for t in range(6)]
    assert ours == pytest.approx(float(np.mean(ref)), abs=1e-5)
    np.testing.assert_allclose(m.per_lead()["ssim"].numpy(), ref, atol=1e-5)
    per_frame = ssim_per_frame(
        torch.from_numpy(clipped[0]), torch.from_numpy(true[0]), data_range=1.0, kernel_size=11, sigma=1.5
    )
    np.testing.assert_allclose(per_frame.numpy(), ref, atol=1e-6)

    trap = tm_ssim(torch.from_numpy(clipped), torch.from_numpy(true), data_range=1.0).item()
    assert ours == pytest.approx(0.71, abs=0.05)
    assert trap > ours + 0.2
    # With fewer than 6 channels (the reflect pad of the depth axis) the 5-D call fails instead.
    with pytest.raises(RuntimeError):
        tm_ssim(torch.from_numpy(clipped[:, :, :3]), torch.from_numpy(true[:, :, :3]), data_range=1.0)


def test_ssim_respects_data_range_and_kernel():
    pred, true = _image_data(n=1, t=1, c=1, h=24, w=24, noise=0.1, seed=5)
    p255, t255 = np.clip(pred, 0, 1) * 255, true * 255
    m = ForecastMetrics(1, data_range=255.0, ssim_kernel=7, ssim_sigma=1.0)
    m.update(torch.from_numpy(p255), torch.from_numpy(t255))
    ref = np_ssim_frame(p255[0, 0], t255[0, 0], 255.0, size=7, sigma=1.0)
    assert m.compute()["ssim"].item() == pytest.approx(ref, abs=1e-5)
    # A wrong L (2 instead of 1, old scikit-image float default) changes the value: it must be explicit.
    wrong_l = np_ssim_frame(np.clip(pred, 0, 1)[0, 0], true[0, 0], 2.0, size=7, sigma=1.0)
    assert abs(wrong_l - ref) > 1e-3


def test_ssim_frames_smaller_than_window_fail_clearly():
    m = ForecastMetrics(2, data_range=1.0)
    x = torch.rand(1, 2, 1, 8, 32)
    with pytest.raises(ValueError, match="SSIM window 11x11 does not fit 8x32 frames; pass ssim=False"):
        m.update(x, x)
    with pytest.raises(ConfigError, match="odd"):
        ForecastMetrics(2, data_range=1.0, ssim_kernel=10)
    # Without data_range there is no SSIM, so small frames are fine.
    ForecastMetrics(2).update(x, x)


def test_image_data_smaller_than_the_ssim_window_is_scored_without_ssim():
    from stpred.datamodules.frames import FramesDataModule

    meta = FramesDataModule("unused", t_in=2, t_out=3, image_size=8).metadata()  # 8x8 grey frames in [0, 1]
    assert meta["in_shape"] == [2, 1, 8, 8] and meta["data_range"] == 1.0
    m = ForecastMetrics.from_metadata(meta)
    pred, target = torch.rand(4, 3, 1, 8, 8), torch.rand(4, 3, 1, 8, 8)
    m.update(pred, target)
    valid = torch.ones(4, 3, 1, 8, 8, dtype=torch.bool)
    valid[:, :, :, :2] = False
    m.update(pred, target, valid=valid)
    image = {"psnr", "psnr_capped", "psnr_uint8", "psnr_uint8_capped"}  # as documented: no ssim, the rest stays
    values = m.compute()
    assert set(values) == {"mse", "mae", "rmse", "mse_frame", "mae_frame"} | image
    assert all(torch.isfinite(v) for v in values.values())
    assert set(m.per_lead()) == {"mse", "mae", "rmse", "psnr", "psnr_uint8"}
    assert m.config["ssim"] == "not computed: frames smaller than the 11x11 window"
    # Frames the window fits keep SSIM, computed as before.
    for side in (11, 64):
        fits = ForecastMetrics.from_metadata({**meta, "in_shape": [2, 1, side, side]})
        frames = torch.rand(2, 3, 1, side, side)
        fits.update(frames, frames * 0.5)
        plain = ForecastMetrics(3, data_range=1.0)
        plain.update(frames, frames * 0.5)
        assert fits.compute()["ssim"].item() == plain.compute()["ssim"].item()


# ---------------------------------------------------------------------------------------------------------------
# PSNR


def test_psnr_constant_error_is_exact():
    # Multiples of 1/8 are exact in float32, so the frame MSE is exactly e² = 1/64.
    levels = torch.arange(1, 7, dtype=torch.float32) / 8
    target = levels[torch.randint(0, 6, (3, 2, 1, 16, 16))]
    m = ForecastMetrics(2, data_range=1.0)
    m.update(target + 0.125, target)
    out = m.compute()
    assert out["psnr"].item() == pytest.approx(20 * math.log10(8.0), abs=1e-6)
    assert out["psnr_capped"].item() == 0
    np.testing.assert_allclose(m.per_lead()["psnr"].numpy(), [20 * math.log10(8.0)] * 2, atol=1e-6)


def test_psnr_uint8_differs_from_float_and_matches_reference():
    pred, true = _image_data(n=5, t=3, c=1, h=16, w=16, noise=0.002, seed=7)
    m = _stream(ForecastMetrics(3, data_range=1.0), pred, true, [2, 3])
    out = m.compute()
    ref_uint8 = float(np_psnr_uint8(pred, true).mean())
    ref_float = float(np_psnr_float(pred, true).mean())
    assert out["psnr_uint8"].item() == pytest.approx(ref_uint8, abs=1e-4)
    assert out["psnr"].item() == pytest.approx(ref_float, abs=1e-4)
    assert abs(ref_uint8 - ref_float) > 0.5
    np.testing.assert_allclose(m.per_lead()["psnr_uint8"].numpy(), np_psnr_uint8(pred, true).mean(0), atol=1e-4)


def test_zero_error_frame_is_capped_and_counted():
    pred, true = _image_data(n=2, t=3, c=1, h=16, w=16, noise=0.05, seed=11)
    pred[1, 2] = true[1, 2]
    m = ForecastMetrics(3, data_range=1.0, psnr_cap_db=100.0)
    m.update(torch.from_numpy(pred), torch.from_numpy(true))
    out = m.compute()
    assert out["psnr_capped"].item() == 1
    assert out["psnr_uint8_capped"].item() >= 1
    frames = np_psnr_float(pred, true)
    assert frames[1, 2] == 100.0
    assert out["psnr"].item() == pytest.approx(float(frames.mean()), abs=1e-4)
    assert math.isfinite(out["psnr_uint8"].item())
    assert out["psnr_uint8"].item() == pytest.approx(float(np_psnr_uint8(pred, true).mean()), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Relative L2


def test_relative_l2_full_vs_step():
    # Sample 0: step norms 2 and 20, error norms 1 and 2. Sample 1: the same target, errors doubled.
    target = torch.zeros(2, 2, 1, 2, 2)
    target[:, 0] = 1.0
    target[:, 1] = 10.0
    err = torch.zeros_like(target)
    err[0, 0], err[0, 1] = 0.5, 1.0
    err[1, 0], err[1, 1] = 1.0, 2.0
    pred = target + err
    m = ForecastMetrics(2, pde=True)
    m.update(pred[:1], target[:1])
    m.update(pred[1:], target[1:])
    out, lead = m.compute(), m.per_lead()

    full = [math.sqrt(1 + 4) / math.sqrt(4 + 400), math.sqrt(4 + 16) / math.sqrt(4 + 400)]
    steps = [[1 / 2, 2 / 20], [2 / 2, 4 / 20]]
    assert out["rel_l2"].item() == pytest.approx(sum(full) / 2, rel=1e-6)
    assert out["rel_l2_step"].item() == pytest.approx(np.mean(steps), rel=1e-6)
    # The flattened trajectory is dominated by the large late step; the step mean is not.
    assert out["rel_l2_step"].item() > 2 * out["rel_l2"].item()
    np.testing.assert_allclose(lead["rel_l2_step"].numpy(), np.mean(steps, axis=0), rtol=1e-6)
    np.testing.assert_allclose(relative_l2(pred, target).numpy(), full, rtol=1e-6)
    np.testing.assert_allclose(relative_l2(pred, target, dim_start=2).numpy(), steps, rtol=1e-6)


def test_relative_l2_is_a_loss():
    target = torch.rand(3, 4, 2, 8, 8) + 0.5
    pred = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    relative_l2(pred, target).mean().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# Latitude weights


def test_latitude_weights_pole_grid_by_hand():
    # Bounds [-90, -45, 45, 90]: raw weights 1 - sin45, 2 sin45, 1 - sin45 (sum 2), then mean 1.
    s = math.sin(math.pi / 4)
    raw = np.array([1 - s, 2 * s, 1 - s])
    np.testing.assert_allclose(latitude_area_weights([-90.0, 0.0, 90.0]).numpy(), raw / raw.mean(), rtol=1e-6)


def test_latitude_weights_properties():
    lat = np.linspace(-90, 90, 33)  # equiangular with poles, like WB2 64x32 "with poles" grids
    w = latitude_area_weights(lat.tolist())
    assert w.shape == (33,)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(w.numpy(), w.flip(0).numpy(), rtol=1e-6)
    assert 0 < w[0].item() < 0.05 * w[16].item()
    # Cosine weights give the pole rows exactly zero; area weights do not.
    assert math.cos(math.radians(lat[0])) == pytest.approx(0.0, abs=1e-12)
    desc = latitude_area_weights(lat[::-1].tolist())
    np.testing.assert_allclose(desc.flip(0).numpy(), w.numpy(), rtol=1e-6)

    # Without poles (1.40625° grid, rows offset by half a cell) cosine and area weights nearly coincide.
    lat_np = -90 + 1.40625 * (np.arange(128) + 0.5)
    cos = np.cos(np.deg2rad(lat_np))
    np.testing.assert_allclose(latitude_area_weights(lat_np.tolist()).numpy(), cos / cos.mean(), atol=1e-4)


@pytest.mark.parametrize("lat", [[0.0, 10.0, 5.0], [10.0, 10.0, 20.0], [-95.0, 0.0], [], [0.0, float("nan")]])
def test_latitude_weights_reject_bad_grids(lat):
    with pytest.raises(ValueError, match="latitude"):
        latitude_area_weights(lat)


def test_rmse_lat_by_hand():
    rng = np.random.default_rng(2)
    n, t, c, h, w = 5, 3, 2, 6, 7
    pred = rng.standard_normal((n, t, c, h, w)).astype(np.float32) * 3
    true = rng.standard_normal((n, t, c, h, w)).astype(np.float32) * 3
    lat = np.linspace(75, -75, h)
    weights = latitude_area_weights(lat.tolist())
    wn = weights.double().numpy().reshape(1, 1, 1, h, 1)

    # Weights with another scale give the same numbers: they are renormalised to mean 1.
    m = _stream(ForecastMetrics(t, lat_weights=(2.5 * weights).tolist()), pred, true, [2, 3])
    out, lead = m.compute(), m.per_lead()

    err = pred.astype(np.float64) - true.astype(np.float64)
    wmse = (wn * err**2).mean(axis=(2, 3, 4))  # [N, T]: weighted spatial MSE per init time and lead
    wmae = (wn * np.abs(err)).mean(axis=(2, 3, 4))
    assert out["rmse_lat"].item() == pytest.approx(math.sqrt(wmse.mean()), rel=1e-5)
    assert out["mae_lat"].item() == pytest.approx(wmae.mean(), rel=1e-5)
    np.testing.assert_allclose(lead["rmse_lat"].numpy(), np.sqrt(wmse.mean(axis=0)), rtol=1e-5)
    np.testing.assert_allclose(lead["mae_lat"].numpy(), wmae.mean(axis=0), rtol=1e-5)
    # Sqrt after the time mean (WB2) differs from the mean of per-forecast RMSEs (WB1 paper).
    assert out["rmse_lat"].item() > np.sqrt(wmse).mean() + 1e-3
    assert out["rmse_lat"].item() != pytest.approx(out["rmse"].item(), rel=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Reduction across processes, per-lead curves, validation, precision


def _full_metric(t: int, h: int) -> ForecastMetrics:
    return ForecastMetrics(t, data_range=1.0, pde=True, lat_weights=latitude_area_weights(np.linspace(60, -60, h)))


def test_ddp_style_sum_reduction():
    pred, true = _image_data(n=6, t=3, c=1, h=12, w=14, seed=4)
    whole = _stream(_full_metric(3, 12), pred, true, [6])
    rank0 = _stream(_full_metric(3, 12), pred[:2], true[:2], [2])
    rank1 = _stream(_full_metric(3, 12), pred[2:], true[2:], [1, 3])

    merged = copy.deepcopy(rank0)
    merged.merge_state(rank1)
    # What sync does under DDP: every state is summed elementwise.
    by_hand = copy.deepcopy(rank1)
    for name in by_hand._defaults:
        setattr(by_hand, name, getattr(rank0, name) + getattr(rank1, name))
        assert getattr(by_hand, name).dtype == torch.float64

    expected = whole.compute()
    for other in (merged, by_hand):
        got = other.compute()
        assert set(got) == set(expected)
        for key in expected:
            assert got[key].item() == pytest.approx(expected[key].item(), rel=1e-6, abs=1e-7), key
        for key, curve in whole.per_lead().items():
            np.testing.assert_allclose(other.per_lead()[key].numpy(), curve.numpy(), rtol=1e-6)


def test_per_lead_curves():
    pred, true = _image_data(n=4, t=5, c=1, h=12, w=12, seed=9)
    pred[:, -1] += 0.3  # a worse last lead
    m = _stream(_full_metric(5, 12), pred, true, [3, 1])
    out, lead = m.compute(), m.per_lead()
    for curve in lead.values():
        assert curve.shape == (5,)
    assert lead["mse"].mean().item() == pytest.approx(out["mse"].item(), rel=1e-6)
    assert lead["psnr"].mean().item() == pytest.approx(out["psnr"].item(), rel=1e-6)
    assert lead["rel_l2_step"].mean().item() == pytest.approx(out["rel_l2_step"].item(), rel=1e-6)
    err = pred.astype(np.float64) - true.astype(np.float64)
    np.testing.assert_allclose(lead["mse"].numpy(), (err**2).mean(axis=(0, 2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(lead["rmse"].numpy(), np.sqrt((err**2).mean(axis=(0, 2, 3, 4))), rtol=1e-5)
    assert lead["mse"][-1] > 2 * lead["mse"][:-1].max()
    # The global RMSE is not the mean of per-lead RMSEs.
    assert out["rmse"].item() > lead["rmse"].mean().item() + 1e-3


def test_update_validates_inputs():
    m = ForecastMetrics(3, lat_weights=[1.0] * 8)
    x = torch.rand(2, 3, 1, 8, 8)
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(x, x[:1])
    with pytest.raises(ValueError, match="out_frames=3"):
        m.update(x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        m.update(x[0], x[0])
    with pytest.raises(ValueError, match="8 latitude weights for H=6"):
        m.update(x[..., :6, :], x[..., :6, :])
    for bad in ({"data_range": 0.0}, {"data_range": float("inf")}, {"ssim_sigma": 0.0}, {"lat_weights": [1, -1]}):
        with pytest.raises(ConfigError):
            ForecastMetrics(3, **bad)
    with pytest.raises(ConfigError, match="out_frames"):
        ForecastMetrics(0)


def test_autocast_and_low_precision_inputs():
    pred, true = _image_data(n=2, t=2, c=1, h=16, w=16, seed=1)
    ref = _stream(_full_metric(2, 16), pred, true, [2]).compute()
    m = _full_metric(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m.update(torch.from_numpy(pred), torch.from_numpy(true))
    got = m.compute()
    for key in ref:
        assert got[key].item() == pytest.approx(ref[key].item(), rel=1e-6, abs=1e-7), key
    # bf16 inputs (bf16-true training) are accepted and accumulated in float64.
    m = _full_metric(2, 16)
    m.update(torch.from_numpy(pred).bfloat16(), torch.from_numpy(true).bfloat16())
    assert m.compute()["mse"].item() == pytest.approx(ref["mse"].item(), rel=2e-2)


def test_module_dtype_casts_keep_float64_states():
    # Lightning's "bf16-true" calls LightningModule.to(torch.bfloat16), which reaches the metric's states.
    m = _full_metric(2, 16)
    m.to(torch.bfloat16)
    assert m.sse.dtype == torch.float64 and m.lat_weights.dtype == torch.float32
    pred, true = _image_data(n=2, t=2, c=1, h=16, w=16, seed=1)
    _stream(m, pred, true, [1, 1])
    m.reset()
    assert m.sse.dtype == torch.float64 and float(m.sse.sum()) == 0.0


def test_forward_returns_batch_values_and_accumulates():
    pred, true = _image_data(n=4, t=2, c=1, h=16, w=16, seed=6)
    m = ForecastMetrics(2, data_range=1.0)
    first = m(torch.from_numpy(pred[:2]), torch.from_numpy(true[:2]))
    m(torch.from_numpy(pred[2:]), torch.from_numpy(true[2:]))
    single = _stream(ForecastMetrics(2, data_range=1.0), pred[:2], true[:2], [2]).compute()
    assert first["mse"].item() == pytest.approx(single["mse"].item(), rel=1e-6)
    whole = _stream(ForecastMetrics(2, data_range=1.0), pred, true, [4]).compute()
    assert m.compute()["ssim"].item() == pytest.approx(whole["ssim"].item(), rel=1e-6)


def test_latitude_weights_of_a_regional_grid_follow_the_area_of_its_own_cells():
    # 50..58 N every 0.25 deg: the edge rows' cells end half a row beyond them, not at the poles.
    lat = np.arange(58.0, 49.99, -0.25)
    bounds = np.concatenate([[58.125], (lat[1:] + lat[:-1]) / 2, [49.875]])
    raw = np.sin(np.deg2rad(bounds[:-1])) - np.sin(np.deg2rad(bounds[1:]))
    np.testing.assert_allclose(latitude_area_weights(lat.tolist()).numpy(), raw / raw.mean(), rtol=1e-5)
