"""Training losses: a registry by name (``loss=...`` in the configs), and spectral Sobolev norms of periodic fields.

**Registry.** :func:`create_loss` builds a registered loss by name, :func:`list_losses` lists them and
:func:`register_loss` adds one. Each loss serves one task kind: ``"forecast"`` (``pred``, ``target``
``[B, T, C, H, W]``) or ``"classify"`` (logits ``[B, K]``, labels ``[B]``); forecast losses say whether they take
normalised or physical (de-normalised) values.

**Masks.** Every forecast loss takes an optional keyword ``valid``: a bool tensor broadcastable to ``pred``
(``[B, T, C, H, W]``; True = observed). Masked entries of ``pred`` and ``target`` may hold anything, NaN included:
they are replaced with :func:`torch.where` before any arithmetic, so they neither change the value nor give NaN
gradients. Means run over the valid values only; a batch with no valid value gives 0 (still attached to the graph).
``valid=None`` runs the unmasked code unchanged.

**Sobolev norms** of periodic fields on the unit torus, computed spectrally (Parseval), and a loss built on them.
With ``v_hat_k`` the Fourier coefficients of ``v`` on ``[0, 1)^2`` (``rfft2(v) / (X * Y)`` on an ``X x Y`` grid),

    ||v||_{H^s} = ( sum_k (alpha + 4 pi^2 |k|^2)^s |v_hat_k|^2 )^(1/2)

which is the paper norm of the Spectral-Refiner (Cao et al., ICLR 2025, arXiv:2405.17211; ``docs/models.md``
§7.4-7.5). ``s = 0`` is the L2 norm ``sqrt(mean(v^2))`` whatever ``alpha``; ``s = -1`` with a small ``alpha`` is
the dual norm the fine-tuning minimises.

``legacy_exponent=True`` reproduces torch-cfd's ``fno/losses.py`` weighting, which multiplies the *amplitudes* by
``(alpha + 4 pi^2 |k|^2)^(s/4)``: that is the paper norm of order ``s / 2`` (its ``norm_order=-1`` is H^{-1/2} in
the standard convention, although its comments call it the dual H^1 norm).

Examples:
    >>> x = torch.arange(16, dtype=torch.float64) / 16
    >>> v = torch.cos(2 * math.pi * x)[:, None].expand(16, 16)  # |v_hat| = 1/2 at k = (+-1, 0)
    >>> float(sobolev_norm(v, 1.0, alpha=1.0) ** 2)  # (1 + 4 pi^2) / 2
    20.239208802178716
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from stpred.errors import ConfigError, check

__all__ = [
    "Loss",
    "LOSS_KINDS",
    "create_loss",
    "list_losses",
    "register_loss",
    "convs5_loss",
    "expand_valid",
    "sobolev_norm",
    "sobolev_weights",
    "SobolevLoss",
]

LOSS_KINDS = ("forecast", "classify")

_REDUCTIONS = ("mean", "sum", "none")


def sobolev_weights(
    shape: tuple[int, int],
    s: float,
    alpha: float = 1.0,
    *,
    legacy_exponent: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Weights ``[X, Y//2 + 1]`` such that ``sum(weights * |rfft2(v)|^2) = ||v||_{H^s}^2``.

    They fold in the unit-torus normalisation ``1 / (X Y)^2`` and the multiplicity of the half spectrum (columns
    other than 0 and the Nyquist column of an even ``Y`` stand for two modes each).

    Args:
        shape: the grid ``(X, Y)``.
        s: Sobolev order (any real number).
        alpha: shift of the symbol; must be positive for ``s < 0``.
        legacy_exponent: use torch-cfd's exponent ``s / 2`` (see the module docstring).
        device: tensor device.
        dtype: floating dtype of the weights.
    """
    nx, ny = shape
    k1 = torch.fft.fftfreq(nx, d=1.0 / nx, dtype=torch.float64, device=device).round()[:, None]
    k2 = torch.fft.rfftfreq(ny, d=1.0 / ny, dtype=torch.float64, device=device).round()[None, :]
    order = s / 2 if legacy_exponent else s
    symbol = alpha + 4.0 * math.pi**2 * (k1**2 + k2**2)
    weight = symbol**order if order != 0 else torch.ones_like(symbol)
    mult = torch.full((ny // 2 + 1,), 2.0, dtype=torch.float64, device=device)
    mult[0] = 1.0
    if ny % 2 == 0:
        mult[-1] = 1.0
    return (weight * mult / (nx * ny) ** 2).to(dtype)


def _squared_norm(v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=v.device.type, enabled=False):
        power = torch.fft.rfft2(v.to(dtype)).abs().square()
        return (power * weights.to(dtype)).sum(dim=(-2, -1))


def sobolev_norm(
    v: torch.Tensor,
    s: float = 0.0,
    alpha: float = 1.0,
    relative: bool = False,
    time_average: bool = False,
    *,
    target: torch.Tensor | None = None,
    time_dim: int = -3,
    legacy_exponent: bool = False,
) -> torch.Tensor:
    """The ``H^s`` norm of the periodic field(s) ``v [..., X, Y]`` on the unit torus, one value per field.

    Args:
        v: real fields ``[..., X, Y]``.
        s: Sobolev order.
        alpha: shift ``alpha`` in ``(alpha + 4 pi^2 |k|^2)^s``; positive when ``s < 0``.
        relative: return ``||v - target|| / ||target||`` (needs ``target``).
        time_average: root-mean-square of the norms over ``time_dim`` (a discrete ``L2(0, T; H^s)`` norm over
            ``T``); for ``relative`` the ratio does not depend on it.
        target: subtract it from ``v`` first (``[..., X, Y]``, same shape).
        time_dim: the time axis of ``v`` (one of the leading axes), used with ``time_average``.
        legacy_exponent: torch-cfd's exponent (the paper norm of order ``s / 2``).

    Returns:
        ``v.shape[:-2]`` (without ``time_dim`` when ``time_average``), float32 or float64.

    Examples:
        >>> w = torch.randn(4, 10, 32, 32)  # [B, T, X, Y]
        >>> sobolev_norm(w, -1.0, alpha=10**-1.5, time_average=True, time_dim=1).shape
        torch.Size([4])
    """
    if v.ndim < 2:
        raise ValueError(f"sobolev_norm expects fields [..., X, Y], got shape {tuple(v.shape)}")
    if relative and target is None:
        raise ValueError("sobolev_norm: relative=True needs a target")
    if target is not None and target.shape != v.shape:
        raise ValueError(f"sobolev_norm: target shape {tuple(target.shape)} differs from v {tuple(v.shape)}")
    if s < 0 and alpha <= 0:
        raise ValueError(f"sobolev_norm: alpha must be positive for s < 0 (got alpha={alpha}, s={s})")
    t_axis = None
    if time_average:
        t_axis = time_dim if time_dim >= 0 else v.ndim + time_dim
        if not 0 <= t_axis < v.ndim - 2:
            raise ValueError(f"sobolev_norm: time_dim={time_dim} must be a leading axis of shape {tuple(v.shape)}")
    weights = sobolev_weights(tuple(v.shape[-2:]), s, alpha, legacy_exponent=legacy_exponent, device=v.device)
    diff = v if target is None else v - target
    sq = _squared_norm(diff, weights)
    if t_axis is not None:
        sq = sq.mean(dim=t_axis)
    norm = sq.sqrt()
    if not relative:
        return norm
    ref = _squared_norm(target, weights)
    if t_axis is not None:
        ref = ref.mean(dim=t_axis)
    return norm / ref.sqrt()


class SobolevLoss(nn.Module):
    """``H^s`` norm of ``pred`` (or of ``pred - target``, optionally relative), reduced over the batch.

    Args:
        s: Sobolev order (0: L2; -1: the Spectral-Refiner's dual norm).
        alpha: shift of the symbol ``alpha + 4 pi^2 |k|^2``.
        relative: divide by the norm of ``target``.
        time_average: root-mean-square over ``time_dim`` before reducing.
        time_dim: time axis of the inputs (e.g. ``1`` for ``[B, T, C, H, W]``, ``-3`` for ``[B, T, H, W]``).
        reduction: ``"mean" | "sum" | "none"`` over the remaining axes.
        legacy_exponent: torch-cfd's exponent (see :func:`sobolev_norm`).

    Examples:
        >>> loss = SobolevLoss(s=-1.0, alpha=10**-1.5, time_average=True, time_dim=1)
        >>> loss(torch.zeros(2, 5, 16, 16)).item()
        0.0
    """

    def __init__(
        self,
        s: float = 0.0,
        alpha: float = 1.0,
        *,
        relative: bool = False,
        time_average: bool = False,
        time_dim: int = -3,
        reduction: str = "mean",
        legacy_exponent: bool = False,
    ) -> None:
        super().__init__()
        check(reduction in _REDUCTIONS, f"SobolevLoss: reduction must be one of {'|'.join(_REDUCTIONS)}")
        check(not (s < 0 and alpha <= 0), f"SobolevLoss: alpha must be positive for s < 0, got {alpha}")
        self.s, self.alpha = float(s), float(alpha)
        self.relative, self.time_average, self.time_dim = relative, time_average, time_dim
        self.reduction, self.legacy_exponent = reduction, legacy_exponent

    def extra_repr(self) -> str:
        return f"s={self.s}, alpha={self.alpha}, relative={self.relative}, time_average={self.time_average}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Norm of ``pred - target`` (``target=None``: of ``pred``), reduced by ``reduction``."""
        norm = sobolev_norm(
            pred,
            self.s,
            self.alpha,
            self.relative,
            self.time_average,
            target=target,
            time_dim=self.time_dim,
            legacy_exponent=self.legacy_exponent,
        )
        if self.reduction == "mean":
            return norm.mean()
        if self.reduction == "sum":
            return norm.sum()
        return norm


# -- registry ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """A registered loss bound to its options; ``loss(pred, target)`` returns a scalar.

    Attributes:
        name: the registry name.
        kind: ``"forecast"`` or ``"classify"``.
        physical_units: a forecast loss that must see de-normalised values (``value * std + mean``).
        fn: ``fn(pred, target, **options) -> scalar``.
        options: keyword options bound at creation (e.g. ``label_smoothing``).
    """

    name: str
    kind: str
    physical_units: bool
    fn: Callable[..., torch.Tensor]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``pred`` against ``target``; ``valid`` (bool, broadcastable to ``pred``) masks values out.

        Raises:
            ConfigError: ``valid`` given to a loss whose function has no ``valid`` keyword.
        """
        if valid is None:
            return self.fn(pred, target, **self.options)
        if not _takes_valid(self.fn):
            raise ConfigError(
                f"loss='{self.name}' does not take a validity mask; this data has masked values, so use a loss "
                f"that does ({', '.join(n for n in list_losses(self.kind) if _takes_valid(_LOSSES[n].fn))}) or "
                "fill the masked values (data.fill_nan=mean)"
            )
        return self.fn(pred, target, valid=valid, **self.options)


@functools.cache
def _takes_valid(fn: Callable[..., torch.Tensor]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "valid" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


_LOSSES: dict[str, Loss] = {}


def register_loss(
    name: str, *, kind: str, physical_units: bool = False
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register ``fn(pred, target, **options) -> scalar`` under ``name`` for ``kind`` (a duplicate name warns)."""
    check(kind in LOSS_KINDS, f"register_loss: kind must be one of {LOSS_KINDS}, got {kind!r}")

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _LOSSES and _LOSSES[name].fn is not fn:
            warnings.warn(f"loss '{name}' registered twice; the later definition wins", stacklevel=2)
        _LOSSES[name] = Loss(name, kind, bool(physical_units), fn)
        return fn

    return decorator


def list_losses(kind: str | None = None) -> list[str]:
    """Sorted names of the registered losses, of one ``kind`` when given."""
    return sorted(n for n, spec in _LOSSES.items() if kind is None or spec.kind == kind)


def create_loss(name: str, kind: str | None = None, **options: Any) -> Loss:
    """The registered loss ``name`` with ``options`` bound; with ``kind``, it must be a loss for that task kind.

    Raises:
        ConfigError: (a ``UserError``) for an unknown name or a loss of another kind, listing the available ones.

    Examples:
        >>> create_loss("mse+l1", kind="forecast")(torch.ones(2, 3), torch.zeros(2, 3))
        tensor(2.)
    """
    check(kind is None or kind in LOSS_KINDS, f"create_loss: kind must be one of {LOSS_KINDS}, got {kind!r}")
    spec = _LOSSES.get(name)
    if spec is None:
        raise ConfigError(f"loss='{name}' is not a registered loss; available: {', '.join(list_losses(kind))}")
    if kind is not None and spec.kind != kind:
        raise ConfigError(
            f"loss='{name}' is a {spec.kind} loss, not a {kind} loss; {kind} losses: {', '.join(list_losses(kind))}"
        )
    return Loss(spec.name, spec.kind, spec.physical_units, spec.fn, dict(options))


def expand_valid(valid: torch.Tensor, shape: torch.Size | tuple[int, ...], who: str) -> torch.Tensor:
    """``valid`` checked and broadcast (a view, no copy) to ``shape``, on its own device.

    Args:
        valid: bool mask broadcastable to ``shape`` (e.g. ``[1, 1, C, H, W]`` static or ``[B, T, C, H, W]``).
        shape: the shape of the values it masks.
        who: the caller's name, for the error message.

    Raises:
        ValueError: not a bool tensor, or not broadcastable to ``shape``.
    """
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
        kind = valid.dtype if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"{who}: valid must be a bool tensor (True = observed), got {kind}")
    shape = tuple(shape)
    try:
        ok = valid.ndim <= len(shape) and torch.broadcast_shapes(valid.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{who}: valid of shape {tuple(valid.shape)} does not broadcast to the values {shape}")
    return valid.expand(shape)


def _valid_diff(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred - target`` with masked entries set to 0 (float32 at least), and the number of valid values."""
    if pred.shape != target.shape:
        raise ValueError(f"{who}: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    v = expand_valid(valid.to(pred.device), pred.shape, who)
    # Half-precision sums of many squares lose digits (F.mse_loss autocasts to float32 for the same reason).
    dtype = torch.promote_types(pred.dtype, torch.float32)
    # torch.where, not a product with the mask: NaN * 0 is NaN, in the value and in the gradient.
    diff = torch.where(v, pred.to(dtype) - target.to(dtype), 0.0)
    return diff, v.sum().to(dtype).clamp(min=1)


@register_loss("mse", kind="forecast")
def mse_loss(pred: torch.Tensor, target: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over every (valid) element (normalised values)."""
    if valid is None:
        return F.mse_loss(pred, target)
    diff, count = _valid_diff(pred, target, valid, "mse_loss")
    return diff.square().sum() / count


@register_loss("mse+l1", kind="forecast")
def mse_l1_loss(pred: torch.Tensor, target: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared plus mean absolute error over every (valid) element (normalised values)."""
    if valid is None:
        return F.mse_loss(pred, target) + F.l1_loss(pred, target)
    diff, count = _valid_diff(pred, target, valid, "mse_l1_loss")
    return diff.square().sum() / count + diff.abs().sum() / count


# Relative errors are not shift-invariant: they are taken in physical units, as FNO's LpLoss does.
@register_loss("rel_l2", kind="forecast", physical_units=True)
def rel_l2_loss(pred: torch.Tensor, target: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Batch mean of the per-sample relative L2 error ``||pred - target|| / ||target||`` (physical values).

    With ``valid`` both norms run over the sample's valid values, and the mean over the samples that have any
    (0 when none has).
    """
    # Imported here so that the models, which import this module, do not pull in torchmetrics.
    from stpred.metrics import relative_l2, valid_norms

    if valid is None:
        return relative_l2(pred, target).mean()
    err, ref, count = valid_norms(pred, target, valid, dim_start=1)
    has = count > 0
    # A sample without valid values has err = 0; dividing by 1 keeps its value and gradient at 0, not 0/0.
    ratio = err / torch.where(has, ref, torch.ones_like(ref))
    return ratio.sum() / has.sum().to(ratio.dtype).clamp(min=1)


@register_loss("convs5", kind="forecast")
def convs5_loss(pred: torch.Tensor, target: torch.Tensor, *, valid: torch.Tensor | None = None) -> torch.Tensor:
    """ConvS5's reconstruction loss ``0.5·(2·L2) + 0.5·L1`` (normalised values).

    ``L2`` is optax's ``l2_loss = ½·(pred − target)²``, so ``2·L2`` is the squared error. Both terms are summed over
    the last two axes (H, W) and then averaged over every other axis, which is ``H·W`` times the mean over every
    element. With ``valid`` it is ``H·W`` times the mean over the valid elements: masked pixels neither add error nor
    dilute it, and an all-valid mask gives the unmasked value.

    Args:
        pred: predictions ``[..., H, W]``, e.g. ``[B, T, C, H, W]``.
        target: targets of the same shape.
        valid: optional bool mask broadcastable to ``pred`` (True = observed).

    Returns:
        A scalar.

    Examples:
        >>> convs5_loss(torch.ones(1, 1, 1, 2, 2), torch.zeros(1, 1, 1, 2, 2))
        tensor(4.)
    """
    if pred.shape != target.shape:
        raise ValueError(f"convs5_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if valid is None:
        diff = pred - target
        per_image = (0.5 * diff.square() + 0.5 * diff.abs()).sum(dim=(-2, -1))
        return per_image.mean()
    diff, count = _valid_diff(pred, target, valid, "convs5_loss")
    pixels = pred.shape[-2] * pred.shape[-1]
    return (0.5 * diff.square() + 0.5 * diff.abs()).sum() * pixels / count


@register_loss("cross_entropy", kind="classify")
def cross_entropy_loss(logits: torch.Tensor, label: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of logits ``[B, K]`` (computed in float32) against labels ``[B]``."""
    return F.cross_entropy(logits.float(), label, label_smoothing=float(label_smoothing))
