"""ConvSSM (ConvS5 block): parameter count, HiPPO init, equations, scan vs step, torch vs Triton, validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from stpred.errors import ConfigError
from stpred.layers import ConvSSM
from stpred.layers.conv_ssm import hippo_legs_blocks


def _small(**kwargs) -> ConvSSM:
    defaults = {"norm_groups": 4, "impl": "torch"}
    return ConvSSM(8, 6, **{**defaults, **kwargs})


def test_ssm_core_parameter_count_convs5_mmnist():
    layer = ConvSSM(256, 256)
    assert layer.state_size == 128
    assert layer.ssm_core_num_params() == 1_180_032
    assert layer.b_tilde.shape == (128, 256 * 9, 2) and layer.c_tilde.shape == (3, 3, 128, 256, 2)


@pytest.mark.parametrize("ssm_size, blocks", [(16, 1), (16, 4), (12, 3)])
def test_hippo_init_properties(ssm_size, blocks):
    layer = ConvSSM(8, ssm_size, blocks=blocks, norm_groups=4)
    p, n = ssm_size // 2, ssm_size // blocks
    assert torch.equal(layer.lambda_re.detach(), torch.full((p,), -0.5))

    lambda_im, v = hippo_legs_blocks(ssm_size, blocks)
    torch.testing.assert_close(layer.lambda_im.detach(), lambda_im.float())
    # One eigenvalue of each conjugate pair is kept, per block: kept ∪ -kept is the block's full spectrum.
    idx = torch.arange(n, dtype=torch.float64)
    root = torch.sqrt(2 * idx + 1)
    legs = torch.tril(-root[:, None] * root[None, :], diagonal=-1) - torch.diag(idx + 1)
    normal = legs + torch.outer(torch.sqrt(idx + 0.5), torch.sqrt(idx + 0.5))
    assert torch.allclose(torch.diagonal(normal), torch.full((n,), -0.5, dtype=torch.float64))
    full = torch.linalg.eigvals(normal)
    torch.testing.assert_close(full.real, torch.full((n,), -0.5, dtype=torch.float64))
    for k in range(blocks):
        kept = lambda_im[k * (n // 2) : (k + 1) * (n // 2)]
        assert (kept < 0).all()
        both = torch.sort(torch.cat([kept, -kept])).values
        torch.testing.assert_close(both, torch.sort(full.imag).values)
    # V has orthonormal, block-diagonal columns: V⁻¹ = Vᴴ on the kept subspace.
    torch.testing.assert_close(v.conj().t() @ v, torch.eye(p, dtype=torch.complex128))
    for k in range(blocks):
        rows = slice(k * n, (k + 1) * n)
        outside = torch.ones(p, dtype=torch.bool)
        outside[k * (n // 2) : (k + 1) * (n // 2)] = False
        assert torch.count_nonzero(v[rows][:, outside]) == 0
    log_step = layer.log_step.detach()
    assert (log_step >= math.log(1e-3)).all() and (log_step <= math.log(1e-1)).all()


def test_he_normal_scales_of_b_and_c():
    layer = ConvSSM(32, 64, norm_groups=8)
    # B̃ = VᴴB with orthonormal V keeps the per-entry variance of B (2 / fan_in) in |B̃|², the same for C̃ = CV.
    b_var = layer.b_tilde.detach().pow(2).sum(-1).mean().item()
    c_var = layer.c_tilde.detach().pow(2).sum(-1).mean().item()
    assert b_var == pytest.approx(2 / (32 * 9), rel=0.1)
    assert c_var == pytest.approx(2 / (64 * 9), rel=0.1)


def test_equations_with_pointwise_kernels_against_complex128_loop():
    """k_B = k_C = 1 makes both convs channel matmuls: check y_k = 2·Re(C̃ x_k), x_k = Λ̄x_{k-1} + B̄u_k."""
    layer = ConvSSM(8, 6, kernel_b=1, kernel_c=1, norm_groups=4, impl="torch").double()
    with torch.no_grad():
        layer.lambda_re.copy_(torch.tensor([-0.3, 2e-5, -1.0]))  # the middle one is clipped to -1e-4
    u = torch.randn(2, 5, 8, 3, 5, dtype=torch.float64)
    x0 = torch.randn(2, 2, 3, 3, 5, dtype=torch.float64)
    y, x_last = layer(u, x0)

    lam = torch.complex(layer.lambda_re.clamp(max=-1e-4), layer.lambda_im).detach()
    lam_bar = torch.exp(lam * torch.exp(layer.log_step.detach()))
    b_bar = ((lam_bar - 1) / lam)[:, None] * torch.view_as_complex(layer.b_tilde.detach())  # [P, U]
    c_tilde = torch.view_as_complex(layer.c_tilde.detach())[0, 0]  # [P, U]
    x = torch.complex(x0[:, 0], x0[:, 1])
    ys = []
    for k in range(u.shape[1]):
        x = lam_bar[:, None, None] * x + torch.einsum("pu,buhw->bphw", b_bar, u[:, k].to(torch.complex128))
        ys.append(2 * torch.einsum("pu,bphw->buhw", c_tilde, x).real)
    y_ssm = torch.stack(ys, dim=1)
    frames = u.reshape(-1, 8, 3, 5)
    expected = layer._feedthrough(y_ssm.reshape(-1, 8, 3, 5), frames).view_as(y)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.complex(x_last[:, 0], x_last[:, 1]), x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c_d_config", ["resnet", "standard"])
@pytest.mark.parametrize("with_x0", [False, True])
def test_parallel_forward_matches_step_by_step(c_d_config, with_x0):
    layer = _small(c_d_config=c_d_config, kernel_d=5).eval()
    u = torch.randn(2, 6, 8, 7, 5)
    x0 = torch.randn(2, 2, 3, 7, 5) if with_x0 else None
    with torch.no_grad():
        y, x_last = layer(u, x0)
        x, ys = x0, []
        for k in range(u.shape[1]):
            y_k, x = layer.step(u[:, k], x)
            ys.append(y_k)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, rtol=0, atol=1e-5)
    torch.testing.assert_close(x, x_last, rtol=0, atol=1e-5)


def test_chunked_forward_carries_state():
    layer = _small().eval()
    u = torch.randn(1, 9, 8, 5, 5)
    with torch.no_grad():
        y, x_last = layer(u)
        y1, x1 = layer(u[:, :4])
        y2, x2 = layer(u[:, 4:], x1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=0, atol=1e-5)
    torch.testing.assert_close(x2, x_last, rtol=0, atol=1e-5)


def test_step_cache_follows_parameter_updates():
    layer = _small().eval()
    u = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y_before, _ = layer.step(u)
        layer.b_tilde.mul_(2.0)  # in place, as an optimizer step would
        y_after, _ = layer.step(u)
        layer.clear_cache()
        y_fresh, _ = layer.step(u)
    assert not torch.allclose(y_before, y_after)
    torch.testing.assert_close(y_after, y_fresh, rtol=0, atol=0)


def test_gradients_reach_every_core_parameter():
    layer = _small()
    y, x_last = layer(torch.randn(1, 4, 8, 5, 5), torch.randn(1, 2, 3, 5, 5))
    (y.square().sum() + x_last.sum()).backward()
    for name in ("lambda_re", "lambda_im", "log_step", "b_tilde", "c_tilde"):
        grad = getattr(layer, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def _scan_spy(real_scan, allow_inplace: bool, shared: list[bool]):
    """The layer's scan, in place only if ``allow_inplace``; records whether xs shares the B-conv output's storage."""

    def scan(lam_bar, bu, x, *, impl, inplace):
        xs, x_last = real_scan(lam_bar, bu, x, impl=impl, inplace=inplace and allow_inplace)
        shared.append(xs.data_ptr() == bu.data_ptr())
        return xs, x_last

    return scan


@pytest.mark.parametrize("impl", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("with_x0", [False, True])
def test_inplace_scan_leaves_outputs_and_gradients_unchanged(monkeypatch, with_x0, impl):
    """The layer scans in place (xs in the B-conv output's storage), on either path; forcing the out-of-place scan
    gives bitwise the same outputs and parameter/input gradients."""
    import stpred.layers.conv_ssm as conv_ssm_module

    real_scan = conv_ssm_module.conv_ssm_scan_planar
    layer = _small(impl=impl)
    u = torch.randn(2, 5, 8, 5, 3)
    x0 = torch.randn(2, 2, 3, 5, 3) if with_x0 else None
    results = []
    for inplace in (True, False):
        shared: list[bool] = []
        scan = _scan_spy(real_scan, inplace, shared)
        monkeypatch.setattr(conv_ssm_module, "conv_ssm_scan_planar", scan)
        layer.zero_grad(set_to_none=True)
        u_leaf = u.clone().requires_grad_()
        y, x_last = layer(u_leaf, x0)
        (y.square().sum() + x_last.square().sum()).backward()
        assert shared == [inplace]
        results.append([y.detach(), x_last.detach(), u_leaf.grad] + [p.grad for p in layer.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.triton
def test_torch_and_triton_impls_agree():
    torch_layer = _small(impl="torch")
    triton_layer = _small(impl="triton")
    triton_layer.load_state_dict(torch_layer.state_dict())
    u = torch.randn(2, 5, 8, 5, 3)
    x0 = torch.randn(2, 2, 3, 5, 3)
    outs, grads = [], []
    for layer in (torch_layer, triton_layer):
        y, x_last = layer(u, x0)
        (y.square().sum() + x_last.square().sum()).backward()
        outs.append((y.detach(), x_last.detach()))
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for a, b in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((8, 7), {}, "ssm_size must be a positive even"),
        ((8, 6), {"norm_groups": 3}, "norm_groups=3 must be a positive divisor of d_model=8"),
        ((8, 12), {"blocks": 4, "norm_groups": 4}, "blocks=4 must divide ssm_size=12"),
        ((8, 6), {"kernel_b": 2, "norm_groups": 4}, "kernel_b must be a positive odd"),
        ((8, 6), {"c_d_config": "glu", "norm_groups": 4}, "c_d_config must be one of"),
        ((8, 6), {"dt_min": 0.2, "norm_groups": 4}, "dt_min <= dt_max"),
        ((8, 6), {"activation": "swish", "norm_groups": 4}, "activation must be one of"),
        ((8, 6), {"impl": "cuda", "norm_groups": 4}, "impl must be"),
        ((0, 6), {}, "d_model must be a positive int"),
    ],
)
def test_bad_arguments_raise_config_error(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ConvSSM(*args, **kwargs)


def test_bad_input_shapes_raise_clear_errors():
    layer = _small()
    with pytest.raises(ValueError, match=r"\[B, L, U, H, W\] with U=8"):
        layer(torch.randn(1, 4, 7, 5, 5))
    with pytest.raises(ValueError, match=r"state must be \[B, 2, P, H, W\]"):
        layer(torch.randn(1, 4, 8, 5, 5), torch.randn(1, 2, 3, 5, 4))
    with pytest.raises(ValueError, match=r"\[B, U, H, W\]"):
        layer.step(torch.randn(1, 4, 8, 5, 5))


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compiled_scan_and_step_match_eager(backend: str) -> None:
    """Under torch.compile (fullgraph) the scan is its out-of-place custom op and the discretisation is not
    cached; outputs and gradients (inputs, x0, every parameter) match eager on odd sizes."""
    torch.manual_seed(0)
    layer = ConvSSM(8, 6, norm_groups=4, impl="torch")
    twin = copy.deepcopy(layer)
    u, x0 = torch.randn(3, 5, 8, 7, 6), torch.randn(3, 2, 3, 7, 6)
    gy, g_last = torch.randn(3, 8, 7, 6), torch.randn(3, 2, 3, 7, 6)

    def scan_then_step(m, u, x0):
        y, x = m(u, x0)
        return m.step(y[:, -1], x)

    def run(fn, m):
        uu, xx = u.clone().requires_grad_(), x0.clone().requires_grad_()
        y, x_last = fn(m, uu, xx)
        ((y * gy).sum() + (x_last * g_last).sum()).backward()
        return [y.detach(), x_last.detach(), uu.grad, xx.grad] + [p.grad for p in m.parameters()]

    torch._dynamo.reset()
    expected = run(scan_then_step, layer)
    got = run(torch.compile(scan_then_step, backend=backend, fullgraph=True), twin)
    tol = {"rtol": 0.0, "atol": 0.0} if backend == "eager" else {"rtol": 1e-4, "atol": 1e-5}
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"tensor {i}: {m}")
