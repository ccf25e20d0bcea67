"""LRCN (docs/models.md §5): shared per-frame CNN, LSTM, mean-over-steps readout, recurrent forecast rollout."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _helpers import n_params

from stpred import ConfigError, create_model
from stpred.models.lrcn import LRCN

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "lrcn.yaml"
TINY = {"widths": (8, 16), "blocks": 1, "stem": "small", "hidden": 16, "feature_dim": 32}


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_bn(model: torch.nn.Module) -> torch.nn.Module:
    # Non-trivial BatchNorm statistics, so that eval-mode comparisons exercise them.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _per_step_logits_by_hand(model: LRCN, x: torch.Tensor) -> torch.Tensor:
    """Each frame through the shared CNN on its own, the LSTM one step at a time, the classifier per step."""
    state, logits = None, []
    for t in range(x.shape[1]):
        feat = model.encoder(x[:, t]).mean(dim=(-2, -1))  # [B, D]
        out, state = model.lstm(feat[:, None], state)
        logits.append(model.classifier(out[:, 0]))
    return torch.stack(logits, dim=1)  # [B, T, K]


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_readout_equals_per_step_logits_by_hand(readout: str) -> None:
    model = _trained_bn(LRCN(in_shape=(6, 3, 32, 32), num_classes=5, readout=readout, **TINY))
    x = torch.randn(3, 6, 3, 32, 32)
    with torch.no_grad():
        clip = model(x)
        steps = _per_step_logits_by_hand(model, x)
    assert clip.shape == (3, 5) and steps.shape == (3, 6, 5)
    expected = steps.mean(dim=1) if readout == "mean" else steps[:, -1]
    assert torch.allclose(clip, expected, atol=1e-5)
    # The steps differ, so the mean is not trivially the last step.
    assert (steps[:, 0] - steps[:, -1]).abs().max() > 1e-4


def test_frames_share_one_encoder() -> None:
    model = _trained_bn(LRCN(in_shape=(4, 3, 32, 32), num_classes=5, **TINY))
    x = torch.randn(2, 4, 3, 32, 32)
    x[:, 2] = x[:, 0]
    with torch.no_grad():
        feats = model.encode(x)
    assert feats.shape == (2, 4, 16)
    assert torch.equal(feats[:, 2], feats[:, 0])


def test_classify_forward_backward_and_other_clip_lengths() -> None:
    model = create_model("lrcn", in_shape=(8, 3, 64, 64), num_classes=7, **TINY).train()
    y = model(torch.randn(3, 8, 3, 64, 64))
    assert y.shape == (3, 7) and torch.isfinite(y).all()
    F.cross_entropy(y, torch.tensor([0, 3, 6])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    # Recurrent over time and pooled over space: any clip length and frame size works.
    assert model.eval()(torch.randn(1, 3, 3, 48, 40)).shape == (1, 7)


def test_default_encoder_is_resnet18() -> None:
    model = LRCN(in_shape=(16, 3, 224, 224), num_classes=400, device="meta")
    assert n_params(model.encoder) == 11_176_512  # torchvision resnet18 without its fc (11,689,512 - 513,000)
    assert n_params(model.lstm) == 4 * 256 * (512 + 256) + 2 * 4 * 256
    assert n_params(model) == 11_176_512 + 788_480 + 256 * 400 + 400


# --- forecasting (proposed) ---


@pytest.mark.parametrize(
    "in_shape, out_frames",
    [((10, 1, 64, 64), 10), ((4, 2, 32, 32), 4), ((12, 1, 32, 64), 12), ((10, 1, 32, 32), 25)],
    ids=["mmnist", "taxibj", "weatherbench", "longer"],
)
def test_forecast_rollout_shapes(in_shape: tuple, out_frames: int) -> None:
    model = create_model("lrcn", in_shape=in_shape, out_frames=out_frames, **TINY).train()
    y = model(torch.randn(2, *in_shape))
    assert y.shape == (2, out_frames, *in_shape[1:]) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_rollout_feeds_back_encoded_predictions() -> None:
    model = _trained_bn(LRCN(in_shape=(5, 1, 32, 32), out_frames=3, **TINY))
    x = torch.randn(2, 5, 1, 32, 32)
    with torch.no_grad():
        y = model(x)
        out, state = model.lstm(model.encode(x))  # warm-up on the 5 input frames
        f1 = model.decoder(out[:, -1])
        out, state = model.lstm(model.encode(f1[:, None]), state)
        f2 = model.decoder(out[:, -1])
        out, state = model.lstm(model.encode(f2[:, None]), state)
        f3 = model.decoder(out[:, -1])
        shorter = model.generate(x, 2)
    assert torch.allclose(y, torch.stack([f1, f2, f3], dim=1), atol=1e-5)
    assert torch.allclose(shorter, y[:, :2], atol=1e-6)


# --- validation ---


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"out_frames": 4, "num_classes": 5}, ["exactly one"]),
        ({}, ["exactly one"]),
        ({"num_classes": 5, "readout": "max"}, ["readout", "mean|last"]),
        ({"num_classes": 5, "blocks": [1, 1, 1]}, ["blocks"]),
        ({"num_classes": 5, "stem": "big"}, ["stem"]),
        ({"num_classes": 5, "hidden": 0}, ["hidden"]),
        ({"out_frames": 4, "stem": "resnet", "widths": [8, 16, 16, 16]}, ["divisible", "32"]),
    ],
)
def test_config_errors(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        create_model("lrcn", **{"in_shape": (4, 1, 48, 48), **TINY, **kwargs})
    msg = str(excinfo.value)
    assert "\n" not in msg and "lrcn" in msg
    for word in words:
        assert word in msg, (word, msg)


def test_config_file_holds_the_constructor_defaults() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["name"] == "lrcn"
    params = inspect.signature(LRCN.__init__).parameters
    defaults = {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for k, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and k not in ("device", "dtype", "in_shape", "out_frames", "num_classes")
    }
    assert cfg["kwargs"] == defaults
