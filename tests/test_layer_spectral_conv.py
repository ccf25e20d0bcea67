"""SpectralConv2d / SpectralConv3d layers: layout, dispatch wiring, dtypes under autocast, clear errors."""

from __future__ import annotations

import pytest
import torch

from stpred.errors import ConfigError, UserError
from stpred.kernels.spectral_conv.reference import spectral_conv2d_reference, spectral_conv3d_reference
from stpred.layers.spectral_conv import SpectralConv2d, SpectralConv3d


def test_weight_layout_and_init():
    layer = SpectralConv2d(3, 5, 4, 6)
    assert layer.weight.shape == (3, 5, 8, 6, 2)
    assert 0 <= layer.weight.min() and layer.weight.max() < 1 / 15
    layer3 = SpectralConv3d(2, 4, 3, 5, 2, init_scale=0.5)
    assert layer3.weight.shape == (2, 4, 6, 10, 2, 2)
    assert layer3.weight.max() < 0.5 and layer3.weight.max() > 1 / 8


@pytest.mark.parametrize("impl", ["auto", "torch", "rfft", "matmul"])
def test_2d_impls_agree_with_reference(impl):
    layer = SpectralConv2d(3, 4, 5, 6, out_last=13, impl=impl)
    x = torch.randn(2, 3, 14, 11)
    y = layer(x)
    ref = spectral_conv2d_reference(x, layer.weight, 13)
    assert y.shape == (2, 4, 14, 13)
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("impl", ["auto", "matmul"])
def test_3d_impls_agree_with_reference(impl):
    layer = SpectralConv3d(2, 3, 2, 3, 3, out_last=9, impl=impl)
    x = torch.randn(1, 2, 6, 7, 5)
    y = layer(x)
    ref = spectral_conv3d_reference(x, layer.weight, 9)
    assert y.shape == (1, 3, 6, 7, 9)
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("impl", ["rfft", "matmul"])
def test_bf16_autocast_returns_input_dtype(impl):
    layer = SpectralConv2d(4, 4, 6, 6, impl=impl)
    x = torch.randn(2, 4, 16, 16)
    y32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf = layer(x.bfloat16())
        y_f = layer(x)
    assert y_bf.dtype == torch.bfloat16 and y_f.dtype == torch.float32
    assert torch.isfinite(y_bf).all()
    assert (y_bf.float() - y32).abs().max() <= 2e-2 * y32.abs().max()
    assert torch.equal(y_f, y32)  # float32 input: the spectral math never ran in bf16


def test_bf16_autocast_gradients_flow():
    layer = SpectralConv3d(2, 2, 2, 2, 2, impl="matmul")
    x = torch.randn(1, 2, 8, 8, 6, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    assert layer.weight.grad.dtype == torch.float32 and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("impl", ["auto", "matmul"])
def test_float64_layer(impl):
    layer = SpectralConv2d(2, 3, 3, 4, impl=impl, dtype=torch.float64)
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    y = layer(x)
    assert y.dtype == torch.float64
    assert (y - spectral_conv2d_reference(x, layer.weight)).abs().max() < 1e-12


def test_modes_too_large_clear_errors():
    with pytest.raises(UserError, match=r"SpectralConv2d: axis 0 keeps 2\*12 modes .* only 16 points"):
        SpectralConv2d(2, 2, 12, 5)(torch.randn(1, 2, 16, 16))
    with pytest.raises(UserError, match=r"SpectralConv2d: the last axis keeps 12 modes but the input length 16"):
        SpectralConv2d(2, 2, 4, 12)(torch.randn(1, 2, 16, 16))
    with pytest.raises(UserError, match=r"SpectralConv3d: the last axis keeps 5 modes but the output length 6"):
        SpectralConv3d(2, 2, 2, 2, 5, out_last=6)(torch.randn(1, 2, 8, 8, 10))
    with pytest.raises(ValueError, match=r"SpectralConv2d expects \[B, C, 2 spatial dims\]"):
        SpectralConv2d(2, 2, 2, 2)(torch.randn(2, 8, 8))


def test_constructor_errors():
    with pytest.raises(ConfigError, match="impl must be one of"):
        SpectralConv2d(2, 2, 2, 2, impl="cuda")
    with pytest.raises(ConfigError, match="modes must be positive"):
        SpectralConv3d(2, 2, 0, 2, 2)


@pytest.mark.triton
def test_triton_layer_matches_reference():
    layer = SpectralConv2d(3, 2, 2, 3, impl="triton")
    x = torch.randn(2, 3, 8, 7, requires_grad=True)
    y = layer(x)
    ref = spectral_conv2d_reference(x, layer.weight)
    g = torch.randn_like(ref)
    dx, dw = torch.autograd.grad(y, (x, layer.weight), g)
    rdx, rdw = torch.autograd.grad(ref, (x, layer.weight), g)
    for a, b in ((y, ref), (dx, rdx), (dw, rdw)):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


@pytest.mark.triton
def test_triton_layer_bf16_autocast_rounds_operands():
    """Under bf16 autocast the Triton path takes bf16 ``tl.dot`` operands (float32 accumulation): the result
    keeps the input dtype, moves off the float32 result, and stays within the bf16 bound (tests of the kernel)."""
    layer = SpectralConv3d(3, 2, 2, 2, 3, impl="triton")
    x = torch.randn(1, 3, 6, 5, 7)
    y32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.float32
    rel = float((y - y32).detach().norm() / y32.detach().norm())
    assert 1e-4 < rel < 1.5e-2


@pytest.mark.triton
def test_triton_layer_tracks_optimizer_steps():
    """The packed weight the kernels read is refreshed after every optimizer step (parameter version)."""
    layer = SpectralConv2d(3, 2, 2, 3, impl="triton")
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(2, 3, 8, 7)
    for _ in range(2):
        opt.zero_grad()
        layer(x).square().sum().backward()
        opt.step()
        ref = spectral_conv2d_reference(x, layer.weight)
        assert (layer(x) - ref).abs().max() <= 1e-5 * ref.abs().max()
