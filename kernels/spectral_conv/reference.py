"""PyTorch rfft reference for the truncated spectral convolution (docs/kernels.md §2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stpred.errors import UserError

__all__ = ["spectral_conv2d_reference", "spectral_conv3d_reference", "check_modes"]

NORMS = ("backward", "forward", "ortho")


def check_modes(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None, norm: str, *, spatial_dims: int, name: str = ""
) -> tuple[tuple[int, ...], int]:
    """Validate shapes and modes against the grid; return ``(modes, out_last)``.

    ``modes`` is ``(m1, m2)`` in 2-D and ``(mx, my, mt)`` in 3-D. Two-sided axes need ``m <= N / 2`` (otherwise
    the ± blocks overlap and double-count); the half-spectrum axis needs ``m <= N // 2 + 1`` for both the input
    length and the output length.
    """
    name = name or f"spectral_conv{spatial_dims}d"
    if x.dim() != spatial_dims + 2:
        raise UserError(f"{name}: x must be [B, C_in, {spatial_dims} spatial dims], got shape {tuple(x.shape)}")
    if weight.dim() != spatial_dims + 3 or weight.shape[-1] != 2:
        raise UserError(f"{name}: weight must be [C_in, C_out, *modes, 2] real pairs, got {tuple(weight.shape)}")
    if weight.shape[0] != x.shape[1]:
        raise UserError(f"{name}: x has {x.shape[1]} channels but the weight expects C_in={weight.shape[0]}")
    if norm not in NORMS:
        raise UserError(f"{name}: norm must be one of {NORMS}, got '{norm}'")
    grid = tuple(x.shape[2:])
    n_out = grid[-1] if out_last is None else int(out_last)
    if n_out < 1:
        raise UserError(f"{name}: out_last must be positive, got {out_last}")
    wmodes = tuple(weight.shape[2:-1])
    modes = tuple(w // 2 for w in wmodes[:-1]) + (wmodes[-1],)
    for axis, (m, w, n) in enumerate(zip(modes[:-1], wmodes[:-1], grid[:-1])):
        if w % 2 or 2 * m > n:
            raise UserError(
                f"{name}: axis {axis} keeps 2*{m} modes (weight rows {w}) but the grid has only {n} points; "
                f"use modes <= {n // 2} or a finer grid"
            )
    m_last = modes[-1]
    for label, n in (("input", grid[-1]), ("output", n_out)):
        if m_last > n // 2 + 1:
            raise UserError(
                f"{name}: the last axis keeps {m_last} modes but the {label} length {n} has only {n // 2 + 1}; "
                f"use modes <= {n // 2 + 1} or a longer {label}"
            )
    return modes, n_out


# The spectra are cut and re-assembled as real (re, im) pairs, out of place: the values are the same as complex
# slicing, but autograd's sums of the slice gradients then stay real. Inductor lowers a complex add by viewing it as
# float, which fails on the strided slice gradients ("self.stride(-1) must be 1 to view ComplexFloat as Float").


def _two_sided(xr: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    """Rows ``0..m-1`` and ``N-m..N-1`` of axis ``dim`` of real pairs ``[..., 2]``, in that order (``2m`` rows)."""
    n = xr.shape[dim]
    return torch.cat([xr.narrow(dim, 0, m), xr.narrow(dim, n - m, m)], dim=dim)


def _place_two_sided(yr: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Inverse of :func:`_two_sided`: the ``2m`` rows of axis ``dim`` at ``0..m-1`` and ``N-m..N-1``, zeros between."""
    m = yr.shape[dim] // 2
    gap = list(yr.shape)
    gap[dim] = n - 2 * m
    return torch.cat([yr.narrow(dim, 0, m), yr.new_zeros(gap), yr.narrow(dim, m, m)], dim=dim)


def _pad_last(yr: torch.Tensor, n_half: int) -> torch.Tensor:
    """Zero-pad the half-spectrum axis (the one before the pair axis) of ``[..., m, 2]`` to ``n_half``."""
    return F.pad(yr, (0, 0, 0, n_half - yr.shape[-2]))


def spectral_conv2d_reference(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None = None, norm: str = "backward"
) -> torch.Tensor:
    """FNO spectral convolution through ``torch.fft``.

    Args:
        x: real input ``[B, C_in, N1, N2]``.
        weight: ``[C_in, C_out, 2*m1, m2, 2]`` real pairs; row ``j < m1`` is frequency ``j``, row ``j >= m1`` is
            frequency ``j - 2*m1`` (the negative block, the original ``W2``).
        out_last: output length of the last axis (default ``N2``): ``irfft2(..., s=(N1, out_last))`` as SFNO does.
        norm: ``"backward" | "forward" | "ortho"`` as in ``torch.fft``.

    Returns:
        ``[B, C_out, N1, out_last]``.
    """
    (m1, m2), n_out = check_modes(x, weight, out_last, norm, spatial_dims=2)
    n1 = x.shape[2]
    w = torch.view_as_complex(weight.contiguous())
    xf = torch.view_as_real(torch.fft.rfft2(x, norm=norm))  # [B, C_in, N1, N2 // 2 + 1, 2]
    kept = torch.view_as_complex(_two_sided(xf[:, :, :, :m2], m1, dim=2))
    mixed = torch.view_as_real(torch.einsum("bixy,ioxy->boxy", kept, w))  # [B, C_out, 2*m1, m2, 2]
    out_ft = _pad_last(_place_two_sided(mixed, n1, dim=2), n_out // 2 + 1)
    return torch.fft.irfft2(torch.view_as_complex(out_ft), s=(n1, n_out), norm=norm)


def spectral_conv3d_reference(
    x: torch.Tensor, weight: torch.Tensor, out_last: int | None = None, norm: str = "backward"
) -> torch.Tensor:
    """Space-time spectral convolution over (x, y, t) through ``torch.fft``.

    Args:
        x: real input ``[B, C_in, NX, NY, NT]`` (t last: the half-spectrum axis).
        weight: ``[C_in, C_out, 2*mx, 2*my, mt, 2]`` real pairs; the four (±x, ±y) corners in one tensor,
            rows ``< m`` positive frequencies, rows ``>= m`` the negative block.
        out_last: output length of the t axis (SFNO's ``SpectralConvT`` resamples time), default ``NT``.
        norm: ``"backward" | "forward" | "ortho"``.

    Returns:
        ``[B, C_out, NX, NY, out_last]``.
    """
    (mx, my, mt), n_out = check_modes(x, weight, out_last, norm, spatial_dims=3)
    nx, ny = x.shape[2], x.shape[3]
    w = torch.view_as_complex(weight.contiguous())
    xf = torch.view_as_real(torch.fft.rfftn(x, dim=(-3, -2, -1), norm=norm))  # [B, C_in, NX, NY, NT // 2 + 1, 2]
    kept = torch.view_as_complex(_two_sided(_two_sided(xf[:, :, :, :, :mt], mx, dim=2), my, dim=3))
    mixed = torch.view_as_real(torch.einsum("bixyt,ioxyt->boxyt", kept, w))  # [B, C_out, 2*mx, 2*my, mt, 2]
    placed = _place_two_sided(_place_two_sided(mixed, nx, dim=2), ny, dim=3)
    out_ft = _pad_last(placed, n_out // 2 + 1)
    return torch.fft.irfftn(torch.view_as_complex(out_ft), s=(nx, ny, n_out), dim=(-3, -2, -1), norm=norm)
