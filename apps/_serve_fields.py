"""The field page's work for ``stpred-serve``: one forecast of gridded fields, its maps per lead and its skill.

The forecast itself is :func:`stpred.apps._forecasting.run_forecast` (what ``stpred-forecast`` does: the input read as
training read it, the NetCDF written). Added here: the truth at each lead where the input has it (the same readers,
asked for the stamps after the initial time), one PNG of maps per lead on colour scales shared by all leads (so a
slider compares like with like), and RMSE per lead against persistence (the last input held), latitude-weighted on a
weather grid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stpred.errors import UserError

__all__ = ["NETCDF_NAME", "SKILL_NAME", "forecast_fields", "lead_rmse", "read_truth"]

NETCDF_NAME = "forecast.nc"
SKILL_NAME = "skill.png"

Progress = Callable[[str], None]


def _weather_truth(path: Path, meta: dict[str, Any], init: str, t_out: int) -> np.ndarray | None:
    """``[K, C, H, W]`` north-up: the stamps after ``init`` the input holds (``K <= t_out``), or ``None``."""
    from stpred.apps._grid_io import iso, parse_time, read_weather_window, weather_step
    from stpred.plotting import north_up

    step = weather_step(meta)
    for k in range(t_out, 0, -1):  # as many leads as the input covers
        shape = [k, *list(meta["in_shape"])[1:]]
        try:
            window = read_weather_window(path, {**meta, "in_shape": shape}, iso(parse_time(init) + k * step))
        except UserError:
            continue
        return north_up(window.frames, meta["latitude"])
    return None


def read_truth(kind: str, path: Path, meta: dict[str, Any], init: str | None, t_out: int, array: np.ndarray | None):
    """The true fields at the forecast's leads where the input has them: ``[K, C, H, W]`` or ``None``.

    Args:
        kind: :func:`stpred.apps._forecasting.checkpoint_kind`.
        array: for ``"array"`` inputs, the frames after the initial one (the caller cut the input there).
    """
    if kind == "weather" and init is not None:
        return _weather_truth(path, meta, init, t_out)
    if kind == "array" and array is not None and len(array):
        return np.asarray(array[:t_out], dtype=np.float32)
    return None


def lead_rmse(pred: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """RMSE per lead and channel of ``pred`` ``[K, C, H, W]`` against ``truth`` (same shape): ``[K, C]``.

    ``weights`` ``[H]`` (mean 1) weight the rows, e.g. latitude area weights; NaN cells are left out.
    """
    err = (pred.astype(np.float64) - truth.astype(np.float64)) ** 2
    w = np.ones(err.shape[-2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(w[:, None], err.shape[-2:])
    valid = np.isfinite(err)
    total = np.where(valid, err * w, 0.0).sum(axis=(-2, -1))
    return np.sqrt(total / np.maximum((valid * w).sum(axis=(-2, -1)), 1e-12))


def _lead_maps(result, truth: np.ndarray | None, out_dir: Path) -> list[str]:
    """One PNG per lead: per channel (row) the forecast, the truth and their difference, scales shared by all leads."""
    from matplotlib.figure import Figure

    from stpred.plotting import (
        DPI,
        add_colourbar,
        choose_scale,
        colourbar_label,
        difference_scale,
        draw_field,
        save_png,
    )

    channels = len(result.names)
    scales = [
        choose_scale(
            result.last_input[c],
            *([] if truth is None else [truth[:, c]]),
            also=[result.frames[:, c]],
            label=colourbar_label(n, u),
        )
        for c, (n, u) in enumerate(zip(result.names, result.units))
    ]
    diffs = [
        difference_scale(result.frames[: len(truth), c], truth[:, c], label=colourbar_label("forecast - truth", u))
        if truth is not None
        else None
        for c, u in enumerate(result.units)
    ]
    names = []
    for k, lead in enumerate(result.leads):
        has_truth = truth is not None and k < len(truth)
        columns = 3 if has_truth else 1
        fig = Figure(figsize=(3.4 * columns + 1.2, 2.8 * channels), dpi=DPI, layout="constrained")
        axes = fig.subplots(channels, columns, squeeze=False)
        when = f"init {result.init} " if result.init else ""
        fig.suptitle(f"{when}lead {lead}", fontsize=10)
        for c in range(channels):
            shown = draw_field(axes[c, 0], result.frames[k, c], scales[c], extent=result.extent)
            axes[c, 0].set_title(f"forecast {result.names[c]}", fontsize=9)
            if has_truth:
                draw_field(axes[c, 1], truth[k, c], scales[c], extent=result.extent)
                axes[c, 1].set_title("truth", fontsize=9)
            add_colourbar(fig, shown, axes[c, : 2 if has_truth else 1], scales[c])
            if has_truth:
                image = draw_field(axes[c, 2], result.frames[k, c] - truth[k, c], diffs[c], extent=result.extent)
                axes[c, 2].set_title("forecast - truth", fontsize=9)
                add_colourbar(fig, image, [axes[c, 2]], diffs[c])
        name = f"lead_{k + 1:02d}.png"
        save_png(fig, out_dir / name)
        names.append(name)
    return names


def _skill_plot(result, model: np.ndarray, held: np.ndarray, path: Path) -> None:
    """RMSE per lead of the forecast and of persistence, one panel per channel."""
    from matplotlib.figure import Figure

    from stpred.plotting import DPI, colourbar_label, save_png

    channels = model.shape[1]
    fig = Figure(figsize=(5.4, 2.9 * channels), dpi=DPI, layout="constrained")
    axes = fig.subplots(channels, 1, squeeze=False)[:, 0]
    leads = np.arange(1, len(model) + 1)
    for c, ax in enumerate(axes):
        ax.plot(leads, model[:, c], "o-", markersize=4, label="forecast")
        ax.plot(leads, held[:, c], "s--", markersize=4, label="persistence (last input)")
        ax.set_xticks(leads, result.leads[: len(model)], fontsize=7, rotation=45 if len(leads) > 8 else 0)
        ax.set_ylabel(colourbar_label("RMSE", result.units[c]))
        ax.set_title(f"{result.names[c]}: skill against persistence", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("lead")
    save_png(fig, path)


def _cut_array(path: Path, init: str | None, t_in: int, out_dir: Path) -> tuple[Path, np.ndarray | None, int | None]:
    """A ``.npy`` input ending at frame ``init`` (an index; default the last): the input to forecast from, the frames
    after ``init`` and ``init`` itself. Anything but a 4-D array goes through whole, for the forecast's own message."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path.name} as a .npy array ({' '.join(str(err).split())})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 4:
        return path, None, None
    if init is None:
        return path, None, len(array) - 1
    try:
        index = int(init)
    except ValueError:
        raise UserError(f"the init time of an array is a frame index (0 .. {len(array) - 1}), got '{init}'") from None
    if not t_in - 1 <= index < len(array):
        raise UserError(f"init frame {index} is outside {t_in - 1} .. {len(array) - 1} ({t_in} input frames needed)")
    cut = out_dir / "input.npy"
    np.save(cut, np.asarray(array[: index + 1]))
    return cut, np.asarray(array[index + 1 :]), index


def forecast_fields(
    ckpt: Path, input_path: Path, init: str | None, out_dir: Path, progress: Progress
) -> dict[str, Any]:
    """Forecast with ``ckpt`` from ``input_path`` ending at ``init`` and write what the field page shows.

    Returns:
        ``{"netcdf", "maps" [T_out], "leads" [T_out], "skill" (PNG or None), "rmse", "persistence_rmse", "init",
        "variables"}``; file entries are names inside ``out_dir``.
    """
    from stpred.apps._forecasting import checkpoint_kind, load_forecaster, run_forecast
    from stpred.metrics import latitude_area_weights
    from stpred.plotting import north_up

    progress("loading the checkpoint")
    predictor = load_forecaster(ckpt, "cpu")
    meta = dict(predictor.metadata)
    kind = checkpoint_kind(meta)
    after, index, source = None, None, input_path
    if kind == "array":
        source, after, index = _cut_array(input_path, init, predictor.in_shape[0], out_dir)
        init = None
    progress("forecasting")
    result, nc = run_forecast(ckpt, source, init_time=init, out=out_dir / NETCDF_NAME, device="cpu")
    progress("reading the truth")
    truth = read_truth(kind, input_path, meta, result.init, len(result.frames), after)
    progress(f"drawing {len(result.leads)} map(s)")
    maps = _lead_maps(result, truth, out_dir)
    payload: dict[str, Any] = {
        "netcdf": nc.name,
        "maps": maps,
        "leads": result.leads,
        "init": result.init if kind != "array" else f"frame {index}",
        "variables": [f"{n} [{u}]" for n, u in zip(result.names, result.units)],
        "skill": None,
        "rmse": None,
        "persistence_rmse": None,
        "truth_leads": 0 if truth is None else len(truth),
    }
    if truth is not None:
        weights = None
        if kind == "weather":
            lat = np.asarray(meta["latitude"], dtype=np.float64)
            weights = latitude_area_weights(north_up(lat[:, None], lat)[:, 0]).numpy()
        model = lead_rmse(result.frames[: len(truth)], truth, weights)
        held = lead_rmse(np.broadcast_to(result.last_input, truth.shape), truth, weights)
        _skill_plot(result, model, held, out_dir / SKILL_NAME)
        payload.update(skill=SKILL_NAME, rmse=model.tolist(), persistence_rmse=held.tolist())
    return payload
