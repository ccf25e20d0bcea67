"""Triton kernels for the conv-SSM scan on the planar layout (kernels.md §1.2 option A, §1.3, §3).

Each program owns a ``[BLOCK_P, BLOCK_N]`` tile of streams of one batch element (``N = H·W``, contiguous) and
loops over t inside: Bu is read once and xs written once. The backward is the reverse scan with conj(Λ̄), walked
with reversed offsets (never ``reverse=True``); dΛ̄ is reduced per program into float32 partial sums
``[B, n_tiles_n, 2, P]`` and then summed by ``torch.sum`` (deterministic, no atomics).

Importing this module requires Triton; :mod:`stpred.kernels.conv_ssm_scan` imports it only when dispatching here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "conv_ssm_scan_fwd_kernel",
    "conv_ssm_scan_bwd_kernel",
    "conv_ssm_scan_fwd",
    "conv_ssm_scan_bwd",
    "conv_ssm_scan_planar_triton",
]


@triton.jit(do_not_specialize=["T"])
def conv_ssm_scan_fwd_kernel(
    bu_ptr,
    x0_ptr,
    a_ptr,
    xs_ptr,
    xlast_ptr,
    T,
    P,
    N,
    s_bu_b,
    s_bu_t,
    s_bu_c,
    s_bu_p,
    s_x0_b,
    s_x0_c,
    s_x0_p,
    s_xs_b,
    s_xs_t,
    s_xs_c,
    s_xs_p,
    s_xl_b,
    s_xl_c,
    s_xl_p,
    HAS_X0: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask = mask_p[:, None] & (offs_n < N)[None, :]
    p64 = offs_p.to(tl.int64)[:, None]
    n64 = offs_n.to(tl.int64)[None, :]

    ar = tl.load(a_ptr + 2 * offs_p, mask=mask_p, other=0.0).to(tl.float32)[:, None]
    ai = tl.load(a_ptr + 2 * offs_p + 1, mask=mask_p, other=0.0).to(tl.float32)[:, None]

    if HAS_X0:
        x0_off = pid_b * s_x0_b + p64 * s_x0_p + n64
        xr = tl.load(x0_ptr + x0_off, mask=mask, other=0.0).to(tl.float32)
        xi = tl.load(x0_ptr + x0_off + s_x0_c, mask=mask, other=0.0).to(tl.float32)
    else:
        xr = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        xi = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)

    bu_off = pid_b * s_bu_b + p64 * s_bu_p + n64
    xs_off = pid_b * s_xs_b + p64 * s_xs_p + n64
    for _ in range(0, T):
        br = tl.load(bu_ptr + bu_off, mask=mask, other=0.0).to(tl.float32)
        bi = tl.load(bu_ptr + bu_off + s_bu_c, mask=mask, other=0.0).to(tl.float32)
        xr, xi = ar * xr - ai * xi + br, ar * xi + ai * xr + bi
        tl.store(xs_ptr + xs_off, xr.to(xs_ptr.dtype.element_ty), mask=mask)
        tl.store(xs_ptr + xs_off + s_xs_c, xi.to(xs_ptr.dtype.element_ty), mask=mask)
        bu_off += s_bu_t
        xs_off += s_xs_t

    xl_off = pid_b * s_xl_b + p64 * s_xl_p + n64
    tl.store(xlast_ptr + xl_off, xr.to(xlast_ptr.dtype.element_ty), mask=mask)
    tl.store(xlast_ptr + xl_off + s_xl_c, xi.to(xlast_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T"])
def conv_ssm_scan_bwd_kernel(
    g_ptr,
    glast_ptr,
    xs_ptr,
    x0_ptr,
    a_ptr,
    dbu_ptr,
    dx0_ptr,
    dapart_ptr,
    T,
    P,
    N,
    s_g_b,
    s_g_t,
    s_g_c,
    s_g_p,
    s_gl_b,
    s_gl_c,
    s_gl_p,
    s_xs_b,
    s_xs_t,
    s_xs_c,
    s_xs_p,
    s_x0_b,
    s_x0_c,
    s_x0_p,
    s_d_b,
    s_d_t,
    s_d_c,
    s_d_p,
    s_dx0_b,
    s_dx0_c,
    s_dx0_p,
    HAS_GLAST: tl.constexpr,
    HAS_X0: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask = mask_p[:, None] & (offs_n < N)[None, :]
    p64 = offs_p.to(tl.int64)[:, None]
    n64 = offs_n.to(tl.int64)[None, :]

    ar = tl.load(a_ptr + 2 * offs_p, mask=mask_p, other=0.0).to(tl.float32)[:, None]
    ai = tl.load(a_ptr + 2 * offs_p + 1, mask=mask_p, other=0.0).to(tl.float32)[:, None]

    # carry = conj(a)·g_{t+1}; at t = T-1 it is the gradient of x_last.
    if HAS_GLAST:
        gl_off = pid_b * s_gl_b + p64 * s_gl_p + n64
        cr = tl.load(glast_ptr + gl_off, mask=mask, other=0.0).to(tl.float32)
        ci = tl.load(glast_ptr + gl_off + s_gl_c, mask=mask, other=0.0).to(tl.float32)
    else:
        cr = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        ci = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    if HAS_X0:
        x0_off = pid_b * s_x0_b + p64 * s_x0_p + n64
        x0r = tl.load(x0_ptr + x0_off, mask=mask, other=0.0).to(tl.float32)
        x0i = tl.load(x0_ptr + x0_off + s_x0_c, mask=mask, other=0.0).to(tl.float32)
    else:
        x0r = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        x0i = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    acc_r = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    acc_i = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)

    g_base = pid_b * s_g_b + p64 * s_g_p + n64
    xs_base = pid_b * s_xs_b + p64 * s_xs_p + n64
    d_base = pid_b * s_d_b + p64 * s_d_p + n64
    for i in range(0, T):
        t = T - 1 - i
        t64 = t.to(tl.int64)
        g_off = g_base + t64 * s_g_t
        gr = tl.load(g_ptr + g_off, mask=mask, other=0.0).to(tl.float32) + cr
        gi = tl.load(g_ptr + g_off + s_g_c, mask=mask, other=0.0).to(tl.float32) + ci
        d_off = d_base + t64 * s_d_t
        tl.store(dbu_ptr + d_off, gr.to(dbu_ptr.dtype.element_ty), mask=mask)
        tl.store(dbu_ptr + d_off + s_d_c, gi.to(dbu_ptr.dtype.element_ty), mask=mask)
        # x_{t-1}: row t-1 of xs, or x0 at t = 0 (the clamped row keeps the pointer in bounds).
        x_off = xs_base + tl.maximum(t64 - 1, 0) * s_xs_t
        xr = tl.load(xs_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
        xi = tl.load(xs_ptr + x_off + s_xs_c, mask=mask, other=0.0).to(tl.float32)
        xr = tl.where(t > 0, xr, x0r)
        xi = tl.where(t > 0, xi, x0i)
        acc_r += gr * xr + gi * xi
        acc_i += gi * xr - gr * xi
        cr, ci = ar * gr + ai * gi, ar * gi - ai * gr

    if HAS_X0:
        dx0_off = pid_b * s_dx0_b + p64 * s_dx0_p + n64
        tl.store(dx0_ptr + dx0_off, cr.to(dx0_ptr.dtype.element_ty), mask=mask)
        tl.store(dx0_ptr + dx0_off + s_dx0_c, ci.to(dx0_ptr.dtype.element_ty), mask=mask)

    # partial dΛ̄ of this tile: dapart[b, pid_n, c, p], one writer per element.
    n_tiles_n = tl.num_programs(0)
    part_off = (pid_b * n_tiles_n + pid_n) * 2 * P + offs_p
    tl.store(dapart_ptr + part_off, tl.sum(acc_r, axis=1), mask=mask_p)
    tl.store(dapart_ptr + part_off + P, tl.sum(acc_i, axis=1), mask=mask_p)


def _blocks(b: int, p: int, n: int, device: torch.device) -> tuple[int, int, int]:
    """Tile ``[BLOCK_P, BLOCK_N]`` and warps: the whole (contiguous) H·W row when it is small, up to 2K streams per
    program, but small enough for about four programs per SM (each step's loads are latency-bound, so the
    device needs many programs in flight to reach its bandwidth): at B=8, P=128, 16x16 on an H100 that is 512
    streams (512 programs) instead of 2048 (128 programs for 132 SMs)."""
    block_n = min(triton.next_power_of_2(n), 512)
    block_p = max(1, min(triton.next_power_of_2(p), 2048 // block_n))
    sms = _sm_count(device)
    while block_p > 1 and block_p * block_n > 512 and b * triton.cdiv(p, block_p) * triton.cdiv(n, block_n) < 4 * sms:
        block_p //= 2
    return block_p, block_n, 4


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    from stpred.kernels._compile import stand_in_sm_count

    return stand_in_sm_count() or 1


def _streams_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Make the trailing ``(H, W)`` one unit-stride axis; other strides (B, L, plane, P) may be anything."""
    h, w = x.shape[-2:]
    if (x.stride(-1) == 1 or w == 1) and (x.stride(-2) == w or h == 1):
        return x
    return x.contiguous()


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _x_strides(x: torch.Tensor | None, dims: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if x is None else tuple(x.stride(d) for d in dims)


def conv_ssm_scan_fwd(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    Args:
        lam_bar: ``[P, 2]``. bu: ``[B, L, 2, P, H, W]``. x0: ``[B, 2, P, H, W]`` or ``None``.

    Returns:
        ``xs [B, L, 2, P, H, W]`` (``bu``'s dtype), ``x_last [B, 2, P, H, W]`` (float32, float64 for float64).
    """
    b, length, two, p, h, w = bu.shape
    assert two == 2 and lam_bar.shape == (p, 2), (tuple(bu.shape), tuple(lam_bar.shape))
    assert x0 is None or x0.shape == (b, 2, p, h, w), tuple(x0.shape)
    bu = _streams_contiguous(bu)
    x0 = None if x0 is None else _streams_contiguous(x0)
    lam = lam_bar.contiguous()
    xs = _empty(bu.shape, bu.dtype, bu.device)
    x_last = _empty((b, 2, p, h, w), _state_dtype(bu.dtype), bu.device)
    block_p, block_n, warps = _blocks(b, p, h * w, bu.device)
    grid = (triton.cdiv(h * w, block_n), triton.cdiv(p, block_p), b)
    conv_ssm_scan_fwd_kernel[grid](
        bu,
        bu if x0 is None else x0,
        lam,
        xs,
        x_last,
        length,
        p,
        h * w,
        *(bu.stride(d) for d in range(4)),
        *_x_strides(x0, (0, 1, 2)),
        *(xs.stride(d) for d in range(4)),
        *(x_last.stride(d) for d in range(3)),
        HAS_X0=x0 is not None,
        BLOCK_P=block_p,
        BLOCK_N=block_n,
        num_warps=warps,
    )
    return xs, x_last


def conv_ssm_scan_bwd(
    lam_bar: torch.Tensor,
    g: torch.Tensor,
    g_last: torch.Tensor | None,
    xs: torch.Tensor,
    x0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward kernel.

    Args:
        lam_bar: ``[P, 2]``. g: gradient of xs ``[B, L, 2, P, H, W]``. g_last: gradient of x_last
            ``[B, 2, P, H, W]`` or ``None``. xs: the forward states. x0: the forward initial state or ``None``.

    Returns:
        ``dbu [B, L, 2, P, H, W]`` (``g``'s dtype), ``dlam_bar [P, 2]`` (float32 partials summed, then cast to
        ``lam_bar``'s dtype), ``dx0 [B, 2, P, H, W]`` (``x0``'s dtype) or ``None``.
    """
    b, length, two, p, h, w = g.shape
    assert two == 2 and xs.shape == g.shape and lam_bar.shape == (p, 2), (tuple(g.shape), tuple(xs.shape))
    assert g_last is None or g_last.shape == (b, 2, p, h, w), tuple(g_last.shape)
    g, xs = _streams_contiguous(g), _streams_contiguous(xs)
    g_last = None if g_last is None else _streams_contiguous(g_last)
    x0 = None if x0 is None else _streams_contiguous(x0)
    lam = lam_bar.contiguous()
    block_p, block_n, warps = _blocks(b, p, h * w, g.device)
    grid = (triton.cdiv(h * w, block_n), triton.cdiv(p, block_p), b)
    acc_dtype = _state_dtype(g.dtype)
    dbu = _empty(g.shape, g.dtype, g.device)
    dx0 = None if x0 is None else _empty(x0.shape, x0.dtype, x0.device)
    dapart = _empty((b, grid[0], 2, p), acc_dtype, g.device)
    conv_ssm_scan_bwd_kernel[grid](
        g,
        g if g_last is None else g_last,
        xs,
        xs if x0 is None else x0,
        lam,
        dbu,
        dbu if dx0 is None else dx0,
        dapart,
        length,
        p,
        h * w,
        *(g.stride(d) for d in range(4)),
        *_x_strides(g_last, (0, 1, 2)),
        *(xs.stride(d) for d in range(4)),
        *_x_strides(x0, (0, 1, 2)),
        *(dbu.stride(d) for d in range(4)),
        *_x_strides(dx0, (0, 1, 2)),
        HAS_GLAST=g_last is not None,
        HAS_X0=x0 is not None,
        BLOCK_P=block_p,
        BLOCK_N=block_n,
        num_warps=warps,
    )
    dlam = dapart.sum(dim=(0, 1)).t().to(lam_bar.dtype)
    return dbu, dlam, dx0


class _ConvSSMScanTriton(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None):
        xs, x_last = conv_ssm_scan_fwd(lam_bar, bu, x0)
        ctx.save_for_backward(lam_bar, xs, x0)
        ctx.set_materialize_grads(False)
        return xs, x_last

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g_xs: torch.Tensor | None, g_last: torch.Tensor | None):
        lam_bar, xs, x0 = ctx.saved_tensors
        g = torch.zeros_like(xs) if g_xs is None else g_xs
        dbu, dlam, dx0 = conv_ssm_scan_bwd(lam_bar, g, g_last, xs, x0)
        return dlam, dbu.to(xs.dtype), dx0


def conv_ssm_scan_planar_triton(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton path of :func:`stpred.kernels.conv_ssm_scan.conv_ssm_scan_planar` (same arguments)."""
    return _ConvSSMScanTriton.apply(lam_bar, bu, x0)
