"""Truncated-DFT spectral convolution (FNO-2D, FNO-3D, SFNO): public functions and dispatch.

Implementations (README.md): the rfft reference (``reference.py``), truncated-DFT GEMMs in PyTorch
(``matmul.py``), and Triton fused truncated-DFT and tensor-core mixing kernels (``triton.py``, CUDA). ``impl``:

- ``"auto"``: Triton when the tensors are on CUDA and Triton is usable (``stpred.kernels.resolve_impl``), else
  as ``"torch"``;
- ``"torch"``: on CPU the cost model's choice between ``"rfft"`` and ``"matmul"`` (never the slower of the two
  at the measured shapes); on CUDA the matmul path;
- ``"triton"``, ``"rfft"``, ``"matmul"``: that implementation.

float64 always runs on the rfft reference unless ``"matmul"`` is asked for (``tl.dot`` has no float64, and the
Spectral-Refiner fine-tuning runs untruncated grids where the FFT is cheaper). bfloat16/float16 inputs are computed
in float32 (on Triton: bfloat16 ``tl.dot`` operands, float32 accumulation) and the result cast back. float32 on
Triton uses TF32 tensor cores on CUDA unless ``precision`` says otherwise (README "Precision").

Under ``torch.compile`` the dispatch is traced (shapes are static there, so the cost model folds to a constant);
rfft and matmul are traced as PyTorch code and Triton runs as the custom op ``stpred::spectral_conv_triton``.
"""

from __future__ import annotations

import torch

from stpred.kernels._dispatch import resolve_impl
from stpred.kernels.spectral_conv.matmul import prefer_matmul, spectral_conv2d_matmul, spectral_conv3d_matmul
from stpred.kernels.spectral_conv.reference import (
    check_modes,
    spectral_conv2d_reference,
    spectral_conv3d_reference,
)

__all__ = [
    "spectral_conv2d",
    "spectral_conv3d",
    "select_impl",
    "IMPLS",
    "spectral_conv2d_reference",
    "spectral_conv3d_reference",
    "spectral_conv2d_matmul",
    "spectral_conv3d_matmul",
]

IMPLS = ("auto", "triton", "torch", "rfft", "matmul")


def select_impl(
    impl: str, x: torch.Tensor, weight: torch.Tensor, out_last: int | None = None, norm: str = "backward"
) -> str:
    """The implementation a call would run: ``"triton"``, ``"rfft"`` or ``"matmul"``.

    Args:
        impl: one of :data:`IMPLS`.
        x: ``[B, C_in, *grid]`` input (2 or 3 spatial dims).
        weight: ``[C_in, C_out, *modes, 2]``.
        out_last: output length of the last axis.
        norm: FFT normalisation.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got '{impl}'")
    modes, n_out = check_modes(x, weight, out_last, norm, spatial_dims=x.dim() - 2)
    if impl in ("rfft", "matmul"):
        return impl
    if x.dtype == torch.float64:
        if impl == "triton":
            raise ValueError("impl='triton' has no float64 (tl.dot); use 'rfft' or 'matmul'")
        return "rfft"
    if resolve_impl(impl, x, weight) == "triton":
        return "triton"
    if x.device.type != "cpu":
        return "matmul"
    b, c_in, c_out = x.shape[0], x.shape[1], weight.shape[1]
    return "matmul" if prefer_matmul(b, c_in, c_out, tuple(x.shape[2:]), modes, n_out) else "rfft"


def default_precision(x: torch.Tensor) -> str:
    """The Triton ``tl.dot`` operand precision when none is asked for: ``"bf16"`` for bf16 input, ``"tf32"``
    on CUDA (tensor cores; error measured in README "Precision"), ``"ieee"`` elsewhere (the interpreter)."""
    if x.dtype == torch.bfloat16:
        return "bf16"
    return "tf32" if x.is_cuda else "ieee"


# Under torch.compile the Triton path is one opaque custom op (Dynamo does not trace the launchers), returning its
# backward's residuals (the kept-mode spectrum of x and the packed weight) as extra outputs; rfft and matmul are
# plain PyTorch and are traced as they are.


@torch.library.custom_op("stpred::spectral_conv_triton", mutates_args=())
def _triton_op(
    x: torch.Tensor, weight: torch.Tensor, n_out: int, norm: str, precision: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 ``x [B, C_in, *grid]`` -> ``(y [B, C_out, *grid[:-1], n_out], xs [K, 2, B*C_in],
    wp [K, 2, C_in, C_out])``."""
    from stpred.kernels.spectral_conv import triton as tr

    modes, _ = check_modes(x, weight, n_out, norm, spatial_dims=x.dim() - 2)
    b, grid, c_out = x.shape[0], tuple(x.shape[2:]), weight.shape[1]
    bases = tr._bases(grid, modes, n_out, norm, x.device)
    xs = tr.analysis(x, *bases["fwd"], precision)
    wp = tr.packed_weight(weight).clone()  # the packing cache's tensor must not escape as a graph output
    ys = tr.mix(xs, wp, b, precision)
    y = tr.synthesis(ys, *bases["inv"], (b, c_out, *grid[:-1], n_out), precision)
    return y, xs, wp


@_triton_op.register_fake
def _triton_op_fake(x, weight, n_out, norm, precision):
    (b, c_in), (_, c_out) = x.shape[:2], weight.shape[:2]
    k = 1
    for m in weight.shape[2:-1]:
        k *= m
    y = x.new_empty((b, c_out, *x.shape[2:-1], n_out))
    return y, x.new_empty((k, 2, b * c_in)), x.new_empty((k, 2, c_in, c_out))


@torch.library.custom_op("stpred::spectral_conv_triton_backward", mutates_args=())
def _triton_backward_op(
    gy: torch.Tensor,
    xs: torch.Tensor,
    wp: torch.Tensor,
    x_shape: list[int],
    weight_shape: list[int],
    norm: str,
    precision: str,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dx [x_shape], dweight [weight_shape])``; an empty tensor for a gradient that is not needed."""
    from stpred.kernels.spectral_conv import triton as tr

    b, c_in, grid = x_shape[0], x_shape[1], tuple(x_shape[2:])
    modes = tuple(w // 2 for w in weight_shape[2:-2]) + (weight_shape[-2],)
    bases = tr._bases(grid, modes, gy.shape[-1], norm, gy.device)
    gys = tr.analysis(gy.contiguous(), *bases["inv_adj"], precision)
    gxs, gwp = tr.mix_backward(gys, xs, wp, b, need_x, need_w, precision)
    gx = tr.synthesis(gxs, *bases["fwd_adj"], (b, c_in, *grid), precision) if need_x else gy.new_empty(0)
    gw = gy.new_empty(0)
    if need_w:
        gw = gwp.permute(2, 3, 0, 1).reshape(*weight_shape[:2], wp.shape[0], 2).reshape(weight_shape).contiguous()
    return gx, gw


@_triton_backward_op.register_fake
def _triton_backward_op_fake(gy, xs, wp, x_shape, weight_shape, norm, precision, need_x, need_w):
    gx = gy.new_empty(x_shape) if need_x else gy.new_empty(0)
    return gx, gy.new_empty(weight_shape) if need_w else gy.new_empty(0)


def _triton_op_setup_context(ctx, inputs, output) -> None:
    x, weight, _, norm, precision = inputs
    ctx.save_for_backward(output[1], output[2])
    ctx.meta = (list(x.shape), list(weight.shape), norm, precision)


def _triton_op_backward(ctx, gy, _gxs, _gwp):
    xs, wp = ctx.saved_tensors
    x_shape, weight_shape, norm, precision = ctx.meta
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx, gw = _triton_backward_op(gy, xs, wp, x_shape, weight_shape, norm, precision, need_x, need_w)
    return gx if need_x else None, gw if need_w else None, None, None, None


_triton_op.register_autograd(_triton_op_backward, setup_context=_triton_op_setup_context)


def _triton_compiled(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, precision: str
) -> torch.Tensor:
    """The checks of the eager Triton entry points, then the custom op (``y`` only)."""
    modes, n_out = check_modes(x, weight, out_last, norm, spatial_dims=x.dim() - 2)
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        raise ValueError(f"the Triton spectral conv takes float32 (got x {x.dtype}, weight {weight.dtype})")
    if modes[-1] > 64:
        raise ValueError(f"the Triton spectral conv keeps at most 64 modes on the last axis, got {modes[-1]}")
    return _triton_op(x, weight, n_out, norm, precision)[0]


def _call(
    dims: int, x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, impl: str, precision: str | None
) -> torch.Tensor:
    path = select_impl(impl, x, weight, out_last, norm)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    # Autocast would run the transform GEMMs in bf16/fp16; the math stays float32 and the result is cast back.
    with torch.autocast(device_type=x.device.type, enabled=False):
        xs, ws = x.to(dtype), weight.to(dtype)
        if path == "triton":
            from stpred.kernels.spectral_conv.triton import spectral_conv2d_triton, spectral_conv3d_triton

            fn = spectral_conv2d_triton if dims == 2 else spectral_conv3d_triton
            prec = precision or default_precision(x)
            if torch.compiler.is_compiling():
                y = _triton_compiled(xs, ws, out_last, norm, prec)
            else:
                y = fn(xs, ws, out_last, norm, precision=prec)
        else:
            table = {
                ("rfft", 2): spectral_conv2d_reference,
                ("rfft", 3): spectral_conv3d_reference,
                ("matmul", 2): spectral_conv2d_matmul,
                ("matmul", 3): spectral_conv3d_matmul,
            }
            y = table[(path, dims)](xs, ws, out_last, norm)
    return y.to(x.dtype)


def spectral_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    impl: str = "auto",
    precision: str | None = None,
) -> torch.Tensor:
    """FNO-2D spectral convolution: rfft2, per-mode complex channel mixing on the kept modes, irfft2.

    Kept modes: rows ``0..m1-1`` and ``N1-m1..N1-1`` of the first axis, ``0..m2-1`` of the half spectrum.

    Args:
        x: real ``[B, C_in, N1, N2]``.
        weight: ``[C_in, C_out, 2*m1, m2, 2]`` real pairs (row ``j < m1``: frequency j; ``j >= m1``: ``j - 2*m1``).
            Needs ``m1 <= N1/2`` and ``m2 <= N2//2+1`` (and ``<= out_last//2+1``).
        out_last: output length of the last axis (``irfft2(s=(N1, out_last))``), default ``N2``.
        norm: ``"backward" | "forward" | "ortho"`` as in ``torch.fft``.
        impl: ``"auto" | "triton" | "torch" | "rfft" | "matmul"`` (module docstring).
        precision: Triton ``tl.dot`` operands, ``"ieee" | "tf32" | "tf32x3" | "bf16"``; default tf32 on CUDA,
            bf16 for bf16 input or under bf16 autocast (the layers), ieee in the interpreter.

    Returns:
        ``[B, C_out, N1, out_last]`` in ``x``'s dtype.

    Examples:
        >>> import torch
        >>> from stpred.kernels.spectral_conv import spectral_conv2d
        >>> x = torch.randn(2, 3, 32, 30)
        >>> w = torch.rand(3, 5, 2 * 8, 8, 2) / 15
        >>> spectral_conv2d(x, w).shape
        torch.Size([2, 5, 32, 30])
        >>> ref = spectral_conv2d(x, w, impl="rfft")
        >>> bool(torch.allclose(spectral_conv2d(x, w, impl="matmul"), ref, atol=1e-5))
        True
    """
    return _call(2, x, weight, out_last, norm, impl, precision)


def spectral_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_last: int | None = None,
    norm: str = "backward",
    impl: str = "auto",
    precision: str | None = None,
) -> torch.Tensor:
    """Space-time (x, y, t) spectral convolution of FNO-3D and SFNO, optionally resampling t.

    Kept modes: the four (±x, ±y) corner blocks and ``0..mt-1`` of the t half spectrum.

    Args:
        x: real ``[B, C_in, NX, NY, NT]`` (t last).
        weight: ``[C_in, C_out, 2*mx, 2*my, mt, 2]`` real pairs. Needs ``mx <= NX/2``, ``my <= NY/2``,
            ``mt <= NT//2+1`` and ``mt <= out_last//2+1``.
        out_last: output length of t (SFNO's ``SpectralConvT``: ``irfftn(s=(NX, NY, out_last))``), default ``NT``.
        norm: ``"backward" | "forward" | "ortho"``.
        impl: ``"auto" | "triton" | "torch" | "rfft" | "matmul"``.
        precision: as in :func:`spectral_conv2d`.

    Returns:
        ``[B, C_out, NX, NY, out_last]`` in ``x``'s dtype.

    Examples:
        >>> import torch
        >>> from stpred.kernels.spectral_conv import spectral_conv3d
        >>> x = torch.randn(1, 4, 16, 16, 10)
        >>> w = torch.rand(4, 4, 2 * 4, 2 * 4, 5, 2) / 16
        >>> spectral_conv3d(x, w, out_last=20).shape
        torch.Size([1, 4, 16, 16, 20])
    """
    return _call(3, x, weight, out_last, norm, impl, precision)
