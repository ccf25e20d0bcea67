"""The clip page's work for ``stpred-serve``: classify or forecast one clip, written as files a browser shows.

Everything model-side is :mod:`stpred.apps._video_demo` (what ``stpred-demo`` does): the clip is probed (damaged
clips refused), sampled and predicted exactly as there. What is added here is only the browser's formats: the
side-by-side context | truth | forecast frames as an animated WebP (an ``<img>`` plays it with no codec question), a
per-lead error plot against persistence (the last context frame held) as PNG, and plain JSON for the top-k bars.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stpred.checkpoint import Predictor
from stpred.errors import UserError

__all__ = ["ANIMATION_NAME", "PLOT_NAME", "classify", "forecast", "lead_plot", "write_animation"]

ANIMATION_NAME = "animation.webp"
PLOT_NAME = "per_lead.png"
#: Frames of a classified clip shown on the page (the labels are drawn on each); about 3 s of a 30 fps clip.
CLASSIFY_FRAMES = 96
WEBP_QUALITY = 85

Progress = Callable[[str], None]


def write_animation(frames: np.ndarray, path: Path, fps: float) -> Path:
    """uint8 ``[T, H, W, 3]`` RGB as a looping animated WebP at ``fps``."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    duration = max(20, round(1000 / fps))
    images[0].save(
        path, format="WEBP", save_all=True, append_images=images[1:], duration=duration, loop=0, quality=WEBP_QUALITY
    )
    return path


def lead_plot(rows: list[dict[str, Any]], persistence: list[dict[str, Any]], path: Path, title: str) -> Path:
    """PSNR (dB) per lead of the forecast and of persistence, as PNG; leads without truth are absent."""
    from matplotlib.figure import Figure

    from stpred.plotting import DPI, save_png

    fig = Figure(figsize=(5.2, 3.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for series, label, style in ((rows, "forecast", "o-"), (persistence, "persistence (last input)", "s--")):
        leads = [r["lead"] for r in series if r["psnr"] is not None]
        ax.plot(leads, [r["psnr"] for r in series if r["psnr"] is not None], style, label=label, markersize=4)
    ax.set_xticks([r["lead"] for r in rows])
    ax.set_xlabel("lead (frames)")
    ax.set_ylabel("PSNR [dB]")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _info(path: Path):
    from stpred.apps._clips import probe_clips

    return probe_clips([path])[path]


def forecast(
    predictor: Predictor, clip: Path, out_dir: Path, start: int, horizon: int | None, progress: Progress
) -> dict[str, Any]:
    """Forecast ``horizon`` frames (default the checkpoint's ``out_frames``) after the context from ``start``.

    Returns:
        ``{"kind": "forecast", "animation", "plot", "per_lead", "persistence", "mean_psnr", ...}``; file entries are
        names inside ``out_dir``.
    """
    from stpred.apps import _video_demo as demo

    progress("reading the clip")
    info = _info(clip)
    horizon = horizon or predictor.out_frames
    progress(f"forecasting {horizon} frame(s)")
    result = demo.forecast_clip(predictor, clip, info, start, horizon)
    held = result.context[-1:].expand(len(result.truth), *result.context.shape[1:])
    persistence = demo.lead_metrics(held, result.truth, float(predictor.metadata.get("data_range") or 1.0))
    progress("writing the animation")
    write_animation(demo.side_by_side_frames(result), out_dir / ANIMATION_NAME, demo.FORECAST_FPS)
    scored = [r["psnr"] for r in result.metrics if r["psnr"] is not None]
    held_scored = [r["psnr"] for r in persistence if r["psnr"] is not None]
    if result.metrics:
        lead_plot(result.metrics, persistence, out_dir / PLOT_NAME, f"{predictor.model_name} on {clip.name}")
    return {
        "kind": "forecast",
        "animation": ANIMATION_NAME,
        "plot": PLOT_NAME if result.metrics else None,
        "context_indices": result.context_indices,
        "forecast_indices": result.forecast_indices,
        "forward_passes": result.steps,
        "per_lead": result.metrics,
        "persistence": persistence,
        "mean_psnr": float(np.mean(scored)) if scored else None,
        "persistence_psnr": float(np.mean(held_scored)) if held_scored else None,
    }


def classify(predictor: Predictor, clip: Path, out_dir: Path, top_k: int, progress: Progress) -> dict[str, Any]:
    """The clip's top-k labels over the checkpoint's test views, and the clip's first frames with them drawn on.

    Returns:
        ``{"kind": "classify", "top": [{"label", "class_id", "probability"}], "animation", "views"}``.
    """
    from stpred.apps import _video_demo as demo
    from stpred.apps._clips import parse_views
    from stpred.datamodules.video_io import open_video

    if top_k < 1:
        raise UserError(f"top-k must be >= 1, got {top_k}")
    progress("reading the clip")
    info = _info(clip)
    views = parse_views(None, predictor.metadata)
    progress(f"classifying {views[0] * views[1]} view(s)")
    with torch.inference_mode():
        result = demo.classify_clip(predictor, clip, info, views)
    top = result.top_k(predictor.class_names, top_k)
    progress("drawing the labels")
    with open_video(clip) as video:
        frames = video.read(np.arange(min(info.num_frames, CLASSIFY_FRAMES)))
    fps = info.fps if info.fps and info.fps > 0 else 25.0
    write_animation(demo.draw_top_k(frames, top), out_dir / ANIMATION_NAME, fps)
    return {
        "kind": "classify",
        "top": top,
        "animation": ANIMATION_NAME,
        "views": {"clips": views[0], "crops": views[1]},
        "short_clip": result.short_clip,
    }
