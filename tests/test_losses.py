"""The loss registry (stpred.losses): every registered loss against a NumPy float64 computation on odd shapes, the
errors for unknown names and wrong kinds, and the tasks taking their loss from it (physical units for rel_l2)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from stpred import ConfigError, UserError
from stpred.losses import _LOSSES, Loss, create_loss, list_losses, register_loss


def _mse(p: np.ndarray, t: np.ndarray) -> float:
    return float(np.mean((p - t) ** 2))


def _mse_l1(p: np.ndarray, t: np.ndarray) -> float:
    return _mse(p, t) + float(np.mean(np.abs(p - t)))


def _rel_l2(p: np.ndarray, t: np.ndarray) -> float:
    b = p.shape[0]
    d, r = (p - t).reshape(b, -1), t.reshape(b, -1)
    return float(np.mean(np.sqrt((d**2).sum(1)) / np.sqrt((r**2).sum(1))))


def _convs5(p: np.ndarray, t: np.ndarray) -> float:
    d = p - t
    return float(np.mean((0.5 * d**2 + 0.5 * np.abs(d)).sum(axis=(-2, -1))))


def _cross_entropy(logits: np.ndarray, label: np.ndarray, label_smoothing: float = 0.0) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    nll = -log_p[np.arange(len(label)), label]
    uniform = -log_p.mean(axis=1)
    return float(np.mean((1 - label_smoothing) * nll + label_smoothing * uniform))


FORECAST_REFERENCES = {"mse": _mse, "mse+l1": _mse_l1, "rel_l2": _rel_l2, "convs5": _convs5}


def _pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(shape, generator=g, dtype=torch.float64) + 0.5
    return target + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64), target


def test_the_registry_lists_every_loss_by_kind() -> None:
    assert list_losses() == ["convs5", "cross_entropy", "mse", "mse+l1", "rel_l2"]
    assert list_losses("forecast") == sorted(FORECAST_REFERENCES)
    assert list_losses("classify") == ["cross_entropy"]
    assert [name for name in list_losses() if create_loss(name).physical_units] == ["rel_l2"]


@pytest.mark.parametrize("shape", [(3, 5, 2, 7, 9), (1, 1, 1, 3, 5), (2, 4, 3, 11, 6)])
@pytest.mark.parametrize("name", sorted(FORECAST_REFERENCES))
def test_forecast_losses_match_numpy(name: str, shape: tuple[int, ...]) -> None:
    pred, target = _pair(shape, seed=len(name) + sum(shape))
    loss = create_loss(name, kind="forecast")
    assert isinstance(loss, Loss) and loss.name == name and loss.kind == "forecast"
    got = loss(pred, target)
    assert got.shape == () and got.dtype == torch.float64
    assert got.item() == pytest.approx(FORECAST_REFERENCES[name](pred.numpy(), target.numpy()), rel=1e-12)
    assert loss(target, target).item() == 0.0


@pytest.mark.parametrize("name", sorted(FORECAST_REFERENCES))
def test_forecast_losses_are_differentiable_in_float32(name: str) -> None:
    pred, target = _pair((2, 3, 1, 5, 7), seed=3)
    pred = pred.float().requires_grad_(True)
    loss = create_loss(name)(pred, target.float())
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    ref = FORECAST_REFERENCES[name](pred.detach().double().numpy(), target.float().double().numpy())
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_convs5_is_the_known_value_and_checks_shapes() -> None:
    # |d| = 2 on 2x2 pixels: 4 * (0.5 * 4 + 0.5 * 2)
    assert create_loss("convs5")(torch.full((1, 1, 2, 2), 3.0), torch.ones(1, 1, 2, 2)).item() == 12.0
    with pytest.raises(ValueError, match="differ in shape"):
        create_loss("convs5")(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 3, 3))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("batch, classes", [(5, 7), (1, 3), (9, 2)])
def test_cross_entropy_matches_numpy(batch: int, classes: int, smoothing: float) -> None:
    g = torch.Generator().manual_seed(batch * classes)
    logits = 3 * torch.randn(batch, classes, generator=g, dtype=torch.float64)
    label = torch.randint(0, classes, (batch,), generator=g)
    loss = create_loss("cross_entropy", kind="classify", label_smoothing=smoothing)
    assert loss.options == {"label_smoothing": smoothing}
    got = loss(logits, label)
    # The loss runs in float32 (bf16 logits under autocast): compare at float32 precision.
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_cross_entropy(logits.numpy(), label.numpy(), smoothing), rel=1e-5)


def test_unknown_name_is_one_user_error_listing_the_losses() -> None:
    with pytest.raises(UserError, match="loss='mae' is not a registered loss; available: convs5, cross_entropy, mse"):
        create_loss("mae")
    with pytest.raises(ConfigError, match=r"available: convs5, mse, mse\+l1, rel_l2$"):
        create_loss("mae", kind="forecast")


def test_a_loss_of_the_other_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="'mse' is a forecast loss, not a classify loss; classify losses: cross_e"):
        create_loss("mse", kind="classify")
    with pytest.raises(ConfigError, match="forecast losses: convs5, mse"):
        create_loss("cross_entropy", kind="forecast")
    with pytest.raises(ConfigError, match="kind must be one of"):
        create_loss("mse", kind="segment")


def test_register_a_loss_and_a_duplicate_warns() -> None:
    def _huber(pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
        return torch.nn.functional.huber_loss(pred, target, delta=delta)

    try:
        register_loss("_test_huber", kind="forecast")(_huber)
        assert "_test_huber" in list_losses("forecast")
        pred, target = torch.tensor([0.0, 3.0]), torch.zeros(2)
        assert create_loss("_test_huber", delta=2.0)(pred, target).item() == pytest.approx((0 + (3 * 2 - 2)) / 2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            register_loss("_test_huber", kind="forecast")(_huber)  # the same function again: silent
        with pytest.warns(UserWarning, match="registered twice"):
            register_loss("_test_huber", kind="forecast")(lambda p, t: (p - t).abs().max())
        with pytest.raises(ConfigError, match="kind must be one of"):
            register_loss("_test_bad", kind="regress")
    finally:
        _LOSSES.pop("_test_huber", None)
    assert "_test_huber" not in list_losses()


# --- the tasks use the registry ---

META = {"in_shape": [5, 2, 8, 8], "out_frames": 3, "mean": [1.0, -2.0], "std": [2.0, 0.5]}
TINY_FNO = {"name": "fno3d", "kwargs": {"modes": 2, "width": 4}}


@pytest.mark.parametrize("name", sorted(FORECAST_REFERENCES))
def test_forecast_task_takes_rel_l2_in_physical_units_and_the_rest_normalised(name: str) -> None:
    from stpred.tasks import ForecastTask

    task = ForecastTask(TINY_FNO, dict(META), loss=name)
    assert task.hparams.loss == name and task.loss_fn.name == name
    pred, target = (v.float() for v in _pair((2, 3, 2, 8, 8), seed=11))
    mean = np.array(META["mean"]).reshape(1, 1, 2, 1, 1)
    std = np.array(META["std"]).reshape(1, 1, 2, 1, 1)
    p, t = pred.double().numpy(), target.double().numpy()
    if name == "rel_l2":
        p, t = p * std + mean, t * std + mean
    assert task._loss(pred, target, valid=None).item() == pytest.approx(FORECAST_REFERENCES[name](p, t), rel=1e-5)


def test_tasks_refuse_unknown_and_foreign_losses() -> None:
    from stpred.tasks import ClassifyTask, ForecastTask

    with pytest.raises(ConfigError, match="available: convs5, mse, mse"):
        ForecastTask(TINY_FNO, dict(META), loss="l2")
    with pytest.raises(ConfigError, match="classify losses: cross_entropy"):
        ClassifyTask({"name": "lrcn"}, {"in_shape": [4, 3, 16, 16], "num_classes": 3}, loss="rel_l2")
