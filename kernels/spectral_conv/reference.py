"""PyTorch rfft reference for the truncated spectral convolution (kernels.md §2)."""

from __future__ import annotations

import torch

__all__ = ["spectral_conv2d_reference", "spectral_conv3d_reference"]


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
    b, _, n1, n2 = x.shape
    c_out, two_m1, m2 = weight.shape[1], weight.shape[2], weight.shape[3]
    m1 = two_m1 // 2
    n_out = n2 if out_last is None else out_last
    w = torch.view_as_complex(weight.contiguous())
    xf = torch.fft.rfft2(x, norm=norm)
    kept = torch.cat([xf[:, :, :m1, :m2], xf[:, :, n1 - m1 :, :m2]], dim=2)
    mixed = torch.einsum("bixy,ioxy->boxy", kept, w)
    out_ft = torch.zeros(b, c_out, n1, n_out // 2 + 1, dtype=mixed.dtype, device=x.device)
    out_ft[:, :, :m1, :m2] = mixed[:, :, :m1]
    out_ft[:, :, n1 - m1 :, :m2] = mixed[:, :, m1:]
    return torch.fft.irfft2(out_ft, s=(n1, n_out), norm=norm)


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
    b, _, nx, ny, nt = x.shape
    c_out, two_mx, two_my, mt = weight.shape[1:5]
    mx, my = two_mx // 2, two_my // 2
    n_out = nt if out_last is None else out_last
    w = torch.view_as_complex(weight.contiguous())
    xf = torch.fft.rfftn(x, dim=(-3, -2, -1), norm=norm)
    rows = torch.cat([xf[:, :, :mx], xf[:, :, nx - mx :]], dim=2)
    kept = torch.cat([rows[:, :, :, :my, :mt], rows[:, :, :, ny - my :, :mt]], dim=3)
    mixed = torch.einsum("bixyt,ioxyt->boxyt", kept, w)
    out_ft = torch.zeros(b, c_out, nx, ny, n_out // 2 + 1, dtype=mixed.dtype, device=x.device)
    for sx, dx in ((slice(0, mx), slice(0, mx)), (slice(mx, 2 * mx), slice(nx - mx, nx))):
        for sy, dy in ((slice(0, my), slice(0, my)), (slice(my, 2 * my), slice(ny - my, ny))):
            out_ft[:, :, dx, dy, :mt] = mixed[:, :, sx, sy]
    return torch.fft.irfftn(out_ft, s=(nx, ny, n_out), dim=(-3, -2, -1), norm=norm)
