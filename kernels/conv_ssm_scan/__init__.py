"""Complex diagonal conv-SSM scan (ConvS5's time recurrence), with dispatch between Triton and PyTorch.

``x_t = Λ̄_p·x_{t-1} + Bu_t`` for every stream (b, p, h, w), ``x_{-1} = x0`` (or 0). Two public layouts:

- complex: ``bu [B, L, P, H, W]`` complex, ``lam_bar [P]`` complex (:func:`conv_ssm_scan`);
- planar real: ``bu [B, L, 2, P, H, W]`` (plane 0 = Re, plane 1 = Im), ``lam_bar [P, 2]``
  (:func:`conv_ssm_scan_planar`). This is what ConvSSM uses: its B conv writes ``[Re; Im]`` as 2P channels
  and its C conv reads ``[x_re; x_im]``, so no complex/real copies are made.

``impl="auto"`` runs Triton when every tensor is on CUDA and Triton is importable, the fast PyTorch path
otherwise (see :func:`stpred.kernels.resolve_impl`); ``"torch"`` and ``"triton"`` force one. The sequential
reference lives in :mod:`stpred.kernels.conv_ssm_scan.reference`. The math is in this folder's README.md.
"""

from __future__ import annotations

import torch

from stpred.kernels._dispatch import resolve_impl

__all__ = [
    "IMPLS",
    "conv_ssm_scan",
    "conv_ssm_scan_planar",
    "conv_ssm_step",
    "conv_ssm_step_planar",
    "conv_ssm_scan_planar_torch",
]

#: The ``impl`` values every scan entry point accepts (``"auto"`` dispatches, the others force one path).
IMPLS = ("auto", "triton", "torch")


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_planar(lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None) -> None:
    if bu.dim() != 6 or bu.shape[2] != 2:
        raise ValueError(f"bu must be [B, L, 2, P, H, W], got {tuple(bu.shape)}")
    b, length, _, p, h, w = bu.shape
    if length < 1:
        raise ValueError("bu must have at least one time step")
    if lam_bar.shape != (p, 2):
        raise ValueError(f"lam_bar must be [P, 2] = [{p}, 2], got {tuple(lam_bar.shape)}")
    if x0 is not None and x0.shape != (b, 2, p, h, w):
        raise ValueError(f"x0 must be [B, 2, P, H, W] = {(b, 2, p, h, w)}, got {tuple(x0.shape)}")


# ---------------------------------------------------------------------------------------------------------------
# Fast PyTorch path: the recurrence itself, fused into in-place addcmul steps on preallocated outputs.
# ---------------------------------------------------------------------------------------------------------------


def _gate(lam_bar: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(Re Λ̄, Im Λ̄) shaped ``[P, 1, 1]`` to broadcast over ``[..., P, H, W]``."""
    return lam_bar[:, 0].to(dtype).view(-1, 1, 1), lam_bar[:, 1].to(dtype).view(-1, 1, 1)


def _mul_gate_into(
    out: torch.Tensor, base: torch.Tensor | None, ar: torch.Tensor, ai: torch.Tensor, prev: torch.Tensor, conj: bool
) -> None:
    """``out = base + a·prev`` (``conj(a)·prev`` if ``conj``) on ``[B, 2, P, H, W]`` planes, in three fused ops."""
    if base is None:
        torch.mul(prev, ar, out=out)
    else:
        torch.addcmul(base, ar, prev, out=out)
    sign = 1.0 if conj else -1.0
    out[:, 0].addcmul_(ai, prev[:, 1], value=sign)
    out[:, 1].addcmul_(ai, prev[:, 0], value=-sign)


def _scan_fwd_torch(
    ar: torch.Tensor, ai: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Forward scan into ``out`` (a new tensor if ``None``; ``out`` may be ``bu`` itself: every op reads and writes
    the same time slice elementwise, and slice t is read before it is overwritten)."""
    xs = torch.empty(bu.shape, dtype=ar.dtype, device=bu.device) if out is None else out
    prev = x0
    for t in range(bu.shape[1]):
        out = xs[:, t]
        if prev is None:
            if out.data_ptr() != bu[:, t].data_ptr():
                out.copy_(bu[:, t])
        else:
            _mul_gate_into(out, bu[:, t], ar, ai, prev, conj=False)
        prev = out
    return xs


def _scan_bwd_torch(
    ar: torch.Tensor,
    ai: torch.Tensor,
    g: torch.Tensor,
    g_last: torch.Tensor | None,
    xs: torch.Tensor,
    x0: torch.Tensor | None,
    into_g: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Reverse scan with conj(a); the dΛ̄ products are accumulated per step while the planes are in cache.

    With ``into_g`` dBu overwrites ``g`` (same elementwise argument as the forward: step t reads ``g[:, t]`` and
    the already final ``dbu[:, t + 1]`` and writes ``g[:, t]``).
    """
    b, length, _, p, h, w = g.shape
    dbu = g if into_g else torch.empty(g.shape, dtype=ar.dtype, device=g.device)
    acc_re = torch.zeros((b, 2, p, h, w), dtype=ar.dtype, device=g.device)  # g_r x_r and g_i x_i
    acc_im = torch.zeros((b, p, h, w), dtype=ar.dtype, device=g.device)  # g_i x_r - g_r x_i
    for t in reversed(range(length)):
        out = dbu[:, t]
        if t < length - 1:
            _mul_gate_into(out, g[:, t], ar, ai, dbu[:, t + 1], conj=True)
        elif g_last is not None:
            torch.add(g[:, t], g_last, out=out)
        elif not into_g:
            out.copy_(g[:, t])
        x_prev = xs[:, t - 1] if t > 0 else x0
        if x_prev is not None:
            acc_re.addcmul_(out, x_prev)
            acc_im.addcmul_(out[:, 1], x_prev[:, 0])
            acc_im.addcmul_(out[:, 0], x_prev[:, 1], value=-1.0)
    da = torch.stack([acc_re.sum(dim=(0, 1, 3, 4)), acc_im.sum(dim=(0, 2, 3))], dim=1)
    dx0 = None
    if x0 is not None:
        dx0 = torch.empty(x0.shape, dtype=ar.dtype, device=g.device)
        _mul_gate_into(dx0, None, ar, ai, dbu[:, 0], conj=True)
    return dbu, da, dx0


class _ConvSSMScanTorch(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        lam_bar: torch.Tensor,
        bu: torch.Tensor,
        x0: torch.Tensor | None,
        shape: torch.Size,
        inplace: bool,
        use_triton: bool = False,
    ):
        # ``bu`` may be the flat base of the [B, L, 2, P, H, W] view (see _inplace_target); ``shape`` restores it.
        # ``use_triton`` (in place only) runs the same steps with the Triton launchers, on the same buffers.
        dtype = _state_dtype(bu.dtype)
        bu6 = bu.view(shape)
        inplace = inplace and bu.dtype == dtype
        ctx.use_triton = use_triton and inplace
        if ctx.use_triton:
            from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_fwd

            xs, x_last = conv_ssm_scan_fwd(lam_bar, bu6, x0, out=bu6)
        else:
            ar, ai = _gate(lam_bar, dtype)
            x0_s = None if x0 is None else x0.to(dtype)
            xs = _scan_fwd_torch(ar, ai, bu6.to(dtype), x0_s, out=bu6 if inplace else None)
            x_last = xs[:, -1].clone()
        # xs is saved in the state dtype; for float32 inputs it is the returned tensor itself (no copy), and in
        # place it is the dirty input, saved as such (not as the view made here) so its version is tracked.
        ctx.save_for_backward(lam_bar, bu if inplace else xs, x0)
        ctx.bu_dtype = bu.dtype
        ctx.bu_shape, ctx.shape = bu.shape, shape
        ctx.reuse_grad = inplace
        ctx.set_materialize_grads(False)
        if inplace:
            ctx.mark_dirty(bu)
            return bu, x_last
        return xs.to(bu.dtype), x_last

    @staticmethod
    def backward(ctx, g_xs: torch.Tensor | None, g_last: torch.Tensor | None):
        lam_bar, xs, x0 = ctx.saved_tensors
        xs = xs.view(ctx.shape)
        dtype = xs.dtype
        into_g = ctx.reuse_grad and _owned_grad(g_xs, dtype)
        g = torch.zeros_like(xs) if g_xs is None else g_xs.to(dtype).view(xs.shape)
        if ctx.use_triton:
            from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_bwd

            dbu, da, dx0 = conv_ssm_scan_bwd(lam_bar, g, g_last, xs, x0, into_g=into_g)
            return da, dbu.view(ctx.bu_shape), dx0, None, None, None
        ar, ai = _gate(lam_bar, dtype)
        g_last = None if g_last is None else g_last.to(dtype)
        dbu, da, dx0 = _scan_bwd_torch(ar, ai, g, g_last, xs, None if x0 is None else x0.to(dtype), into_g=into_g)
        dbu = dbu.to(ctx.bu_dtype).view(ctx.bu_shape)
        return da.to(lam_bar.dtype), dbu, None if dx0 is None else dx0.to(x0.dtype), None, None, None


def _owned_grad(g: torch.Tensor | None, dtype: torch.dtype) -> bool:
    """Whether dBu may be written into the incoming gradient of xs (the caller of ``inplace=True`` vouches that no
    one else reads it; this rules out what the contract cannot: broadcast or strided grads, a dtype change, and
    double backward, which would record the in-place writes)."""
    return g is not None and g.dtype == dtype and g.is_contiguous() and not torch.is_grad_enabled()


def _inplace_target(bu: torch.Tensor) -> torch.Tensor | None:
    """The tensor to overwrite for an in-place scan of ``bu``, or ``None`` when the scan must allocate.

    A view marked dirty in an autograd.Function is rebased onto its base through CopySlices, whose backward copies
    the whole gradient twice; so when ``bu`` is a contiguous view of its entire base (ConvSSM's reshaped B-conv
    output) the base itself is overwritten, and the returned xs is a fresh view of it.
    """
    if bu.dtype != _state_dtype(bu.dtype) or not bu.is_contiguous():
        return None
    target = bu if bu._base is None else bu._base
    if target is not bu and not (target.is_contiguous() and target.numel() == bu.numel()):
        return None
    # Autograd forbids overwriting a leaf that requires grad; such a bu is the caller's, so it is kept.
    return None if target.is_leaf and target.requires_grad else target


def _scan_torch(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None, inplace: bool, use_triton: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    target = _inplace_target(bu) if inplace else None
    if target is None:
        if use_triton:
            from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_planar_triton

            return conv_ssm_scan_planar_triton(lam_bar, bu, x0)
        return _ConvSSMScanTorch.apply(lam_bar, bu, x0, bu.shape, False)
    xs, x_last = _ConvSSMScanTorch.apply(lam_bar, target, x0, bu.shape, True, use_triton)
    return xs.view(bu.shape), x_last


def conv_ssm_scan_planar_torch(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None = None, *, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast PyTorch path of :func:`conv_ssm_scan_planar` (same arguments, no dispatch)."""
    _check_planar(lam_bar, bu, x0)
    if torch.compiler.is_compiling():
        return _scan_compiled(lam_bar, bu, x0, use_triton=False)
    return _scan_torch(lam_bar, bu, x0, inplace)


# ---------------------------------------------------------------------------------------------------------------
# Under torch.compile: the scan as one opaque custom op (out of place), so Dynamo neither traces the per-step loop
# nor meets the in-place aliasing above, and Inductor calls it as an extern kernel.
# ---------------------------------------------------------------------------------------------------------------


def _compiled_xs_dtype(bu_dtype: torch.dtype, use_triton: bool) -> torch.dtype:
    # The Triton launcher stores xs in bu's dtype (as its eager autograd function saves it); the PyTorch path keeps
    # the states in the state dtype, so dΛ̄ is accumulated from float32 states for bf16 inputs as in eager.
    return bu_dtype if use_triton else _state_dtype(bu_dtype)


@torch.library.custom_op("stpred::conv_ssm_scan_planar", mutates_args=())
def _scan_op(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None, use_triton: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xs [B, L, 2, P, H, W], x_last [B, 2, P, H, W])``; xs in :func:`_compiled_xs_dtype`, new storage."""
    if use_triton:
        from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_fwd

        return conv_ssm_scan_fwd(lam_bar, bu, x0)
    dtype = _state_dtype(bu.dtype)
    ar, ai = _gate(lam_bar, dtype)
    xs = _scan_fwd_torch(ar, ai, bu.to(dtype), None if x0 is None else x0.to(dtype))
    return xs, xs[:, -1].clone()


@_scan_op.register_fake
def _scan_op_fake(lam_bar, bu, x0, use_triton):
    b, _, _, p, h, w = bu.shape
    xs = bu.new_empty(bu.shape, dtype=_compiled_xs_dtype(bu.dtype, use_triton))
    return xs, bu.new_empty((b, 2, p, h, w), dtype=_state_dtype(bu.dtype))


@torch.library.custom_op("stpred::conv_ssm_scan_planar_backward", mutates_args=())
def _scan_backward_op(
    lam_bar: torch.Tensor,
    g: torch.Tensor,
    g_last: torch.Tensor | None,
    xs: torch.Tensor,
    x0: torch.Tensor | None,
    use_triton: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dbu [B, L, 2, P, H, W] in xs's dtype, dlam_bar [P, 2], dx0 [B, 2, P, H, W] or an empty tensor)``."""
    g = g.to(xs.dtype)
    if use_triton:
        from stpred.kernels.conv_ssm_scan.triton import conv_ssm_scan_bwd

        dbu, da, dx0 = conv_ssm_scan_bwd(lam_bar, g, g_last, xs, x0)
    else:
        dtype = xs.dtype
        ar, ai = _gate(lam_bar, dtype)
        g_last = None if g_last is None else g_last.to(dtype)
        dbu, da, dx0 = _scan_bwd_torch(ar, ai, g, g_last, xs, None if x0 is None else x0.to(dtype))
    dx0 = xs.new_empty(0) if dx0 is None else dx0.to(x0.dtype).contiguous()
    return dbu.contiguous(), da.to(lam_bar.dtype).contiguous(), dx0


@_scan_backward_op.register_fake
def _scan_backward_op_fake(lam_bar, g, g_last, xs, x0, use_triton):
    dx0 = xs.new_empty(0) if x0 is None else torch.empty_like(x0, memory_format=torch.contiguous_format)
    return xs.new_empty(xs.shape), lam_bar.new_empty(lam_bar.shape), dx0


def _scan_op_setup_context(ctx, inputs, output) -> None:
    lam_bar, _, x0, use_triton = inputs
    ctx.save_for_backward(lam_bar, output[0], x0)
    ctx.use_triton = use_triton


def _scan_op_backward(ctx, g_xs: torch.Tensor | None, g_last: torch.Tensor | None):
    lam_bar, xs, x0 = ctx.saved_tensors
    g = torch.zeros_like(xs) if g_xs is None else g_xs
    dbu, da, dx0 = _scan_backward_op(lam_bar, g, g_last, xs, x0, ctx.use_triton)
    return da, dbu, None if x0 is None else dx0, None


_scan_op.register_autograd(_scan_op_backward, setup_context=_scan_op_setup_context)


def _scan_compiled(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None, use_triton: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, x_last = _scan_op(lam_bar, bu, x0, use_triton)
    return xs.to(bu.dtype), x_last


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def conv_ssm_scan_planar(
    lam_bar: torch.Tensor,
    bu: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    impl: str = "auto",
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan ``x_t = Λ̄_p·x_{t-1} + Bu_t`` on the planar real layout.

    Args:
        lam_bar: real ``[P, 2]``: (Re Λ̄, Im Λ̄) per state channel.
        bu: real ``[B, L, 2, P, H, W]``: plane 0 is Re Bu, plane 1 is Im Bu (float32; bf16/fp16 accepted, the
            state and accumulation stay float32; float64 runs on the PyTorch path in float64).
        x0: real ``[B, 2, P, H, W]`` initial state ``x_{-1}``, or ``None`` for zeros.
        impl: ``"auto" | "triton" | "torch"``.
        inplace: consume ``bu`` and the incoming gradient of ``xs`` (on both paths). The states are written into
            ``bu``'s storage (xs shares it; ``bu`` must not be read afterwards), and the backward writes dBu into
            the gradient of ``xs`` when it is a contiguous tensor of the state dtype. Only for a temporary ``bu``
            and an ``xs`` whose single consumer allocates its gradient (ConvSSM: the B-conv output in, the C conv
            out); never pass your own ``grad_outputs`` for such an ``xs``. Results are bitwise those of
            ``inplace=False`` on the same path; a bf16/fp16 or non-contiguous ``bu``, or a leaf that requires
            grad, is scanned out of place. Under ``torch.compile`` the scan is one opaque custom op
            (``stpred::conv_ssm_scan_planar``, with its backward op) and always runs out of place.

    Returns:
        ``(xs, x_last)``: ``xs [B, L, 2, P, H, W]`` in ``bu``'s dtype and ``x_last [B, 2, P, H, W]`` in the
        state dtype (float32, or float64). Both are differentiable w.r.t. ``lam_bar``, ``bu`` and ``x0``.

    Examples:
        >>> lam_bar = torch.tensor([[0.5, 0.5]])
        >>> bu = torch.zeros(1, 3, 2, 1, 1, 1)
        >>> bu[:, :, 0] = 1.0
        >>> xs, x_last = conv_ssm_scan_planar(lam_bar, bu, impl="torch")
        >>> xs[0, :, :, 0, 0, 0]
        tensor([[1.0000, 0.0000],
                [1.5000, 0.5000],
                [1.5000, 1.0000]])
        >>> x_last[0, :, 0, 0, 0]
        tensor([1.5000, 1.0000])
    """
    _check_planar(lam_bar, bu, x0)
    tensors = (lam_bar, bu) if x0 is None else (lam_bar, bu, x0)
    chosen = resolve_impl(impl, *tensors)
    if chosen == "triton" and bu.dtype == torch.float64:
        if impl == "triton":
            raise ValueError("the Triton scan computes in float32; use impl='torch' for float64 inputs")
        chosen = "torch"
    if torch.compiler.is_compiling():
        return _scan_compiled(lam_bar, bu, x0, use_triton=chosen == "triton")
    return _scan_torch(lam_bar, bu, x0, inplace, use_triton=chosen == "triton")


def _to_planar(z: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack([z.real, z.imag], dim=dim)


def _from_planar(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.complex(x.select(dim, 0), x.select(dim, 1))


def conv_ssm_scan(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None = None, *, impl: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex-tensor form of :func:`conv_ssm_scan_planar` (a thin wrapper that converts to the planar layout).

    Args:
        lam_bar: complex ``[P]``, Λ̄.
        bu: complex ``[B, L, P, H, W]``.
        x0: complex ``[B, P, H, W]`` or ``None`` for zeros.
        impl: ``"auto" | "triton" | "torch"``.

    Returns:
        ``(xs [B, L, P, H, W], x_last [B, P, H, W])``, complex, differentiable (PyTorch's conjugate convention).

    Examples:
        >>> lam_bar = torch.tensor([0.5 + 0.5j])
        >>> bu = torch.ones(1, 3, 1, 1, 1, dtype=torch.complex64)
        >>> xs, x_last = conv_ssm_scan(lam_bar, bu, impl="torch")
        >>> xs.flatten()
        tensor([1.0000+0.0000j, 1.5000+0.5000j, 1.5000+1.0000j])
    """
    if not (lam_bar.is_complex() and bu.is_complex() and (x0 is None or x0.is_complex())):
        raise ValueError("conv_ssm_scan takes complex tensors; use conv_ssm_scan_planar for the real layout")
    if bu.dim() != 5:
        raise ValueError(f"bu must be [B, L, P, H, W], got {tuple(bu.shape)}")
    x0_p = None if x0 is None else _to_planar(x0, 1)
    xs, x_last = conv_ssm_scan_planar(_to_planar(lam_bar, 1), _to_planar(bu, 2), x0_p, impl=impl)
    return _from_planar(xs, 2), _from_planar(x_last, 1)


def conv_ssm_step_planar(lam_bar: torch.Tensor, bu_t: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """One generation step ``x_new = Λ̄·x + Bu_t`` on the planar layout.

    Args:
        lam_bar: real ``[P, 2]``.
        bu_t: real ``[B, 2, P, H, W]``.
        x: real ``[B, 2, P, H, W]`` previous state, or ``None`` for zeros.

    Returns:
        ``x_new [B, 2, P, H, W]`` in the state dtype (float32, or float64).

    Examples:
        >>> lam_bar = torch.tensor([[0.5, 0.5]])
        >>> x = conv_ssm_step_planar(lam_bar, torch.ones(1, 2, 1, 1, 1), torch.ones(1, 2, 1, 1, 1))
        >>> x.flatten()
        tensor([1., 2.])
    """
    dtype = _state_dtype(bu_t.dtype)
    if x is None:
        return bu_t.to(dtype)
    ar, ai = _gate(lam_bar, dtype)
    x = x.to(dtype)
    re = bu_t[:, 0] + ar * x[:, 0] - ai * x[:, 1]
    im = bu_t[:, 1] + ar * x[:, 1] + ai * x[:, 0]
    return torch.stack([re, im], dim=1)


def conv_ssm_step(lam_bar: torch.Tensor, bu_t: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """One complex generation step ``x_new = Λ̄·x + Bu_t``.

    Args:
        lam_bar: complex ``[P]``.
        bu_t: complex ``[B, P, H, W]``.
        x: complex ``[B, P, H, W]`` or ``None`` for zeros.

    Returns:
        complex ``[B, P, H, W]``.

    Examples:
        >>> conv_ssm_step(torch.tensor([0.5j]), torch.ones(1, 1, 1, 1, dtype=torch.complex64),
        ...               torch.ones(1, 1, 1, 1, dtype=torch.complex64)).flatten()
        tensor([1.+0.5000j])
    """
    return bu_t if x is None else lam_bar[:, None, None] * x + bu_t
