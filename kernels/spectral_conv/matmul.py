"""Truncated-DFT-as-matmul spectral convolution in PyTorch (docs/kernels.md §2.1-2.5).

The forward transform contracts the last (half-spectrum) axis with one real GEMM against an interleaved
``[N, 2m]`` cos/-sin basis, so its output is already ``view_as_complex``-able, then contracts each two-sided axis
with a complex GEMM. The inverse runs the same steps backwards with the rfft weights ``c_k`` on the last axis,
which equals ``irfft`` with NumPy semantics (imaginary parts of the DC and Nyquist columns discarded) for any N.

The backward (§2.4) reuses the same two routines with the adjoint bases, in an ``autograd.Function``: autograd
through the complex GEMMs would keep every intermediate and add conjugation passes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from stpred.kernels.spectral_conv.reference import check_modes

__all__ = [
    "spectral_conv2d_matmul",
    "spectral_conv3d_matmul",
    "SpectralBases",
    "spectral_bases",
    "analysis",
    "synthesis",
    "SpectralConvFunction",
]


def _forward_scale(n: int, norm: str) -> float:
    return {"backward": 1.0, "forward": 1.0 / n, "ortho": n**-0.5}[norm]


def _inverse_scale(n: int, norm: str) -> float:
    return {"backward": 1.0 / n, "forward": 1.0, "ortho": n**-0.5}[norm]


def _phase(freqs: torch.Tensor, n: int) -> torch.Tensor:
    """``2*pi*k*j/N`` as ``[len(freqs), N]`` float64, reduced mod N in integers first for accuracy at large k*j."""
    kj = (freqs[:, None] * torch.arange(n, dtype=torch.int64)[None, :]) % n
    return kj.to(torch.float64) * (2.0 * math.pi / n)


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


@functools.lru_cache(maxsize=256)
def _two_sided_bases(
    n: int, m: int, norm: str, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Complex bases of a two-sided axis: ``(F [2m, N], F^H [N, 2m], G [N, 2m], G^H [2m, N])``."""
    freqs = torch.cat([torch.arange(m), torch.arange(n - m, n)])
    theta = _phase(freqs, n)
    e = torch.polar(torch.ones_like(theta), -theta)  # e^{-i theta}, [2m, N]
    f = e * _forward_scale(n, norm)
    g = e.conj().T * _inverse_scale(n, norm)
    cdt = _complex_dtype(dtype)
    return tuple(t.to(device=device, dtype=cdt).contiguous() for t in (f, f.conj().T, g, g.conj().T))


@functools.lru_cache(maxsize=256)
def _half_forward_bases(
    n: int, m: int, norm: str, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real forward basis of the rfft axis ``P [N, 2m]`` (columns ``cos, -sin`` interleaved) and ``P^T``."""
    theta = _phase(torch.arange(m), n).T  # [N, m]
    s = _forward_scale(n, norm)
    p = torch.stack([torch.cos(theta) * s, -torch.sin(theta) * s], dim=-1).reshape(n, 2 * m)
    return p.to(device=device, dtype=dtype).contiguous(), p.T.to(device=device, dtype=dtype).contiguous()


@functools.lru_cache(maxsize=256)
def _half_inverse_bases(
    n: int, m: int, norm: str, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real inverse basis of the rfft axis ``R [2m, N]`` with the weights ``c_k``, and ``R^T``.

    ``y[j] = sum_k c_k (Re Y_k cos - Im Y_k sin)``, ``c_k = 1`` at DC and at the Nyquist frequency of an even
    ``N``, 2 elsewhere; at those two frequencies ``sin`` vanishes, so the imaginary parts drop out.
    """
    k = torch.arange(m)
    c = torch.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0).to(torch.float64)
    theta = _phase(k, n)  # [m, N]
    s = _inverse_scale(n, norm) * c[:, None]
    r = torch.stack([torch.cos(theta) * s, -torch.sin(theta) * s], dim=1).reshape(2 * m, n)
    return r.to(device=device, dtype=dtype).contiguous(), r.T.to(device=device, dtype=dtype).contiguous()


class SpectralBases(NamedTuple):
    """All bases of one call; ``full_*`` are per two-sided axis, ``half_*`` for the last axis."""

    full_fwd: tuple[torch.Tensor, ...]
    full_fwd_adj: tuple[torch.Tensor, ...]
    full_inv: tuple[torch.Tensor, ...]
    full_inv_adj: tuple[torch.Tensor, ...]
    half_fwd: torch.Tensor
    half_fwd_adj: torch.Tensor
    half_inv: torch.Tensor
    half_inv_adj: torch.Tensor


def spectral_bases(
    grid: tuple[int, ...], modes: tuple[int, ...], n_out: int, norm: str, dtype: torch.dtype, device: torch.device
) -> SpectralBases:
    """Cached DFT bases for a grid ``(*full_axes, N_last)``, ``modes`` and the last-axis output length."""
    device = torch.device(device)
    full = [_two_sided_bases(n, m, norm, dtype, device) for n, m in zip(grid[:-1], modes[:-1])]
    p, pt = _half_forward_bases(grid[-1], modes[-1], norm, dtype, device)
    r, rt = _half_inverse_bases(n_out, modes[-1], norm, dtype, device)
    return SpectralBases(
        full_fwd=tuple(b[0] for b in full),
        full_fwd_adj=tuple(b[1] for b in full),
        full_inv=tuple(b[2] for b in full),
        full_inv_adj=tuple(b[3] for b in full),
        half_fwd=p,
        half_fwd_adj=pt,
        half_inv=r,
        half_inv_adj=rt,
    )


def _apply_axis(z: torch.Tensor, basis: torch.Tensor, axis: int) -> torch.Tensor:
    """Contract ``z``'s ``axis`` with ``basis [K, N]`` in place of that axis (a broadcast bmm, no transposes)."""
    shape = z.shape
    pre = math.prod(shape[:axis])
    out = torch.matmul(basis, z.reshape(pre, shape[axis], -1))
    return out.reshape(*shape[:axis], basis.shape[0], *shape[axis + 1 :])


def analysis(x: torch.Tensor, half: torch.Tensor, full: tuple[torch.Tensor, ...], first_axis: int = 0) -> torch.Tensor:
    """Real ``[L, *S, N]`` -> complex ``[*K, m, L]``: the last axis by ``half [N, 2m]``, then each two-sided axis
    ``a >= first_axis`` by ``full[a] [K_a, N_a]`` (axes before ``first_axis`` stay untransformed).

    ``L`` (batch times channels) goes last so that each mode's ``[B, C]`` block is contiguous for the mixing GEMM.
    """
    lead, spatial = x.shape[0], x.shape[1:-1]
    z = torch.matmul(x.reshape(-1, x.shape[-1]), half)
    z = torch.view_as_complex(z.view(lead, *spatial, -1, 2)).movedim(0, -1).contiguous()
    for axis in reversed(range(first_axis, len(full))):
        z = _apply_axis(z, full[axis], axis)
    return z


def synthesis(y: torch.Tensor, half: torch.Tensor, full: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Complex ``[*K, m, L]`` -> real ``[L, *S, N']``: each two-sided axis by ``full[a] [N_a, K_a]``, then the last
    axis by ``half [2m, N']`` (``Re`` of the complex product, as a real GEMM on the interleaved pairs)."""
    for axis in range(len(full)):
        y = _apply_axis(y, full[axis], axis)
    y = y.movedim(-1, 0).contiguous()
    lead, spatial, m = y.shape[0], y.shape[1:-1], y.shape[-1]
    out = torch.matmul(torch.view_as_real(y).reshape(-1, 2 * m), half)
    return out.reshape(lead, *spatial, half.shape[1])


def weight_modes(weight: torch.Tensor) -> torch.Tensor:
    """Weight ``[C_in, C_out, *modes, 2]`` -> complex ``[K, C_in, C_out]`` in the modes' row-major order."""
    c_in, c_out = weight.shape[:2]
    w = torch.view_as_complex(weight.contiguous())
    return w.reshape(c_in, c_out, -1).permute(2, 0, 1).contiguous()


def torch_mix(xh: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-mode complex channel mixing ``[K, B, C_in] x [K, C_in, C_out] -> [K, B, C_out]`` (batched cgemm)."""
    return torch.bmm(xh, weight_modes(weight))


def torch_mix_backward(
    gyh: torch.Tensor, xh: torch.Tensor, weight: torch.Tensor, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dX = dY W^H`` and ``dW = X^H dY`` per mode; ``dW`` returned in the weight's real layout."""
    wc = weight_modes(weight)
    gxh = torch.bmm(gyh, wc.conj().transpose(1, 2)) if need_x else None
    gw = None
    if need_w:
        gwc = torch.bmm(xh.conj().transpose(1, 2), gyh)  # [K, C_in, C_out]
        gw = torch.view_as_real(gwc.permute(1, 2, 0).reshape(weight.shape[:-1]).contiguous()).contiguous()
    return gxh, gw


Mixer = tuple[Callable[..., torch.Tensor], Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]]]
_MIXERS: dict[str, Mixer] = {"torch": (torch_mix, torch_mix_backward)}


def register_mixer(name: str, mix: Callable[..., torch.Tensor], mix_backward: Callable[..., tuple]) -> None:
    """Register a mode-mixing implementation (the Triton module adds ``"triton"``)."""
    _MIXERS[name] = (mix, mix_backward)


class SpectralConvFunction(torch.autograd.Function):
    """Truncated DFT -> per-mode mixing -> inverse DFT, with the analytic backward of docs/kernels.md §2.4."""

    @staticmethod
    def forward(ctx, x, weight, n_out, norm, mixer):  # noqa: D102
        modes, _ = check_modes(x, weight, n_out, norm, spatial_dims=x.dim() - 2)
        b, c_in, grid = x.shape[0], x.shape[1], tuple(x.shape[2:])
        c_out = weight.shape[1]
        bases = spectral_bases(grid, modes, n_out, norm, x.dtype, x.device)
        mix, _ = _MIXERS[mixer]
        xh = analysis(x.reshape(b * c_in, *grid), bases.half_fwd, bases.full_fwd)
        kshape = xh.shape[:-1]
        xh = xh.reshape(-1, b, c_in)
        yh = mix(xh, weight)
        y = synthesis(yh.reshape(*kshape, b * c_out), bases.half_inv, bases.full_inv)
        ctx.save_for_backward(xh, weight)
        ctx.meta = (b, c_in, c_out, grid, kshape, bases, mixer)
        return y.reshape(b, c_out, *grid[:-1], n_out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):  # noqa: D102
        xh, weight = ctx.saved_tensors
        b, c_in, c_out, grid, kshape, bases, mixer = ctx.meta
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gyh = analysis(gy.reshape(b * c_out, *gy.shape[2:]), bases.half_inv_adj, bases.full_inv_adj)
        _, mix_backward = _MIXERS[mixer]
        gxh, gw = mix_backward(gyh.reshape(-1, b, c_out), xh, weight, need_x, need_w)
        gx = None
        if need_x:
            gx = synthesis(gxh.reshape(*kshape, b * c_in), bases.half_fwd_adj, bases.full_fwd_adj)
            gx = gx.reshape(b, c_in, *grid)
        return gx, gw, None, None, None


def _run(x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, dims: int) -> torch.Tensor:
    _, n_out = check_modes(x, weight, out_last, norm, spatial_dims=dims)
    return SpectralConvFunction.apply(x, weight, n_out, norm, "torch")


def spectral_conv2d_matmul(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None = None, norm: str = "backward"
) -> torch.Tensor:
    """2-D spectral convolution as truncated-DFT GEMMs; same signature and result as the rfft reference.

    Args:
        x: real ``[B, C_in, N1, N2]``, float32 or float64.
        weight: ``[C_in, C_out, 2*m1, m2, 2]`` of ``x``'s dtype.
        out_last: output length of the last axis, default ``N2``.
        norm: ``"backward" | "forward" | "ortho"``.

    Returns:
        ``[B, C_out, N1, out_last]``.
    """
    return _run(x, weight, out_last, norm, 2)


def spectral_conv3d_matmul(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None = None, norm: str = "backward"
) -> torch.Tensor:
    """3-D (x, y, t) spectral convolution as truncated-DFT GEMMs; same signature and result as the reference.

    Args:
        x: real ``[B, C_in, NX, NY, NT]``, float32 or float64.
        weight: ``[C_in, C_out, 2*mx, 2*my, mt, 2]`` of ``x``'s dtype.
        out_last: output length of the t axis, default ``NT``.
        norm: ``"backward" | "forward" | "ortho"``.

    Returns:
        ``[B, C_out, NX, NY, out_last]``.
    """
    return _run(x, weight, out_last, norm, 3)


# CPU cost model (README "Dispatch"): rates measured single-threaded on the development machine (Xeon, AVX-512,
# shared); only their ratios matter for the choice. FFT "flops" are the nominal 2.5 * S * log2(S) per real transform.
_GEMM_FLOPS_PER_S = 80e9
_FFT_FLOPS_PER_S = 20e9
_BYTES_PER_S = 10e9
_CALL_OVERHEAD_S = 20e-6
MATMUL_MARGIN = 0.85


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def estimate_seconds(
    path: str, batch: int, c_in: int, c_out: int, grid: tuple[int, ...], modes: tuple[int, ...], n_out: int
) -> float:
    """Modelled CPU forward time of ``path`` (``"rfft"`` or ``"matmul"``) in float32, excluding the mixing GEMM
    that both paths share."""
    # Plain int loops (no generators): under torch.compile Dynamo folds this whole model into constants.
    l_in, l_out = batch * c_in, batch * c_out
    p = _prod(grid[:-1])
    n, m = grid[-1], modes[-1]
    if path == "rfft":
        flops = 2.5 * (l_in * p * n * math.log2(max(p * n, 2)) + l_out * p * n_out * math.log2(max(p * n_out, 2)))
        spectra = 3 * (l_in * p * (n // 2 + 1) + l_out * p * (n_out // 2 + 1)) * 8
        io = (l_in * p * n + l_out * p * n_out) * 4
        return flops / _FFT_FLOPS_PER_S + (spectra + io) / _BYTES_PER_S + 6 * _CALL_OVERHEAD_S
    if path != "matmul":
        raise ValueError(f"unknown path '{path}'")
    flops = 4.0 * m * p * (l_in * n + l_out * n_out)
    full_n, full_k = grid[:-1], [2 * k for k in modes[:-1]]
    for axis in range(len(full_n)):
        pre, post = _prod(full_n[:axis]), _prod(full_k[axis + 1 :])
        flops += 8.0 * (l_in + l_out) * m * pre * post * full_n[axis] * full_k[axis]
    spectra = 3 * (l_in + l_out) * p * m * 8
    io = (l_in * p * n + l_out * p * n_out) * 4
    return flops / _GEMM_FLOPS_PER_S + (spectra + io) / _BYTES_PER_S + (4 + 2 * len(full_n)) * _CALL_OVERHEAD_S


def prefer_matmul(batch: int, c_in: int, c_out: int, grid: tuple[int, ...], modes: tuple[int, ...], n_out: int) -> bool:
    """Whether the CPU ``"torch"`` choice takes the matmul path: only when the model puts it at least
    ``1 / MATMUL_MARGIN`` times faster than rfft, so that model error does not make it slower."""
    t_mm = estimate_seconds("matmul", batch, c_in, c_out, grid, modes, n_out)
    t_fft = estimate_seconds("rfft", batch, c_in, c_out, grid, modes, n_out)
    return t_mm <= MATMUL_MARGIN * t_fft
