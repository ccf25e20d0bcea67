"""Streaming forecast metrics with the exact definitions of docs/metrics.md.

One :class:`ForecastMetrics` per stage is updated with **de-normalised** ``[B, T, C, H, W]`` predictions and
targets. Its states are per-lead sums (float64) reduced with ``"sum"`` across processes, so DDP sync and epoch
reduction need nothing else and no prediction is ever gathered on the host (the OpenSTL failure mode).

Names follow docs/metrics.md: ``mse``/``mae``/``rmse`` (per element, OpenSTL ``spatial_norm=True``; ``rmse`` is the
global RMSE), ``mse_frame``/``mae_frame`` (OpenSTL/PredFormer tables: per-frame sums over C·H·W), ``psnr``
(OpenSTL >= 0.2, float, per frame), ``psnr_uint8`` (SimVP-v1 quantised convention), ``ssim`` (Wang et al.
Gaussian window, explicit data range, valid region), ``rel_l2``/``rel_l2_step`` (FNO full/step), and
``rmse_lat``/``mae_lat`` (WeatherBench-2 area weights, sqrt after the time mean).

``update(pred, target, valid=...)`` takes an optional bool mask (True = observed) broadcastable to
``[B, T, C, H, W]``: every metric then runs over the valid values only (docs/metrics.md, "Masked cells").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torchmetrics import Metric

from stpred.errors import ConfigError
from stpred.losses import expand_valid

__all__ = [
    "SSIM_KERNEL",
    "ForecastMetrics",
    "WeightedMean",
    "latitude_area_weights",
    "relative_l2",
    "ssim_per_frame",
    "valid_norms",
]

#: The default SSIM window size (Wang et al.'s 11x11 Gaussian); frames smaller than it get no SSIM.
SSIM_KERNEL = 11


def valid_norms(pred: Tensor, target: Tensor, valid: Tensor, dim_start: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """``‖ŷ − y‖₂``, ``‖y‖₂`` and the number of valid values per sample, over the valid values only.

    Masked entries (any value, NaN included) are replaced by 0 with :func:`torch.where` first, so they give
    neither NaN values nor NaN gradients; a sample without valid values has both norms 0.

    Args:
        pred: Prediction, e.g. ``[B, T, C, H, W]``.
        target: Target of the same shape.
        valid: Bool mask broadcastable to ``pred`` (True = observed).
        dim_start: First dimension that belongs to the vector; the leading ones index samples.

    Returns:
        Three ``pred.shape[:dim_start]`` tensors (the counts are int64).
    """
    if pred.shape != target.shape:
        raise ValueError(f"relative_l2: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if not 0 <= dim_start < pred.ndim:
        raise ValueError(f"relative_l2: dim_start={dim_start} is outside [0, {pred.ndim}) for a {pred.ndim}-D input")
    v = expand_valid(valid.to(pred.device), pred.shape, "relative_l2")
    err = torch.linalg.vector_norm(torch.where(v, pred - target, 0.0).flatten(dim_start), dim=-1)
    ref = torch.linalg.vector_norm(torch.where(v, target, 0.0).flatten(dim_start), dim=-1)
    return err, ref, v.flatten(dim_start).sum(-1)


def relative_l2(pred: Tensor, target: Tensor, dim_start: int = 1, valid: Tensor | None = None) -> Tensor:
    """Relative L2 error ``‖ŷ − y‖₂ / ‖y‖₂`` per sample (FNO ``LpLoss(p=2).rel``), differentiable.

    All dimensions from ``dim_start`` on are flattened into one vector per sample; a target with zero norm
    gives ``inf``/``nan`` exactly as FNO's loss does. With ``valid`` both norms run over the valid values
    (:func:`valid_norms`); a sample without any is ``nan``.

    Args:
        pred: Prediction, e.g. ``[B, T, C, H, W]``.
        target: Target of the same shape.
        dim_start: First dimension that belongs to the vector; the leading ones index samples.
        valid: Optional bool mask broadcastable to ``pred`` (True = observed).

    Returns:
        ``pred.shape[:dim_start]``: ``[B]`` for the default (the FNO "full" trajectory error).

    Examples:
        >>> y = torch.ones(2, 3, 1, 4, 4)
        >>> relative_l2(1.1 * y, y)
        tensor([0.1000, 0.1000])
    """
    if valid is not None:
        err, ref, _ = valid_norms(pred, target, valid, dim_start)
        return err / ref
    if pred.shape != target.shape:
        raise ValueError(f"relative_l2: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if not 0 <= dim_start < pred.ndim:
        raise ValueError(f"relative_l2: dim_start={dim_start} is outside [0, {pred.ndim}) for a {pred.ndim}-D input")
    diff = (pred - target).flatten(dim_start)
    return torch.linalg.vector_norm(diff, dim=-1) / torch.linalg.vector_norm(target.flatten(dim_start), dim=-1)


def latitude_area_weights(lat_degrees: Sequence[float]) -> Tensor:
    """WeatherBench-2 area weights per latitude row, normalised to mean 1.

    Cell bounds are the midpoints between rows; the outer cells end half a row beyond the edge rows, clipped to
    ±90° (on a global grid this is WeatherBench-2's bounds at ±90°; on a regional grid the edge rows are not
    stretched to the poles). The weight of row j is ``sin φ_{j+½} − sin φ_{j−½}``. Rows at the poles therefore get
    a small but non-zero weight (a cosine weight would give them zero).

    Args:
        lat_degrees: Latitude of each row H in degrees, strictly ascending or strictly descending, in [−90, 90].

    Returns:
        ``[H]`` float32 weights in the order of ``lat_degrees``, mean 1.

    Examples:
        >>> latitude_area_weights([-45.0, 45.0])
        tensor([1., 1.])
    """
    lat = torch.as_tensor(list(lat_degrees), dtype=torch.float64)
    if lat.ndim != 1 or lat.numel() == 0:
        raise ConfigError(
            f"latitude_area_weights needs a non-empty 1-D list of latitudes, got shape {tuple(lat.shape)}"
        )
    if not torch.isfinite(lat).all() or lat.abs().max() > 90.0:
        raise ConfigError("latitude_area_weights: latitudes must be finite degrees in [-90, 90]")
    step = lat.diff()
    descending = bool((step < 0).all()) and lat.numel() > 1
    if not descending and not bool((step > 0).all()):
        raise ConfigError(
            "latitude_area_weights: latitudes must be strictly ascending or strictly descending "
            "(sort the grid's rows, and drop duplicate rows)"
        )
    asc = lat.flip(0) if descending else lat
    if asc.numel() > 1:
        low = max(float(asc[0] - (asc[1] - asc[0]) / 2), -90.0)
        high = min(float(asc[-1] + (asc[-1] - asc[-2]) / 2), 90.0)
    else:
        low, high = -90.0, 90.0
    bounds = torch.cat([asc.new_tensor([low]), (asc[1:] + asc[:-1]) / 2, asc.new_tensor([high])])
    weights = torch.sin(torch.deg2rad(bounds[1:])) - torch.sin(torch.deg2rad(bounds[:-1]))
    weights = weights / weights.mean()
    return (weights.flip(0) if descending else weights).float()


def _gaussian_window(kernel_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(kernel_size, dtype=dtype, device=device) - (kernel_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_per_frame(
    pred: Tensor,
    target: Tensor,
    data_range: float,
    kernel_size: int = SSIM_KERNEL,
    sigma: float = 1.5,
    valid: Tensor | None = None,
) -> Tensor:
    """SSIM of Wang et al. (2004) per frame: Gaussian window, explicit range, mean over the valid region.

    ``C1 = (0.01 L)²`` and ``C2 = (0.03 L)²``; local moments use the normalised Gaussian window without
    padding, so only the ``(H − k + 1) × (W − k + 1)`` positions where the window fits are averaged, together
    with all channels. Computed in float64 because ``E[x²] − μ²`` cancels badly in float32 on flat regions
    near the top of the range. Inputs are used as given (clip the prediction first where the convention does).

    With ``valid``, masked pixels are set to 0 before filtering and the map is averaged only over the window
    positions whose whole ``k × k`` window is valid in every channel; a frame without such a position is ``nan``.

    Args:
        pred: ``[N, C, H, W]`` frames.
        target: ``[N, C, H, W]`` frames.
        data_range: L, the width of the value range (1 for [0, 1] images).
        kernel_size: Odd window size k.
        sigma: Standard deviation of the Gaussian window in pixels.
        valid: Optional bool mask broadcastable to ``[N, C, H, W]`` (True = observed).

    Returns:
        ``[N]`` float64 SSIM per frame.

    Examples:
        >>> x = torch.rand(2, 1, 16, 16)
        >>> ssim_per_frame(x, x, data_range=1.0)
        tensor([1., 1.], dtype=torch.float64)
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"ssim_per_frame needs two [N, C, H, W] tensors of one shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)} (flatten video with 'b t c h w -> (b t) c h w')"
        )
    height, width = pred.shape[-2:]
    if height < kernel_size or width < kernel_size:
        raise ValueError(
            f"SSIM window {kernel_size}x{kernel_size} does not fit frames of {height}x{width}; "
            f"use a smaller ssim_kernel or leave data_range unset to skip SSIM"
        )
    if valid is None:
        return _ssim_map(pred, target, data_range, kernel_size, sigma).flatten(1).mean(dim=1)
    total, positions = _masked_ssim_sums(
        pred, target, expand_valid(valid.to(pred.device), pred.shape, "ssim_per_frame"), data_range, kernel_size, sigma
    )
    return total / (positions * pred.shape[1])


def _ssim_map(pred: Tensor, target: Tensor, data_range: float, kernel_size: int, sigma: float) -> Tensor:
    """The SSIM map ``[N, C, H − k + 1, W − k + 1]`` (float64) of two ``[N, C, H, W]`` tensors."""
    p = pred.to(torch.float64)
    t = target.to(torch.float64)
    channels = p.shape[1]
    g = _gaussian_window(kernel_size, sigma, torch.float64, p.device)
    maps = torch.cat([p, t, p * p, t * t, p * t], dim=1)  # [N, 5C, H, W]
    groups = maps.shape[1]
    # The 2-D Gaussian is separable: two 1-D valid convolutions equal one k x k convolution.
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mu_p, mu_t, e_pp, e_tt, e_pt = maps.split(channels, dim=1)
    var_p = e_pp - mu_p * mu_p
    var_t = e_tt - mu_t * mu_t
    cov = e_pt - mu_p * mu_t
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2))


def _masked_ssim_sums(
    pred: Tensor, target: Tensor, valid: Tensor, data_range: float, kernel_size: int, sigma: float
) -> tuple[Tensor, Tensor]:
    """Per frame: the SSIM map summed over the fully valid window positions and channels, and those positions.

    Args:
        pred, target: ``[N, C, H, W]``.
        valid: bool ``[N, C, H, W]`` (may be an expanded view).

    Returns:
        Two ``[N]`` float64 tensors: the sum, and the number of window positions (not multiplied by C).
    """
    # Zeros instead of masked values keep NaN out of the filtered moments; the windows they touch are dropped.
    ssim_map = _ssim_map(torch.where(valid, pred, 0.0), torch.where(valid, target, 0.0), data_range, kernel_size, sigma)
    hole = (~valid.all(dim=1, keepdim=True)).to(torch.float64)  # [N, 1, H, W]
    clean = F.max_pool2d(hole, kernel_size, stride=1) == 0  # [N, 1, H', W']: no masked pixel in the window
    total = torch.where(clean, ssim_map, 0.0).sum(dim=(1, 2, 3))
    return total, clean.sum(dim=(1, 2, 3)).to(torch.float64)


class _KeepDtypeMetric(Metric):
    """A metric whose states keep their dtype (float64 sums) when the module holding it is cast."""

    def _apply(self, fn: Any, exclude_state: Sequence[str] = "") -> _KeepDtypeMetric:
        # Lightning's "bf16-true"/"16-true" call module.to(dtype) on the whole LightningModule; without this the
        # float64 sums (and the weights) would be rounded to 8 significant bits. Devices still move; only
        # torchmetrics' explicit set_dtype() changes dtypes.
        if self._dtype_convert:
            return super()._apply(fn, exclude_state)

        def keep_dtype(t: Tensor) -> Tensor:
            out = fn(t)
            return out.to(t.dtype) if isinstance(out, Tensor) and out.dtype != t.dtype else out

        return super()._apply(keep_dtype, exclude_state)


class WeightedMean(_KeepDtypeMetric):
    """``sum(value · weight) / sum(weight)`` over the updates (e.g. a batch-mean loss weighted by the batch size),
    with float64 states summed across processes.

    The evaluation loss of :class:`stpred.tasks.ForecastTask`. Summed states make the mean over several processes
    equal one process's over the same samples, however unevenly they are split; Lightning's
    ``self.log(..., sync_dist=True)`` instead averages the processes' integer batch-size counts, which truncates
    when the total does not divide by the number of processes. NaN values propagate (no filtering).

    Examples:
        >>> m = WeightedMean()
        >>> m.update(torch.tensor(1.0), weight=3)
        >>> m.update(torch.tensor(4.0), weight=1)
        >>> m.compute()
        tensor(1.7500)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor | float, weight: Tensor | float = 1.0) -> None:
        """Add ``value`` (a scalar or a tensor of values) with ``weight`` (broadcast to ``value``)."""
        value = torch.as_tensor(value).detach().to(device=self.total.device, dtype=torch.float64)
        w = torch.as_tensor(weight).detach().to(device=self.total.device, dtype=torch.float64)
        w = torch.broadcast_to(w, value.shape)
        self.total += (value * w).sum()
        self.weight += w.sum()

    def compute(self) -> Tensor:
        """The weighted mean, float32 (``nan`` before any update)."""
        return (self.total / self.weight).float()


class ForecastMetrics(_KeepDtypeMetric):
    """Streaming forecast metrics, reduced across processes by summing float64 states.

    One instance per stage (train/val/test). Call :meth:`update` every batch with de-normalised
    ``[B, T, C, H, W]`` tensors, :meth:`compute` (scalars) and :meth:`per_lead` (``[T]`` curves) at epoch end,
    then :meth:`reset`. Both ``compute`` and ``per_lead`` sync states across processes under DDP.

    Always returned by :meth:`compute`:

    - ``mse``, ``mae``: per-element means; ``rmse = sqrt(mse)`` over the whole set (global RMSE).
    - ``mse_frame``, ``mae_frame``: per-frame sums over C·H·W averaged over samples and frames (OpenSTL),
      i.e. ``P · mse`` with ``P = C·H·W``. Both on the unclipped prediction, as in OpenSTL.

    With ``data_range`` L (image data in [0, L]; the prediction is clipped to [0, L], the target is not):

    - ``ssim``: :func:`ssim_per_frame` on ``(B·T, C, H, W)``, mean over frames. Left out (``ssim=False``) for
      frames smaller than the ``ssim_kernel`` window, where it is undefined: :meth:`from_metadata` does so for
      such a grid (e.g. 8x8 with the 11x11 window), the other image metrics stay (docs/metrics.md, "SSIM").
    - ``psnr``: per frame ``10·log10(L² / mean_chw (ŷ − y)²)`` in float, mean over N·T frames; a frame at or
      above ``psnr_cap_db`` (including zero error) counts as ``psnr_cap_db`` and in ``psnr_capped``.
    - ``psnr_uint8``: SimVP-v1 convention: ``floor(clip(ŷ)·255/L)`` and ``floor(y·255/L)`` as in
      ``np.uint8(x·255)``, the difference taken in float, ``20·log10(255) − 10·log10(mse)`` per frame, mean;
      capped and counted in ``psnr_uint8_capped`` the same way. The target is clipped here too, so values
      outside [0, L] saturate instead of wrapping as a uint8 cast would.

    With ``pde=True``: ``rel_l2`` (per-sample relative L2 over the flattened trajectory, mean over samples: FNO
    "full") and ``rel_l2_step`` (per sample and step, mean over both: FNO "step").

    With ``lat_weights``: ``rmse_lat`` (weighted spatial MSE per sample and lead, mean over samples and leads,
    then sqrt: WeatherBench-2 default) and ``mae_lat`` (the same weighted mean of ``|ŷ − y|``).

    All returned values are float32 scalars; the accumulation is float64.

    With ``update(..., valid=mask)`` every metric runs over the valid values only: errors are sums over valid
    values divided by the valid counts (per lead for the curves); per-frame metrics (``*_frame``, PSNR, SSIM,
    ``rel_l2_step``, the latitude-weighted ones) skip frames that have nothing valid to measure, and SSIM
    averages only window positions whose whole window is valid in every channel (docs/metrics.md, "Masked
    cells"). A lead with no valid value at all gives ``nan`` in the curves.

    Args:
        out_frames: T, the number of predicted frames every update carries.
        data_range: L for SSIM and PSNR on image data in [0, L]; ``None`` skips them (they are meaningless
            on standardised physical fields).
        pde: Also report the relative L2 errors.
        lat_weights: One weight per row H (e.g. :func:`latitude_area_weights`); renormalised to mean 1.
        ssim_kernel: Odd size of the Gaussian SSIM window.
        ssim_sigma: Standard deviation of the Gaussian SSIM window.
        ssim: Report ``ssim`` with ``data_range``; ``False`` leaves it out (frames smaller than the window).
        psnr_cap_db: PSNR given to frames with zero (or vanishing) error.
        **kwargs: Passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    Examples:
        >>> m = ForecastMetrics(2, data_range=1.0)
        >>> y = torch.full((3, 2, 1, 16, 16), 0.5)
        >>> m.update(y + 0.1, y)
        >>> round(float(m.compute()["psnr"]), 3)
        20.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> ForecastMetrics:
        """The metrics a forecaster of datamodule ``metadata()`` ``data`` is scored with: its ``out_frames``, its
        ``data_range`` (image metrics), ``pde`` (relative L2) and ``latitude`` (area-weighted errors). SSIM is left
        out when the frames (``in_shape`` H, W) are smaller than the default window; the other metrics stay."""
        lat = data.get("latitude")
        in_shape = data.get("in_shape")
        fits = in_shape is None or min(int(v) for v in list(in_shape)[-2:]) >= SSIM_KERNEL
        return cls(
            int(data["out_frames"]),
            data_range=data.get("data_range"),
            pde=bool(data.get("pde", False)),
            lat_weights=latitude_area_weights(lat).tolist() if lat is not None else None,
            ssim=fits,
        )

    def __init__(
        self,
        out_frames: int,
        *,
        data_range: float | None = None,
        pde: bool = False,
        lat_weights: Sequence[float] | None = None,
        ssim_kernel: int = SSIM_KERNEL,
        ssim_sigma: float = 1.5,
        ssim: bool = True,
        psnr_cap_db: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(out_frames, bool) or int(out_frames) != out_frames or out_frames < 1:
            raise ConfigError(f"ForecastMetrics: out_frames must be a positive integer, got {out_frames!r}")
        if data_range is not None and not (math.isfinite(float(data_range)) and float(data_range) > 0):
            raise ConfigError(f"ForecastMetrics: data_range must be a positive number or None, got {data_range!r}")
        if int(ssim_kernel) != ssim_kernel or ssim_kernel < 1 or ssim_kernel % 2 == 0:
            raise ConfigError(f"ForecastMetrics: ssim_kernel must be a positive odd integer, got {ssim_kernel!r}")
        if not (math.isfinite(float(ssim_sigma)) and float(ssim_sigma) > 0):
            raise ConfigError(f"ForecastMetrics: ssim_sigma must be positive, got {ssim_sigma!r}")
        if not (math.isfinite(float(psnr_cap_db)) and float(psnr_cap_db) > 0):
            raise ConfigError(f"ForecastMetrics: psnr_cap_db must be a positive number of dB, got {psnr_cap_db!r}")
        self.out_frames = int(out_frames)
        self.data_range = None if data_range is None else float(data_range)
        self.pde = bool(pde)
        self.ssim_kernel = int(ssim_kernel)
        self.ssim_sigma = float(ssim_sigma)
        self.with_ssim = self.data_range is not None and bool(ssim)
        self.psnr_cap_db = float(psnr_cap_db)

        self.lat_weights: Tensor | None
        if lat_weights is None:
            self.lat_weights = None
        else:
            w = torch.as_tensor(list(lat_weights), dtype=torch.float32)
            if w.ndim != 1 or w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ConfigError(
                    "ForecastMetrics: lat_weights must be a non-empty list of finite, non-negative weights, "
                    "one per row H (see latitude_area_weights)"
                )
            self.register_buffer("lat_weights", w / w.mean(), persistent=False)

        t = self.out_frames

        def lead_state(name: str) -> None:
            self.add_state(name, default=torch.zeros(t, dtype=torch.float64), dist_reduce_fx="sum")

        def scalar_state(name: str) -> None:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

        # Counts are what each mean divides by: without a mask every update adds the batch (times the values per
        # frame) to each of them; with a mask only what was valid. n_samples: samples with any valid value;
        # n_valid: valid values per lead; n_frames: frames with any valid value, per lead.
        scalar_state("n_samples")
        lead_state("n_valid")
        lead_state("n_frames")
        lead_state("sse")
        lead_state("sae")
        if self.with_ssim:
            lead_state("n_frames_ssim")  # frames with at least one fully valid SSIM window
            lead_state("ssim_sum")
        if self.data_range is not None:
            lead_state("psnr_sum")
            lead_state("psnr_uint8_sum")
            scalar_state("psnr_capped")
            scalar_state("psnr_uint8_capped")
        if self.pde:
            scalar_state("rel_l2_sum")
            lead_state("rel_l2_step_sum")
        if self.lat_weights is not None:
            lead_state("n_frames_lat")  # frames whose valid values carry a positive weight
            lead_state("wse")
            lead_state("wae")

    @property
    def config(self) -> dict[str, Any]:
        """Plain-value description of the conventions in use, for logging next to the numbers."""
        cfg: dict[str, Any] = {"out_frames": self.out_frames, "mse": "per element, unclipped"}
        if self.with_ssim:
            cfg["ssim"] = {
                "implementation": "stpred.metrics.ssim_per_frame (Wang et al., valid region, float64)",
                "window": "gaussian",
                "kernel": self.ssim_kernel,
                "sigma": self.ssim_sigma,
                "data_range": self.data_range,
                "clip_pred": True,
            }
        elif self.data_range is not None:
            cfg["ssim"] = f"not computed: frames smaller than the {self.ssim_kernel}x{self.ssim_kernel} window"
        if self.data_range is not None:
            cfg["psnr"] = {"data_range": self.data_range, "per_frame": True, "cap_db": self.psnr_cap_db}
            cfg["psnr_uint8"] = {"convention": "SimVP-v1 floor(x*255/L), float difference", "cap_db": self.psnr_cap_db}
        if self.pde:
            cfg["rel_l2"] = "FNO full (flattened trajectory) and step, mean over samples"
        if self.lat_weights is not None:
            cfg["rmse_lat"] = "WeatherBench-2 area weights, sqrt after the mean over samples and leads"
        cfg["mask"] = "update(valid=): valid values only; SSIM over fully valid windows (docs/metrics.md)"
        return cfg

    def _check(self, pred: Tensor, target: Tensor) -> None:
        if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
            raise ValueError("ForecastMetrics.update expects two tensors (pred, target)")
        if pred.shape != target.shape:
            raise ValueError(
                f"ForecastMetrics.update: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
            )
        if pred.ndim != 5:
            raise ValueError(f"ForecastMetrics.update expects [B, T, C, H, W], got {pred.ndim}-D {tuple(pred.shape)}")
        if pred.shape[1] != self.out_frames:
            raise ValueError(
                f"ForecastMetrics.update: got T={pred.shape[1]} frames but the metric was built for "
                f"out_frames={self.out_frames}"
            )
        height, width = pred.shape[-2:]
        if self.lat_weights is not None and self.lat_weights.numel() != height:
            raise ValueError(
                f"ForecastMetrics.update: {self.lat_weights.numel()} latitude weights for H={height} rows; "
                "pass one weight per row"
            )
        if self.with_ssim and (height < self.ssim_kernel or width < self.ssim_kernel):
            raise ValueError(
                f"ForecastMetrics.update: SSIM window {self.ssim_kernel}x{self.ssim_kernel} does not fit "
                f"{height}x{width} frames; pass ssim=False (as from_metadata does for such frames) or lower ssim_kernel"
            )

    def update(self, pred: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add one batch.

        Args:
            pred: De-normalised prediction ``[B, T, C, H, W]``.
            target: De-normalised target ``[B, T, C, H, W]``.
            valid: Optional bool mask broadcastable to ``[B, T, C, H, W]`` (True = observed), e.g. a static
                ``[1, 1, C, H, W]`` or a per-step ``[B, T, C, H, W]`` mask. Masked entries of ``pred`` and
                ``target`` may hold anything, NaN included.
        """
        self._check(pred, target)
        if valid is not None:
            valid = expand_valid(valid.to(pred.device), pred.shape, "ForecastMetrics.update")
        # Reductions under autocast would run in bf16/fp16; the metric always works in fp32 (or fp64 if given).
        with torch.autocast(device_type=pred.device.type, enabled=False):
            dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
            pred = pred.detach().to(dtype)
            target = target.detach().to(dtype)
            if valid is None:
                self._update(pred, target)
            else:
                self._update_masked(pred, target, valid)

    def _update(self, pred: Tensor, target: Tensor) -> None:
        batch = pred.shape[0]
        values_per_frame = pred[0, 0].numel()
        f64 = torch.float64
        diff = pred - target
        sq = diff.square()
        # Per-frame sums stay in the compute dtype (a frame is at most a few million values); the sums over
        # frames, batches and processes are float64.
        sse_frame = sq.sum(dim=(2, 3, 4)).to(f64)  # [B, T]
        self.n_samples += batch
        self.n_valid += batch * values_per_frame
        self.n_frames += batch
        self.sse += sse_frame.sum(0)
        self.sae += diff.abs().sum(dim=(2, 3, 4)).to(f64).sum(0)

        if self.data_range is not None:
            self._update_image(pred, target)

        if self.pde:
            sst_frame = target.square().sum(dim=(2, 3, 4)).to(f64)  # [B, T]
            self.rel_l2_sum += (sse_frame.sum(1) / sst_frame.sum(1)).sqrt().sum()
            self.rel_l2_step_sum += (sse_frame / sst_frame).sqrt().sum(0)

        if self.lat_weights is not None:
            w = self.lat_weights.to(device=pred.device, dtype=pred.dtype).view(1, 1, 1, -1, 1)
            self.n_frames_lat += batch
            self.wse += (sq * w).mean(dim=(2, 3, 4)).to(f64).sum(0)
            self.wae += (diff.abs() * w).mean(dim=(2, 3, 4)).to(f64).sum(0)

    def _update_image(self, pred: Tensor, target: Tensor) -> None:
        assert self.data_range is not None
        rng = self.data_range
        f64 = torch.float64
        clipped = pred.clamp(0.0, rng)

        if self.with_ssim:
            ssim = ssim_per_frame(
                rearrange(clipped, "b t c h w -> (b t) c h w"),
                rearrange(target, "b t c h w -> (b t) c h w"),
                data_range=rng,
                kernel_size=self.ssim_kernel,
                sigma=self.ssim_sigma,
            )
            self.n_frames_ssim += pred.shape[0]
            self.ssim_sum += rearrange(ssim, "(b t) -> b t", t=self.out_frames).sum(0)

        mse_frame = (clipped - target).square().mean(dim=(2, 3, 4)).to(f64)  # [B, T]
        psnr, capped = self._capped_psnr(mse_frame, rng)
        self.psnr_sum += psnr.sum(0)
        self.psnr_capped += capped.sum()

        # SimVP v1 casts with np.uint8(x * 255), which truncates; floor is the same for values in [0, 255].
        scale = 255.0 / rng
        q_pred = torch.floor(clipped * scale)
        q_target = torch.floor(target.clamp(0.0, rng) * scale)
        mse_q = (q_pred - q_target).square().mean(dim=(2, 3, 4)).to(f64)
        psnr_q, capped_q = self._capped_psnr(mse_q, 255.0)
        self.psnr_uint8_sum += psnr_q.sum(0)
        self.psnr_uint8_capped += capped_q.sum()

    def _update_masked(self, pred: Tensor, target: Tensor, valid: Tensor) -> None:
        """The masked counterpart of :meth:`_update`; ``valid`` is bool ``[B, T, C, H, W]`` (maybe expanded)."""
        f64 = torch.float64
        frame_dims = (2, 3, 4)
        # torch.where, never a product with the mask: masked values may be NaN, and NaN * 0 is NaN.
        diff = torch.where(valid, pred - target, 0.0)
        sq = diff.square()
        count = valid.sum(dim=frame_dims)  # [B, T] int64
        has = count > 0
        sse_frame = sq.sum(dim=frame_dims).to(f64)
        self.n_samples += has.any(1).sum()
        self.n_valid += count.sum(0).to(f64)
        self.n_frames += has.sum(0)
        self.sse += sse_frame.sum(0)
        self.sae += diff.abs().sum(dim=frame_dims).to(f64).sum(0)

        if self.data_range is not None:
            self._update_image_masked(pred, target, valid, count.to(f64), has)

        if self.pde:
            sst_frame = torch.where(valid, target, 0.0).square().sum(dim=frame_dims).to(f64)
            sample = has.any(1)
            full = (sse_frame.sum(1) / sst_frame.sum(1)).sqrt()
            self.rel_l2_sum += torch.where(sample, full, 0.0).sum()
            self.rel_l2_step_sum += torch.where(has, (sse_frame / sst_frame).sqrt(), 0.0).sum(0)

        if self.lat_weights is not None:
            w = self.lat_weights.to(device=pred.device, dtype=pred.dtype).view(1, 1, 1, -1, 1)
            w_valid = torch.where(valid, w, 0.0)
            w_sum = w_valid.sum(dim=frame_dims).to(f64)  # [B, T]
            weighted = w_sum > 0
            # Frames whose valid values weigh nothing have 0 / 0 here; the where drops them.
            w_sum = torch.where(weighted, w_sum, 1.0)
            self.n_frames_lat += weighted.sum(0)
            wse = (sq * w_valid).sum(dim=frame_dims).to(f64) / w_sum
            wae = (diff.abs() * w_valid).sum(dim=frame_dims).to(f64) / w_sum
            self.wse += torch.where(weighted, wse, 0.0).sum(0)
            self.wae += torch.where(weighted, wae, 0.0).sum(0)

    def _update_image_masked(self, pred: Tensor, target: Tensor, valid: Tensor, count: Tensor, has: Tensor) -> None:
        assert self.data_range is not None
        rng = self.data_range
        f64 = torch.float64
        frame_dims = (2, 3, 4)
        clipped = pred.clamp(0.0, rng)

        if self.with_ssim:
            total, positions = _masked_ssim_sums(
                rearrange(clipped, "b t c h w -> (b t) c h w"),
                rearrange(target, "b t c h w -> (b t) c h w"),
                rearrange(valid, "b t c h w -> (b t) c h w"),
                data_range=rng,
                kernel_size=self.ssim_kernel,
                sigma=self.ssim_sigma,
            )
            windowed = positions > 0
            ssim = torch.where(windowed, total / (positions.clamp(min=1) * pred.shape[2]), 0.0)
            self.n_frames_ssim += rearrange(windowed, "(b t) -> b t", t=self.out_frames).sum(0)
            self.ssim_sum += rearrange(ssim, "(b t) -> b t", t=self.out_frames).sum(0)

        # Frames without a valid value give 0 / 0 = nan here; the where drops them and their capped flags.
        sq = torch.where(valid, (clipped - target).square(), 0.0)
        psnr, capped = self._capped_psnr(sq.sum(dim=frame_dims).to(f64) / count, rng)
        self.psnr_sum += torch.where(has, psnr, 0.0).sum(0)
        self.psnr_capped += (capped & has).sum()

        scale = 255.0 / rng
        q_diff = torch.floor(clipped * scale) - torch.floor(target.clamp(0.0, rng) * scale)
        sq_q = torch.where(valid, q_diff.square(), 0.0)
        psnr_q, capped_q = self._capped_psnr(sq_q.sum(dim=frame_dims).to(f64) / count, 255.0)
        self.psnr_uint8_sum += torch.where(has, psnr_q, 0.0).sum(0)
        self.psnr_uint8_capped += (capped_q & has).sum()

    def _capped_psnr(self, mse: Tensor, peak: float) -> tuple[Tensor, Tensor]:
        # 10·log10(L²/mse) == 20·log10(L/sqrt(mse)); zero error gives +inf, which the cap turns into a number.
        psnr = 10.0 * torch.log10(peak**2 / mse)
        capped = psnr >= self.psnr_cap_db
        return psnr.clamp(max=self.psnr_cap_db), capped

    def _lead_means(self) -> dict[str, Tensor]:
        frames = self.n_frames
        out = {
            "mse": self.sse / self.n_valid,
            "mae": self.sae / self.n_valid,
        }
        out["rmse"] = out["mse"].sqrt()
        if self.with_ssim:
            out["ssim"] = self.ssim_sum / self.n_frames_ssim
        if self.data_range is not None:
            out["psnr"] = self.psnr_sum / frames
            out["psnr_uint8"] = self.psnr_uint8_sum / frames
        if self.pde:
            out["rel_l2_step"] = self.rel_l2_step_sum / frames
        if self.lat_weights is not None:
            out["rmse_lat"] = (self.wse / self.n_frames_lat).sqrt()
            out["mae_lat"] = self.wae / self.n_frames_lat
        return out

    def compute(self) -> dict[str, Tensor]:
        """Scalars over everything seen since the last reset (float32; names as in the class docstring)."""
        # The counts are exact integers in float64, so without a mask these equal N·T·P and N·T bit for bit.
        frames = self.n_frames.sum()
        values = self.n_valid.sum()
        out = {
            "mse": self.sse.sum() / values,
            "mae": self.sae.sum() / values,
            "mse_frame": self.sse.sum() / frames,
            "mae_frame": self.sae.sum() / frames,
        }
        out["rmse"] = out["mse"].sqrt()
        if self.with_ssim:
            out["ssim"] = self.ssim_sum.sum() / self.n_frames_ssim.sum()
        if self.data_range is not None:
            out["psnr"] = self.psnr_sum.sum() / frames
            out["psnr_capped"] = self.psnr_capped.clone()
            out["psnr_uint8"] = self.psnr_uint8_sum.sum() / frames
            out["psnr_uint8_capped"] = self.psnr_uint8_capped.clone()
        if self.pde:
            out["rel_l2"] = self.rel_l2_sum / self.n_samples
            out["rel_l2_step"] = self.rel_l2_step_sum.sum() / frames
        if self.lat_weights is not None:
            frames_lat = self.n_frames_lat.sum()
            out["rmse_lat"] = (self.wse.sum() / frames_lat).sqrt()
            out["mae_lat"] = self.wae.sum() / frames_lat
        return {k: v.float() for k, v in out.items()}

    def per_lead(self) -> dict[str, Tensor]:
        """Per-lead-time curves, each ``[T]`` float32, synced across processes.

        Returns:
            ``mse``, ``mae``, ``rmse`` (per-element, per lead); with ``data_range`` also ``ssim`` (unless
            ``ssim=False``), ``psnr``, ``psnr_uint8``; with ``pde`` ``rel_l2_step``; with ``lat_weights``
            ``rmse_lat`` and ``mae_lat``.
        """
        # Inside an outer sync (e.g. called from compute) the states are already global; leave that sync alone.
        outer = self._is_synced
        with self.sync_context(should_sync=self.sync_on_compute and not outer, should_unsync=not outer):
            return {k: v.float() for k, v in self._lead_means().items()}
