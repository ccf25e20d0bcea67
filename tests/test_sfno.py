"""SFNO, the Spectral-Refiner space-time FNO (docs/models.md §7): the published parameter count, the forward pass
re-computed from the equations, time resampling, the spectral bias, the Helmholtz projection, the refiner's mode
expansion, Navier-Stokes shapes in float64 and under bf16 autocast, and construction errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _helpers import n_params

from stpred import ConfigError, create_model
from stpred.models.sfno import SFNO, SpectralConvT, space_time_encoding

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "sfno.yaml"
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(in_shape=(10, 1, 16, 16), out_frames=10, **kw) -> SFNO:
    base = {"modes": 4, "modes_t": 3, "width": 8, "latent_steps": 6, "dtype": F64}
    return SFNO(in_shape=in_shape, out_frames=out_frames, **{**base, **kw})


# -- parameter counts ----------------------------------------------------------------------------------------------
def test_published_fno_data_configuration_count() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["name"] == "sfno"
    kw = cfg["kwargs"]
    assert (kw["modes"], kw["modes_t"], kw["width"], kw["beta"]) == (12, 5, 20, 1e-2)
    model = create_model("sfno", in_shape=(10, 1, 64, 64), out_frames=40, device="meta", **kw)
    assert n_params(model) == 9_250_333


def test_derived_count_with_default_ffn() -> None:
    # 4 spectral convs 20x20x(24x24x5) complex, FFN 20->80->20 (x4), GN + lift conv, 3 skips, reduction, out-conv
    # 1x1x(24x24x5) complex weights + the same size of spectral bias.
    spec, ffn, head = 4 * 400 * 576 * 5 * 2, 4 * (20 * 80 + 80 + 80 * 20 + 20), 2 * 576 * 5 * 2
    expected = spec + ffn + 40 + 420 + 3 * 420 + 21 + head
    model = SFNO(in_shape=(10, 1, 64, 64), out_frames=40, modes=12, modes_t=5, width=20, device="meta")
    assert n_params(model) == expected == 9_242_461


# -- the forward pass from the equations ----------------------------------------------------------------------------
def _sconv(v: torch.Tensor, weight: torch.Tensor, out_len: int, bias: torch.Tensor | None, delta: float):
    """rfftn -> 4 corner contractions (+ delta * bias on the kept modes) -> irfftn(s=(nx, ny, out_len))."""
    w = torch.view_as_complex(weight)
    mx, my, mt = w.shape[2] // 2, w.shape[3] // 2, w.shape[4]
    nx, ny, _ = v.shape[-3:]
    vf = torch.fft.rfftn(v, dim=(-3, -2, -1))
    out = torch.zeros(v.shape[0], w.shape[1], nx, ny, out_len // 2 + 1, dtype=vf.dtype)
    for gx, wx in ((slice(0, mx), slice(0, mx)), (slice(nx - mx, nx), slice(mx, 2 * mx))):
        for gy, wy in ((slice(0, my), slice(0, my)), (slice(ny - my, ny), slice(my, 2 * my))):
            block = torch.einsum("bixyt,ioxyt->boxyt", vf[:, :, gx, gy, :mt], w[:, :, wx, wy])
            if bias is not None:
                block = block + delta * torch.view_as_complex(bias)[wx, wy]
            out[:, :, gx, gy, :mt] = block
    return torch.fft.irfftn(out, s=(nx, ny, out_len), dim=(-3, -2, -1))


def _pointwise(conv: torch.nn.Conv3d, v: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oi,bixyt->boxyt", conv.weight[..., 0, 0, 0], v) + conv.bias[:, None, None, None]


def _reference_forward(model: SFNO, x: torch.Tensor, beta: float) -> torch.Tensor:
    """docs/models.md §7.2 for C = 1, written out with ReLU everywhere (the default activation)."""
    b, t_in, _, nx, ny = x.shape
    width = model.lift.width
    v = x[:, :, 0].permute(0, 2, 3, 1)[:, None]  # (b, 1, x, y, t)
    t = torch.arange(1, t_in + 1, dtype=F64) / 100
    pe = [torch.linspace(0, 1, nx, dtype=F64)[:, None, None].expand(nx, ny, t_in)]
    pe.append(torch.linspace(0, 1, ny, dtype=F64)[None, :, None].expand(nx, ny, t_in))
    pe.append(t.expand(nx, ny, t_in))
    for k in range(width - 3):
        trig = torch.sin if k % 2 == 0 else torch.cos
        pe.append((math.exp(1) ** (beta * t) * trig(math.pi * (k + 1) * t)).expand(nx, ny, t_in))
    v = v + torch.stack(pe)[None]
    lift = model.lift
    v = _pointwise(lift.proj, F.group_norm(v, 1, lift.norm.weight, lift.norm.bias, eps=1e-7))

    def ffn(m, u):
        return _pointwise(m.fc2, torch.relu(_pointwise(m.fc1, u)))

    lat = model.latent_steps
    v = torch.relu(v[..., -1:] + ffn(lift.ffn, _sconv(v, lift.sconv.conv.weight, lat, None, 1.0)))
    for blk in model.blocks:
        v = torch.relu(ffn(blk.ffn, _sconv(v, blk.sconv.conv.weight, lat, None, 1.0)) + _pointwise(blk.skip, v))
    v = _pointwise(model.reduction, v)
    last = x[:, -1:, 0].permute(0, 2, 3, 1)[:, None]
    v = F.pad(torch.cat([last, v], dim=-1), (lat + 1, 0))  # temporal padding by the input length
    conv = model.head.conv
    t_out = model.out_frames
    v = _sconv(v, conv.conv.weight, t_out + 1 + lat + 1, conv.bias, conv.delta)[..., -(t_out + 1) :]
    y = last + v[..., -t_out:]
    return y[:, 0].permute(0, 3, 1, 2)[:, :, None]


@pytest.mark.parametrize("t_out", [7, 10])
def test_forward_matches_the_equations(t_out: int) -> None:
    beta = 1e-2
    model = _tiny((8, 1, 16, 12), t_out, modes=(3, 4), beta=beta, num_spectral_layers=3)
    with torch.no_grad():
        model.head.conv.bias.normal_()  # a non-zero spectral bias, so the bias path is compared too
    x = torch.randn(2, 8, 1, 16, 12, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_forward(model, x, beta), rtol=1e-10, atol=1e-12)


def test_positional_encoding_channels() -> None:
    pe = space_time_encoding(7, 4, 5, 6, beta=-0.5, device=torch.device("cpu"), dtype=F64)
    assert pe.shape == (1, 7, 4, 5, 6)
    t = torch.arange(1, 7, dtype=F64) / 100
    torch.testing.assert_close(pe[0, 2, 1, 2], t)
    torch.testing.assert_close(pe[0, 0, :, 0, 0], torch.linspace(0, 1, 4, dtype=F64))
    torch.testing.assert_close(pe[0, 3, 3, 4], torch.exp(-0.5 * t) * torch.sin(math.pi * t))
    torch.testing.assert_close(pe[0, 6, 0, 0], torch.exp(-0.5 * t) * torch.cos(4 * math.pi * t))


# -- SpectralConvT --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", [False, True])
def test_spectral_conv_t_with_bias_and_padding(padding: bool) -> None:
    conv = SpectralConvT(
        2, 3, 3, 2, 2, out_steps=9, temporal_padding=padding, in_steps=5, bias=True, delta=0.1, dtype=F64
    )
    with torch.no_grad():
        conv.bias.normal_()
    v = torch.randn(2, 2, 8, 6, 5, dtype=F64)
    pad = 5 if padding else 0
    ref = _sconv(F.pad(v, (pad, 0)), conv.conv.weight, 9 + pad, conv.bias, 0.1)[..., -9:]
    with torch.no_grad():
        torch.testing.assert_close(conv(v), ref, rtol=1e-10, atol=1e-13)


def test_output_time_resampling() -> None:
    """The out-conv evaluates the same time modes on a finer grid. With latent_steps L = 6 its input has L + 1 = 7
    steps, padded to 14; T_out = 10 is computed on 11 + 7 = 18 steps and T_out = 28 on 29 + 7 = 36, so step 2j of
    the long grid is step j of the short one, at half the amplitude (backward norm)."""
    short = _tiny(out_frames=10)
    long = _tiny(out_frames=28)
    long.load_state_dict(short.state_dict())
    with torch.no_grad():
        short.head.conv.bias.normal_()
        long.head.conv.bias.copy_(short.head.conv.bias)
    x = torch.randn(2, 10, 1, 16, 16, dtype=F64)
    with torch.no_grad():
        y10, y28 = short(x) - x[:, -1:], long(x) - x[:, -1:]
        latent = short.encode(x)
    assert latent.shape == (2, 1, 16, 16, 6)  # latent_steps != T_out on both sides
    assert y28.shape == (2, 28, 1, 16, 16)
    # Kept steps: 8..17 of 18 and 8..35 of 36; step 2j (j = 8..17) of 36 is output index 2j - 8.
    torch.testing.assert_close(2 * y28[:, 8::2], y10, rtol=1e-9, atol=1e-12)
    assert (y28[:, 9::2] - y28[:, 8:-1:2]).abs().max() > 1e-3  # the odd steps are new points, not repeats


# -- Helmholtz, expansion, dtypes -----------------------------------------------------------------------------------
def test_helmholtz_output_increment_is_divergence_free() -> None:
    model = _tiny((10, 2, 16, 16), 6, helmholtz=True)
    x = torch.randn(2, 10, 2, 16, 16, dtype=F64)
    with torch.no_grad():
        inc = model(x) - x[:, -1:]
    k1 = torch.fft.fftfreq(16, d=1 / 16, dtype=F64)[:, None]
    k2 = torch.fft.rfftfreq(16, d=1 / 16, dtype=F64)[None, :]
    u_hat = torch.fft.rfft2(inc)
    div = k1 * u_hat[:, :, 0] + k2 * u_hat[:, :, 1]
    assert div.abs().max() < 1e-12 * u_hat.abs().max()
    assert inc.abs().max() > 1e-3
    plain = _tiny((10, 2, 16, 16), 6)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        d_plain = torch.fft.rfft2(plain(x) - x[:, -1:])
    assert (k1 * d_plain[:, :, 0] + k2 * d_plain[:, :, 1]).abs().max() > 1e-3 * d_plain.abs().max()


@pytest.mark.parametrize("modes", [None, (5, 6, 4)])
def test_mode_expansion_keeps_the_function(modes) -> None:
    model = _tiny()
    with torch.no_grad():
        model.head.conv.bias.normal_()
    head = model.head
    new = head.with_modes(modes or head.max_modes(16, 16), init_gain=0.0)
    assert new.modes == (modes or (8, 8, 8))  # time: min(14 // 2 + 1, 18 // 2 + 1)
    x = torch.randn(2, 10, 1, 16, 16, dtype=F64)
    with torch.no_grad():
        latent = model.encode(x)
        torch.testing.assert_close(model.decode(latent, x, new), model(x), rtol=1e-10, atol=1e-12)
    tiny = head.with_modes(head.max_modes(16, 16))
    weight = tiny.conv.conv.weight
    assert 0 < weight[:, :, 4:12].abs().max() < 1e-5  # new entries: Xavier with gain 1e-6
    assert tiny.conv.bias[4:12].abs().max() == 0


@pytest.mark.parametrize("size, t_out", [(16, 10), (32, 40)])
def test_navier_stokes_shapes_float64_forward_backward(size: int, t_out: int) -> None:
    model = create_model("sfno", in_shape=(10, 1, size, size), out_frames=t_out, modes=4, modes_t=3, width=8, dtype=F64)
    x = torch.randn(2, 10, 1, size, size, dtype=F64)
    y = model(x)
    assert y.shape == (2, t_out, 1, size, size) and y.dtype == F64 and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not missing


def test_bf16_autocast_forward_is_finite() -> None:
    model = SFNO(in_shape=(10, 1, 16, 16), out_frames=10, modes=4, modes_t=3, width=8)
    x = torch.randn(2, 10, 1, 16, 16)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert y.shape == ref.shape and torch.isfinite(y.float()).all()
    assert (y.float() - ref).norm() / ref.norm() < 5e-2


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"modes": 9}, ["modes", "16x16", "(8, 8)"]),
        ({"modes_t": 7}, ["modes_t=7", "T_in=10", "latent_steps=10", "<= 6"]),
        ({"latent_steps": 4}, ["modes_t=5", "<= 3"]),
        ({"width": 3}, ["width"]),
        ({"num_spectral_layers": 1}, ["num_spectral_layers"]),
        ({"activation": "tanh"}, ["activation", "relu|gelu"]),
        ({"helmholtz": True}, ["helmholtz", "C=1"]),
        ({"fft_norm": "none"}, ["fft_norm"]),
        ({"ffn_hidden": 0}, ["ffn_hidden"]),
        ({"modes": [4, 4, 4]}, ["modes", "pair"]),
    ],
)
def test_config_errors(kwargs: dict, words: list[str]) -> None:
    base = {"in_shape": (10, 1, 16, 16), "out_frames": 10, "modes": 4, "modes_t": 5, "width": 8}
    with pytest.raises(ConfigError) as excinfo:
        create_model("sfno", **{**base, **kwargs})
    msg = str(excinfo.value)
    assert "\n" not in msg and "sfno" in msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"
