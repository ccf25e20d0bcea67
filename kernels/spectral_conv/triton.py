"""Triton spectral convolution: fused truncated DFTs and tensor-core channel mixing (README "Triton path").

Three kernels, all on ``tl.dot`` (tensor cores for ``tf32``/``bf16``), all float32-accumulating:

- ``dft2_analysis_kernel``: real ``[B, C, S, N1, N2]`` -> the kept modes of both trailing axes, written once as a
  planar spectrum ``[S, K1, M2, 2, L]`` (``L = B*C`` innermost, re and im planes). The last axis is a real GEMM
  against the ``[N2, M2]`` cos/sin planes, the first a complex GEMM against ``[K1, N1]``; the partial result
  never leaves the program, and the ``[B, C, ...] -> [modes, L]`` transpose is the store's addressing.
- ``dft2_synthesis_kernel``: the inverse, reading only kept modes and writing ``[B, C, S, N1, N2']`` directly.
- ``cgemm_kernel``: batched planar complex GEMM with conjugation flags. It does the per-mode channel mixing
  (``Y = X W``, ``dX = dY W^H``, ``dW = X^H dY``, the batch reduced in order inside one program: deterministic)
  and, in 3-D, the x axis of the transform on the already-truncated (y, t) spectrum.

The backward is the exact adjoint: the same kernels with the adjoint bases (docs/kernels.md §2.4). Weights are packed
once per parameter version into ``[K, 2, C_in, C_out]`` (``C_out`` contiguous: coalesced tiles).
"""

from __future__ import annotations

import functools
import math
import weakref

import torch
import triton
import triton.language as tl

from stpred.kernels._dispatch import triton_interpreted
from stpred.kernels.spectral_conv.matmul import (
    _half_forward_bases,
    _half_inverse_bases,
    _two_sided_bases,
)
from stpred.kernels.spectral_conv.reference import check_modes

__all__ = [
    "spectral_conv2d_triton",
    "spectral_conv3d_triton",
    "analysis",
    "synthesis",
    "mix",
    "mix_backward",
    "packed_weight",
    "PRECISIONS",
]

PRECISIONS = ("ieee", "tf32", "tf32x3", "bf16")
NUM_WARPS = 4
NUM_STAGES = 2  # the K loops are short (often one trip); deeper pipelines only cost shared memory


def _empty(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Allocation point for kernel outputs (tests poison it with NaN to catch unwritten elements)."""
    return torch.empty(shape, dtype=torch.float32, device=device)


# --------------------------------------------------------------------------------------------- dot helpers


@triton.jit
def _prep(a, PRECISION: tl.constexpr):
    """Operand as the tensor cores see it. The interpreter's ``tl.dot`` ignores ``input_precision`` (and
    multiplies bf16 bit patterns as integers), so there the rounding is applied explicitly: bf16 to nearest even,
    TF32 by truncating the 13 low mantissa bits (the tensor cores ignore them), both then multiplied in fp32."""
    if PRECISION == "bf16":
        return a.to(tl.bfloat16)
    elif PRECISION == "bf16_emulated":
        # Round to nearest even by hand: the interpreter's fp32 -> bf16 cast truncates, the GPU's rounds.
        bits = a.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    elif PRECISION == "tf32_emulated":
        bits = a.to(tl.uint32, bitcast=True)
        return ((bits >> 13) << 13).to(tl.float32, bitcast=True)
    else:
        return a


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    if PRECISION == "tf32":
        return tl.dot(a, b, acc, input_precision="tf32")
    elif PRECISION == "tf32x3":
        return tl.dot(a, b, acc, input_precision="tf32x3")
    elif PRECISION == "bf16":
        return tl.dot(a, b, acc)
    else:
        return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _cdot(ar, ai, br, bi, acc_r, acc_i, PRECISION: tl.constexpr):
    """``acc += a @ b`` for complex ``a = ar + i ai``, ``b = br + i bi`` (four real products)."""
    ar, ai = _prep(ar, PRECISION), _prep(ai, PRECISION)
    br, bi = _prep(br, PRECISION), _prep(bi, PRECISION)
    acc_r = _dot(ar, br, acc_r, PRECISION)
    acc_r = _dot(-ai, bi, acc_r, PRECISION)
    acc_i = _dot(ar, bi, acc_i, PRECISION)
    acc_i = _dot(ai, br, acc_i, PRECISION)
    return acc_r, acc_i


# --------------------------------------------------------------------------------------------- kernels


@triton.jit
def dft2_analysis_kernel(
    x_ptr, f_ptr, p_ptr, out_ptr,
    L, C, N1, N2, K1, M2, N_M2_BLOCKS,
    s_xb, s_xc, s_xs, s_x1, s_x2,
    s_fp, s_fk, s_fn, s_pp, s_pn, s_pm,
    s_os, s_ok1, s_ok2, s_op, s_ol,
    PRECISION: tl.constexpr, BL: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr,
    BK1: tl.constexpr, BM2: tl.constexpr,
):  # fmt: skip
    """``out[s, k1, k2, :, l] = sum_{n1,n2} F[k1, n1] P[n2, k2] x[l, s, n1, n2]`` for a ``BL x BK1 x BM2`` block.

    ``F`` planar complex ``[2, K1, N1]``, ``P`` planar ``[2, N2, M2]`` (cos and -sin of the half axis).
    """
    pid_l, pid_s, pid_km = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    offs_l = pid_l * BL + tl.arange(0, BL)
    offs_k1 = (pid_km // N_M2_BLOCKS) * BK1 + tl.arange(0, BK1)
    offs_m2 = (pid_km % N_M2_BLOCKS) * BM2 + tl.arange(0, BM2)
    l_ok = offs_l < L
    x_row = (offs_l // C).to(tl.int64) * s_xb + (offs_l % C).to(tl.int64) * s_xc + pid_s * s_xs  # [BL]
    acc_r = tl.zeros((BK1, BM2 * BL), dtype=tl.float32)
    acc_i = tl.zeros((BK1, BM2 * BL), dtype=tl.float32)
    for n1_0 in range(0, N1, BN1):
        offs_n1 = n1_0 + tl.arange(0, BN1)
        rows = tl.reshape(x_row[:, None] + offs_n1[None, :].to(tl.int64) * s_x1, (BL * BN1,))
        rows_ok = tl.reshape(l_ok[:, None] & (offs_n1[None, :] < N1), (BL * BN1,))
        zr = tl.zeros((BL * BN1, BM2), dtype=tl.float32)
        zi = tl.zeros((BL * BN1, BM2), dtype=tl.float32)
        for n2_0 in range(0, N2, BN2):
            offs_n2 = n2_0 + tl.arange(0, BN2)
            xt = tl.load(x_ptr + rows[:, None] + offs_n2[None, :] * s_x2,
                         mask=rows_ok[:, None] & (offs_n2[None, :] < N2), other=0.0)  # fmt: skip
            p_off = offs_n2[:, None] * s_pn + offs_m2[None, :] * s_pm
            p_mask = (offs_n2[:, None] < N2) & (offs_m2[None, :] < M2)
            pc = _prep(tl.load(p_ptr + p_off, mask=p_mask, other=0.0), PRECISION)
            ps = _prep(tl.load(p_ptr + s_pp + p_off, mask=p_mask, other=0.0), PRECISION)
            xt = _prep(xt, PRECISION)
            zr = _dot(xt, pc, zr, PRECISION)
            zi = _dot(xt, ps, zi, PRECISION)
        # [(l, n1), k2] -> [n1, (k2, l)]: the first axis becomes the reduction of one complex GEMM.
        zr_t = tl.reshape(tl.permute(tl.reshape(zr, (BL, BN1, BM2)), (1, 2, 0)), (BN1, BM2 * BL))
        zi_t = tl.reshape(tl.permute(tl.reshape(zi, (BL, BN1, BM2)), (1, 2, 0)), (BN1, BM2 * BL))
        f_off = offs_k1[:, None] * s_fk + offs_n1[None, :] * s_fn
        f_mask = (offs_k1[:, None] < K1) & (offs_n1[None, :] < N1)
        fr = tl.load(f_ptr + f_off, mask=f_mask, other=0.0)
        fi = tl.load(f_ptr + s_fp + f_off, mask=f_mask, other=0.0)
        acc_r, acc_i = _cdot(fr, fi, zr_t, zi_t, acc_r, acc_i, PRECISION)
    acc_r = tl.reshape(acc_r, (BK1, BM2, BL))
    acc_i = tl.reshape(acc_i, (BK1, BM2, BL))
    o_off = (pid_s * s_os + offs_k1[:, None, None].to(tl.int64) * s_ok1 + offs_m2[None, :, None].to(tl.int64) * s_ok2
             + offs_l[None, None, :].to(tl.int64) * s_ol)  # fmt: skip
    o_mask = (offs_k1[:, None, None] < K1) & (offs_m2[None, :, None] < M2) & l_ok[None, None, :]
    tl.store(out_ptr + o_off, acc_r, mask=o_mask)
    tl.store(out_ptr + o_off + s_op, acc_i, mask=o_mask)


@triton.jit
def dft2_synthesis_kernel(
    y_ptr, g_ptr, r_ptr, out_ptr,
    L, C, N1, N2, K1, M2,
    s_ys, s_yk1, s_yk2, s_yp, s_yl,
    s_gp, s_gn, s_gk, s_rp, s_rm, s_rn,
    s_ob, s_oc, s_os, s_o1, s_o2,
    PRECISION: tl.constexpr, BL: tl.constexpr, BN1: tl.constexpr, BN2: tl.constexpr,
    BK1: tl.constexpr, BM2: tl.constexpr,
):  # fmt: skip
    """``out[l, s, n1, n2] = sum_{k2} Re/Im(sum_{k1} G[n1, k1] y[s, k1, k2, :, l]) R[:, k2, n2]`` for a
    ``BL x BN1`` block of rows and every ``n2``.

    ``G`` planar complex ``[2, N1, K1]``, ``R`` planar ``[2, M2, N2]`` (the rfft-weighted cos and -sin rows).
    """
    pid_l, pid_s, pid_n1 = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    offs_l = pid_l * BL + tl.arange(0, BL)
    offs_n1 = pid_n1 * BN1 + tl.arange(0, BN1)
    offs_m2 = tl.arange(0, BM2)
    l_ok = offs_l < L
    zr = tl.zeros((BN1, BM2 * BL), dtype=tl.float32)
    zi = tl.zeros((BN1, BM2 * BL), dtype=tl.float32)
    ml_off = tl.reshape(offs_m2[:, None].to(tl.int64) * s_yk2 + offs_l[None, :].to(tl.int64) * s_yl, (BM2 * BL,))
    ml_ok = tl.reshape((offs_m2[:, None] < M2) & l_ok[None, :], (BM2 * BL,))
    for k1_0 in range(0, K1, BK1):
        offs_k1 = k1_0 + tl.arange(0, BK1)
        y_off = pid_s * s_ys + offs_k1[:, None].to(tl.int64) * s_yk1 + ml_off[None, :]
        y_mask = (offs_k1[:, None] < K1) & ml_ok[None, :]
        yr = tl.load(y_ptr + y_off, mask=y_mask, other=0.0)
        yi = tl.load(y_ptr + y_off + s_yp, mask=y_mask, other=0.0)
        g_off = offs_n1[:, None] * s_gn + offs_k1[None, :] * s_gk
        g_mask = (offs_n1[:, None] < N1) & (offs_k1[None, :] < K1)
        gr = tl.load(g_ptr + g_off, mask=g_mask, other=0.0)
        gi = tl.load(g_ptr + s_gp + g_off, mask=g_mask, other=0.0)
        zr, zi = _cdot(gr, gi, yr, yi, zr, zi, PRECISION)
    # [n1, (k2, l)] -> [(l, n1), k2]: the half axis becomes the reduction of the output GEMM.
    zr_t = _prep(tl.reshape(tl.permute(tl.reshape(zr, (BN1, BM2, BL)), (2, 0, 1)), (BL * BN1, BM2)), PRECISION)
    zi_t = _prep(tl.reshape(tl.permute(tl.reshape(zi, (BN1, BM2, BL)), (2, 0, 1)), (BL * BN1, BM2)), PRECISION)
    rows = tl.reshape(
        (offs_l // C).to(tl.int64)[:, None] * s_ob + (offs_l % C).to(tl.int64)[:, None] * s_oc
        + offs_n1[None, :].to(tl.int64) * s_o1 + pid_s * s_os,
        (BL * BN1,),
    )  # fmt: skip
    rows_ok = tl.reshape(l_ok[:, None] & (offs_n1[None, :] < N1), (BL * BN1,))
    for n2_0 in range(0, N2, BN2):
        offs_n2 = n2_0 + tl.arange(0, BN2)
        r_off = offs_m2[:, None] * s_rm + offs_n2[None, :] * s_rn
        r_mask = (offs_m2[:, None] < M2) & (offs_n2[None, :] < N2)
        rc = _prep(tl.load(r_ptr + r_off, mask=r_mask, other=0.0), PRECISION)
        rs = _prep(tl.load(r_ptr + s_rp + r_off, mask=r_mask, other=0.0), PRECISION)
        out = _dot(zr_t, rc, tl.zeros((BL * BN1, BN2), dtype=tl.float32), PRECISION)
        out = _dot(zi_t, rs, out, PRECISION)
        tl.store(out_ptr + rows[:, None] + offs_n2[None, :] * s_o2, out,
                 mask=rows_ok[:, None] & (offs_n2[None, :] < N2))  # fmt: skip


@triton.jit
def cgemm_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    s_ab, s_am, s_ak, s_ap, s_bb, s_bk, s_bn, s_bp, s_cb, s_cm, s_cn, s_cp,
    CONJ_A: tl.constexpr, CONJ_B: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``C[z] = op(A[z]) @ op(B[z])`` on planar complex operands (imaginary plane at ``+ s_*p``)."""
    pid_z = tl.program_id(0).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    a_base = a_ptr + pid_z * s_ab
    b_base = b_ptr + pid_z * s_bb
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a_off = offs_m[:, None].to(tl.int64) * s_am + offs_k[None, :].to(tl.int64) * s_ak
        a_mask = (offs_m[:, None] < M) & (offs_k[None, :] < K)
        ar = tl.load(a_base + a_off, mask=a_mask, other=0.0)
        ai = tl.load(a_base + s_ap + a_off, mask=a_mask, other=0.0)
        b_off = offs_k[:, None].to(tl.int64) * s_bk + offs_n[None, :].to(tl.int64) * s_bn
        b_mask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
        br = tl.load(b_base + b_off, mask=b_mask, other=0.0)
        bi = tl.load(b_base + s_bp + b_off, mask=b_mask, other=0.0)
        if CONJ_A:
            ai = -ai
        if CONJ_B:
            bi = -bi
        acc_r, acc_i = _cdot(ar, ai, br, bi, acc_r, acc_i, PRECISION)
    c_off = pid_z * s_cb + offs_m[:, None].to(tl.int64) * s_cm + offs_n[None, :].to(tl.int64) * s_cn
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptr + c_off, acc_r, mask=c_mask)
    tl.store(c_ptr + c_off + s_cp, acc_i, mask=c_mask)


# --------------------------------------------------------------------------------------------- launchers


def _kernel_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if triton_interpreted():
        return {"bf16": "bf16_emulated", "tf32": "tf32_emulated", "tf32x3": "ieee"}.get(precision, precision)
    return precision


def _p2(n: int, lo: int = 16, hi: int = 64) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def _tiles(k1: int, m2: int, n2: int) -> tuple[int, int, int, int, int]:
    """``(BL, BN1, BN2, BK1, BM2)``: the ``[BK1, BM2*BL]`` accumulators stay within 4096 elements per plane
    (32 registers a thread at 4 warps), so nothing spills."""
    bk1, bm2 = _p2(k1), _p2(m2)
    budget = 4096 if n2 % 16 == 0 else 2048  # rows that are not 16-aligned load scalar: more address registers
    bl = max(1, min(16, budget // (bk1 * bm2)))
    return bl, 16, _p2(n2, 16, 32), bk1, bm2


@functools.lru_cache(maxsize=256)
def _planar_two_sided(n: int, m: int, norm: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(F [2, 2m, N], F^H [2, N, 2m], G [2, N, 2m], G^H [2, 2m, N])`` as float32 re/im planes."""
    bases = _two_sided_bases(n, m, norm, torch.float32, device)
    return tuple(torch.stack([t.real, t.imag]).contiguous() for t in bases)


@functools.lru_cache(maxsize=256)
def _planar_half(n: int, n_out: int, m: int, norm: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(P [2, N, m], P^T [2, m, N], R [2, m, N'], R^T [2, N', m])``: plane 0 the cos, plane 1 the sin terms."""
    p, _ = _half_forward_bases(n, m, norm, torch.float32, device)
    r, _ = _half_inverse_bases(n_out, m, norm, torch.float32, device)
    p_planes = p.view(n, m, 2).permute(2, 0, 1).contiguous()
    r_planes = r.view(m, 2, n_out).permute(1, 0, 2).contiguous()
    return p_planes, p_planes.transpose(1, 2).contiguous(), r_planes, r_planes.transpose(1, 2).contiguous()


def cgemm(a, b, out, batch, m, n, k, sa, sb, sc, precision, conj_a=False, conj_b=False) -> None:
    """Launch :func:`cgemm_kernel`; ``sa = (batch, m, k, plane)``, ``sb = (batch, k, n, plane)``,
    ``sc = (batch, m, n, plane)`` strides in elements."""
    bm, bn, bk = _p2(m), _p2(n), _p2(k, 16, 32)
    while bm * bn > 2048:  # two fp32 accumulators of 2048 keep the operand tiles in registers without spills
        bm, bn = (bm // 2, bn) if bm > bn else (bm, bn // 2)
    if conj_b and sb[1] == 1:
        # B^H read along k: with the default tiles ptxas spilled (sm_90 at C=32, both targets at C=64).
        bk, bn = 16, min(bn, 32)
    cgemm_kernel[(batch, triton.cdiv(m, bm), triton.cdiv(n, bn))](
        a, b, out, m, n, k, *sa, *sb, *sc,
        CONJ_A=conj_a, CONJ_B=conj_b, PRECISION=_kernel_precision(precision),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip


def _x_axis(z: torch.Tensor, basis: torch.Tensor, precision: str) -> torch.Tensor:
    """``[Nin, Q, 2, L]`` planar -> ``[Nout, Q, 2, L]`` by the planar complex ``basis [2, Nout, Nin]``."""
    n_in, q, _, lead = z.shape
    n_out = basis.shape[1]
    out = _empty((n_out, q, 2, lead), z.device)
    sz, so = z.stride(), out.stride()
    cgemm(
        basis, z, out, q, n_out, lead, n_in,
        (0, basis.stride(1), basis.stride(2), basis.stride(0)), (sz[1], sz[0], sz[3], sz[2]),
        (so[1], so[0], so[3], so[2]), precision,
    )  # fmt: skip
    return out


def analysis(x: torch.Tensor, full: tuple[torch.Tensor, ...], half: torch.Tensor, precision: str) -> torch.Tensor:
    """Real ``[B, C, *grid]`` -> planar kept-mode spectrum ``[K, 2, B*C]`` (modes row-major, as the weight).

    Args:
        x: float32 ``[B, C, N1, N2]`` or ``[B, C, NX, NY, NT]``, any strides.
        full: planar two-sided bases ``[2, K_a, N_a]``, one per leading axis.
        half: planar half-axis basis ``[2, N_last, M]``.
        precision: one of :data:`PRECISIONS`.
    """
    b, c = x.shape[:2]
    lead = b * c
    if x.dim() == 4:
        s, stride_s, (n1, n2), f = 1, 0, x.shape[2:], full[0]
        strides = x.stride()
        sx = (strides[0], strides[1], stride_s, strides[2], strides[3])
    else:
        s, n1, n2 = x.shape[2:]
        f = full[1]
        sx = x.stride()
    k1, m2 = f.shape[1], half.shape[2]
    bl, bn1, bn2, bk1, bm2 = _tiles(k1, m2, n2)
    out = _empty((s, k1, m2, 2, lead), x.device)
    n_m2 = triton.cdiv(m2, bm2)
    dft2_analysis_kernel[(triton.cdiv(lead, bl), s, triton.cdiv(k1, bk1) * n_m2)](
        x, f, half, out, lead, c, n1, n2, k1, m2, n_m2, *sx, *f.stride(), *half.stride(), *out.stride(),
        PRECISION=_kernel_precision(precision), BL=bl, BN1=bn1, BN2=bn2, BK1=bk1, BM2=bm2,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    if x.dim() == 5:
        out = _x_axis(out.reshape(s, k1 * m2, 2, lead), full[0], precision)
    return out.reshape(-1, 2, lead)


def synthesis(
    ys: torch.Tensor, full: tuple[torch.Tensor, ...], half: torch.Tensor, out_shape: tuple[int, ...], precision: str
) -> torch.Tensor:
    """Planar kept-mode spectrum ``[K, 2, B*C]`` -> real ``out_shape = [B, C, *grid']``.

    Args:
        ys: float32 ``[K, 2, L]``.
        full: planar two-sided inverse bases ``[2, N_a, K_a]``, one per leading axis.
        half: planar half-axis inverse basis ``[2, M, N'_last]``.
        out_shape: ``(B, C, N1, N2')`` or ``(B, C, NX, NY, NT')``.
        precision: one of :data:`PRECISIONS`.
    """
    b, c = out_shape[:2]
    lead = b * c
    m2, n2 = half.shape[1], half.shape[2]
    g = full[-1]
    n1, k1 = g.shape[1], g.shape[2]
    if len(out_shape) == 5:
        ys = _x_axis(ys.reshape(full[0].shape[2], -1, 2, lead), full[0], precision)
    s = ys.numel() // (k1 * m2 * 2 * lead)
    ys = ys.reshape(s, k1, m2, 2, lead)
    out = _empty(out_shape, ys.device)
    so = out.stride()
    so = (so[0], so[1], 0, so[2], so[3]) if out.dim() == 4 else so
    bl, bn1, bn2, bk1, bm2 = _tiles(k1, m2, n2)
    if m2 > bm2:
        raise ValueError(f"synthesis: at most 64 modes on the last axis, got {m2}")
    dft2_synthesis_kernel[(triton.cdiv(lead, bl), s, triton.cdiv(n1, bn1))](
        ys, g, half, out, lead, c, n1, n2, k1, m2, *ys.stride(), *g.stride(), *half.stride(), *so,
        PRECISION=_kernel_precision(precision), BL=bl, BN1=bn1, BN2=bn2, BK1=bk1, BM2=bm2,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )  # fmt: skip
    return out


_PACKED: dict[int, tuple[weakref.ref, int, tuple, torch.Tensor]] = {}


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[C_in, C_out, *modes, 2]`` -> ``[K, 2, C_in, C_out]`` float32, cached per tensor and ``_version`` (an
    optimizer step or ``load_state_dict`` bumps it, so training never reads a stale copy)."""
    key = id(weight)
    version = weight._version
    meta = (tuple(weight.shape), weight.stride(), weight.dtype, weight.device, weight.data_ptr())
    hit = _PACKED.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == version and hit[2] == meta:
        return hit[3]
    c_in, c_out = weight.shape[:2]
    packed = weight.detach().float().reshape(c_in, c_out, -1, 2).permute(2, 3, 0, 1).contiguous()
    if len(_PACKED) >= 64:
        _PACKED.pop(next(iter(_PACKED)))
    _PACKED[key] = (weakref.ref(weight), version, meta, packed)
    return packed


def mix(xs: torch.Tensor, wp: torch.Tensor, b: int, precision: str) -> torch.Tensor:
    """``Y[k] = X[k] @ W[k]``: ``xs [K, 2, B*C_in]``, ``wp [K, 2, C_in, C_out]`` -> ``[K, 2, B*C_out]``."""
    n_modes, _, c_in, c_out = wp.shape
    ys = _empty((n_modes, 2, b * c_out), xs.device)
    lx, ly = xs.shape[2], b * c_out
    cgemm(
        xs, wp, ys, n_modes, b, c_out, c_in,
        (2 * lx, c_in, 1, lx), (2 * c_in * c_out, c_out, 1, c_in * c_out), (2 * ly, c_out, 1, ly), precision,
    )  # fmt: skip
    return ys


def mix_backward(
    gys: torch.Tensor, xs: torch.Tensor, wp: torch.Tensor, b: int, need_x: bool, need_w: bool, precision: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dX[k] = dY[k] @ W[k]^H`` (``[K, 2, B*C_in]``) and ``dW[k] = X[k]^H @ dY[k]`` (``[K, 2, C_in, C_out]``);
    dW reduces the batch inside one program, in order: bitwise deterministic."""
    n_modes, _, c_in, c_out = wp.shape
    lx, ly = b * c_in, b * c_out
    wstride = 2 * c_in * c_out
    gx = gw = None
    if need_x:
        gx = _empty((n_modes, 2, lx), gys.device)
        cgemm(
            gys, wp, gx, n_modes, b, c_in, c_out,
            (2 * ly, c_out, 1, ly), (wstride, 1, c_out, c_in * c_out), (2 * lx, c_in, 1, lx), precision, conj_b=True,
        )  # fmt: skip
    if need_w:
        gw = _empty((n_modes, 2, c_in, c_out), gys.device)
        cgemm(
            xs, gys, gw, n_modes, c_in, c_out, b,
            (2 * lx, 1, c_in, lx), (2 * ly, c_out, 1, ly), (wstride, c_out, 1, c_in * c_out), precision, conj_a=True,
        )  # fmt: skip
    return gx, gw


# --------------------------------------------------------------------------------------------- autograd


def _bases(grid: tuple[int, ...], modes: tuple[int, ...], n_out: int, norm: str, device: torch.device) -> dict:
    full = [_planar_two_sided(n, m, norm, device) for n, m in zip(grid[:-1], modes[:-1])]
    p, pt, r, rt = _planar_half(grid[-1], n_out, modes[-1], norm, device)
    return {
        "fwd": (tuple(f[0] for f in full), p),
        "inv": (tuple(f[2] for f in full), r),
        "inv_adj": (tuple(f[3] for f in full), rt),
        "fwd_adj": (tuple(f[1] for f in full), pt),
    }


class TritonSpectralConv(torch.autograd.Function):
    """Fused truncated DFT -> tensor-core mixing -> fused inverse; the backward runs the adjoint kernels."""

    @staticmethod
    def forward(ctx, x, weight, n_out, norm, precision):  # noqa: D102
        modes, _ = check_modes(x, weight, n_out, norm, spatial_dims=x.dim() - 2)
        b, c_in, grid = x.shape[0], x.shape[1], tuple(x.shape[2:])
        c_out = weight.shape[1]
        bases = _bases(grid, modes, n_out, norm, x.device)
        xs = analysis(x, *bases["fwd"], precision)
        wp = packed_weight(weight)
        ys = mix(xs, wp, b, precision)
        y = synthesis(ys, *bases["inv"], (b, c_out, *grid[:-1], n_out), precision)
        ctx.save_for_backward(xs, wp)
        ctx.meta = (b, c_in, grid, bases, precision, tuple(weight.shape))
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):  # noqa: D102
        xs, wp = ctx.saved_tensors
        b, c_in, grid, bases, precision, wshape = ctx.meta
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gys = analysis(gy, *bases["inv_adj"], precision)
        gxs, gwp = mix_backward(gys, xs, wp, b, need_x, need_w, precision)
        gx = synthesis(gxs, *bases["fwd_adj"], (b, c_in, *grid), precision) if need_x else None
        gw = None
        if need_w:
            k = wp.shape[0]
            gw = gwp.permute(2, 3, 0, 1).reshape(wshape[0], wshape[1], k, 2).reshape(wshape).contiguous()
        return gx, gw, None, None, None


def _run(x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, precision: str, dims: int):
    modes, n_out = check_modes(x, weight, out_last, norm, spatial_dims=dims)
    _kernel_precision(precision)
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise ValueError(f"the Triton spectral conv takes float32 (got x {x.dtype}, weight {weight.dtype})")
    if modes[-1] > 64:
        raise ValueError(f"the Triton spectral conv keeps at most 64 modes on the last axis, got {modes[-1]}")
    return TritonSpectralConv.apply(x, weight, n_out, norm, precision)


def spectral_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    *,
    precision: str = "ieee",
    fused: bool = True,
) -> torch.Tensor:
    """2-D spectral convolution on the Triton kernels (same math as the reference).

    Args:
        x: float32 ``[B, C_in, N1, N2]``.
        weight: float32 ``[C_in, C_out, 2*m1, m2, 2]``.
        out_last: output length of the last axis, default ``N2``.
        norm: ``"backward" | "forward" | "ortho"``.
        precision: ``tl.dot`` operands: ``"ieee"`` (fp32 FMA), ``"tf32"`` (tensor cores; the public dispatcher's
            CUDA default), ``"tf32x3"`` or ``"bf16"``; float32 accumulation always.
        fused: accepted for compatibility; the transforms are always fused now.

    Returns:
        ``[B, C_out, N1, out_last]``.
    """
    del fused
    return _run(x, weight, out_last, norm, precision, 2)


def spectral_conv3d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    *,
    precision: str = "ieee",
    fused: bool = True,
) -> torch.Tensor:
    """3-D (x, y, t) spectral convolution on the Triton kernels.

    Args:
        x: float32 ``[B, C_in, NX, NY, NT]``.
        weight: float32 ``[C_in, C_out, 2*mx, 2*my, mt, 2]``.
        out_last: output length of the t axis, default ``NT``.
        norm: ``"backward" | "forward" | "ortho"``.
        precision: as in :func:`spectral_conv2d_triton`.
        fused: accepted for compatibility.

    Returns:
        ``[B, C_out, NX, NY, out_last]``.
    """
    del fused
    return _run(x, weight, out_last, norm, precision, 3)


def kept_modes(weight_shape: tuple[int, ...]) -> int:
    """Number of kept modes ``K`` of a weight ``[C_in, C_out, *modes, 2]``."""
    return math.prod(weight_shape[2:-1])
