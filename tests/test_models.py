"""Registry-parametrised model tests (docs/conventions.md §10) plus the published parameter counts
(docs/models.md §2, §6).

Every registered model is built with tiny hyperparameters at each datamodule's real shapes. A model registered
without an entry in ``TINY_KWARGS`` fails ``test_every_model_has_tiny_kwargs``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from _helpers import TINY_MODEL_KWARGS, n_params
from _hydra import compose_config

from stpred import ConfigError, create_model, list_models
from stpred.checkpoint import load_predictor
from stpred.datamodules.base import shapes_from_data_config
from stpred.models.base import InputError, SpatioTemporalModel
from stpred.models.fno import FNO2d
from stpred.models.simvp import SimVPv2, drop_path_rates
from stpred.registry import model_class, model_version

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"

# Small hyperparameters per registered model (tests/_helpers.py); the shapes below are the datamodules' real ones.
TINY_KWARGS = TINY_MODEL_KWARGS



def _data_shape(option: str, *overrides: str) -> tuple[tuple[int, ...], int]:
    """``(in_shape, out_frames)`` of a data config, as its datamodule class answers it (no data is read)."""
    shapes = shapes_from_data_config(compose_config("train", [f"data={option}", *overrides, "paths.output_dir=."]).data)
    return tuple(shapes.in_shape), shapes.out_frames


# (in_shape, out_frames) per datamodule configuration, asked of the datamodules themselves.
DATA_SHAPES = {
    "mmnist": _data_shape("mmnist"),
    "ns64": _data_shape("navier_stokes"),
    "ns32": _data_shape("navier_stokes", "data.resolution=32"),
    "ns64_fno40": _data_shape("navier_stokes", "data.t_out=40"),
    "taxibj": _data_shape("taxibj"),
    "weatherbench": _data_shape("weatherbench"),
}

MODEL_NAMES = list_models()
CASES = [pytest.param(m, d, id=f"{m}-{d}") for m in MODEL_NAMES for d in DATA_SHAPES]

# Kinetics-like clips for the models that also classify (``num_classes``); extra kwargs shrink their trunks.
CLIP_SHAPE, NUM_CLASSES = (8, 3, 32, 32), 5
CLASSIFIERS = ["convs5", "lrcn", "predformer", "simvpv2", "squeezetime"]
CLASSIFY_EXTRA: dict[str, dict] = {"squeezetime": {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1]}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(name: str, data: str, **extra) -> tuple[torch.nn.Module, torch.Tensor]:
    if name not in TINY_KWARGS:
        pytest.fail(f"registered model '{name}' has no TINY_KWARGS entry in tests/test_models.py")
    in_shape, out_frames = DATA_SHAPES[data]
    model = create_model(name, in_shape=in_shape, out_frames=out_frames, **{**TINY_KWARGS[name], **extra})
    x = torch.randn(2, *in_shape)
    return model, x


def test_every_model_has_tiny_kwargs() -> None:
    missing = sorted(set(MODEL_NAMES) - set(TINY_KWARGS))
    assert not missing, f"add tiny kwargs for {missing} to TINY_KWARGS"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_file_matches_registry(name: str) -> None:
    path = CONFIG_DIR / f"{name}.yaml"
    assert path.is_file(), f"missing {path}"
    cfg = yaml.safe_load(path.read_text())
    assert cfg["name"] == name
    assert "in_shape" not in cfg["kwargs"] and "out_frames" not in cfg["kwargs"]


@pytest.mark.parametrize("name, cls", [("simvpv2", SimVPv2), ("fno2d", FNO2d)])
def test_config_defaults_equal_constructor_defaults(name: str, cls: type) -> None:
    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    sig = inspect.signature(cls.__init__).parameters
    defaults = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    # The target (out_frames / num_classes) comes from the datamodule, not from the model config.
    target = ("device", "dtype", "out_frames", "num_classes")
    defaults = {k: v for k, v in defaults.items() if k not in target}
    assert {k: v for k, v in cfg["kwargs"].items() if k not in target} == defaults


@pytest.mark.parametrize("name, data", CASES)
def test_forward_backward(name: str, data: str) -> None:
    model, x = _build(name, data)
    model.train()
    y = model(x)
    t_out = DATA_SHAPES[data][1]
    assert y.shape == (2, t_out, *x.shape[2:])
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())
    ]
    assert not no_grad, f"parameters without a finite gradient: {no_grad}"


def _training_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss as ForecastTask trains: next-frame over the whole sequence for teacher-forced models."""
    if getattr(model, "supports_teacher_forcing", False):
        frames = torch.cat([x, y], dim=1)
        return torch.nn.functional.mse_loss(model.teacher_forced(frames[:, :-1]), frames[:, 1:])
    return torch.nn.functional.mse_loss(model(x), y)


def _loss_falls(model: torch.nn.Module, loss_fn, steps: int = 8, lr: float = 3e-3) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        first = float(loss) if first is None else first
    with torch.no_grad():
        return first, float(loss_fn())


@pytest.mark.parametrize("name, data", CASES)
def test_loss_falls_over_a_few_steps_on_a_fixed_batch(name: str, data: str) -> None:
    model, x = _build(name, data)
    t_out = DATA_SHAPES[data][1]
    y = torch.rand(2, t_out, *x.shape[2:], generator=torch.Generator().manual_seed(3))
    model.train()
    first, last = _loss_falls(model, lambda: _training_loss(model, x, y))
    assert last < first, f"{name} on {data}: loss {first:.4g} -> {last:.4g}"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_forward_backward_and_loss_falls(name: str) -> None:
    kwargs = {**TINY_KWARGS[name], **CLASSIFY_EXTRA.get(name, {})}
    model = create_model(name, in_shape=CLIP_SHAPE, num_classes=NUM_CLASSES, **kwargs)
    x = torch.randn(4, *CLIP_SHAPE)
    labels = torch.tensor([0, 1, 2, 3])
    model.train()
    logits = model(x)
    assert logits.shape == (4, NUM_CLASSES) and torch.isfinite(logits).all()
    first, last = _loss_falls(model, lambda: torch.nn.functional.cross_entropy(model(x), labels))
    assert last < first, f"{name}: cross-entropy {first:.4g} -> {last:.4g}"


@pytest.mark.parametrize("name, data", CASES)
def test_state_dict_round_trip(name: str, data: str) -> None:
    model, x = _build(name, data)
    model.eval()
    torch.manual_seed(1)
    clone, _ = _build(name, data)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))
    assert getattr(model, "_version", None) is not None, "models record a class attribute _version"


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_keys_survive_in_place_compile(name: str) -> None:
    model, _ = _build(name, "ns32")
    keys = list(model.state_dict())
    assert not any("_orig_mod." in k for k in keys)
    model.compile()  # lazy: nothing is compiled until the first call
    assert list(model.state_dict()) == keys


def _assert_one_line_config_error(excinfo: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"in_shape": (10, 1, 30, 30), "N_S": 4}, ["H and W", "4"]),
        ({"in_shape": (10, 1, 64, 62), "N_S": 4}, ["W=62"]),
        ({"N_S": 3}, ["N_S"]),
        ({"N_S": 0}, ["N_S"]),
        ({"N_T": 1}, ["N_T"]),
        ({"hid_S": 7}, ["hid_S", "GroupNorm"]),
        ({"hid_T": 0}, ["hid_T"]),
        ({"rollout": "teacher"}, ["rollout", "chunked|direct"]),
        ({"spatio_kernel_enc": 4}, ["spatio_kernel_enc"]),
        ({"drop_path": 1.5}, ["drop_path"]),
        ({"out_frames": 0}, ["out_frames"]),
        ({"in_shape": (10, 1, 64)}, ["in_shape"]),
    ],
)
def test_simvp_config_errors(kwargs: dict, words: list[str]) -> None:
    base = {"in_shape": (10, 1, 64, 64), "out_frames": 10, **TINY_KWARGS["simvpv2"]}
    with pytest.raises(ConfigError) as excinfo:
        create_model("simvpv2", **{**base, **kwargs})
    _assert_one_line_config_error(excinfo, "simvpv2", *words)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"modes": 17}, ["modes", "32x32", "(16, 17)"]),
        ({"modes": [4, 18]}, ["modes"]),
        ({"modes": [4, 4, 4]}, ["modes"]),
        ({"modes": 0}, ["modes"]),
        ({"mode": "teacher"}, ["mode", "autoregressive|oneshot"]),
        ({"impl": "cuda"}, ["impl"]),
        ({"width": -1}, ["width"]),
        ({"depth": 0}, ["depth"]),
    ],
)
def test_fno_config_errors(kwargs: dict, words: list[str]) -> None:
    base = {"in_shape": (10, 1, 32, 32), "out_frames": 10, **TINY_KWARGS["fno2d"]}
    with pytest.raises(ConfigError) as excinfo:
        create_model("fno2d", **{**base, **kwargs})
    _assert_one_line_config_error(excinfo, "fno2d", *words)


def test_wrong_input_frames_fail_clearly() -> None:
    model, _ = _build("simvpv2", "taxibj")
    with pytest.raises(ValueError, match="T_in"):
        model(torch.randn(2, 5, 2, 32, 32))


# --- SimVPv2 horizons (docs/models.md §2.3) ---


def _simvp(out_frames: int, **kw) -> SimVPv2:
    torch.manual_seed(0)
    return SimVPv2(in_shape=(10, 1, 32, 32), out_frames=out_frames, **{**TINY_KWARGS["simvpv2"], **kw}).eval()


def test_simvp_truncate_and_chunked_rollout_reuse_the_single_pass() -> None:
    base, short, long = _simvp(10), _simvp(5), _simvp(40)
    assert base.state_dict().keys() == short.state_dict().keys() == long.state_dict().keys()
    short.load_state_dict(base.state_dict())
    long.load_state_dict(base.state_dict())
    x = torch.randn(2, 10, 1, 32, 32)
    with torch.no_grad():
        y10 = base(x)
        y5 = short(x)
        y40 = long(x)
        y20 = base(y10)
    assert y5.shape == (2, 5, 1, 32, 32) and torch.equal(y5, y10[:, :5])
    assert y40.shape == (2, 40, 1, 32, 32)
    assert torch.equal(y40[:, :10], y10) and torch.allclose(y40[:, 10:20], y20)


def test_simvp_chunked_remainder() -> None:
    base, odd = _simvp(10), _simvp(25)
    odd.load_state_dict(base.state_dict())
    x = torch.randn(2, 10, 1, 32, 32)
    with torch.no_grad():
        y = odd(x)
        y3 = base(base(base(x)))
    assert y.shape == (2, 25, 1, 32, 32) and torch.allclose(y[:, 20:], y3[:, :5])


@pytest.mark.parametrize("out_frames", [5, 10, 40])
def test_simvp_direct(out_frames: int) -> None:
    model = _simvp(out_frames, rollout="direct").train()
    x = torch.randn(2, 10, 1, 32, 32)
    y = model(x)
    assert y.shape == (2, out_frames, 1, 32, 32) and torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    hid_S = TINY_KWARGS["simvpv2"]["hid_S"]
    assert model.translator.proj_out.out_channels == out_frames * hid_S
    if out_frames == 10:
        # With T_out == T_in the direct model is the published one.
        assert model.state_dict().keys() == _simvp(10).state_dict().keys()


def test_simvp_drop_path_ramp() -> None:
    assert drop_path_rates(0.0, 8) == [0.0] * 8
    legacy = drop_path_rates(0.0, 8, legacy=True)
    assert legacy[0] == pytest.approx(1e-2) and legacy[-1] == 0.0
    ramp = drop_path_rates(0.1, 8)
    assert ramp == pytest.approx(drop_path_rates(0.1, 8, legacy=True))
    assert ramp[0] == pytest.approx(1e-2) and ramp[-1] == pytest.approx(0.1)
    model = _simvp(10, N_T=4, drop_path=0.0, legacy_drop_path=True)
    assert [b.drop_path.p for b in model.translator.blocks][0] == pytest.approx(1e-2)


def test_simvp_initialisation() -> None:
    model = _simvp(10)
    block = model.translator.blocks[0]
    assert torch.all(block.layer_scale1 == 1e-2) and torch.all(block.layer_scale2 == 1e-2)
    assert isinstance(block.norm1, torch.nn.BatchNorm2d)
    assert torch.all(block.attn.proj_in.bias == 0)
    assert block.attn.dw_dilated.dilation == (3, 3) and block.attn.dw_dilated.kernel_size == (7, 7)
    assert block.attn.gate.out_channels == 2 * block.attn.proj_in.out_channels


# --- FNO-2D ---


def test_fno_autoregressive_slides_the_window() -> None:
    torch.manual_seed(0)
    one = FNO2d(in_shape=(10, 1, 32, 32), out_frames=1, modes=4, width=8).eval()
    three = FNO2d(in_shape=(10, 1, 32, 32), out_frames=3, modes=4, width=8).eval()
    three.load_state_dict(one.state_dict())
    x = torch.randn(2, 10, 1, 32, 32)
    with torch.no_grad():
        y = three(x)
        y0 = one(x)
        y1 = one(torch.cat([x[:, 1:], y0], dim=1))
    assert torch.allclose(y[:, :1], y0) and torch.allclose(y[:, 1:2], y1, atol=1e-6)


@pytest.mark.parametrize("mode", ["autoregressive", "oneshot"])
def test_fno_multichannel_and_other_resolution(mode: str) -> None:
    model = FNO2d(in_shape=(4, 2, 32, 32), out_frames=3, modes=(4, 5), width=8, mode=mode)
    assert model(torch.randn(2, 4, 2, 32, 32)).shape == (2, 3, 2, 32, 32)
    assert model(torch.randn(1, 4, 2, 48, 40)).shape == (1, 3, 2, 48, 40)


def test_fno_bf16_autocast() -> None:
    model = FNO2d(in_shape=(10, 1, 32, 32), out_frames=2, modes=4, width=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(2, 10, 1, 32, 32))
    assert y.shape == (2, 2, 1, 32, 32) and torch.isfinite(y.float()).all()


# --- full-size parameter counts (docs/models.md §2.4, §6.2); built on the meta device, so they are cheap ---


@pytest.mark.parametrize(
    "in_shape, kwargs, published",
    [
        pytest.param((10, 1, 64, 64), {}, 46.77e6, id="mmnist"),
        pytest.param((4, 2, 32, 32), {"hid_S": 32, "hid_T": 256, "N_S": 2, "N_T": 8}, 9.96e6, id="taxibj"),
        pytest.param((12, 1, 32, 64), {"hid_S": 32, "hid_T": 256, "N_S": 2, "N_T": 8}, 12.76e6, id="weatherbench"),
    ],
)
def test_simvp_published_parameter_count(in_shape: tuple, kwargs: dict, published: float) -> None:
    model = SimVPv2(in_shape=in_shape, out_frames=in_shape[0], device="meta", **kwargs)
    assert abs(n_params(model) / published - 1) < 1e-3


def test_simvp_exact_parameter_counts() -> None:
    # Derived counts (20d^2 + 175d per gSTA block plus the convs); recorded so a change is noticed.
    assert n_params(SimVPv2(in_shape=(10, 1, 64, 64), out_frames=10, device="meta")) == 46_769_665
    small = {"hid_S": 32, "hid_T": 256, "N_S": 2, "N_T": 8}
    assert n_params(SimVPv2(in_shape=(4, 2, 32, 32), out_frames=4, device="meta", **small)) == 9_961_058
    assert n_params(SimVPv2(in_shape=(12, 1, 32, 64), out_frames=12, device="meta", **small)) == 12_758_305


@pytest.mark.parametrize("legacy_bn, modes, expected", [(True, 8, 414_517), (False, 8, 414_357), (True, 12, 926_517)])
def test_fno_published_parameter_count(legacy_bn: bool, modes: int, expected: int) -> None:
    model = FNO2d(in_shape=(10, 1, 64, 64), out_frames=10, modes=modes, width=20, legacy_bn=legacy_bn, device="meta")
    assert n_params(model) == expected


# --- the shared base: keyword-only constructors, one input check, versions read by load_predictor ---


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registry_holds_the_class_with_its_version(name: str) -> None:
    cls = model_class(name)
    assert isinstance(cls, type) and issubclass(cls, SpatioTemporalModel) and cls.name == name
    assert model_version(name) == cls.version == cls._version
    params = inspect.signature(cls.__init__).parameters
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("in_shape", "out_frames", "num_classes"))
    with pytest.raises(TypeError):
        cls((10, 1, 32, 32), 10, **TINY_KWARGS[name])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_wrong_input_is_one_line_naming_model_and_shapes(name: str) -> None:
    model, x = _build(name, "ns32")
    bad_channels = torch.randn(2, 10, 3, 32, 32)
    with pytest.raises(InputError) as excinfo:
        model(bad_channels)
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(f"{name} built for in_shape=(10, 1, 32, 32)"), msg
    assert "C=1" in msg and "[2, 10, 3, 32, 32]" in msg, msg
    with pytest.raises(InputError, match="floating-point"):
        model(x.long())
    with pytest.raises(InputError, match=name):
        model(x[0])


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n not in CLASSIFIERS])
def test_forecast_only_models_refuse_num_classes(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: forecasts only"):
        create_model(name, in_shape=(10, 1, 32, 32), num_classes=5, **TINY_KWARGS[name])
    with pytest.raises(ConfigError, match="out_frames"):
        create_model(name, in_shape=(10, 1, 32, 32), **TINY_KWARGS[name])


@pytest.mark.parametrize("impl", ["rfft", "matmul", "torch"])
def test_fno2d_accepts_every_spectral_impl_of_the_kernels(impl: str) -> None:
    torch.manual_seed(0)
    ref = FNO2d(in_shape=(3, 2, 20, 18), out_frames=2, modes=(5, 4), width=6, depth=2, impl="rfft").double()
    other = FNO2d(in_shape=(3, 2, 20, 18), out_frames=2, modes=(5, 4), width=6, depth=2, impl=impl).double()
    other.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 2, 20, 18, dtype=torch.float64)
    torch.testing.assert_close(other(x), ref(x), rtol=1e-10, atol=1e-10)


def _write_checkpoint(path: Path, net: torch.nn.Module, name: str, kwargs: dict) -> Path:
    """A checkpoint laid out as stpred-train writes it, the model version stamped as the tasks stamp it."""
    data = {"task": "forecast", "in_shape": [10, 1, 32, 32], "out_frames": 10, "mean": [0.0], "std": [1.0]}
    hparams = {"model": {"name": name, "kwargs": kwargs}, "data": data, "model_version": int(net._version)}
    state = {"net." + k: v for k, v in net.state_dict().items()}
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path


def test_load_predictor_warns_on_a_bumped_model_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, x = _build("simvpv2", "ns32")
    path = _write_checkpoint(tmp_path / "v1.ckpt", net, "simvpv2", TINY_KWARGS["simvpv2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        current = load_predictor(path)
    torch.testing.assert_close(current.predict(x), net.eval()(x))

    monkeypatch.setattr(SimVPv2, "version", 2)
    assert model_version("simvpv2") == 2 and net._version == 2
    with pytest.warns(UserWarning, match="simvpv2 version 1; the code is version 2"):
        load_predictor(path)
