"""Sequential PyTorch reference for the complex diagonal conv-SSM scan (docs/kernels.md §1).

This is the plain loop over t, vectorised over the streams and differentiated by autograd. It is the ground
truth the fast PyTorch path and the Triton kernels are tested against, and the baseline their speed is
measured against. Positional signatures match the public functions in :mod:`stpred.kernels.conv_ssm_scan`
(which add a keyword-only ``impl``).
"""

from __future__ import annotations

import torch

__all__ = ["conv_ssm_scan_reference", "conv_ssm_scan_planar_reference"]


def conv_ssm_scan_reference(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex scan ``x_t = Λ̄_p·x_{t-1} + Bu_t`` as a loop over t.

    Args:
        lam_bar: complex ``[P]``, the discrete state multipliers Λ̄.
        bu: complex ``[B, L, P, H, W]``, the driven inputs.
        x0: complex ``[B, P, H, W]`` initial state ``x_{-1}``, or ``None`` for zeros.

    Returns:
        ``(xs, x_last)``: every state ``[B, L, P, H, W]`` and the last one ``[B, P, H, W]``.

    Examples:
        >>> lam_bar = torch.tensor([0.5 + 0.5j])
        >>> bu = torch.ones(1, 3, 1, 1, 1, dtype=torch.complex64)
        >>> xs, x_last = conv_ssm_scan_reference(lam_bar, bu)
        >>> xs.flatten()
        tensor([1.0000+0.0000j, 1.5000+0.5000j, 1.5000+1.0000j])
    """
    a = lam_bar[:, None, None]
    x = x0
    states = []
    # unbind (not bu[:, t]) so that autograd's backward stacks the L gradients once instead of
    # materialising a full-size zero tensor per step.
    for bu_t in bu.unbind(1):
        x = bu_t if x is None else a * x + bu_t
        states.append(x)
    return torch.stack(states, dim=1), x


def conv_ssm_scan_planar_reference(
    lam_bar: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan on the planar real layout, through :func:`conv_ssm_scan_reference`.

    Args:
        lam_bar: real ``[P, 2]`` (re, im) of Λ̄.
        bu: real ``[B, L, 2, P, H, W]``: plane 0 is Re Bu, plane 1 is Im Bu.
        x0: real ``[B, 2, P, H, W]`` or ``None``.

    Returns:
        ``(xs [B, L, 2, P, H, W], x_last [B, 2, P, H, W])``. ``xs`` has ``bu``'s dtype; ``x_last`` is the carried
        state, float32 (float64 for float64 inputs).

    Examples:
        >>> lam_bar = torch.tensor([[0.5, 0.5]])
        >>> bu = torch.zeros(1, 3, 2, 1, 1, 1)
        >>> bu[:, :, 0] = 1.0
        >>> xs, x_last = conv_ssm_scan_planar_reference(lam_bar, bu)
        >>> xs[0, :, :, 0, 0, 0]
        tensor([[1.0000, 0.0000],
                [1.5000, 0.5000],
                [1.5000, 1.0000]])
    """
    state_dtype = torch.promote_types(bu.dtype, torch.float32)
    a = torch.complex(lam_bar[:, 0].to(state_dtype), lam_bar[:, 1].to(state_dtype))
    z = torch.complex(bu[:, :, 0].to(state_dtype), bu[:, :, 1].to(state_dtype))
    z0 = None if x0 is None else torch.complex(x0[:, 0].to(state_dtype), x0[:, 1].to(state_dtype))
    xs, x_last = conv_ssm_scan_reference(a, z, z0)
    return torch.stack([xs.real, xs.imag], dim=2).to(bu.dtype), torch.stack([x_last.real, x_last.imag], dim=1)
