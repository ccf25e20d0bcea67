"""Spectral-Refiner fine-tuning of a trained SFNO against the Navier-Stokes residual (docs/models.md §7.4).

Cao et al., ICLR 2025, arXiv:2405.17211 (torch-cfd ``fno/finetune.py``, MIT); an independent reimplementation.
For one input batch, in float64:

1. the network is frozen and its latent trajectory (everything before the out-conv) is computed once;
2. the out-conv's ``SpectralConvT`` is replaced by an untruncated one (every spatial mode of the grid and every
   time mode both time lengths hold): the trained weights and bias go into the low modes, the new weight entries
   start Xavier-uniform with gain 1e-6 and the new bias entries at 0;
3. only that layer is trained, with Adam (lr 0.2 on the spectral bias, 1e-4 on the weights), to minimise the
   time-averaged dual norm ``||R||_{H^-1}`` (``alpha = 10^-1.5``) of the vorticity residual

       R = f - dw/dt - (u . grad) w + nu lap(w)

   evaluated on the predicted frames (physical units).

The spatial terms are spectral on the unit torus: the advection as in the data solver (formed in physical space,
2/3-dealiased; :func:`stpred.physics.residual.ns_residual`), the Laplacian exactly. **Time derivative (a documented
simplification):** the paper takes ``dw/dt`` from an IMEX Crank-Nicolson step with ``dt = 1e-6``; here it is the
finite-difference derivative along the frame axis at spacing ``frame_dt``, of order ``time_order`` (4 by default:
5-point stencils, centred in the interior and one-sided near the ends), with the input frames in front of the
prediction as context so the first predicted frames get centred stencils. It is exact for polynomials in t of
degree ``<= time_order``, so on coarse frame spacings the residual of the true solution is not zero but
``O(frame_dt^time_order)``; the fine-tuning then pulls the prediction towards a trajectory that satisfies the
discrete equation.

Examples:
    >>> model = SFNO(in_shape=(10, 1, 16, 16), out_frames=10, modes=4, modes_t=3, width=8, latent_steps=6)
    >>> pred, history = refine(model, torch.randn(1, 10, 1, 16, 16), viscosity=1e-3, frame_dt=1.0, n_iter=3)
    >>> pred.shape, pred.dtype, len(history)
    (torch.Size([1, 10, 1, 16, 16]), torch.float64, 4)
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

from stpred.errors import UserError
from stpred.losses import SobolevLoss
from stpred.models.sfno import SFNO
from stpred.physics.residual import ns_residual

__all__ = ["refine", "REFINE_ALPHA"]

#: The shift of the dual norm ``(alpha + 4 pi^2 |k|^2)^-1`` in the paper.
REFINE_ALPHA = 10**-1.5


def refine(
    model: SFNO,
    x: torch.Tensor,
    *,
    viscosity: float,
    frame_dt: float,
    n_iter: int = 50,
    lr_bias: float = 0.2,
    lr_weights: float = 1e-4,
    modes: tuple[int, int, int] | None = None,
    init_gain: float = 1e-6,
    forcing: Literal["fno"] | torch.Tensor | None = "fno",
    mean: float = 0.0,
    std: float = 1.0,
    alpha: float = REFINE_ALPHA,
    time_order: int = 4,
) -> tuple[torch.Tensor, list[float]]:
    """Fine-tune a copy of ``model``'s out-conv on ``x`` against the Navier-Stokes residual; float64 throughout.

    ``model`` itself is left untouched.

    Args:
        model: a trained :class:`~stpred.models.sfno.SFNO` on vorticity (C = 1, square grid).
        x: input frames ``[B, T_in, 1, S, S]`` in the model's (normalised) units.
        viscosity: ``nu`` of the flow.
        frame_dt: physical time between frames.
        n_iter: Adam iterations.
        lr_bias: learning rate of the spectral bias.
        lr_weights: learning rate of the spectral weights.
        modes: ``(mx, my, mt)`` of the refined layer; the untruncated maximum when ``None``.
        init_gain: Xavier gain of the new weight entries.
        forcing: forcing of the flow (see :func:`ns_residual`).
        mean: normalisation mean (physical = ``value * std + mean``).
        std: normalisation standard deviation.
        alpha: shift of the ``H^-1`` norm.
        time_order: accuracy order of the time derivative.

    Returns:
        ``(prediction, history)``: the refined prediction ``[B, T_out, 1, S, S]`` (float64, model units) and the
        batch-mean ``||R||_{H^-1}`` before the first step and after each of the ``n_iter`` steps.
    """
    if not isinstance(model, SFNO):
        raise UserError(f"refine needs an SFNO (registry name 'sfno'), got {type(model).__name__}")
    t_in, c, h, w = model.in_shape
    if c != 1 or x.ndim != 5 or x.shape[1:3] != (t_in, 1) or x.shape[-1] != x.shape[-2]:
        raise UserError(f"refine expects vorticity x [B, {t_in}, 1, S, S] on a square grid, got {tuple(x.shape)}")
    if n_iter < 0:
        raise UserError(f"refine: n_iter must be >= 0, got {n_iter}")
    net = copy.deepcopy(model).to(torch.float64).eval().requires_grad_(False)
    x64 = x.detach().to(device=next(net.parameters()).device, dtype=torch.float64)
    size = x64.shape[-1]
    with torch.no_grad():
        latent = net.encode(x64)
    head, groups = net.refinement_head(modes, grid=(size, size), init_gain=init_gain)
    optimizer = torch.optim.Adam(
        [{"params": groups["bias"], "lr": lr_bias}, {"params": groups["weight"], "lr": lr_weights}]
    )
    loss_fn = SobolevLoss(s=-1.0, alpha=alpha, time_average=True, time_dim=1)
    context = x64[:, :, 0] * std + mean

    def residual_norm() -> tuple[torch.Tensor, torch.Tensor]:
        pred = net.decode(latent, x64, head)
        res = ns_residual(
            pred[:, :, 0] * std + mean,
            viscosity=viscosity,
            frame_dt=frame_dt,
            forcing=forcing,
            context=context,
            time_order=time_order,
        )
        return pred, loss_fn(res)

    history: list[float] = []
    for _ in range(n_iter):
        optimizer.zero_grad(set_to_none=True)
        _, loss = residual_norm()
        history.append(loss.item())
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred, loss = residual_norm()
    history.append(loss.item())
    return pred, history
