"""SqueezeTime (docs/models.md §4): published size and cost, the channel-major squeeze, the CTL, both heads."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _helpers import n_params
from torch.utils.flop_counter import FlopCounterMode

from stpred import ConfigError, create_model
from stpred.models.squeezetime import CTL, ObjectInteraction, SqueezeTime, squeeze_time, unsqueeze_time

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "squeezetime.yaml"
TINY_CLS = {"depths": (1, 1, 2, 1), "widths": (8, 8, 16, 16), "gate_channels": 4}
TINY_FC = {"forecast_hid": 8, "forecast_depth": 2, "forecast_down": 2, "gate_channels": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


# --- published size (K400: 16 x 224 x 224, 400 classes) ---


def test_published_parameter_count_and_flops() -> None:
    model = SqueezeTime(in_shape=(16, 3, 224, 224), num_classes=400, device="meta").eval()
    backbone = n_params(model) - n_params(model.head)
    # The published 28.7M is the backbone that the reference's own count measures (its ResNet has no classifier);
    # the 400-class head adds 2048 * 400 + 400.
    assert abs(backbone / 28.7e6 - 1) < 0.01
    assert backbone == 28_887_088
    assert n_params(model) == 28_887_088 + 819_600
    assert model.head.fc.in_features == 2048 and model.head.drop.p == 0.5
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 16, 3, 224, 224, device="meta"))
    macs = counter.get_total_flops() / 2
    assert abs(macs / 5.5e9 - 1) < 0.01, macs  # published "5.5G FLOPs" counts multiply-adds (fvcore)


def test_pos_dim_defaults_to_the_stage_sizes() -> None:
    model = SqueezeTime(in_shape=(16, 3, 224, 224), num_classes=400, device="meta")
    sizes = [tuple(stage[0].ctl.interaction.pos_embed.shape) for stage in model.stages]
    assert sizes == [(1, 16, 56, 56), (1, 16, 28, 28), (1, 16, 14, 14), (1, 16, 7, 7)]
    explicit = SqueezeTime(in_shape=(16, 3, 224, 224), num_classes=400, pos_dim=[56, 28, 14, 7], device="meta")
    assert n_params(explicit) == n_params(model)
    odd = SqueezeTime(in_shape=(8, 3, 100, 60), num_classes=5, device="meta", **TINY_CLS)
    # conv5x5/2 and maxpool/2 round up (100 -> 50 -> 25, 60 -> 30 -> 15); DW 2x2/2 rounds down.
    assert [tuple(s[0].ctl.interaction.pos_embed.shape[-2:]) for s in odd.stages] == [(25, 15), (12, 7), (6, 3), (3, 1)]


# --- squeeze order ---


def test_squeeze_is_channel_major() -> None:
    t, c = 5, 3
    x = torch.zeros(2, t, c, 4, 6)
    frame = torch.rand(4, 6) + 0.5
    x[1, 3, 2] = frame
    s = squeeze_time(x)
    assert s.shape == (2, c * t, 4, 6)
    nonzero = (s[1].abs().sum(dim=(-2, -1)) > 0).nonzero().flatten().tolist()
    assert nonzero == [2 * t + 3]
    assert torch.equal(s[1, 2 * t + 3], frame) and s[0].abs().sum() == 0
    y = torch.randn(2, t, c, 4, 6)
    assert torch.equal(unsqueeze_time(squeeze_time(y), t), y)


def test_model_stem_sees_the_channel_major_clip() -> None:
    t, c = 8, 3
    model = SqueezeTime(in_shape=(t, c, 32, 32), num_classes=4, **TINY_CLS).eval()
    seen = []
    model.stem[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    x = torch.randn(1, t, c, 32, 32)
    moved = x.clone()
    moved[0, 6, 1] = torch.randn(32, 32)  # one frame (t=6) of one colour channel (c=1)
    with torch.no_grad():
        model(x)
        model(moved)
    changed = ((seen[1] - seen[0]).abs().sum(dim=(0, 2, 3)) > 0).nonzero().flatten().tolist()
    assert changed == [1 * t + 6]


# --- CTL ---


def test_ctl_is_the_sum_of_both_branches() -> None:
    torch.manual_seed(3)
    ctl = CTL(6, 10, pos_dim=(5, 5), gate_channels=4)
    for m in ctl.modules():  # non-trivial BN statistics so that eval mode is a real check
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    ctl.eval()
    x = torch.randn(2, 6, 9, 7)

    def bn(v, m):
        return F.batch_norm(v, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    imp, inter = ctl.importance, ctl.interaction
    assert imp.fc1.weight.shape == (6, 6, 1, 1) and imp.fc2.weight.shape == (6, 6, 1, 1)  # hidden width = input
    p = torch.sigmoid(
        F.conv2d(F.relu(bn(F.conv2d(x.mean((-2, -1), keepdim=True), imp.fc1.weight), imp.bn)), imp.fc2.weight)
    )
    branch1 = F.conv2d(p * x, ctl.temporal.weight)
    g = F.relu(bn(F.conv2d(x * p, inter.gate_in.weight, inter.gate_in.bias, padding=1), inter.gate_bn1))
    g = g + F.interpolate(inter.pos_embed, size=(9, 7), mode="bilinear", align_corners=True)
    g = F.relu(bn(F.conv2d(g, inter.gate_mid.weight, inter.gate_mid.bias, padding=3), inter.gate_bn2))
    gate = torch.sigmoid(F.conv2d(g, inter.gate_out.weight, inter.gate_out.bias, padding=1))
    branch2 = F.conv2d(x, inter.short.weight, inter.short.bias, padding=1) * gate
    with torch.no_grad():
        out = ctl(x)
    assert out.shape == (2, 10, 9, 7)
    assert torch.allclose(out, branch1 + branch2, atol=1e-5)
    assert branch1.abs().mean() > 1e-3 and branch2.abs().mean() > 1e-3


def test_pos_embed_is_resized_bilinearly_and_learns() -> None:
    inter = ObjectInteraction(4, 4, pos_dim=(7, 7), gate_channels=3)
    pos = inter.position((12, 10))
    assert pos.shape == (1, 3, 12, 10)
    # align_corners=True keeps the corners of the learned grid.
    assert torch.allclose(pos[..., 0, 0], inter.pos_embed[..., 0, 0])
    assert torch.allclose(pos[..., -1, -1], inter.pos_embed[..., -1, -1])
    assert torch.allclose(pos, F.interpolate(inter.pos_embed, size=(12, 10), mode="bilinear", align_corners=True))
    assert inter.position((7, 7)) is inter.pos_embed
    x = torch.randn(2, 4, 12, 10)
    inter(x, torch.full((2, 4, 1, 1), 0.5)).square().mean().backward()
    assert inter.pos_embed.grad is not None and inter.pos_embed.grad.abs().sum() > 0


def test_classifier_runs_where_pos_dim_differs_from_the_input() -> None:
    # Built for 224 positions, run at 64x64: every pos_embed is resized on the fly.
    model = SqueezeTime(in_shape=(8, 3, 64, 64), num_classes=7, pos_dim=[56, 28, 14, 7], **TINY_CLS)
    assert model.stages[0][0].ctl.interaction.pos_embed.shape[-1] == 56
    y = model(torch.randn(2, 8, 3, 64, 64))
    assert y.shape == (2, 7) and torch.isfinite(y).all()


# --- both heads, forward and backward ---


def _assert_all_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not missing, missing


def test_classify_forward_backward_tiny() -> None:
    model = create_model("squeezetime", in_shape=(8, 3, 64, 64), num_classes=7, **TINY_CLS).train()
    y = model(torch.randn(3, 8, 3, 64, 64))
    assert y.shape == (3, 7) and torch.isfinite(y).all()
    F.cross_entropy(y, torch.tensor([0, 3, 6])).backward()
    _assert_all_grads(model)
    assert not hasattr(model, "fc_stem")


@pytest.mark.parametrize(
    "in_shape, out_frames",
    [((10, 1, 64, 64), 10), ((4, 2, 32, 32), 4), ((12, 1, 32, 64), 12), ((10, 1, 32, 32), 20)],
    ids=["mmnist", "taxibj", "weatherbench", "longer"],
)
def test_forecast_forward_backward(in_shape: tuple, out_frames: int) -> None:
    model = create_model("squeezetime", in_shape=in_shape, out_frames=out_frames, **TINY_FC).train()
    x = torch.randn(2, *in_shape)
    y = model(x)
    assert y.shape == (2, out_frames, *in_shape[1:]) and torch.isfinite(y).all()
    y.square().mean().backward()
    _assert_all_grads(model)
    assert not hasattr(model, "head")
    assert model.fc_readout.out_channels == in_shape[1] * out_frames
    assert tuple(model.fc_translator[0].ctl.interaction.pos_embed.shape[-2:]) == (in_shape[2] // 4, in_shape[3] // 4)


def test_forecast_output_is_unsqueezed_channel_major() -> None:
    model = SqueezeTime(in_shape=(4, 2, 16, 16), out_frames=3, **TINY_FC).eval()
    with torch.no_grad():
        torch.nn.init.zeros_(model.fc_readout.weight)
        model.fc_readout.bias.copy_(torch.arange(6.0))  # readout channel k -> constant k
        y = model(torch.randn(1, 4, 2, 16, 16))
    # channel k = c * T_out + t
    expected = torch.tensor([[c * 3 + t for c in range(2)] for t in range(3)], dtype=torch.float32)
    assert torch.equal(y[0, :, :, 0, 0], expected)


# --- validation ---


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"out_frames": 10, "num_classes": 5}, ["exactly one"]),
        ({}, ["exactly one"]),
        ({"num_classes": 1}, ["num_classes"]),
        ({"num_classes": 5, "depths": [1, 1]}, ["widths"]),
        ({"num_classes": 5, "strides": [1, 3, 2, 2]}, ["strides"]),
        ({"num_classes": 5, "pos_dim": [56, 28]}, ["pos_dim"]),
        ({"num_classes": 5, "pos_dim": [56, 28, 14, 0]}, ["pos_dim"]),
        ({"num_classes": 5, "dropout": 1.0}, ["dropout"]),
        ({"out_frames": 10, "forecast_hid": 6}, ["forecast_hid"]),
        ({"out_frames": 10, "forecast_down": 7}, ["forecast_down", "128"]),
        ({"out_frames": 10, "forecast_depth": 0}, ["forecast_depth"]),
        ({"in_shape": (10, 1, 64), "out_frames": 10}, ["in_shape"]),
    ],
)
def test_config_errors(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        create_model("squeezetime", **{"in_shape": (10, 1, 64, 64), **kwargs})
    msg = str(excinfo.value)
    assert "\n" not in msg and "squeezetime" in msg
    for word in words:
        assert word in msg, (word, msg)


def test_wrong_frames_fail_clearly() -> None:
    model = SqueezeTime(in_shape=(8, 3, 32, 32), num_classes=4, **TINY_CLS)
    with pytest.raises(ValueError, match="T \\* C"):
        model(torch.randn(1, 6, 3, 32, 32))


def test_config_file_holds_the_constructor_defaults() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["name"] == "squeezetime"
    params = inspect.signature(SqueezeTime.__init__).parameters
    defaults = {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for k, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and k not in ("device", "dtype", "in_shape", "out_frames", "num_classes")
    }
    assert cfg["kwargs"] == defaults
