"""FNO-3D (docs/models.md §6.2): the published parameter count, an independent re-computation of the forward pass from
the equations, Navier-Stokes shapes in float64 and under bf16 autocast, and construction errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from _helpers import n_params

from stpred import ConfigError, create_model
from stpred.models.fno import FNO3d

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "fno3d.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("legacy_bn, expected", [(True, 6_558_537), (False, 6_558_537 - 160)])
def test_published_parameter_count(legacy_bn: bool, expected: int) -> None:
    # 4 layers x 4 corners x (20*20*8^3) complex weights + lift 13*20+20 + 4 pointwise convs + projection (+ 4 BN).
    model = FNO3d(in_shape=(10, 1, 64, 64), out_frames=40, modes=8, width=20, legacy_bn=legacy_bn, device="meta")
    assert n_params(model) == expected


def test_config_is_the_script_default() -> None:
    cfg = yaml.safe_load(CONFIG.read_text())
    params = inspect.signature(FNO3d.__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    assert cfg["name"] == "fno3d"
    assert cfg["kwargs"] == {
        k: v for k, v in defaults.items() if k not in ("device", "dtype", "in_shape", "out_frames", "num_classes")
    }
    assert cfg["kwargs"]["modes"] == 8 and cfg["kwargs"]["width"] == 20 and cfg["kwargs"]["padding"] == 6


def _spectral_conv3d(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Four-corner space-time spectral conv written out from the definition (fourier_3d.py's SpectralConv3d)."""
    w = torch.view_as_complex(weight)
    mx, my, mt = w.shape[2] // 2, w.shape[3] // 2, w.shape[4]
    nx, ny, nt = v.shape[-3:]
    vf = torch.fft.rfftn(v, dim=(-3, -2, -1))
    out = torch.zeros(v.shape[0], w.shape[1], nx, ny, nt // 2 + 1, dtype=vf.dtype)
    corners = [(slice(0, mx), slice(0, mx)), (slice(nx - mx, nx), slice(mx, 2 * mx))]
    corners_y = [(slice(0, my), slice(0, my)), (slice(ny - my, ny), slice(my, 2 * my))]
    for gx, wx in corners:
        for gy, wy in corners_y:
            out[:, :, gx, gy, :mt] = torch.einsum("bixyt,ioxyt->boxyt", vf[:, :, gx, gy, :mt], w[:, :, wx, wy])
    return torch.fft.irfftn(out, s=(nx, ny, nt), dim=(-3, -2, -1))


def _reference_forward(model: FNO3d, x: torch.Tensor) -> torch.Tensor:
    """The fourier_3d.py forward in its own layout: (b, x, y, t, features), the 10 frames repeated along T_out."""
    b, t_in, c, h, w = x.shape
    t_out = model.out_frames
    a = x.permute(0, 3, 4, 1, 2).reshape(b, h, w, 1, t_in * c).repeat(1, 1, 1, t_out, 1)
    gx = torch.linspace(0, 1, h, dtype=x.dtype).reshape(1, h, 1, 1, 1).repeat(b, 1, w, t_out, 1)
    gy = torch.linspace(0, 1, w, dtype=x.dtype).reshape(1, 1, w, 1, 1).repeat(b, h, 1, t_out, 1)
    gt = torch.linspace(0, 1, t_out, dtype=x.dtype).reshape(1, 1, 1, t_out, 1).repeat(b, h, w, 1, 1)
    v = torch.cat([a, gx, gy, gt], dim=-1) @ model.lift.weight.T + model.lift.bias
    v = F.pad(v.permute(0, 4, 1, 2, 3), [0, 6])
    for i, layer in enumerate(model.layers):
        conv = layer.pointwise
        v = _spectral_conv3d(v, layer.spectral.weight) + torch.einsum("oi,bixyt->boxyt", conv.weight[..., 0, 0, 0], v)
        v = v + conv.bias[:, None, None, None]
        if i < len(model.layers) - 1:
            v = F.gelu(v)
    v = v[..., :-6].permute(0, 2, 3, 4, 1)
    lin1, lin2 = model.project[0], model.project[2]
    out = F.gelu(v @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias  # (b, x, y, t, c)
    return out.permute(0, 3, 4, 1, 2)


@pytest.mark.parametrize("c", [1, 2])
def test_forward_matches_the_equations(c: int) -> None:
    model = FNO3d(in_shape=(5, c, 16, 12), out_frames=7, modes=(3, 4, 2), width=6, dtype=torch.float64)
    x = torch.randn(2, 5, c, 16, 12, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        ref = _reference_forward(model, x)
    assert y.shape == (2, 7, c, 16, 12)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size, t_out", [(16, 10), (32, 40)])
def test_navier_stokes_shapes_float64_forward_backward(size: int, t_out: int) -> None:
    model = create_model("fno3d", in_shape=(10, 1, size, size), out_frames=t_out, modes=4, width=6, dtype=torch.float64)
    x = torch.randn(2, 10, 1, size, size, dtype=torch.float64)
    y = model(x)
    assert y.shape == (2, t_out, 1, size, size) and y.dtype == torch.float64 and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bf16_autocast_forward_is_finite() -> None:
    model = FNO3d(in_shape=(10, 1, 16, 16), out_frames=10, modes=4, width=8)
    x = torch.randn(2, 10, 1, 16, 16)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert y.shape == ref.shape and torch.isfinite(y.float()).all()
    assert (y.float() - ref).norm() / ref.norm() < 5e-2


def test_other_resolution_same_weights() -> None:
    model = FNO3d(in_shape=(10, 1, 16, 16), out_frames=10, modes=4, width=8)
    assert model(torch.randn(1, 10, 1, 24, 20)).shape == (1, 10, 1, 24, 20)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"modes": 9}, ["modes", "16x16", "(8, 8)"]),
        ({"modes": [4, 4, 10]}, ["modes_t=10", "16 time steps", "<= 9"]),
        ({"modes": [4, 4]}, ["modes", "triple"]),
        ({"modes": 0}, ["modes"]),
        ({"padding": -1}, ["padding"]),
        ({"width": 0}, ["width"]),
        ({"depth": 0}, ["depth"]),
        ({"impl": "cuda"}, ["impl"]),
        ({"out_frames": 0}, ["out_frames"]),
        ({"in_shape": (10, 1, 16)}, ["in_shape"]),
    ],
)
def test_config_errors(kwargs: dict, words: list[str]) -> None:
    base = {"in_shape": (10, 1, 16, 16), "out_frames": 10, "width": 8, "modes": 4}
    with pytest.raises(ConfigError) as excinfo:
        create_model("fno3d", **{**base, **kwargs})
    msg = str(excinfo.value)
    assert "\n" not in msg and "fno3d" in msg
    for word in words:
        assert word in msg, f"{word!r} not in {msg!r}"


def test_wrong_input_frames_fail_clearly() -> None:
    model = FNO3d(in_shape=(10, 1, 16, 16), out_frames=10, modes=4, width=8)
    with pytest.raises(ValueError, match="in_shape"):
        model(torch.randn(1, 8, 1, 16, 16))
