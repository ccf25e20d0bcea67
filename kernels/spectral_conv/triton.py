"""Triton kernels for the spectral convolution (kernels.md §2.2, §2.4, §3, §4).

Triton has no complex dtype, so complex tensors travel as ``view_as_real`` float32 with the real part at offset 0
and the imaginary part at offset 1 (stride-2 loads). The transforms stay on cuBLAS GEMMs (``matmul.analysis`` /
``matmul.synthesis``); the kernels here do the per-mode complex channel mixing and its backward:

- ``spectral_mix_fwd_kernel``: ``Y[k] = X[k] @ W[k]`` for every kept mode k (batch = modes, M = B, K = C_in,
  N = C_out), four real ``tl.dot`` per tile; W is read in place from the layer's ``[C_in, C_out, *modes, 2]``.
- ``spectral_mix_bwd_kernel``: the same product with conjugated operands and transposed strides, which gives
  ``dX[k] = dY[k] @ W[k]^H`` and ``dW[k] = X[k]^H @ dY[k]``; dW reduces over the batch inside one program in a
  fixed order, so it is deterministic (no atomics, no split-K).
- ``spectral_fused_fwd_kernel``: inference forward that fuses the first two-sided axis of the transform with the
  mixing (the truncated DFT over that axis is an accumulation of complex scalars times ``[B, C_in]`` tiles, fed
  straight into ``tl.dot``), so the transformed spectrum is never written. Correct under the interpreter, not
  measured on a GPU.

Channel tiles are at least 16 wide because ``tl.dot`` needs every dimension >= 16; masks zero the padding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from stpred.kernels._dispatch import triton_interpreted
from stpred.kernels.spectral_conv.matmul import (
    SpectralConvFunction,
    analysis,
    register_mixer,
    spectral_bases,
    synthesis,
)
from stpred.kernels.spectral_conv.reference import check_modes

__all__ = [
    "spectral_conv2d_triton",
    "spectral_conv3d_triton",
    "mix_fwd",
    "mix_bwd",
    "spectral_conv_fused_forward",
    "PRECISIONS",
]

PRECISIONS = ("ieee", "tf32", "bf16")


def _empty(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Allocation point for kernel outputs (tests poison it with NaN to catch unwritten elements)."""
    return torch.empty(shape, dtype=torch.float32, device=device)


@triton.jit
def _cdot(ar, ai, br, bi, acc_r, acc_i, PRECISION: tl.constexpr):
    if PRECISION == "bf16_emulated":
        # The interpreter's dot multiplies bf16 bit patterns as integers; rounding to bf16 and computing in fp32
        # gives the same products (exact in fp32) with fp32 accumulation.
        ar, ai = ar.to(tl.bfloat16).to(tl.float32), ai.to(tl.bfloat16).to(tl.float32)
        br, bi = br.to(tl.bfloat16).to(tl.float32), bi.to(tl.bfloat16).to(tl.float32)
        acc_r += tl.dot(ar, br, input_precision="ieee") - tl.dot(ai, bi, input_precision="ieee")
        acc_i += tl.dot(ar, bi, input_precision="ieee") + tl.dot(ai, br, input_precision="ieee")
    elif PRECISION == "bf16":
        ar, ai, br, bi = ar.to(tl.bfloat16), ai.to(tl.bfloat16), br.to(tl.bfloat16), bi.to(tl.bfloat16)
        acc_r += tl.dot(ar, br) - tl.dot(ai, bi)
        acc_i += tl.dot(ar, bi) + tl.dot(ai, br)
    else:
        acc_r += tl.dot(ar, br, input_precision=PRECISION) - tl.dot(ai, bi, input_precision=PRECISION)
        acc_i += tl.dot(ar, bi, input_precision=PRECISION) + tl.dot(ai, br, input_precision=PRECISION)
    return acc_r, acc_i


@triton.jit
def _cmatmul_tile(
    a_ptr, b_ptr, c_ptr, M, N, K,
    s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn,
    CONJ_A: tl.constexpr, CONJ_B: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    a_base = a_ptr + pid_b * s_ab
    b_base = b_ptr + pid_b * s_bb
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a_off = offs_m[:, None].to(tl.int64) * s_am + offs_k[None, :].to(tl.int64) * s_ak
        a_mask = (offs_m[:, None] < M) & (offs_k[None, :] < K)
        ar = tl.load(a_base + a_off, mask=a_mask, other=0.0)
        ai = tl.load(a_base + a_off + 1, mask=a_mask, other=0.0)
        b_off = offs_k[:, None].to(tl.int64) * s_bk + offs_n[None, :].to(tl.int64) * s_bn
        b_mask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
        br = tl.load(b_base + b_off, mask=b_mask, other=0.0)
        bi = tl.load(b_base + b_off + 1, mask=b_mask, other=0.0)
        if CONJ_A:
            ai = -ai
        if CONJ_B:
            bi = -bi
        acc_r, acc_i = _cdot(ar, ai, br, bi, acc_r, acc_i, PRECISION)
    c_off = pid_b * s_cb + offs_m[:, None].to(tl.int64) * s_cm + offs_n[None, :].to(tl.int64) * s_cn
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptr + c_off, acc_r, mask=c_mask)
    tl.store(c_ptr + c_off + 1, acc_i, mask=c_mask)


@triton.jit
def spectral_mix_fwd_kernel(
    x_ptr, w_ptr, y_ptr, B, C_IN, C_OUT,
    s_xk, s_xb, s_xi, s_wk, s_wi, s_wo, s_yk, s_yb, s_yo,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    _cmatmul_tile(
        x_ptr, w_ptr, y_ptr, B, C_OUT, C_IN,
        s_xk, s_xb, s_xi, s_wk, s_wi, s_wo, s_yk, s_yb, s_yo,
        False, False, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip


@triton.jit
def spectral_mix_bwd_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn,
    CONJ_A: tl.constexpr, CONJ_B: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    _cmatmul_tile(
        a_ptr, b_ptr, c_ptr, M, N, K,
        s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn,
        CONJ_A, CONJ_B, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip


def _kernel_precision(precision: str) -> str:
    return "bf16_emulated" if precision == "bf16" and triton_interpreted() else precision


def _block(n: int) -> int:
    return max(16, min(64, triton.next_power_of_2(n)))


def _check_pairs(t: torch.Tensor, name: str) -> None:
    if t.dtype != torch.float32 or t.shape[-1] != 2 or t.stride(-1) != 1:
        raise ValueError(f"{name}: expected float32 (re, im) pairs with unit stride, got {t.dtype} {tuple(t.shape)}")


def _weight_view(weight: torch.Tensor) -> torch.Tensor:
    """``[C_in, C_out, *modes, 2]`` -> ``[C_in, C_out, K, 2]`` without a copy when the mode axes are dense."""
    c_in, c_out = weight.shape[:2]
    w = weight if weight.stride(-1) == 1 else weight.contiguous()
    return w.reshape(c_in, c_out, -1, 2)


def mix_fwd(xh: torch.Tensor, weight: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """``Y[k] = X[k] @ W[k]``.

    Args:
        xh: complex64 ``[K, B, C_in]`` (kept modes first).
        weight: float32 ``[C_in, C_out, *modes, 2]`` with ``prod(modes) == K``.
        precision: ``"ieee" | "tf32" | "bf16"`` (bf16 operands, float32 accumulation).

    Returns:
        complex64 ``[K, B, C_out]``.
    """
    n_modes, b, c_in = xh.shape
    w = _weight_view(weight)
    if xh.dtype != torch.complex64 or w.shape[0] != c_in or w.shape[2] != n_modes:
        raise ValueError(f"mix_fwd: xh {tuple(xh.shape)} {xh.dtype} does not match weight {tuple(weight.shape)}")
    x = torch.view_as_real(xh)
    _check_pairs(x, "mix_fwd xh")
    _check_pairs(w, "mix_fwd weight")
    c_out = w.shape[1]
    y = _empty((n_modes, b, c_out, 2), xh.device)
    bm, bn, bk = _block(b), _block(c_out), _block(c_in)
    grid = (n_modes, triton.cdiv(b, bm), triton.cdiv(c_out, bn))
    spectral_mix_fwd_kernel[grid](
        x, w, y, b, c_in, c_out,
        x.stride(0), x.stride(1), x.stride(2), w.stride(2), w.stride(0), w.stride(1),
        y.stride(0), y.stride(1), y.stride(2),
        PRECISION=_kernel_precision(precision), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )  # fmt: skip
    return torch.view_as_complex(y)


def _launch_bwd(a, b, c, n_modes, m, n, k, sa, sb, sc, conj_a, conj_b, precision) -> None:
    bm, bn, bk = _block(m), _block(n), _block(k)
    spectral_mix_bwd_kernel[(n_modes, triton.cdiv(m, bm), triton.cdiv(n, bn))](
        a, b, c, m, n, k, *sa, *sb, *sc,
        CONJ_A=conj_a, CONJ_B=conj_b, PRECISION=_kernel_precision(precision), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )  # fmt: skip


def mix_bwd(
    gyh: torch.Tensor, xh: torch.Tensor, weight: torch.Tensor, need_x: bool, need_w: bool, precision: str = "ieee"
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dX[k] = dY[k] @ W[k]^H`` and ``dW[k] = X[k]^H @ dY[k]``.

    Args:
        gyh: complex64 ``[K, B, C_out]``.
        xh: complex64 ``[K, B, C_in]`` saved by the forward.
        weight: float32 ``[C_in, C_out, *modes, 2]``.
        need_x: compute ``dX``.
        need_w: compute ``dW``.
        precision: as in :func:`mix_fwd`.

    Returns:
        ``dX`` complex64 ``[K, B, C_in]`` (or None) and ``dW`` float32 in the weight's layout (or None).
    """
    n_modes, b, c_out = gyh.shape
    c_in = xh.shape[2]
    w = _weight_view(weight)
    if xh.shape[:2] != gyh.shape[:2] or w.shape[:3] != (c_in, c_out, n_modes):
        raise ValueError(f"mix_bwd: shapes gy {tuple(gyh.shape)}, x {tuple(xh.shape)}, w {tuple(weight.shape)}")
    g, x = torch.view_as_real(gyh.contiguous()), torch.view_as_real(xh)
    for t, name in ((g, "gy"), (x, "xh"), (w, "weight")):
        _check_pairs(t, f"mix_bwd {name}")
    g_strides = (g.stride(0), g.stride(1), g.stride(2))
    gx = gw = None
    if need_x:
        out = _empty((n_modes, b, c_in, 2), gyh.device)
        # W^H as a [C_out, C_in] operand: the reduction runs over W's output-channel stride.
        w_h = (w.stride(2), w.stride(1), w.stride(0))
        _launch_bwd(g, w, out, n_modes, b, c_in, c_out, g_strides, w_h, out.stride()[:3], False, True, precision)
        gx = torch.view_as_complex(out)
    if need_w:
        out = _empty((c_in, c_out, n_modes, 2), gyh.device)
        # X^H as a [C_in, B] operand; the whole batch reduces inside one program, in order: deterministic dW.
        x_h = (x.stride(0), x.stride(2), x.stride(1))
        out_s = (out.stride(2), out.stride(0), out.stride(1))
        _launch_bwd(x, g, out, n_modes, c_in, c_out, b, x_h, g_strides, out_s, True, False, precision)
        gw = out.reshape(weight.shape)
    return gx, gw


@triton.jit
def spectral_fused_fwd_kernel(
    z_ptr, f_ptr, w_ptr, y_ptr, N_AXIS, R, B, C_IN, C_OUT,
    s_zn, s_zr, s_zb, s_zi, s_fk, s_fn, s_wk, s_wi, s_wo, s_yk, s_yb, s_yo,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One kept mode ``k = k_a * R + r`` per program: DFT over the leading axis, then the channel mixing."""
    k = tl.program_id(0).to(tl.int64)
    k_a = k // R
    r = k % R
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C_IN, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        z_off = r * s_zr + offs_m[:, None].to(tl.int64) * s_zb + offs_k[None, :].to(tl.int64) * s_zi
        z_mask = (offs_m[:, None] < B) & (offs_k[None, :] < C_IN)
        xr = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        xi = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for n in range(0, N_AXIS):
            fr = tl.load(f_ptr + k_a * s_fk + n * s_fn)
            fi = tl.load(f_ptr + k_a * s_fk + n * s_fn + 1)
            zr = tl.load(z_ptr + n * s_zn + z_off, mask=z_mask, other=0.0)
            zi = tl.load(z_ptr + n * s_zn + z_off + 1, mask=z_mask, other=0.0)
            xr += fr * zr - fi * zi
            xi += fr * zi + fi * zr
        w_off = k * s_wk + offs_k[:, None].to(tl.int64) * s_wi + offs_n[None, :].to(tl.int64) * s_wo
        w_mask = (offs_k[:, None] < C_IN) & (offs_n[None, :] < C_OUT)
        wr = tl.load(w_ptr + w_off, mask=w_mask, other=0.0)
        wi = tl.load(w_ptr + w_off + 1, mask=w_mask, other=0.0)
        acc_r, acc_i = _cdot(xr, xi, wr, wi, acc_r, acc_i, PRECISION)
    y_off = k * s_yk + offs_m[:, None].to(tl.int64) * s_yb + offs_n[None, :].to(tl.int64) * s_yo
    y_mask = (offs_m[:, None] < B) & (offs_n[None, :] < C_OUT)
    tl.store(y_ptr + y_off, acc_r, mask=y_mask)
    tl.store(y_ptr + y_off + 1, acc_i, mask=y_mask)


def _fused_mix(z: torch.Tensor, f: torch.Tensor, weight: torch.Tensor, b: int, precision: str) -> torch.Tensor:
    """``z`` complex ``[N_a, *rest, B*C_in]`` (leading axis not yet transformed), ``f`` complex ``[K_a, N_a]``;
    returns the mixed spectrum complex ``[K_a, *rest, B*C_out]``."""
    n_axis, rest = z.shape[0], z.shape[1:-1]
    c_in = z.shape[-1] // b
    w = _weight_view(weight)
    c_out, n_modes = w.shape[1], w.shape[2]
    zr = torch.view_as_real(z.contiguous()).reshape(n_axis, -1, b, c_in, 2)
    fr = torch.view_as_real(f.contiguous())
    r = zr.shape[1]
    if f.shape[1] != n_axis or f.shape[0] * r != n_modes or w.shape[0] != c_in:
        raise ValueError(f"fused forward: z {tuple(z.shape)}, basis {tuple(f.shape)}, weight {tuple(weight.shape)}")
    for t, name in ((zr, "z"), (fr, "basis"), (w, "weight")):
        _check_pairs(t, f"fused forward {name}")
    y = _empty((n_modes, b, c_out, 2), z.device)
    bm, bn, bk = _block(b), _block(c_out), _block(c_in)
    spectral_fused_fwd_kernel[(n_modes, triton.cdiv(b, bm), triton.cdiv(c_out, bn))](
        zr, fr, w, y, n_axis, r, b, c_in, c_out,
        zr.stride(0), zr.stride(1), zr.stride(2), zr.stride(3), fr.stride(0), fr.stride(1),
        w.stride(2), w.stride(0), w.stride(1), y.stride(0), y.stride(1), y.stride(2),
        PRECISION=_kernel_precision(precision), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
    )  # fmt: skip
    return torch.view_as_complex(y).reshape(f.shape[0], *rest, b * c_out)


def spectral_conv_fused_forward(
    x: torch.Tensor, weight: torch.Tensor, n_out: int, norm: str, precision: str = "ieee"
) -> torch.Tensor:
    """Inference forward (no autograd) with the first axis's DFT fused into the mixing kernel.

    Args:
        x: float32 ``[B, C_in, *full_axes, N]``.
        weight: float32 ``[C_in, C_out, *2m_full, m, 2]``.
        n_out: output length of the last axis.
        norm: FFT normalisation.
        precision: ``"ieee" | "tf32" | "bf16"``.

    Returns:
        ``[B, C_out, *full_axes, n_out]``.
    """
    modes, _ = check_modes(x, weight, n_out, norm, spatial_dims=x.dim() - 2)
    b, c_in, grid = x.shape[0], x.shape[1], tuple(x.shape[2:])
    c_out = weight.shape[1]
    bases = spectral_bases(grid, modes, n_out, norm, x.dtype, x.device)
    z = analysis(x.reshape(b * c_in, *grid), bases.half_fwd, bases.full_fwd, first_axis=1)
    yh = _fused_mix(z, bases.full_fwd[0], weight, b, precision)
    y = synthesis(yh, bases.half_inv, bases.full_inv)
    return y.reshape(b, c_out, *grid[:-1], n_out)


def _mixer_name(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    return f"triton-{precision}"


for _p in PRECISIONS:
    register_mixer(
        _mixer_name(_p),
        lambda xh, weight, _p=_p: mix_fwd(xh, weight, _p),
        lambda gyh, xh, weight, need_x, need_w, _p=_p: mix_bwd(gyh, xh, weight, need_x, need_w, _p),
    )


def _run(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, precision: str, fused: bool, dims: int
) -> torch.Tensor:
    _, n_out = check_modes(x, weight, out_last, norm, spatial_dims=dims)
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise ValueError(f"the Triton spectral conv takes float32 (got x {x.dtype}, weight {weight.dtype})")
    grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if fused and not grad:
        return spectral_conv_fused_forward(x, weight, n_out, norm, precision)
    return SpectralConvFunction.apply(x, weight, n_out, norm, _mixer_name(precision))


def spectral_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    *,
    precision: str = "ieee",
    fused: bool = False,
) -> torch.Tensor:
    """2-D spectral convolution: GEMM transforms, Triton per-mode mixing (same math as the reference).

    Args:
        x: float32 ``[B, C_in, N1, N2]``.
        weight: float32 ``[C_in, C_out, 2*m1, m2, 2]``.
        out_last: output length of the last axis, default ``N2``.
        norm: ``"backward" | "forward" | "ortho"``.
        precision: ``tl.dot`` inputs: ``"ieee"`` (parity), ``"tf32"`` or ``"bf16"`` (float32 accumulation).
        fused: without autograd, fuse the first axis's DFT into the mixing kernel (unmeasured on GPU).

    Returns:
        ``[B, C_out, N1, out_last]``.
    """
    return _run(x, weight, out_last, norm, precision, fused, 2)


def spectral_conv3d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    *,
    precision: str = "ieee",
    fused: bool = False,
) -> torch.Tensor:
    """3-D (x, y, t) spectral convolution: GEMM transforms, Triton per-mode mixing.

    Args:
        x: float32 ``[B, C_in, NX, NY, NT]``.
        weight: float32 ``[C_in, C_out, 2*mx, 2*my, mt, 2]``.
        out_last: output length of the t axis, default ``NT``.
        norm: ``"backward" | "forward" | "ortho"``.
        precision: as in :func:`spectral_conv2d_triton`.
        fused: as in :func:`spectral_conv2d_triton`.

    Returns:
        ``[B, C_out, NX, NY, out_last]``.
    """
    return _run(x, weight, out_last, norm, precision, fused, 3)
