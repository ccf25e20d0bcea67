"""ConvS5 (docs/models.md §1): scan vs step parity, O(1) generation, shapes at every benchmark size, parameter counts,
classification, value ranges, the loss helper, configs and errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from _hydra import compose_config

import stpred.layers.conv_ssm as conv_ssm_module
from stpred import ConfigError, create_model
from stpred.models.convs5 import ConvS5, convs5_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Two pooling stages like the published network, at a width the CPU runs in milliseconds.
TINY = {"d_model": 16, "ssm_size": 8, "n_layers": 2, "widths": (8, 8, 16), "norm_groups": 4, "impl": "torch"}
# The proposed TaxiBJ / WeatherBench variant (one pooling stage), tiny.
TINY_ONE_STAGE = {**TINY, "widths": (8, 16)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(in_shape=(6, 1, 32, 32), out_frames: int | None = 4, **kw) -> ConvS5:
    return ConvS5(in_shape=in_shape, out_frames=out_frames, **{**TINY, **kw})


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_all_grads_finite(model: torch.nn.Module) -> None:
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not bad, f"parameters without a finite gradient: {bad}"


# --- parallel (scan) vs recurrent (step) ---------------------------------------------------------------------------


def test_teacher_forced_scan_equals_stepping_frame_by_frame() -> None:
    model = _model().eval()
    frames = torch.rand(2, 7, 1, 32, 32)
    with torch.no_grad():
        parallel = model.teacher_forced(frames)
        states, stepped = None, []
        for t in range(frames.shape[1]):
            pred, states = model.step(frames[:, t], states)
            stepped.append(pred)
    stepped = torch.stack(stepped, dim=1)
    assert parallel.shape == frames.shape
    torch.testing.assert_close(parallel, stepped, rtol=0, atol=1e-5)
    # The comparison is not vacuous: predictions depend on the past, not only on the current frame.
    assert (parallel[:, -1] - model.teacher_forced(frames[:, -1:])[:, 0]).abs().max() > 1e-4


def test_conditioning_by_scan_equals_conditioning_by_steps() -> None:
    model = _model(ssm_size=12, blocks=2).eval()
    x = torch.rand(3, 9, 1, 32, 32)
    with torch.no_grad():
        next_scan, states_scan = model.condition(x)
        states_step = None
        for t in range(x.shape[1]):
            next_step, states_step = model.step(x[:, t], states_step)
    assert len(states_scan) == len(states_step) == TINY["n_layers"]
    for s_scan, s_step in zip(states_scan, states_step):
        assert s_scan.shape == (3, 2, 6, 8, 8)
        assert s_scan.abs().max() > 1e-3
        torch.testing.assert_close(s_scan, s_step, rtol=0, atol=1e-5)
    torch.testing.assert_close(next_scan, next_step, rtol=0, atol=1e-5)


def test_generation_feeds_predictions_back_through_steps() -> None:
    model = _model().eval()
    x = torch.rand(2, 6, 1, 32, 32)
    with torch.no_grad():
        y = model(x)
        frame, states = model.condition(x)
        manual = [frame]
        for _ in range(3):
            frame, states = model.step(frame, states)
            manual.append(frame)
        # Generation equals teacher forcing on the context followed by the model's own predictions.
        tf = model.teacher_forced(torch.cat([x, y[:, :-1]], dim=1))
    assert y.shape == (2, 4, 1, 32, 32)
    torch.testing.assert_close(y, torch.stack(manual, dim=1), rtol=0, atol=0)
    torch.testing.assert_close(tf[:, 5:], y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_frames", [1, 5, 12])
def test_generation_scans_once_then_steps_with_constant_state(monkeypatch: pytest.MonkeyPatch, n_frames: int) -> None:
    calls = {"scan": [], "step": []}
    scan, step = conv_ssm_module.conv_ssm_scan_planar, conv_ssm_module.conv_ssm_step_planar

    def counting_scan(lam_bar, bu, x0=None, **kw):
        calls["scan"].append(bu.shape[1])
        return scan(lam_bar, bu, x0, **kw)

    def counting_step(lam_bar, bu_t, x=None):
        out = step(lam_bar, bu_t, x)
        calls["step"].append(tuple(out.shape))
        return out

    monkeypatch.setattr(conv_ssm_module, "conv_ssm_scan_planar", counting_scan)
    monkeypatch.setattr(conv_ssm_module, "conv_ssm_step_planar", counting_step)
    model = _model(out_frames=n_frames).eval()
    with torch.no_grad():
        y = model.generate(torch.rand(2, 6, 1, 32, 32), n_frames)
    n_layers = TINY["n_layers"]
    assert y.shape == (2, n_frames, 1, 32, 32)
    # One scan per layer over the 6 context frames only; every generated frame is one O(1) step per layer.
    assert calls["scan"] == [6] * n_layers
    assert len(calls["step"]) == n_layers * (n_frames - 1)
    assert set(calls["step"]) <= {(2, 2, TINY["ssm_size"] // 2, 8, 8)}


# --- shapes, gradients and the real Moving MNIST data ------------------------------------------------------------


@pytest.fixture(scope="module")
def mmnist_batch(shared_data: Path) -> dict[str, torch.Tensor]:
    from stpred.datamodules.moving_mnist import MovingMNISTDataModule

    dm = MovingMNISTDataModule(shared_data / "mnist", epoch_size=2, val_size=2, test_size=2, batch_size=2)
    dm.setup()
    return next(iter(dm.train_dataloader()))


def test_mmnist_forward_backward_on_real_batch(mmnist_batch: dict[str, torch.Tensor]) -> None:
    x, target = mmnist_batch["x"], mmnist_batch["y"]
    assert x.shape == (2, 10, 1, 64, 64) and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    model = ConvS5(in_shape=(10, 1, 64, 64), out_frames=10, **TINY).train()
    y = model(x)
    assert y.shape == target.shape and 0 <= y.min() and y.max() <= 1
    convs5_loss(y, target).backward()
    _assert_all_grads_finite(model)


def test_mmnist_teacher_forced_backward_on_real_batch(mmnist_batch: dict[str, torch.Tensor]) -> None:
    frames = torch.cat([mmnist_batch["x"], mmnist_batch["y"]], dim=1)
    model = ConvS5(in_shape=(10, 1, 64, 64), out_frames=10, **TINY).train()
    pred = model.teacher_forced(frames[:, :-1])
    assert pred.shape == (2, 19, 1, 64, 64)
    convs5_loss(pred, frames[:, 1:]).backward()
    _assert_all_grads_finite(model)


@pytest.mark.parametrize(
    "in_shape, out_frames, kwargs",
    [
        pytest.param((20, 1, 64, 64), 30, {"d_model": 8, "widths": (4, 4, 8)}, id="long-20to30"),
        pytest.param((4, 2, 32, 32), 4, {**TINY_ONE_STAGE, "value_range": "real"}, id="taxibj-one-stage"),
        pytest.param((12, 1, 32, 64), 12, {**TINY_ONE_STAGE, "value_range": "real"}, id="weatherbench-one-stage"),
    ],
)
def test_forward_backward_shapes(in_shape: tuple, out_frames: int, kwargs: dict) -> None:
    model = ConvS5(in_shape=in_shape, out_frames=out_frames, **{**TINY, **kwargs}).train()
    x = torch.randn(2, *in_shape)
    y = model(x)
    assert y.shape == (2, out_frames, *in_shape[1:]) and torch.isfinite(y).all()
    y.square().mean().backward()
    _assert_all_grads_finite(model)
    latent = in_shape[2] // 2 ** (len(model.widths) - 1), in_shape[3] // 2 ** (len(model.widths) - 1)
    _, states = model.condition(x[:1])
    assert states[0].shape == (1, 2, model.state_size, *latent)


def test_any_context_length_and_grid() -> None:
    model = _model()
    assert model(torch.rand(1, 3, 1, 16, 24)).shape == (1, 4, 1, 16, 24)
    assert model.generate(torch.rand(1, 1, 1, 32, 32), 2).shape == (1, 2, 1, 32, 32)


# --- value ranges, actions, loss ------------------------------------------------------------------------------------


def test_value_ranges() -> None:
    torch.manual_seed(1)
    unit = _model().eval()
    for p in unit.decoder.proj.parameters():
        torch.nn.init.normal_(p, std=20.0)  # push the tanh into saturation on both sides
    x = torch.rand(2, 6, 1, 32, 32)
    sym, real = _model(value_range="symmetric").eval(), _model(value_range="real").eval()
    sym.load_state_dict(unit.state_dict())
    real.load_state_dict(unit.state_dict())
    with torch.no_grad():
        y_unit, y_sym, y_real = unit(x), sym(2 * x - 1), real(2 * x - 1)
    # unit sees 2x - 1 internally, so the three share one network: unit = (sym + 1) / 2 and sym = tanh(real).
    torch.testing.assert_close(y_unit[:, 0], (y_sym[:, 0] + 1) / 2, rtol=0, atol=1e-6)
    # Later frames differ by the rounding of 2·((tanh + 1) / 2) - 1 in the fed-back frame.
    torch.testing.assert_close(y_unit, (y_sym + 1) / 2, rtol=0, atol=1e-3)
    torch.testing.assert_close(y_sym[:, 0], torch.tanh(y_real[:, 0]), rtol=0, atol=1e-6)
    assert y_unit.min() >= 0 and y_unit.max() <= 1 and y_unit.min() < 0.05 and y_unit.max() > 0.95
    assert y_real.abs().max() > 1


def test_actions_enter_the_latent() -> None:
    model = _model(action_dim=3).eval()
    frames = torch.rand(2, 5, 1, 32, 32)
    with torch.no_grad():
        zero = model.teacher_forced(frames)
        same = model.teacher_forced(frames, torch.zeros(2, 5, 3))
        moved = model.teacher_forced(frames, torch.randn(2, 5, 3))
        gen = model.generate(frames[:, :3], 3, torch.zeros(2, 5, 3))
    assert torch.equal(zero, same) and (zero - moved).abs().max() > 1e-4
    torch.testing.assert_close(gen, model.generate(frames[:, :3], 3), rtol=0, atol=0)
    assert model.action_conv.in_channels == 16 + 3
    with pytest.raises(ValueError, match="action_dim"):
        model.teacher_forced(frames, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="action_dim=0"):
        _model().teacher_forced(frames, torch.zeros(2, 5, 3))


def test_convs5_loss_matches_the_definition() -> None:
    pred, target = torch.randn(2, 3, 1, 5, 4), torch.randn(2, 3, 1, 5, 4)
    d = (pred - target).double()
    expected = (0.5 * d**2 + 0.5 * d.abs()).sum(dim=(-1, -2)).mean()
    torch.testing.assert_close(convs5_loss(pred, target).double(), expected, rtol=1e-6, atol=0)
    assert convs5_loss(torch.full((1, 1, 2, 2), 3.0), torch.ones(1, 1, 2, 2)).item() == 4 * (0.5 * 4 + 0.5 * 2)
    with pytest.raises(ValueError, match="shape"):
        convs5_loss(pred, target[:, :2])


# --- classification ------------------------------------------------------------------------------------------------


def test_classification_mode() -> None:
    model = ConvS5(in_shape=(6, 3, 32, 32), num_classes=5, **TINY_ONE_STAGE, cls_dropout=0.1).train()
    assert not hasattr(model, "decoder") and not model.supports_teacher_forcing
    assert ConvS5.supports_teacher_forcing and _model().supports_teacher_forcing
    logits = model(torch.randn(2, 6, 3, 32, 32))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 4])).backward()
    _assert_all_grads_finite(model)
    with pytest.raises(ValueError, match="num_classes"):
        model.generate(torch.randn(1, 6, 3, 32, 32), 2)
    with pytest.raises(ValueError, match="num_classes"):
        model.teacher_forced(torch.randn(1, 6, 3, 32, 32))


# --- parameter counts (meta device: cheap) ------------------------------------------------------------------------


def test_published_long_horizon_parameter_count() -> None:
    # Computed by stpred, not published (docs/models.md §1.6); the SSM core per layer is the derived 1,180,032.
    model = create_model("convs5", in_shape=(100, 1, 64, 64), out_frames=400, device="meta")
    assert _params(model) == 22_550_657
    assert [layer.ssm.ssm_core_num_params() for layer in model.layers] == [1_180_032] * 8
    assert (_params(model.encoder), _params(model.action_conv), _params(model.decoder)) == (
        1_223_936,
        65_792,
        2_367_105,
    )
    assert all(_params(layer) == 2_361_728 for layer in model.layers)


def test_one_stage_variant_parameter_count() -> None:
    kw = {"widths": (64, 128), "d_model": 128, "ssm_size": 128, "value_range": "real"}
    model = ConvS5(in_shape=(12, 1, 32, 64), out_frames=12, device="meta", **kw)
    # P = 64, U = 128, k = 3: 2P + P + 2·P·U·9 + 2·9·P·U = 295,104 per layer (docs/models.md §1.6 formula).
    assert model.layers[0].ssm.ssm_core_num_params() == 3 * 64 + 4 * 9 * 64 * 128 == 295_104
    assert _params(model) == 5_612_545  # stpred's count, recorded so a change is noticed


# --- configs -------------------------------------------------------------------------------------------------------


def test_model_config_is_the_constructor_defaults() -> None:
    cfg = yaml.safe_load((CONFIGS / "model" / "convs5.yaml").read_text())
    assert cfg["name"] == "convs5"
    sig = inspect.signature(ConvS5.__init__).parameters
    defaults = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    for key in ("device", "dtype", "out_frames", "num_classes"):
        defaults.pop(key)
    assert cfg["kwargs"] == defaults


@pytest.mark.parametrize(
    "experiment, data, t_in, t_out, train_length, batch, warmup",
    [("mmnist_long_convs5", "mmnist_long", 100, 400, 300, 8, 4), ("mmnist_convs5", "mmnist", 10, 10, None, 16, 8)],
)
def test_experiments_compose(
    experiment: str, data: str, t_in: int, t_out: int, train_length: int | None, batch: int, warmup: int
) -> None:
    cfg = compose_config("train", [f"experiment={experiment}", "paths.output_dir=."])
    assert cfg.task_name == experiment and cfg.model.name == "convs5" and cfg.data.name == data
    assert (cfg.data.t_in, cfg.data.t_out, cfg.data.train_length, cfg.data.batch_size) == (
        t_in,
        t_out,
        train_length,
        batch,
    )
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.scheduler) == (
        "adamw",
        1e-3,
        1e-5,
        "cosine",
    )
    assert cfg.optim.warmup_epochs == warmup and cfg.loss == "mse+l1"
    steps_per_epoch = cfg.data.epoch_size // batch
    assert warmup * steps_per_epoch == 5000
    if experiment == "mmnist_long_convs5":
        assert cfg.trainer.max_epochs * steps_per_epoch == 300_000


def test_forecast_task_trains_teacher_forced(mmnist_batch: dict[str, torch.Tensor]) -> None:
    from stpred.tasks.forecast import ForecastTask

    meta = {"in_shape": [10, 1, 64, 64], "out_frames": 10, "mean": [0.0], "std": [1.0], "data_range": 1.0}
    task = ForecastTask({"name": "convs5", "kwargs": dict(TINY)}, meta, loss="mse+l1")
    frames = torch.cat([mmnist_batch["x"], mmnist_batch["y"]], dim=1)
    with pytest.warns(UserWarning):  # self.log outside a Trainer
        loss = task.training_step(mmnist_batch, 0)
    with torch.no_grad():
        pred = task.net.teacher_forced(frames[:, :-1])
    diff = pred - frames[:, 1:]
    torch.testing.assert_close(loss.detach(), diff.square().mean() + diff.abs().mean(), rtol=1e-6, atol=0)


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"out_frames": None}, ["exactly one", "num_classes"]),
        ({"num_classes": 3}, ["exactly one", "out_frames"]),
        ({"out_frames": None, "num_classes": 1}, ["num_classes", ">= 2"]),
        ({"out_frames": 0}, ["out_frames"]),
        ({"in_shape": (10, 1, 64)}, ["in_shape"]),
        ({"in_shape": (10, 1, 30, 32)}, ["H=30", "divisible by 4", "widths"]),
        ({"ssm_size": 7}, ["ssm_size", "even"]),
        ({"ssm_size": 8, "blocks": 3}, ["blocks"]),
        ({"norm_groups": 3}, ["norm_groups", "GroupNorm"]),
        ({"widths": ()}, ["widths"]),
        ({"widths": (8, 0)}, ["widths"]),
        ({"kernel_b": 2}, ["kernel_b", "odd"]),
        ({"c_d_config": "glu"}, ["c_d_config", "resnet|standard"]),
        ({"dt_min": 0.2}, ["dt_min", "dt_max"]),
        ({"activation": "swish"}, ["activation"]),
        ({"dropout": 1.0}, ["dropout"]),
        ({"value_range": "01"}, ["value_range", "unit|symmetric|real"]),
        ({"action_dim": -1}, ["action_dim"]),
        ({"impl": "cuda"}, ["impl"]),
        ({"n_layers": 0}, ["n_layers"]),
    ],
)
def test_config_errors_are_one_line(kwargs: dict, words: list[str]) -> None:
    base = {"in_shape": (10, 1, 64, 64), "out_frames": 10, **TINY}
    with pytest.raises(ConfigError) as excinfo:
        create_model("convs5", **{**base, **kwargs})
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith("convs5:")
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


def test_input_errors() -> None:
    model = _model()
    with pytest.raises(ValueError, match="C=1"):
        model(torch.rand(1, 6, 2, 32, 32))
    with pytest.raises(ValueError, match=r"convs5 built for .*\[B, T, C=1, H, W .*got \[6, 1, 32, 32\]"):
        model(torch.rand(6, 1, 32, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 6, 1, 30, 32))
    with pytest.raises(ValueError, match="n_frames"):
        model.generate(torch.rand(1, 6, 1, 32, 32), 0)
    with pytest.raises(ValueError, match=r"\[B, C=1, H, W"):
        model.step(torch.rand(1, 6, 1, 32, 32))
    with pytest.raises(ValueError, match="state"):
        model.step(torch.rand(1, 1, 32, 32), [torch.zeros(1, 2, 3, 8, 8)] * 2)


def test_generation_benchmark_rows() -> None:
    from stpred.apps._bench_generation import run

    rows = run("cpu", frames=(5, 2), batch=2, context=3, image_size=32, warmup=0, iters=1, **TINY)
    assert [r["frame"] for r in rows] == [2, 5] and rows[0]["vs_first"] == 1.0
    assert all(r["ms_per_frame"] > 0 and r["state_shape"] == [2, 2, 4, 8, 8] for r in rows)
    assert rows[0]["params"] == _params(_model())
    with pytest.raises(ValueError, match=">= 2"):
        run("cpu", frames=(1, 4), **TINY)


def test_bf16_autocast_generation_and_teacher_forcing() -> None:
    model = _model()
    x = torch.rand(2, 6, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, tf = model(x), model.teacher_forced(x)
    assert y.shape == (2, 4, 1, 32, 32) and tf.shape == x.shape
    (y.float().mean() + tf.float().mean()).backward()
    _assert_all_grads_finite(model)
    with torch.no_grad():
        assert (y.float() - model(x)).abs().max() < 0.1
