"""Streaming forecast metrics with the exact definitions of docs/metrics.md.

One :class:`ForecastMetrics` per stage is updated with **de-normalised** ``[B, T, C, H, W]`` predictions and
targets. Its states are per-lead sums (float64) reduced with ``"sum"`` across processes, so DDP sync and epoch
reduction need nothing else and no prediction is ever gathered on the host (the OpenSTL failure mode).

Names follow docs/metrics.md: ``mse``/``mae``/``rmse`` (per element, OpenSTL ``spatial_norm=True``; ``rmse`` is the
global RMSE), ``mse_frame``/``mae_frame`` (OpenSTL/PredFormer tables: per-frame sums over C·H·W), ``psnr``
(OpenSTL >= 0.2, float, per frame), ``psnr_uint8`` (SimVP-v1 quantised convention), ``ssim`` (Wang et al.
Gaussian window, explicit data range, valid region), ``rel_l2``/``rel_l2_step`` (FNO full/step), and
``rmse_lat``/``mae_lat`` (WeatherBench-2 area weights, sqrt after the time mean).
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

__all__ = ["ForecastMetrics", "latitude_area_weights", "relative_l2", "ssim_per_frame"]


def relative_l2(pred: Tensor, target: Tensor, dim_start: int = 1) -> Tensor:
    """Relative L2 error ``‖ŷ − y‖₂ / ‖y‖₂`` per sample (FNO ``LpLoss(p=2).rel``), differentiable.

    All dimensions from ``dim_start`` on are flattened into one vector per sample; a target with zero norm
    gives ``inf``/``nan`` exactly as FNO's loss does.

    Args:
        pred: Prediction, e.g. ``[B, T, C, H, W]``.
        target: Target of the same shape.
        dim_start: First dimension that belongs to the vector; the leading ones index samples.

    Returns:
        ``pred.shape[:dim_start]``: ``[B]`` for the default (the FNO "full" trajectory error).

    Examples:
        >>> y = torch.ones(2, 3, 1, 4, 4)
        >>> relative_l2(1.1 * y, y)
        tensor([0.1000, 0.1000])
    """
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
    pred: Tensor, target: Tensor, data_range: float, kernel_size: int = 11, sigma: float = 1.5
) -> Tensor:
    """SSIM of Wang et al. (2004) per frame: Gaussian window, explicit range, mean over the valid region.

    ``C1 = (0.01 L)²`` and ``C2 = (0.03 L)²``; local moments use the normalised Gaussian window without
    padding, so only the ``(H − k + 1) × (W − k + 1)`` positions where the window fits are averaged, together
    with all channels. Computed in float64 because ``E[x²] − μ²`` cancels badly in float32 on flat regions
    near the top of the range. Inputs are used as given (clip the prediction first where the convention does).

    Args:
        pred: ``[N, C, H, W]`` frames.
        target: ``[N, C, H, W]`` frames.
        data_range: L, the width of the value range (1 for [0, 1] images).
        kernel_size: Odd window size k.
        sigma: Standard deviation of the Gaussian window in pixels.

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
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2))
    return ssim_map.flatten(1).mean(dim=1)


class ForecastMetrics(Metric):
    """Streaming forecast metrics, reduced across processes by summing float64 states.

    One instance per stage (train/val/test). Call :meth:`update` every batch with de-normalised
    ``[B, T, C, H, W]`` tensors, :meth:`compute` (scalars) and :meth:`per_lead` (``[T]`` curves) at epoch end,
    then :meth:`reset`. Both ``compute`` and ``per_lead`` sync states across processes under DDP.

    Always returned by :meth:`compute`:

    - ``mse``, ``mae``: per-element means; ``rmse = sqrt(mse)`` over the whole set (global RMSE).
    - ``mse_frame``, ``mae_frame``: per-frame sums over C·H·W averaged over samples and frames (OpenSTL),
      i.e. ``P · mse`` with ``P = C·H·W``. Both on the unclipped prediction, as in OpenSTL.

    With ``data_range`` L (image data in [0, L]; the prediction is clipped to [0, L], the target is not):

    - ``ssim``: :func:`ssim_per_frame` on ``(B·T, C, H, W)``, mean over frames.
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

    Args:
        out_frames: T, the number of predicted frames every update carries.
        data_range: L for SSIM and PSNR on image data in [0, L]; ``None`` skips them (they are meaningless
            on standardised physical fields).
        pde: Also report the relative L2 errors.
        lat_weights: One weight per row H (e.g. :func:`latitude_area_weights`); renormalised to mean 1.
        ssim_kernel: Odd size of the Gaussian SSIM window.
        ssim_sigma: Standard deviation of the Gaussian SSIM window.
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

    def __init__(
        self,
        out_frames: int,
        *,
        data_range: float | None = None,
        pde: bool = False,
        lat_weights: Sequence[float] | None = None,
        ssim_kernel: int = 11,
        ssim_sigma: float = 1.5,
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

        # Every update carries all T leads, so one count of samples and one of values per lead suffices.
        scalar_state("n_samples")
        scalar_state("n_values")
        lead_state("sse")
        lead_state("sae")
        if self.data_range is not None:
            lead_state("ssim_sum")
            lead_state("psnr_sum")
            lead_state("psnr_uint8_sum")
            scalar_state("psnr_capped")
            scalar_state("psnr_uint8_capped")
        if self.pde:
            scalar_state("rel_l2_sum")
            lead_state("rel_l2_step_sum")
        if self.lat_weights is not None:
            lead_state("wse")
            lead_state("wae")

    def _apply(self, fn: Any, exclude_state: Sequence[str] = "") -> ForecastMetrics:
        # Lightning's "bf16-true"/"16-true" call module.to(dtype) on the whole LightningModule; without this the
        # float64 sums (and the weights) would be rounded to 8 significant bits. Devices still move; only
        # torchmetrics' explicit set_dtype() changes dtypes.
        if self._dtype_convert:
            return super()._apply(fn, exclude_state)

        def keep_dtype(t: Tensor) -> Tensor:
            out = fn(t)
            return out.to(t.dtype) if isinstance(out, Tensor) and out.dtype != t.dtype else out

        return super()._apply(keep_dtype, exclude_state)

    @property
    def config(self) -> dict[str, Any]:
        """Plain-value description of the conventions in use, for logging next to the numbers."""
        cfg: dict[str, Any] = {"out_frames": self.out_frames, "mse": "per element, unclipped"}
        if self.data_range is not None:
            cfg["ssim"] = {
                "implementation": "stpred.metrics.ssim_per_frame (Wang et al., valid region, float64)",
                "window": "gaussian",
                "kernel": self.ssim_kernel,
                "sigma": self.ssim_sigma,
                "data_range": self.data_range,
                "clip_pred": True,
            }
            cfg["psnr"] = {"data_range": self.data_range, "per_frame": True, "cap_db": self.psnr_cap_db}
            cfg["psnr_uint8"] = {"convention": "SimVP-v1 floor(x*255/L), float difference", "cap_db": self.psnr_cap_db}
        if self.pde:
            cfg["rel_l2"] = "FNO full (flattened trajectory) and step, mean over samples"
        if self.lat_weights is not None:
            cfg["rmse_lat"] = "WeatherBench-2 area weights, sqrt after the mean over samples and leads"
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
        if self.data_range is not None and (height < self.ssim_kernel or width < self.ssim_kernel):
            raise ValueError(
                f"ForecastMetrics.update: SSIM window {self.ssim_kernel}x{self.ssim_kernel} does not fit "
                f"{height}x{width} frames; lower ssim_kernel or set data_range=None"
            )

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: De-normalised prediction ``[B, T, C, H, W]``.
            target: De-normalised target ``[B, T, C, H, W]``.
        """
        self._check(pred, target)
        # Reductions under autocast would run in bf16/fp16; the metric always works in fp32 (or fp64 if given).
        with torch.autocast(device_type=pred.device.type, enabled=False):
            dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
            pred = pred.detach().to(dtype)
            target = target.detach().to(dtype)
            self._update(pred, target)

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
        self.n_values += batch * values_per_frame
        self.sse += sse_frame.sum(0)
        self.sae += diff.abs().sum(dim=(2, 3, 4)).to(f64).sum(0)

        if self.data_range is not None:
            self._update_image(pred, target, values_per_frame)

        if self.pde:
            sst_frame = target.square().sum(dim=(2, 3, 4)).to(f64)  # [B, T]
            self.rel_l2_sum += (sse_frame.sum(1) / sst_frame.sum(1)).sqrt().sum()
            self.rel_l2_step_sum += (sse_frame / sst_frame).sqrt().sum(0)

        if self.lat_weights is not None:
            w = self.lat_weights.to(device=pred.device, dtype=pred.dtype).view(1, 1, 1, -1, 1)
            self.wse += (sq * w).mean(dim=(2, 3, 4)).to(f64).sum(0)
            self.wae += (diff.abs() * w).mean(dim=(2, 3, 4)).to(f64).sum(0)

    def _update_image(self, pred: Tensor, target: Tensor, values_per_frame: int) -> None:
        assert self.data_range is not None
        rng = self.data_range
        f64 = torch.float64
        clipped = pred.clamp(0.0, rng)

        ssim = ssim_per_frame(
            rearrange(clipped, "b t c h w -> (b t) c h w"),
            rearrange(target, "b t c h w -> (b t) c h w"),
            data_range=rng,
            kernel_size=self.ssim_kernel,
            sigma=self.ssim_sigma,
        )
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

    def _capped_psnr(self, mse: Tensor, peak: float) -> tuple[Tensor, Tensor]:
        # 10·log10(L²/mse) == 20·log10(L/sqrt(mse)); zero error gives +inf, which the cap turns into a number.
        psnr = 10.0 * torch.log10(peak**2 / mse)
        capped = psnr >= self.psnr_cap_db
        return psnr.clamp(max=self.psnr_cap_db), capped

    def _lead_means(self) -> dict[str, Tensor]:
        n = self.n_samples
        out = {
            "mse": self.sse / self.n_values,
            "mae": self.sae / self.n_values,
        }
        out["rmse"] = out["mse"].sqrt()
        if self.data_range is not None:
            out["ssim"] = self.ssim_sum / n
            out["psnr"] = self.psnr_sum / n
            out["psnr_uint8"] = self.psnr_uint8_sum / n
        if self.pde:
            out["rel_l2_step"] = self.rel_l2_step_sum / n
        if self.lat_weights is not None:
            out["rmse_lat"] = (self.wse / n).sqrt()
            out["mae_lat"] = self.wae / n
        return out

    def compute(self) -> dict[str, Tensor]:
        """Scalars over everything seen since the last reset (float32; names as in the class docstring)."""
        t = self.out_frames
        frames = self.n_samples * t
        out = {
            "mse": self.sse.sum() / (self.n_values * t),
            "mae": self.sae.sum() / (self.n_values * t),
            "mse_frame": self.sse.sum() / frames,
            "mae_frame": self.sae.sum() / frames,
        }
        out["rmse"] = out["mse"].sqrt()
        if self.data_range is not None:
            out["ssim"] = self.ssim_sum.sum() / frames
            out["psnr"] = self.psnr_sum.sum() / frames
            out["psnr_capped"] = self.psnr_capped.clone()
            out["psnr_uint8"] = self.psnr_uint8_sum.sum() / frames
            out["psnr_uint8_capped"] = self.psnr_uint8_capped.clone()
        if self.pde:
            out["rel_l2"] = self.rel_l2_sum / self.n_samples
            out["rel_l2_step"] = self.rel_l2_step_sum.sum() / frames
        if self.lat_weights is not None:
            out["rmse_lat"] = (self.wse.sum() / frames).sqrt()
            out["mae_lat"] = self.wae.sum() / frames
        return {k: v.float() for k, v in out.items()}

    def per_lead(self) -> dict[str, Tensor]:
        """Per-lead-time curves, each ``[T]`` float32, synced across processes.

        Returns:
            ``mse``, ``mae``, ``rmse`` (per-element, per lead); with ``data_range`` also ``ssim``, ``psnr``,
            ``psnr_uint8``; with ``pde`` ``rel_l2_step``; with ``lat_weights`` ``rmse_lat`` and ``mae_lat``.
        """
        # Inside an outer sync (e.g. called from compute) the states are already global; leave that sync alone.
        outer = self._is_synced
        with self.sync_context(should_sync=self.sync_on_compute and not outer, should_unsync=not outer):
            return {k: v.float() for k, v in self._lead_means().items()}
