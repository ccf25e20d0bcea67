"""Masked forecast losses and metrics (``valid=``) against an independent NumPy float64 computation.

The references below are written from the definitions in docs/metrics.md ("Masked cells") with boolean indexing
and explicit loops over frames and window positions, not from stpred's code. Masked cells of both the prediction
and the target hold NaN (and some ±inf and 1e6), so any masked value that leaks into a sum shows up.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from stpred.errors import ConfigError
from stpred.losses import _LOSSES, create_loss, list_losses, register_loss
from stpred.metrics import ForecastMetrics, relative_l2, ssim_per_frame

B, T, C, H, W = 3, 2, 2, 13, 17
KERNEL = 5  # the SSIM window used with masks: 13 x 17 frames leave 9 x 13 window positions

# ---------------------------------------------------------------------------------------------------------------
# Data and masks.


def _data(seed: int, shape: tuple[int, ...] = (B, T, C, H, W)) -> tuple[np.ndarray, np.ndarray]:
    """Targets in [0, 1] and predictions that stray a little outside (so the image metrics clip)."""
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.0, 1.0, shape)
    pred = target + rng.normal(0.0, 0.15, shape)
    return pred, target


def _holes(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random holes (40 %) in the top rows and the left columns; the lower right 9 x 8 block stays valid, so some
    5 x 5 SSIM windows are fully valid."""
    valid = np.random.default_rng(seed).uniform(size=shape) > 0.4
    valid[..., 4:, 9:] = True
    return valid


def _static_mask(seed: int) -> np.ndarray:
    """``[1, 1, C, H, W]``: about a quarter of the cells masked in every step."""
    return _holes(seed, (1, 1, C, H, W))


def _step_mask(seed: int, batch: int = B) -> np.ndarray:
    """``[B, T, C, H, W]``: random holes that differ by step, one frame fully masked, one masked but one value."""
    valid = _holes(seed, (batch, T, C, H, W))
    valid[1, 0] = False
    valid[batch - 1, 1] = False
    valid[batch - 1, 1, 1, 4, 6] = True
    return valid


def _ssim_mask() -> np.ndarray:
    """``[B, T, C, H, W]`` that leaves some k x k windows fully valid in every frame but three.

    Frame (0, 0) has a few holes; (0, 1) a masked rectangle; (1, 0) is fully masked; (1, 1) has a hole in every
    5 x 5 window (a grid of holes 4 apart) but many valid values; (2, 0) has holes in one channel only; (2, 1) is
    valid except one column.
    """
    valid = np.ones((B, T, C, H, W), dtype=bool)
    valid[0, 0, 0, 2, 3] = valid[0, 0, 1, 9, 12] = valid[0, 0, 1, 6, 1] = False
    valid[0, 1, :, 3:8, 5:11] = False
    valid[1, 0] = False
    valid[1, 1, 0, 2::4, 2::4] = False
    valid[2, 0, 1, 5, :8] = False
    valid[2, 1, :, :, 8] = False
    return valid


def _hide(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors with garbage in every masked cell of both: mostly NaN, some ±inf and some large finite values."""
    full = np.broadcast_to(valid, pred.shape)
    junk = np.random.default_rng(int(full.sum())).choice([np.nan, np.nan, np.nan, np.inf, -np.inf, 1e6], pred.shape)
    hidden = [torch.from_numpy(np.where(full, x, junk)) for x in (pred, target)]
    assert all(x[~torch.from_numpy(full.copy())].isnan().float().mean() > 0.3 for x in hidden)
    return hidden[0], hidden[1]


# ---------------------------------------------------------------------------------------------------------------
# Independent references (float64 NumPy).


def ref_mse(p: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    v = np.broadcast_to(v, p.shape)
    return float(np.mean((p[v] - t[v]) ** 2)) if v.any() else 0.0


def ref_mse_l1(p: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    v = np.broadcast_to(v, p.shape)
    return ref_mse(p, t, v) + float(np.mean(np.abs(p[v] - t[v]))) if v.any() else 0.0


def ref_rel_l2(p: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    v = np.broadcast_to(v, p.shape)
    ratios = []
    for n in range(p.shape[0]):
        m = v[n]
        if m.any():
            ratios.append(np.sqrt(np.sum((p[n][m] - t[n][m]) ** 2)) / np.sqrt(np.sum(t[n][m] ** 2)))
    return float(np.mean(ratios)) if ratios else 0.0


def ref_convs5(p: np.ndarray, t: np.ndarray, v: np.ndarray) -> float:
    """H·W times the mean over valid elements of 0.5 d² + 0.5 |d| (the per-image sum, per valid value)."""
    v = np.broadcast_to(v, p.shape)
    if not v.any():
        return 0.0
    d = p[v] - t[v]
    return float(p.shape[-1] * p.shape[-2] * np.mean(0.5 * d**2 + 0.5 * np.abs(d)))


LOSS_REFERENCES = {"mse": ref_mse, "mse+l1": ref_mse_l1, "rel_l2": ref_rel_l2, "convs5": ref_convs5}


def _frames(p: np.ndarray, t: np.ndarray, v: np.ndarray):
    """Every frame (n, t) as ``(lead, pred values, target values, valid [C, H, W])`` with the valid values only."""
    v = np.broadcast_to(v, p.shape)
    for n in range(p.shape[0]):
        for lead in range(p.shape[1]):
            m = v[n, lead]
            yield lead, p[n, lead][m], t[n, lead][m], m


def _psnr(mse: float, peak: float, cap: float = 100.0) -> tuple[float, bool]:
    if mse == 0:
        return cap, True
    value = 10 * np.log10(peak**2 / mse)
    return min(value, cap), value >= cap


def _ssim_window(x: np.ndarray, y: np.ndarray, g: np.ndarray, c1: float, c2: float) -> float:
    """SSIM of one k x k window with Gaussian weights g (summing to 1)."""
    mx, my = np.sum(g * x), np.sum(g * y)
    vx, vy = np.sum(g * (x - mx) ** 2), np.sum(g * (y - my) ** 2)
    cov = np.sum(g * (x - mx) * (y - my))
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ref_ssim_frame(x: np.ndarray, y: np.ndarray, m: np.ndarray, k: int, sigma: float = 1.5) -> float | None:
    """Mean SSIM over channels and the window positions whose whole window is valid in every channel."""
    ax = np.arange(k) - (k - 1) / 2
    g1 = np.exp(-(ax**2) / (2 * sigma**2))
    g = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[1] - k + 1):
        for j in range(x.shape[2] - k + 1):
            if m[:, i : i + k, j : j + k].all():
                for c in range(x.shape[0]):
                    values.append(_ssim_window(x[c, i : i + k, j : j + k], y[c, i : i + k, j : j + k], g, c1, c2))
    return float(np.mean(values)) if values else None


def ref_metrics(p: np.ndarray, t: np.ndarray, v: np.ndarray, lat_w: np.ndarray | None, k: int = KERNEL) -> dict:
    """Pooled values and per-lead curves of every masked metric (image metrics with data_range 1)."""
    leads = p.shape[1]
    per: dict[str, list[list[float]]] = {
        key: [[] for _ in range(leads)]
        for key in ("se", "ae", "sse_f", "sae_f", "psnr", "psnr_q", "ssim", "step", "wse", "wae")
    }
    capped = capped_q = 0
    w_full = None if lat_w is None else np.broadcast_to((lat_w / lat_w.mean())[None, :, None], p.shape[2:])
    v_full = np.broadcast_to(v, p.shape)
    for n in range(p.shape[0]):
        for lead in range(leads):
            m = v_full[n, lead]
            pv, tv = p[n, lead][m], t[n, lead][m]
            d = pv - tv
            per["se"][lead] += list(d**2)
            per["ae"][lead] += list(np.abs(d))
            if m.any():
                per["sse_f"][lead].append(np.sum(d**2))
                per["sae_f"][lead].append(np.sum(np.abs(d)))
                psnr, cap = _psnr(np.mean((np.clip(pv, 0, 1) - tv) ** 2), 1.0)
                per["psnr"][lead].append(psnr)
                capped += cap
                qd = np.floor(np.clip(pv, 0, 1) * 255) - np.floor(np.clip(tv, 0, 1) * 255)
                psnr_q, cap_q = _psnr(np.mean(qd**2), 255.0)
                per["psnr_q"][lead].append(psnr_q)
                capped_q += cap_q
                per["step"][lead].append(np.sqrt(np.sum(d**2) / np.sum(tv**2)))
            s = ref_ssim_frame(np.clip(p[n, lead], 0, 1), t[n, lead], m, k)
            if s is not None:
                per["ssim"][lead].append(s)
            if w_full is not None and w_full[m].sum() > 0:
                wm = w_full[m]
                per["wse"][lead].append(np.sum(wm * d**2) / wm.sum())
                per["wae"][lead].append(np.sum(wm * np.abs(d)) / wm.sum())

    def pooled(key: str) -> float:
        return float(np.mean([x for lead in per[key] for x in lead]))

    def curve(key: str) -> np.ndarray:
        return np.array([np.mean(lead) if lead else np.nan for lead in per[key]])

    out = {
        "mse": pooled("se"),
        "mae": pooled("ae"),
        "mse_frame": pooled("sse_f"),
        "mae_frame": pooled("sae_f"),
        "psnr": pooled("psnr"),
        "psnr_uint8": pooled("psnr_q"),
        "psnr_capped": float(capped),
        "psnr_uint8_capped": float(capped_q),
        "ssim": pooled("ssim"),
        "rel_l2": ref_rel_l2(p, t, v),
        "rel_l2_step": pooled("step"),
    }
    out["rmse"] = np.sqrt(out["mse"])
    lead = {"mse": curve("se"), "mae": curve("ae"), "psnr": curve("psnr"), "psnr_uint8": curve("psnr_q")}
    lead.update(ssim=curve("ssim"), rel_l2_step=curve("step"))
    lead["rmse"] = np.sqrt(lead["mse"])
    if lat_w is not None:
        out["rmse_lat"], out["mae_lat"] = np.sqrt(pooled("wse")), pooled("wae")
        lead["rmse_lat"], lead["mae_lat"] = np.sqrt(curve("wse")), curve("wae")
    return {"pooled": out, "lead": lead}


# ---------------------------------------------------------------------------------------------------------------
# Losses.


def _loss_masks() -> dict[str, np.ndarray]:
    return {"static": _static_mask(1), "per_step": _step_mask(2), "per_step_channel": _step_mask(3)[:, :, :1]}


@pytest.mark.parametrize("mask", sorted(_loss_masks()))
@pytest.mark.parametrize("name", sorted(LOSS_REFERENCES))
def test_masked_losses_match_numpy_with_nan_in_masked_cells(name: str, mask: str) -> None:
    valid = _loss_masks()[mask]
    pred, target = _data(seed=len(name) + len(mask))
    p, t = _hide(pred, target, valid)
    p.requires_grad_(True)
    loss = create_loss(name, kind="forecast")(p, t, valid=torch.from_numpy(valid))
    assert loss.shape == () and loss.dtype == torch.float64
    assert loss.item() == pytest.approx(LOSS_REFERENCES[name](pred, target, valid), rel=1e-12)
    loss.backward()
    full = torch.from_numpy(np.broadcast_to(valid, pred.shape).copy())
    assert torch.isfinite(p.grad).all()
    assert (p.grad[~full] == 0).all() and (p.grad[full] != 0).float().mean() > 0.99


@pytest.mark.parametrize("name", sorted(LOSS_REFERENCES))
def test_masked_loss_gradient_matches_finite_differences_of_the_reference(name: str) -> None:
    pred, target = _data(seed=5, shape=(2, 2, 1, 4, 5))
    valid = np.random.default_rng(6).uniform(size=pred.shape) > 0.4
    p, t = _hide(pred, target, valid)
    p.requires_grad_(True)
    create_loss(name)(p, t, valid=torch.from_numpy(valid)).backward()
    eps = 1e-6
    for idx in [tuple(i) for i in np.argwhere(valid)[:6]]:
        up, down = pred.copy(), pred.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric = (LOSS_REFERENCES[name](up, target, valid) - LOSS_REFERENCES[name](down, target, valid)) / (2 * eps)
        assert p.grad[idx].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(LOSS_REFERENCES))
def test_all_masked_batch_is_zero_with_a_graph(name: str, dtype: torch.dtype) -> None:
    p = torch.full((2, 3, 1, 5, 4), float("nan"), dtype=dtype, requires_grad=True)
    t = torch.full((2, 3, 1, 5, 4), float("nan"), dtype=dtype)
    loss = create_loss(name)(p, t, valid=torch.zeros(1, 1, 1, 5, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (p.grad == 0).all()


@pytest.mark.parametrize("name", sorted(LOSS_REFERENCES))
def test_all_true_mask_equals_no_mask_for_losses(name: str) -> None:
    pred, target = _data(seed=7)
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    loss = create_loss(name)
    masked = loss(p, t, valid=torch.ones(1, 1, C, H, W, dtype=torch.bool))
    assert masked.item() == pytest.approx(loss(p, t).item(), rel=1e-13)
    # The mask matters: dropping a third of the values changes every loss.
    assert loss(p, t, valid=torch.from_numpy(_static_mask(8))).item() != pytest.approx(masked.item(), rel=1e-6)


def test_masked_loss_in_float32_and_bfloat16() -> None:
    pred, target = _data(seed=9)
    valid = _step_mask(10)
    ref = ref_mse(pred, target, valid)
    p, t = _hide(pred, target, valid)
    v = torch.from_numpy(valid)
    assert create_loss("mse")(p.float(), t.float(), valid=v).item() == pytest.approx(ref, rel=1e-5)
    # Half precision is summed in float32: the error is the bf16 rounding of the inputs, not of the sum.
    got = create_loss("mse")(p.bfloat16(), t.bfloat16(), valid=v)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(ref, rel=2e-2)


def test_relative_l2_with_a_mask_is_per_sample_and_nan_without_values() -> None:
    pred, target = _data(seed=11)
    valid = _step_mask(12)
    valid[0] = False  # sample 0 has no valid value
    p, t = _hide(pred, target, valid)
    got = relative_l2(p, t, valid=torch.from_numpy(valid)).numpy()
    assert np.isnan(got[0])
    for n in (1, 2):
        m = valid[n]
        ref = np.sqrt(np.sum((pred[n][m] - target[n][m]) ** 2) / np.sum(target[n][m] ** 2))
        assert got[n] == pytest.approx(ref, rel=1e-12)
    # The loss averages over the samples that have values.
    loss = create_loss("rel_l2")(p, t, valid=torch.from_numpy(valid))
    assert loss.item() == pytest.approx(np.mean(got[1:]), rel=1e-12)


def test_mask_errors_are_clear() -> None:
    p = torch.zeros(2, 3, 1, 4, 5)
    with pytest.raises(ValueError, match="must be a bool tensor"):
        create_loss("mse")(p, p, valid=torch.ones(1, 1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"valid of shape \(1, 1, 1, 5, 4\) does not broadcast"):
        create_loss("mse")(p, p, valid=torch.ones(1, 1, 1, 5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        ForecastMetrics(3).update(p, p, valid=torch.ones(2, 3, 2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        create_loss("convs5")(p, p, valid=torch.ones(1, 2, 3, 1, 4, 5, dtype=torch.bool))


def test_a_registered_loss_without_valid_refuses_a_mask() -> None:
    def _max_err(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs().max()

    try:
        register_loss("_test_max_err", kind="forecast")(_max_err)
        loss = create_loss("_test_max_err")
        p = torch.ones(1, 1, 1, 2, 2)
        assert loss(p, 0 * p).item() == 1.0
        with pytest.raises(ConfigError, match="does not take a validity mask.*convs5, mse, mse\\+l1, rel_l2"):
            loss(p, 0 * p, valid=torch.ones(1, 1, 1, 2, 2, dtype=torch.bool))
    finally:
        _LOSSES.pop("_test_max_err", None)
    assert "_test_max_err" not in list_losses()


# ---------------------------------------------------------------------------------------------------------------
# Metrics.


def _lat_weights() -> np.ndarray:
    # Row 0 weighs nothing, so a frame valid only there has no latitude-weighted error.
    w = np.cos(np.deg2rad(np.linspace(70, -70, H)))
    w[0] = 0.0
    return w


def _metric(lat: bool = True) -> ForecastMetrics:
    return ForecastMetrics(
        T, data_range=1.0, pde=True, lat_weights=_lat_weights().tolist() if lat else None, ssim_kernel=KERNEL
    )


def _compare(m: ForecastMetrics, ref: dict, rel: float) -> None:
    got, lead = m.compute(), m.per_lead()
    assert set(got) == set(ref["pooled"])
    for key, value in ref["pooled"].items():
        assert np.isfinite(value), key
        assert got[key].item() == pytest.approx(value, rel=rel), key
    assert set(lead) == set(ref["lead"])
    for key, curve in ref["lead"].items():
        np.testing.assert_allclose(lead[key].double().numpy(), curve, rtol=rel, err_msg=key)


@pytest.mark.parametrize("mask", ["static", "per_step", "ssim"])
def test_masked_metrics_match_numpy(mask: str) -> None:
    valid = {"static": _static_mask(20), "per_step": _step_mask(21), "ssim": _ssim_mask()}[mask]
    if mask == "per_step":
        valid[2, 1] = False
        valid[2, 1, :, 0, :] = True  # valid only in the row of weight 0: no latitude-weighted error there
    pred, target = _data(seed=22 + len(mask))
    m = _metric()
    p, t = _hide(pred, target, valid)
    m.update(p, t, valid=torch.from_numpy(valid))
    ref = ref_metrics(pred, target, valid, _lat_weights())
    # Float32 results of float64 sums: compare at float32 precision.
    _compare(m, ref, rel=2e-6)


def test_ssim_mask_leaves_the_expected_frames() -> None:
    # The exclusions the SSIM test depends on really happen: frames without a fully valid window are left out.
    pred, target = _data(seed=30)
    valid = _ssim_mask()
    p, t = _hide(pred, target, valid)
    frames = ssim_per_frame(
        p.clamp(0, 1).flatten(0, 1), t.flatten(0, 1), 1.0, KERNEL, valid=torch.from_numpy(valid).flatten(0, 1)
    ).numpy()
    assert np.isnan(frames).tolist() == [False, False, True, True, False, False]
    for i, (n, lead) in enumerate(np.ndindex(B, T)):
        ref = ref_ssim_frame(np.clip(pred[n, lead], 0, 1), target[n, lead], valid[n, lead], KERNEL)
        assert (ref is None) == np.isnan(frames[i])
        if ref is not None:
            assert frames[i] == pytest.approx(ref, rel=1e-12)
    m = _metric(lat=False)
    m.update(p, t, valid=torch.from_numpy(valid))
    assert m.n_frames_ssim.tolist() == [2.0, 2.0] and m.n_frames.tolist() == [2.0, 3.0]


def test_masked_metrics_stream_and_reduce_by_sum() -> None:
    pred, target = _data(seed=40, shape=(5, T, C, H, W))
    valid = _step_mask(41, batch=5)
    p, t = _hide(pred, target, valid)
    v = torch.from_numpy(valid)
    whole = _metric()
    whole.update(p, t, valid=v)
    rank0, rank1 = _metric(), _metric()
    rank0.update(p[:2], t[:2], valid=v[:2])
    rank1.update(p[2:3], t[2:3], valid=v[2:3])
    rank1.update(p[3:], t[3:], valid=v[3:])
    merged = copy.deepcopy(rank0)
    merged.merge_state(rank1)
    for name in merged._defaults:
        assert merged._reductions[name].__name__ == "dim_zero_sum", name
        assert getattr(merged, name).dtype == torch.float64, name
    _compare(merged, ref_metrics(pred, target, valid, _lat_weights()), rel=2e-6)
    for key, value in whole.compute().items():
        assert merged.compute()[key].item() == pytest.approx(value.item(), rel=1e-6), key


def test_masked_metrics_in_float32() -> None:
    pred, target = _data(seed=50)
    valid = _step_mask(51)
    p, t = _hide(pred, target, valid)
    m = _metric()
    m.update(p.float(), t.float(), valid=torch.from_numpy(valid))
    ref = ref_metrics(pred.astype(np.float32).astype(np.float64), target.astype(np.float32).astype(np.float64),
                      valid, _lat_weights())
    _compare(m, ref, rel=1e-4)


def test_all_true_mask_equals_no_mask_for_metrics() -> None:
    pred, target = _data(seed=60)
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    plain, masked = _metric(), _metric()
    plain.update(p, t)
    masked.update(p, t, valid=torch.ones(1, 1, 1, 1, 1, dtype=torch.bool))
    for key, value in plain.compute().items():
        assert masked.compute()[key].item() == pytest.approx(value.item(), rel=1e-6, abs=1e-12), key
    for key, curve in plain.per_lead().items():
        np.testing.assert_allclose(masked.per_lead()[key].numpy(), curve.numpy(), rtol=1e-6, err_msg=key)
    # And a real mask changes them.
    other = _metric()
    p2, t2 = _hide(pred, target, _static_mask(61))
    other.update(p2, t2, valid=torch.from_numpy(_static_mask(61)))
    assert other.compute()["mse"].item() != pytest.approx(plain.compute()["mse"].item(), rel=1e-4)


def test_masked_metrics_with_an_all_masked_lead_give_nan_curves_only_there() -> None:
    pred, target = _data(seed=70)
    valid = _step_mask(71)
    valid[:, 1] = False
    p, t = _hide(pred, target, valid)
    m = _metric()
    m.update(p, t, valid=torch.from_numpy(valid))
    ref = ref_metrics(pred[:, :1], target[:, :1], valid[:, :1], _lat_weights())
    for key, value in m.compute().items():
        assert value.item() == pytest.approx(ref["pooled"][key], rel=2e-6), key
    for key, curve in m.per_lead().items():
        assert np.isnan(curve[1].item()), key
        assert curve[0].item() == pytest.approx(ref["lead"][key][0], rel=2e-6), key


def test_masked_metrics_forward_under_autocast() -> None:
    pred, target = _data(seed=80)
    valid = _step_mask(81)
    p, t = _hide(pred, target, valid)
    m = _metric()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch = m(p.float(), t.float(), valid=torch.from_numpy(valid))
    assert batch["mse"].item() == pytest.approx(ref_mse(pred, target, valid), rel=1e-5)
    assert m.compute()["mse"].item() == pytest.approx(ref_mse(pred, target, valid), rel=1e-5)
