"""The two demos behind ``stpred-demo``: action classification and frame forecasting on one video clip.

Classification samples a clip exactly as the Kinetics datamodule's test split does (:class:`KineticsClips` in
``"test"`` mode: evenly spaced clips times centre/three crops, short clips looped), averages the class
probabilities over the views and draws the top-k labels onto the clip. Forecasting takes ``T_in`` context frames
at the checkpoint's stride, resizes and centre-crops them like the Kinetics forecast datamodule, predicts (rolling
the model forward for longer horizons) and compares with the clip's following frames where it has them.

A clip is a video file or a folder of images (its frames in natural name order, read by the ``data=frames``
datamodule's :class:`~stpred.datamodules.frames.ImageSequence`); both are opened with :func:`open_clip`.

Pixels handed to :meth:`Predictor.predict` are in [0, 1]: the predictor applies the checkpoint's normalisation.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from stpred.atomic import atomic_output
from stpred.checkpoint import Predictor
from stpred.datamodules.frames import ImageSequence
from stpred.datamodules.kinetics import KineticsClips, VideoEntry, crop_offsets, resize_short_side
from stpred.datamodules.video_io import VideoFile, VideoInfo, clip_indices, open_video, write_video
from stpred.errors import UserError

__all__ = [
    "ClassifyResult",
    "ForecastResult",
    "classification_views",
    "classify_clip",
    "clip_name",
    "demo_kind",
    "draw_top_k",
    "forecast_clip",
    "forecast_frame_indices",
    "forecast_input_frames",
    "lead_metrics",
    "open_clip",
    "roll_out",
    "side_by_side_frames",
    "write_classification",
    "write_forecast",
]

#: The channel names of the video datamodules (Moving MNIST, Kinetics): anything else is a physical field.
VIDEO_CHANNELS = (["intensity"], ["red", "green", "blue"])
#: Views predicted per forward pass, so 30-view testing of a large model fits in memory.
VIEWS_PER_BATCH = 8
#: Forecast panels smaller than this are scaled up (nearest neighbour) so that 64 x 64 frames stay visible.
MIN_PANEL_SIDE = 256
#: Side of the cells of the forecast strip (PNG), so that long horizons stay a sensible width.
STRIP_CELL_SIDE = 128
#: Frame rate of the forecast video: a handful of frames must be watchable.
FORECAST_FPS = 4.0
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, GREY, DARK = (255, 255, 255), (128, 128, 128), (24, 24, 24)
TOP1_COLOUR, OTHER_COLOUR = (60, 200, 90), (80, 150, 230)


# -- clips ---------------------------------------------------------------------------------------------------
def open_clip(path: Path) -> VideoFile | ImageSequence:
    """A folder of images as an :class:`ImageSequence`, else the video file (both read frames alike)."""
    return ImageSequence(path) if Path(path).is_dir() else open_video(path)


def clip_name(path: Path) -> str:
    """The name a clip's outputs start with: a video's stem, a folder's whole name."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


# -- checkpoint kinds ------------------------------------------------------------------------------------------
def demo_kind(predictor: Predictor, ckpt: str | os.PathLike) -> str:
    """``"classify"`` or ``"forecast"``; a checkpoint that forecasts physical fields is a :class:`UserError`."""
    meta = predictor.metadata
    if predictor.task == "classify":
        if predictor.in_shape[1] != 3:
            raise UserError(f"{ckpt} classifies {predictor.in_shape[1]}-channel clips; the demo feeds RGB video")
        return "classify"
    if predictor.task == "forecast" and _is_video_forecaster(meta, predictor.in_shape[1]):
        return "forecast"
    dataset = meta.get("dataset", "non-video data")
    channels = ", ".join(str(c) for c in meta.get("channels") or [])
    raise UserError(
        f"{ckpt} forecasts {dataset} fields ({channels or 'unnamed channels'}), not video frames; "
        "use stpred-forecast for gridded fields"
    )


def _is_video_forecaster(meta: dict[str, Any], channels: int) -> bool:
    named = meta.get("channels")
    return (
        channels in (1, 3)
        and not meta.get("pde", False)
        and meta.get("data_range") is not None
        and math.isclose(float(meta["data_range"]), 1.0)
        and (named is None or list(named) in VIDEO_CHANNELS)
    )


# -- classification --------------------------------------------------------------------------------------------
@dataclass
class ClassifyResult:
    """A clip's class probabilities averaged over its views."""

    probabilities: torch.Tensor  # [num_classes]
    clips: int
    crops: int
    frame_indices: list[list[int]]  # per temporal view
    short_clip: bool  # shorter than a view's span: indices looped or padded, as the datamodule does

    def top_k(self, class_names: list[str], k: int) -> list[dict[str, Any]]:
        """The ``k`` most likely classes, most likely first: ``{"label", "class_id", "probability"}``."""
        values, indices = self.probabilities.topk(min(k, self.probabilities.numel()))
        names = class_names or [str(i) for i in range(self.probabilities.numel())]
        return [
            {"label": names[i], "class_id": int(i), "probability": float(v)}
            for v, i in zip(values.tolist(), indices.tolist())
        ]


def _test_clips(path: Path, meta: dict[str, Any], in_shape: tuple[int, ...], views: tuple[int, int]) -> KineticsClips:
    """The Kinetics test-mode sampler for one clip, without normalisation (values stay in [0, 1])."""
    t, _, h, w = in_shape
    return KineticsClips(
        [VideoEntry(str(path))],
        task="classify",
        mode="test",
        clip_frames=t,
        frame_stride=int(meta.get("frame_stride") or 1),
        crop_size=(h, w),
        short_side=meta.get("short_side"),
        test_clips=views[0],
        test_crops=views[1],
        short_clips=meta.get("short_clips", "loop"),
    )


def classification_views(
    path: Path, meta: dict[str, Any], in_shape: tuple[int, ...], views: tuple[int, int], video_frames: int
) -> tuple[torch.Tensor, list[list[int]], bool]:
    """The clip's test views as the Kinetics datamodule samples them.

    Returns:
        ``[V, T, 3, h, w]`` float32 pixels in [0, 1], clip-major (``V = clips * crops``); each temporal view's
        frame indices; whether the clip is shorter than a view's span (indices then looped or padded).
    """
    sampler = _test_clips(path, meta, in_shape, views)
    x = _folder_views(sampler, path, video_frames) if path.is_dir() else sampler.load(0)["x"]
    x = x.unsqueeze(0) if x.dim() == 4 else x
    indices = [sampler.frame_indices(s, video_frames).tolist() for s in sampler.clip_starts(0, video_frames)]
    return x, indices, sampler.span > video_frames


def _folder_views(sampler: KineticsClips, path: Path, video_frames: int) -> torch.Tensor:
    """The sampler's test views of a folder of images: its own indices, resize and crops, pixels in [0, 1].

    Returns:
        ``[V, T, 3, h, w]`` float32, clip-major.
    """
    clips = [sampler.frame_indices(s, video_frames) for s in sampler.clip_starts(0, video_frames)]
    wanted, inverse = np.unique(np.concatenate(clips), return_inverse=True)
    with ImageSequence(path) as images:
        frames = resize_short_side(images.read(wanted), sampler.short_side, sampler.crop_size)
    (ch, cw), t = sampler.crop_size, sampler.clip_frames
    views = [
        frames[inverse[k * t : (k + 1) * t], y : y + ch, x : x + cw]
        for k in range(len(clips))
        for (y, x), _ in sampler.crops(*frames.shape[1:3])
    ]
    return torch.from_numpy(np.ascontiguousarray(np.stack(views))).permute(0, 1, 4, 2, 3).float().div_(255.0)


def classify_clip(predictor: Predictor, path: Path, info: VideoInfo, views: tuple[int, int]) -> ClassifyResult:
    """Average ``predictor``'s class probabilities over the clip's ``clips x crops`` views."""
    x, indices, short_clip = classification_views(path, predictor.metadata, predictor.in_shape, views, info.num_frames)
    probs = torch.cat([predictor.predict(chunk).cpu() for chunk in x.split(VIEWS_PER_BATCH)])
    return ClassifyResult(probs.mean(0), views[0], views[1], indices, short_clip)


def _fit_text(text: str, max_width: int, scale: float, thickness: int) -> str:
    """``text`` shortened with "..." until it fits in ``max_width`` pixels."""
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= max_width:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "...", FONT, scale, thickness)[0][0] > max_width:
        text = text[:-1]
    return text + "..."


def draw_top_k(frames: np.ndarray, top: list[dict[str, Any]]) -> np.ndarray:
    """The frames with a darkened panel of the top-k labels, probabilities and bars in the top-left corner.

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB (not modified).
        top: ``{"label", "probability"}`` rows, most likely first.

    Returns:
        uint8 ``[T, H, W, 3]`` RGB.
    """
    height, width = frames.shape[1:3]
    scale = max(0.4, height / 640)
    thickness = 1 if scale < 0.8 else 2
    (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, thickness)
    pad = max(3, round(6 * scale))
    bar_h = max(3, text_h // 2)
    row_h = text_h + baseline + bar_h + pad
    lines = [f"{row['probability']:6.1%}  {row['label']}" for row in top]
    panel_w = min(width, max(cv2.getTextSize(s, FONT, scale, thickness)[0][0] for s in lines) + 2 * pad)
    panel_w = max(panel_w, min(width, width // 3))
    panel_h = min(height, pad + row_h * len(top))
    lines = [_fit_text(s, panel_w - 2 * pad, scale, thickness) for s in lines]
    out = frames.copy()
    out[:, :panel_h, :panel_w] = (out[:, :panel_h, :panel_w] * 0.35).astype(np.uint8)
    bar_max = panel_w - 2 * pad
    for frame in out:
        for rank, (row, line) in enumerate(zip(top, lines)):
            y = pad + rank * row_h
            cv2.putText(frame, line, (pad, y + text_h), FONT, scale, WHITE, thickness, cv2.LINE_AA)
            bar_y = y + text_h + baseline
            cv2.rectangle(frame, (pad, bar_y), (pad + bar_max, bar_y + bar_h), GREY, 1)
            filled = round(bar_max * float(row["probability"]))
            if filled > 0:
                colour = TOP1_COLOUR if rank == 0 else OTHER_COLOUR
                cv2.rectangle(frame, (pad, bar_y), (pad + filled, bar_y + bar_h), colour, cv2.FILLED)
    return out


def write_classification(
    out_dir: Path,
    path: Path,
    info: VideoInfo,
    result: ClassifyResult,
    top: list[dict[str, Any]],
    record: dict[str, Any],
    max_frames: int,
) -> tuple[Path, Path]:
    """Write ``<stem>_classes.json`` and ``<stem>_annotated.mp4``; returns their paths.

    Args:
        info: the clip's :class:`VideoInfo`.
        top: rows of :meth:`ClassifyResult.top_k`.
        record: plain values added to the JSON (checkpoint, model).
        max_frames: the annotated video holds the clip's first ``min(num_frames, max_frames)`` frames.
    """
    count = min(info.num_frames, max_frames)
    with open_clip(path) as video:
        frames = video.read(np.arange(count))
    video_path = write_video(out_dir / f"{clip_name(path)}_annotated.mp4", draw_top_k(frames, top), fps=_fps(info))
    payload = {
        "clip": str(path),
        **record,
        "task": "classify",
        "labels": [row["label"] for row in top],
        "probabilities": [row["probability"] for row in top],
        "class_ids": [row["class_id"] for row in top],
        "views": {"clips": result.clips, "crops": result.crops, "total": result.clips * result.crops},
        "frame_indices": result.frame_indices,
        "short_clip": result.short_clip,
        "video_frames": info.num_frames,
        "annotated_frames": count,
    }
    json_path = write_json(out_dir / f"{clip_name(path)}_classes.json", payload)
    return json_path, video_path


def _fps(info: VideoInfo) -> float:
    return info.fps if info.fps and info.fps > 0 else 25.0


# -- forecasting -----------------------------------------------------------------------------------------------
@dataclass
class ForecastResult:
    """One clip's forecast and what it is compared with (pixels in [0, 1])."""

    context: torch.Tensor  # [T_in, C, H, W]
    forecast: torch.Tensor  # [N, C, H, W]
    truth: torch.Tensor  # [K, C, H, W], K <= N: the clip's frames after the context, where it has them
    context_indices: list[int]
    forecast_indices: list[int]  # the frame each lead stands for (may lie past the clip's end)
    steps: int  # forward passes (autoregressive rollout when > 1)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def forecast_frame_indices(
    path: Path, video_frames: int, start: int, t_in: int, horizon: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Context indices ``start + stride * k`` (``k < t_in``) and the indices of the ``horizon`` leads after them.

    Raises:
        UserError: the clip lacks frames for the context.
    """
    needed = start + stride * (t_in - 1) + 1
    if video_frames < needed:
        raise UserError(
            f"clip {path} has {video_frames} frames; the forecaster needs {needed} ({t_in} context frames at stride "
            f"{stride} from frame {start}); use a longer clip or a smaller --start"
        )
    return clip_indices(start, t_in, stride), clip_indices(start + stride * t_in, horizon, stride)


def forecast_input_frames(frames: np.ndarray, meta: dict[str, Any], in_shape: tuple[int, ...]) -> torch.Tensor:
    """Video frames as the forecaster sees them: short side resized, centre crop, grey when it has one channel.

    Args:
        frames: uint8 ``[T, h, w, 3]`` RGB.
        meta: checkpoint metadata; ``short_side`` when present (Kinetics), else the crop's short side.
        in_shape: ``(T_in, C, H, W)``.

    Returns:
        float32 ``[T, C, H, W]`` in [0, 1].
    """
    _, channels, height, width = in_shape
    short_side = meta["short_side"] if "short_side" in meta else min(height, width)
    frames = resize_short_side(frames, short_side, (height, width))
    y, x = crop_offsets(*frames.shape[1:3], (height, width), 1)[0]
    frames = frames[:, y : y + height, x : x + width]
    if channels == 1:
        frames = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])[..., None]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def roll_out(predictor: Predictor, context: torch.Tensor, horizon: int) -> tuple[torch.Tensor, int]:
    """``horizon`` frames: each pass sees the last ``T_in`` frames of context and forecast so far.

    Args:
        context: ``[T_in, C, H, W]`` in the data's units.

    Returns:
        ``[horizon, C, H, W]`` on the CPU (raw forecasts, not clipped) and the number of forward passes.
    """
    t_in = predictor.in_shape[0]
    frames = [context.cpu()]
    produced = steps = 0
    while produced < horizon:
        window = torch.cat(frames)[-t_in:]
        frames.append(predictor.predict(window).cpu())
        produced += frames[-1].shape[0]
        steps += 1
    return torch.cat(frames[1:])[:horizon], steps


def lead_metrics(forecast: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> list[dict[str, Any]]:
    """Per-lead MSE and PSNR (dB) of the first ``len(truth)`` forecast frames; PSNR is ``None`` for a perfect frame.

    Args:
        forecast: ``[N, C, H, W]``.
        truth: ``[K, C, H, W]``, ``K <= N``.
    """
    err = (forecast[: len(truth)].double() - truth.double()).pow(2).flatten(1).mean(1)
    rows = []
    for lead, mse in enumerate(err.tolist(), 1):
        psnr = 10.0 * math.log10(data_range**2 / mse) if mse > 0 else None
        rows.append({"lead": lead, "mse": mse, "psnr": psnr})
    return rows


def forecast_clip(predictor: Predictor, path: Path, info: VideoInfo, start: int, horizon: int) -> ForecastResult:
    """Forecast ``horizon`` frames after ``T_in`` context frames of the clip from ``start``; score against truth."""
    meta = predictor.metadata
    stride = int(meta.get("frame_stride") or 1)
    t_in = predictor.in_shape[0]
    context_idx, lead_idx = forecast_frame_indices(path, info.num_frames, start, t_in, horizon, stride)
    truth_idx = lead_idx[lead_idx < info.num_frames]
    with open_clip(path) as video:
        frames = video.read(np.concatenate([context_idx, truth_idx]))
    pixels = forecast_input_frames(frames, meta, predictor.in_shape)
    context, truth = pixels[:t_in], pixels[t_in:]
    forecast, steps = roll_out(predictor, context, horizon)
    metrics = lead_metrics(forecast, truth, float(meta.get("data_range") or 1.0))
    for row, index in zip(metrics, truth_idx.tolist()):
        row["frame_index"] = index
    return ForecastResult(context, forecast, truth, context_idx.tolist(), lead_idx.tolist(), steps, metrics)


def _to_rgb_uint8(x: torch.Tensor, side: int | None = None, min_side: int = 0) -> np.ndarray:
    """``[T, C, H, W]`` in [0, 1] -> uint8 ``[T, h, w, 3]``, scaled (nearest) to ``side`` or up to ``min_side``."""
    frames = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    height, width = frames.shape[1:3]
    factor = side / max(height, width) if side else max(1, math.ceil(min_side / min(height, width)))
    if factor == 1:
        return np.ascontiguousarray(frames)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interp = cv2.INTER_NEAREST if factor > 1 else cv2.INTER_AREA  # crisp pixels up, no aliasing down
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


def _put(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.5) -> None:
    cv2.putText(image, text, origin, FONT, scale, WHITE, 1, cv2.LINE_AA)


def side_by_side_frames(result: ForecastResult) -> np.ndarray:
    """uint8 ``[T_in + N, h, w, 3]``: context frames on both sides, then truth | forecast with labels and counters."""
    context = _to_rgb_uint8(result.context, min_side=MIN_PANEL_SIDE)
    truth = _to_rgb_uint8(result.truth, min_side=MIN_PANEL_SIDE) if len(result.truth) else None
    forecast = _to_rgb_uint8(result.forecast, min_side=MIN_PANEL_SIDE)
    ph, pw = context.shape[1:3]
    bar, gap = 24, 8
    missing = np.full((ph, pw, 3), 48, np.uint8)
    _put(missing, "no truth", (8, ph // 2))
    frames = []
    t_in, horizon = len(context), len(forecast)
    for k in range(t_in + horizon):
        canvas = np.full((ph + 2 * bar, 2 * pw + gap, 3), DARK, np.uint8)
        if k < t_in:
            left, right, titles = context[k], context[k], ("input", "input")
            counter = f"context {k + 1}/{t_in}  (frame {result.context_indices[k]})"
        else:
            j = k - t_in
            left = truth[j] if truth is not None and j < len(truth) else missing
            right, titles = forecast[j], ("truth", "forecast")
            counter = f"lead +{j + 1}/{horizon}  (frame {result.forecast_indices[j]})"
        canvas[bar : bar + ph, :pw], canvas[bar : bar + ph, pw + gap :] = left, right
        _put(canvas, titles[0], (6, bar - 7))
        _put(canvas, titles[1], (pw + gap + 6, bar - 7))
        _put(canvas, counter, (6, 2 * bar + ph - 7))
        frames.append(canvas)
    return np.stack(frames)


def _strip_image(result: ForecastResult) -> np.ndarray:
    """uint8 ``[h, w, 3]`` RGB: rows input / truth / forecast, one frame per column, a label column on the left."""
    rows = {
        "input": _to_rgb_uint8(result.context, side=STRIP_CELL_SIDE),
        "truth": _to_rgb_uint8(result.truth, side=STRIP_CELL_SIDE) if len(result.truth) else None,
        "forecast": _to_rgb_uint8(result.forecast, side=STRIP_CELL_SIDE),
    }
    ch, cw = rows["input"].shape[1:3]
    label_w, gap = 80, 2
    columns = max(len(result.context), len(result.forecast))
    image = np.full((3 * (ch + gap) + gap, label_w + columns * (cw + gap), 3), DARK, np.uint8)
    for r, (name, cells) in enumerate(rows.items()):
        y = gap + r * (ch + gap)
        _put(image, name, (6, y + ch // 2))
        for c, cell in enumerate(cells if cells is not None else []):
            x = label_w + c * (cw + gap)
            image[y : y + ch, x : x + cw] = cell
    return image


def write_forecast(out_dir: Path, path: Path, result: ForecastResult, record: dict[str, Any]) -> list[Path]:
    """Write ``<stem>_forecast.mp4`` (truth | forecast), ``<stem>_forecast.png`` (strip) and ``_forecast.json``."""
    name = clip_name(path)
    video_path = write_video(out_dir / f"{name}_forecast.mp4", side_by_side_frames(result), fps=FORECAST_FPS)
    png_path = write_png(out_dir / f"{name}_forecast.png", _strip_image(result))
    scored = [row for row in result.metrics if row["psnr"] is not None]
    payload = {
        "clip": str(path),
        **record,
        "task": "forecast",
        "context_indices": result.context_indices,
        "forecast_indices": result.forecast_indices,
        "horizon": len(result.forecast),
        "forward_passes": result.steps,
        "truth_frames": len(result.truth),
        "per_lead": result.metrics,
        "mean_mse": float(np.mean([row["mse"] for row in result.metrics])) if result.metrics else None,
        "mean_psnr": float(np.mean([row["psnr"] for row in scored])) if scored else None,
    }
    json_path = write_json(out_dir / f"{name}_forecast.json", payload)
    return [video_path, png_path, json_path]


# -- atomic writes ---------------------------------------------------------------------------------------------
def _replace_atomically(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    return _replace_atomically(path, (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode())


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write uint8 ``[H, W, 3]`` RGB as PNG."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise UserError(f"OpenCV cannot encode {path} as PNG")
    return _replace_atomically(path, encoded.tobytes())
