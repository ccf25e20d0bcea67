"""Triton kernels for the conv-SSM scan on the planar layout (docs/kernels.md §1.2 option A, §1.3, §3).

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


@triton.jit
def _load_pair(ptr, s_c, tile, mask):
    """The (Re, Im) planes of one ``[BLOCK_P, BLOCK_N]`` tile at the scalar row pointer ``ptr``, as float32."""
    re = tl.load(ptr + tile, mask=mask, other=0.0).to(tl.float32)
    im = tl.load(ptr + s_c + tile, mask=mask, other=0.0).to(tl.float32)
    return re, im


@triton.jit
def _store_pair(ptr, s_c, tile, re, im, mask):
    tl.store(ptr + tile, re.to(ptr.dtype.element_ty), mask=mask)
    tl.store(ptr + s_c + tile, im.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ahead(rows_left, k: tl.constexpr, s_t):
    """The offset of the row ``k`` steps ahead, clamped to the ``rows_left`` rows that remain (64-bit)."""
    return tl.minimum(rows_left, k).to(tl.int64) * s_t


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
    PREFETCH: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask = mask_p[:, None] & (offs_n < N)[None, :]
    # Offsets within a (b, t) slab fit in int32 (the launcher checks); the batch and time steps move a scalar
    # int64 row pointer, so no per-element 64-bit arithmetic is carried through the loop.
    bu_tile = offs_p[:, None] * s_bu_p + offs_n[None, :]
    xs_tile = offs_p[:, None] * s_xs_p + offs_n[None, :]
    bu_row = bu_ptr + pid_b * s_bu_b
    xs_row = xs_ptr + pid_b * s_xs_b

    ar = tl.load(a_ptr + 2 * offs_p, mask=mask_p, other=0.0).to(tl.float32)[:, None]
    ai = tl.load(a_ptr + 2 * offs_p + 1, mask=mask_p, other=0.0).to(tl.float32)[:, None]

    if HAS_X0:
        xr, xi = _load_pair(x0_ptr + pid_b * s_x0_b, s_x0_c, offs_p[:, None] * s_x0_p + offs_n[None, :], mask)
    else:
        xr = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        xi = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)

    # Software pipelining: rows t+1 (and t+2) are already in flight while step t computes and stores. Rows past
    # the end are clamped to the last one (read again, unused) instead of masked.
    nr1 = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    ni1 = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    nr2 = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    ni2 = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    if PREFETCH >= 1:
        nr1, ni1 = _load_pair(bu_row, s_bu_c, bu_tile, mask)
    if PREFETCH >= 2:
        nr2, ni2 = _load_pair(bu_row + tl.minimum(T - 1, 1) * s_bu_t, s_bu_c, bu_tile, mask)
    for t in range(0, T):
        if PREFETCH == 0:
            br, bi = _load_pair(bu_row, s_bu_c, bu_tile, mask)
        elif PREFETCH == 1:
            br, bi = nr1, ni1
            nr1, ni1 = _load_pair(bu_row + _ahead(T - 1 - t, 1, s_bu_t), s_bu_c, bu_tile, mask)
        else:
            br, bi = nr1, ni1
            nr1, ni1 = nr2, ni2
            nr2, ni2 = _load_pair(bu_row + _ahead(T - 1 - t, 2, s_bu_t), s_bu_c, bu_tile, mask)
        xr, xi = ar * xr - ai * xi + br, ar * xi + ai * xr + bi
        _store_pair(xs_row, s_xs_c, xs_tile, xr, xi, mask)
        bu_row += s_bu_t
        xs_row += s_xs_t

    xl_tile = offs_p[:, None] * s_xl_p + offs_n[None, :]
    _store_pair(xlast_ptr + pid_b * s_xl_b, s_xl_c, xl_tile, xr, xi, mask)


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
    PREFETCH: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_p = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_p = offs_p < P
    mask = mask_p[:, None] & (offs_n < N)[None, :]
    g_tile = offs_p[:, None] * s_g_p + offs_n[None, :]
    xs_tile = offs_p[:, None] * s_xs_p + offs_n[None, :]
    d_tile = offs_p[:, None] * s_d_p + offs_n[None, :]

    ar = tl.load(a_ptr + 2 * offs_p, mask=mask_p, other=0.0).to(tl.float32)[:, None]
    ai = tl.load(a_ptr + 2 * offs_p + 1, mask=mask_p, other=0.0).to(tl.float32)[:, None]

    # carry = conj(a)·g_{t+1}; at t = T-1 it is the gradient of x_last.
    if HAS_GLAST:
        cr, ci = _load_pair(glast_ptr + pid_b * s_gl_b, s_gl_c, offs_p[:, None] * s_gl_p + offs_n[None, :], mask)
    else:
        cr = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        ci = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    acc_r = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    acc_i = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)

    # Row pointers start at t = T-1 and walk back; xs_row is row t-1 (x_{t-1}). The loop runs t = T-1 .. 1;
    # step t = 0 (whose x_{t-1} is x0) follows it, so x0 is not held in registers through the loop. Prefetched
    # rows before row 0 are clamped to row 0 (read again, unused) instead of masked.
    last = (T - 1).to(tl.int64)
    g_base = g_ptr + pid_b * s_g_b
    xs_base = xs_ptr + pid_b * s_xs_b
    g_row = g_base + last * s_g_t
    d_row = dbu_ptr + pid_b * s_d_b + last * s_d_t
    xs_row = xs_base + (last - 1) * s_xs_t

    zero = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    pg_r1, pg_i1, px_r1, px_i1 = zero, zero, zero, zero
    pg_r2, pg_i2, px_r2, px_i2 = zero, zero, zero, zero
    if PREFETCH >= 1:
        pg_r1, pg_i1 = _load_pair(g_row, s_g_c, g_tile, mask)
        px_r1, px_i1 = _load_pair(xs_base + tl.maximum(last - 1, 0) * s_xs_t, s_xs_c, xs_tile, mask)
    if PREFETCH >= 2:
        pg_r2, pg_i2 = _load_pair(g_base + tl.maximum(last - 1, 0) * s_g_t, s_g_c, g_tile, mask)
        px_r2, px_i2 = _load_pair(xs_base + tl.maximum(last - 2, 0) * s_xs_t, s_xs_c, xs_tile, mask)
    for i in range(0, T - 1):
        t = T - 1 - i
        # Step t's loads are issued before its stores (and, prefetching, one or two steps earlier).
        if PREFETCH == 0:
            gr, gi = _load_pair(g_row, s_g_c, g_tile, mask)
            xr, xi = _load_pair(xs_row, s_xs_c, xs_tile, mask)
        elif PREFETCH == 1:
            gr, gi, xr, xi = pg_r1, pg_i1, px_r1, px_i1
            pg_r1, pg_i1 = _load_pair(g_row - s_g_t, s_g_c, g_tile, mask)
            px_r1, px_i1 = _load_pair(xs_row - _ahead(t - 1, 1, s_xs_t), s_xs_c, xs_tile, mask)
        else:
            gr, gi, xr, xi = pg_r1, pg_i1, px_r1, px_i1
            pg_r1, pg_i1, px_r1, px_i1 = pg_r2, pg_i2, px_r2, px_i2
            pg_r2, pg_i2 = _load_pair(g_row - _ahead(t, 2, s_g_t), s_g_c, g_tile, mask)
            px_r2, px_i2 = _load_pair(xs_row - _ahead(t - 1, 2, s_xs_t), s_xs_c, xs_tile, mask)
        gr += cr
        gi += ci
        _store_pair(d_row, s_d_c, d_tile, gr, gi, mask)
        acc_r += gr * xr + gi * xi
        acc_i += gi * xr - gr * xi
        cr, ci = ar * gr + ai * gi, ar * gi - ai * gr
        g_row -= s_g_t
        d_row -= s_d_t
        xs_row -= s_xs_t

    # t = 0: x_{-1} = x0 (or 0, which adds nothing to dΛ̄).
    if PREFETCH == 0:
        gr, gi = _load_pair(g_row, s_g_c, g_tile, mask)
    else:
        gr, gi = pg_r1, pg_i1
    gr += cr
    gi += ci
    _store_pair(d_row, s_d_c, d_tile, gr, gi, mask)
    if HAS_X0:
        xr, xi = _load_pair(x0_ptr + pid_b * s_x0_b, s_x0_c, offs_p[:, None] * s_x0_p + offs_n[None, :], mask)
        acc_r += gr * xr + gi * xi
        acc_i += gi * xr - gr * xi
        dx0_tile = offs_p[:, None] * s_dx0_p + offs_n[None, :]
        _store_pair(dx0_ptr + pid_b * s_dx0_b, s_dx0_c, dx0_tile, ar * gr + ai * gi, ar * gi - ai * gr, mask)

    # partial dΛ̄ of this tile: dapart[b, pid_n, c, p], one writer per element.
    part_row = dapart_ptr + (pid_b * tl.num_programs(0) + pid_n) * 2 * P
    tl.store(part_row + offs_p, tl.sum(acc_r, axis=1), mask=mask_p)
    tl.store(part_row + P + offs_p, tl.sum(acc_i, axis=1), mask=mask_p)


def _blocks(b: int, p: int, n: int, device: torch.device, elem_size: int = 4) -> tuple[int, int, int, int]:
    """Tile ``[BLOCK_P, BLOCK_N]``, warps and prefetch depth for elements of ``elem_size`` bytes.

    The tile is the whole (contiguous) H·W row when it is small, up to 1K streams per program (8 per thread: two
    128-bit accesses per plane and step; more only adds registers: 2K streams took 204-232 registers in the
    backward with x0 and capped it at 2 blocks per SM), but small enough for about four programs per SM (each
    step's loads are latency-bound, so the device needs many programs in flight to reach its bandwidth): at B=8,
    P=128, 16x16 on an H100 that is 512 streams (512 programs) instead of 1024 (256 programs for 132 SMs).

    Prefetch: by Little's law an SM needs some 32 KB of loads in flight (a few hundred ns at its share of the
    bandwidth); one step of a stream loads 8 bytes (fp32 Re, Im), so with fewer than ~4K streams per SM the
    kernel keeps one or two later steps in flight as well (B·P·H·W = 262K at B8 P128 16x16: 1985 streams per
    SM on 132 SMs, depth 2; 2427 on 108 SMs, depth 1; 64x64: none).
    """
    block_n = min(triton.next_power_of_2(n), 512)
    block_p = max(1, min(triton.next_power_of_2(p), _MAX_STREAMS // block_n))
    sms = _sm_count(device)
    while block_p > 1 and block_p * block_n > 512 and b * triton.cdiv(p, block_p) * triton.cdiv(n, block_n) < 4 * sms:
        block_p //= 2
    streams_per_sm = b * p * n / sms
    prefetch = 0 if streams_per_sm >= _STREAMS_PER_SM else (1 if 2 * streams_per_sm >= _STREAMS_PER_SM else 2)
    # Fewer warps for 2-byte dtypes, so that each thread holds 16 bytes per plane: one 128-bit access.
    warps = max(1, min(4, block_p * block_n * elem_size // (16 * 32)))
    return block_p, block_n, warps, prefetch


_MAX_STREAMS = 1024
_STREAMS_PER_SM = 4096
_INT32_MAX = 2**31 - 1


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    from stpred.kernels.compile_check import stand_in_sm_count

    return stand_in_sm_count() or 1


def _streams_contiguous(x: torch.Tensor, p_dim: int, c_dim: int) -> torch.Tensor:
    """Make the trailing ``(H, W)`` one unit-stride axis whose tile offsets fit in int32; other strides (B, L, plane,
    P) may be anything (the kernels walk B and L on 64-bit row pointers)."""
    h, w = x.shape[-2:]
    if (x.stride(-1) == 1 or w == 1) and (x.stride(-2) == w or h == 1) and _tile_fits_int32(x, p_dim, c_dim):
        return x
    x = x.contiguous()
    if not _tile_fits_int32(x, p_dim, c_dim):
        raise ValueError(f"the Triton scan needs 2·P·H·W < 2**31 per (batch, step); got {tuple(x.shape)}")
    return x


def _tile_fits_int32(x: torch.Tensor, p_dim: int, c_dim: int) -> bool:
    h, w = x.shape[-2:]
    top = (x.shape[p_dim] - 1) * abs(x.stride(p_dim)) + (x.shape[c_dim] - 1) * abs(x.stride(c_dim)) + h * w
    return top <= _INT32_MAX


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _x_strides(x: torch.Tensor | None, dims: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if x is None else tuple(x.stride(d) for d in dims)


def conv_ssm_scan_fwd(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    Args:
        lam_bar: ``[P, 2]``. bu: ``[B, L, 2, P, H, W]``. x0: ``[B, 2, P, H, W]`` or ``None``.
        out: where to write xs (``bu``'s shape and dtype, streams contiguous), or ``None`` to allocate. It may be
            ``bu`` itself: every element of step t is read by the program that then writes it, and prefetching
            only reads later steps.

    Returns:
        ``xs [B, L, 2, P, H, W]`` (``bu``'s dtype), ``x_last [B, 2, P, H, W]`` (float32, float64 for float64).
    """
    b, length, two, p, h, w = bu.shape
    assert two == 2 and lam_bar.shape == (p, 2), (tuple(bu.shape), tuple(lam_bar.shape))
    assert x0 is None or x0.shape == (b, 2, p, h, w), tuple(x0.shape)
    bu = _streams_contiguous(bu, 3, 2)
    x0 = None if x0 is None else _streams_contiguous(x0, 2, 1)
    lam = lam_bar.contiguous()
    xs = _empty(bu.shape, bu.dtype, bu.device) if out is None else out
    assert xs.shape == bu.shape and xs.dtype == bu.dtype and _streams_contiguous(xs, 3, 2) is xs
    x_last = _empty((b, 2, p, h, w), _state_dtype(bu.dtype), bu.device)
    block_p, block_n, warps, prefetch = _blocks(b, p, h * w, bu.device, bu.element_size())
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
        PREFETCH=prefetch,
        num_warps=warps,
    )
    return xs, x_last


def conv_ssm_scan_bwd(
    lam_bar: torch.Tensor,
    g: torch.Tensor,
    g_last: torch.Tensor | None,
    xs: torch.Tensor,
    x0: torch.Tensor | None,
    into_g: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward kernel.

    Args:
        lam_bar: ``[P, 2]``. g: gradient of xs ``[B, L, 2, P, H, W]``. g_last: gradient of x_last
            ``[B, 2, P, H, W]`` or ``None``. xs: the forward states. x0: the forward initial state or ``None``.
        into_g: write dBu into ``g`` (which must then have streams contiguous): step t's loads of ``g`` come
            before its store, from the same program, and prefetching only reads earlier steps.

    Returns:
        ``dbu [B, L, 2, P, H, W]`` (``g``'s dtype), ``dlam_bar [P, 2]`` (float32 partials summed, then cast to
        ``lam_bar``'s dtype), ``dx0 [B, 2, P, H, W]`` (``x0``'s dtype) or ``None``.
    """
    b, length, two, p, h, w = g.shape
    assert two == 2 and xs.shape == g.shape and lam_bar.shape == (p, 2), (tuple(g.shape), tuple(xs.shape))
    assert g_last is None or g_last.shape == (b, 2, p, h, w), tuple(g_last.shape)
    g_in = g
    g, xs = _streams_contiguous(g, 3, 2), _streams_contiguous(xs, 3, 2)
    assert not into_g or g is g_in, "into_g needs a gradient whose streams are contiguous"
    g_last = None if g_last is None else _streams_contiguous(g_last, 2, 1)
    x0 = None if x0 is None else _streams_contiguous(x0, 2, 1)
    lam = lam_bar.contiguous()
    block_p, block_n, warps, prefetch = _blocks(b, p, h * w, g.device, g.element_size())
    grid = (triton.cdiv(h * w, block_n), triton.cdiv(p, block_p), b)
    acc_dtype = _state_dtype(g.dtype)
    dbu = g if into_g else _empty(g.shape, g.dtype, g.device)
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
        PREFETCH=prefetch,
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
    """The Triton path of :func:`stpred.kernels.conv_ssm_scan.conv_ssm_scan_planar` (same arguments, out of
    place; the in-place form goes through the PyTorch path's autograd function with these launchers)."""
    return _ConvSSMScanTriton.apply(lam_bar, bu, x0)
