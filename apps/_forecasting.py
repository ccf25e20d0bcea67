"""What ``stpred-forecast`` does, shared with ``stpred-serve``: read the input window the checkpoint's metadata asks
for, forecast it, build the CF-style NetCDF dataset (masked cells NaN, ``stpred_mask``/``stpred_fill`` attributes),
plot and summarise it. The console script is :mod:`stpred.apps.forecast`.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stpred.apps._cli import resolve_device
from stpred.errors import UserError

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from stpred.checkpoint import Predictor
    from stpred.masking import MaskReport

__all__ = [
    "PROG", "Forecast", "checkpoint_kind", "default_output", "forecast_figure", "load_forecaster", "plot_forecast",
    "run_forecast", "summary",
]  # fmt: skip

PROG = "stpred-forecast"
PLOTTED_LEADS = 3


@dataclass
class Forecast:
    """A forecast and what the summary and the plot need.

    Attributes:
        dataset: the NetCDF content.
        last_input: ``[C, H, W]`` the last input frame, physical units, rows north-up for weather.
        frames: ``[T_out, C, H, W]`` the forecast, oriented like ``last_input``.
        names: channel names ``[C]``.
        units: channel units ``[C]``.
        init: the initial time (ISO), or ``None`` for inputs without time stamps.
        leads: lead labels ``[T_out]`` (``+1h``, ``+30min``, ``+1 step``).
        extent: ``(left, right, bottom, top)`` of the grid in plot coordinates, or ``None`` for grid indices.
        report: what was masked and filled (:class:`stpred.masking.MaskReport`).
    """

    dataset: xr.Dataset
    last_input: np.ndarray
    frames: np.ndarray
    names: list[str]
    units: list[str]
    init: str | None
    leads: list[str]
    extent: tuple[float, float, float, float] | None = None
    report: MaskReport | None = None


def checkpoint_kind(meta: Mapping[str, Any]) -> str:
    """``"weather"``, ``"flow"`` (TaxiBJ-like) or ``"array"`` (any other forecaster), from the metadata keys."""
    if meta.get("variables") and meta.get("latitude") is not None and meta.get("longitude") is not None:
        return "weather"
    if str(meta.get("dataset", "")).lower().startswith("taxibj") or "flow_min" in meta:
        return "flow"
    return "array"


def default_output(input_path: Path) -> Path:
    """``<input stem>_forecast.nc`` in the current folder (a folder or ``.zarr`` store gives its name)."""
    stem = input_path.name.removesuffix(".zarr") if input_path.is_dir() else input_path.stem
    return Path.cwd() / f"{stem}_forecast.nc"


def _lead_label(lead: np.timedelta64) -> str:
    minutes = int(lead / np.timedelta64(1, "m"))
    return f"+{minutes // 60}h" if minutes % 60 == 0 else f"+{minutes}min"


def _predict(predictor: Predictor, window: np.ndarray) -> tuple[np.ndarray, MaskReport]:
    """``[T_in, C, H, W]`` physical (NaN where missing) -> ``[T_out, C, H, W]`` float32 physical, NaN where the
    input is masked, and the report of what was masked and filled."""
    import torch

    out, report = predictor.predict_with_report(torch.from_numpy(window))
    return out.cpu().numpy().astype(np.float32), report


def cell_edges(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of a north-up grid of cell centres (``lat`` descending), half a cell out."""
    half_lon = abs(float(lon[-1] - lon[0])) / max(len(lon) - 1, 1) / 2
    half_lat = abs(float(lat[0] - lat[-1])) / max(len(lat) - 1, 1) / 2
    return float(lon[0]) - half_lon, float(lon[-1]) + half_lon, float(lat[-1]) - half_lat, float(lat[0]) + half_lat


def forecast_weather(predictor: Predictor, path: Path, init_text: str | None, attrs: Mapping[str, Any]) -> Forecast:
    """Weather grids: the checkpoint's channels and grid read from a NetCDF file, WB1 folder or Zarr store."""
    from stpred.apps._grid_io import iso, read_weather_window, weather_dataset
    from stpred.plotting import is_ascending, north_up

    meta = predictor.metadata
    window = read_weather_window(path, meta, init_text)
    frames, report = _predict(predictor, window.frames)
    init = iso(window.times[-1])
    dataset = weather_dataset(frames, window, meta, {**attrs, "init_time": init})
    lat, lon = np.asarray(meta["latitude"]), np.asarray(meta["longitude"])
    last_input, plotted = north_up(window.frames[-1], lat), north_up(frames, lat)  # plots are north-up
    if is_ascending(lat):
        lat = lat[::-1]
    return Forecast(
        dataset=dataset,
        last_input=last_input,
        frames=plotted,
        names=[str(n) for n in meta["channels"]],
        units=[str(u) for u in meta["units"]],
        init=init,
        leads=[_lead_label(window.step * k) for k in range(1, len(frames) + 1)],
        extent=cell_edges(lon, lat),
        report=report,
    )


def forecast_flow(predictor: Predictor, path: Path, init_text: str | None, attrs: Mapping[str, Any]) -> Forecast:
    """Grid flows: an ST-ResNet ``.h5`` file scaled with the training extremes; the forecast back in counts."""
    from stpred.apps._grid_io import (
        flow_dataset,
        flow_extremes,
        iso,
        read_flow_window,
        scale_flows,
        slot_time,
        unscale_flows,
    )

    meta = predictor.metadata
    low, scale = flow_extremes(meta)
    window = read_flow_window(path, meta, init_text)
    scaled, report = _predict(predictor, scale_flows(window.counts, low, scale))
    counts = unscale_flows(scaled, low, scale)
    init = iso(slot_time(int(window.slots[-1]), window.slots_per_day))
    dataset = flow_dataset(counts, window, meta, {**attrs, "init_time": init})
    names = [str(n) for n in dataset.data_vars]
    return Forecast(
        dataset=dataset,
        last_input=window.counts[-1],
        frames=counts,
        names=names,
        units=["vehicles per slot"] * len(names),
        init=init,
        leads=[_lead_label(window.slot_length * k) for k in range(1, len(counts) + 1)],
        report=report,
    )


def forecast_array(predictor: Predictor, path: Path, init_text: str | None, attrs: Mapping[str, Any]) -> Forecast:
    """Any other forecaster: a ``.npy`` ``[T, C, H, W]`` in physical units, or a file in the format and layout the
    checkpoint was trained on (``data=arrays``); its last ``T_in`` frames, or those ending at ``--init-time``."""
    from stpred.apps._grid_io import array_dataset, iso, read_array_window

    meta = predictor.metadata
    window = read_array_window(path, meta, init_text)
    frames, report = _predict(predictor, window.frames)
    init = None if window.times is None else iso(window.times[-1])
    dataset = array_dataset(frames, meta, {**attrs, **({"init_time": init} if init else {})})
    return Forecast(
        dataset=dataset,
        last_input=window.frames[-1],
        frames=frames,
        names=[str(n) for n in dataset["channel"].values],
        units=[str(u) for u in dataset["channel_units"].values],
        init=init,
        leads=[f"+{k} step" for k in range(1, len(frames) + 1)],
        report=report,
    )


FORECASTERS = {"weather": forecast_weather, "flow": forecast_flow, "array": forecast_array}


def global_attrs(predictor: Predictor, ckpt: Path, input_path: Path) -> dict[str, str]:
    from stpred._version import __version__

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "title": f"{predictor.model_name} forecast",
        "Conventions": "CF-1.8",
        "model": predictor.model_name,
        "dataset": str(predictor.metadata.get("dataset", "unknown")),
        "checkpoint": str(ckpt) if str(ckpt).startswith("zoo:") else str(ckpt.resolve()),  # a shipped one by name
        "input": str(input_path.resolve()),
        "stpred_version": __version__,
        "created_by": PROG,
        "history": f"{now}: created by {PROG} (stpred {__version__})",
    }


def load_forecaster(ckpt: Path, device: str) -> Predictor:
    """The checkpoint's :class:`~stpred.checkpoint.Predictor`; a classifier is refused."""
    from stpred.checkpoint import load_predictor

    predictor = load_predictor(ckpt, map_location=device)
    if predictor.task != "forecast":
        raise UserError(
            f"{ckpt} is a classification checkpoint ({predictor.model_name}); stpred-forecast needs a forecaster, "
            "use stpred-demo for classifiers"
        )
    return predictor


def forecast_figure(result: Forecast) -> tuple[Figure, dict[tuple[int, str], Axes]]:
    """Per channel (row): the last input frame, a few leads and the change over the forecast (last lead - input).

    The input and leads share one colour scale chosen from their values (:func:`stpred.plotting.choose_scale`:
    sequential for offset fields such as Kelvin or counts, diverging for anomalies and vorticity); the change has its
    own diverging scale. Bars carry the units; masked cells are grey. Returns the figure and its axes by
    ``(channel, column title)``.
    """
    from matplotlib.figure import Figure

    from stpred.plotting import DPI, add_colourbar, choose_scale, colourbar_label, difference_scale, draw_field

    leads = np.unique(np.linspace(0, len(result.frames) - 1, min(PLOTTED_LEADS, len(result.frames))).round())
    panels = [("input" if result.init is None else f"input {result.init}", lambda c: result.last_input[c])]
    panels += [(result.leads[int(k)], lambda c, k=int(k): result.frames[k, c]) for k in leads]
    change_title = f"{result.leads[-1]} - input"
    rows = len(result.names)
    fig = Figure(figsize=(3.2 * (len(panels) + 1) + 2.0, 2.6 * rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, len(panels) + 1, squeeze=False)
    by_title: dict[tuple[int, str], Axes] = {}
    for c, (name, units) in enumerate(zip(result.names, result.units)):
        scale = choose_scale(result.last_input[c], result.frames[:, c], label=colourbar_label(name, units))
        for ax, (title, frame) in zip(axes[c], panels):
            shown = draw_field(ax, frame(c), scale, extent=result.extent)
            ax.set_title(title, fontsize=9)
            by_title[(c, title)] = ax
        add_colourbar(fig, shown, axes[c, :-1], scale)
        change = result.frames[-1, c] - result.last_input[c]
        diff = difference_scale(result.frames[-1, c], result.last_input[c], label=colourbar_label("change", units))
        ax = axes[c, -1]
        add_colourbar(fig, draw_field(ax, change, diff, extent=result.extent), [ax], diff)
        ax.set_title(change_title, fontsize=9)
        by_title[(c, change_title)] = ax
        axes[c, 0].set_ylabel(name)
    return fig, by_title


def plot_forecast(result: Forecast, out: Path) -> None:
    """:func:`forecast_figure` as a PNG at ``out``, written atomically."""
    from stpred.apps._grid_io import write_atomic

    fig, _ = forecast_figure(result)
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi))


def summary(result: Forecast, out: Path, png: Path | None) -> str:
    leads = result.leads[0] if len(result.leads) == 1 else f"{result.leads[0]} .. {result.leads[-1]}"
    variables = ", ".join(f"{n} [{u}]" for n, u in zip(result.names, result.units))
    lines = [
        f"init time : {result.init or 'none (array input)'}",
        f"leads     : {leads} ({len(result.leads)})",
        f"variables : {variables}",
        f"written   : {out}" + (f" and {png}" if png is not None else ""),
    ]
    report = result.report
    if report is not None and report.filled_by_training_rule and report.first is not None:
        lines.insert(3, f"filled    : missing input values with {report.fill} (the checkpoint's fill_nan)")
    elif report is not None and report.masked_cells:
        lines.insert(3, f"masked    : {report.masked_cells} cells per step are NaN (masked input)")
    return "\n".join(lines)


def run_forecast(
    ckpt: Path, input_path: Path, *, init_time: str | None = None, out: Path | None = None, device: str = "auto"
) -> tuple[Forecast, Path]:
    """Forecast from ``input_path`` with the checkpoint and write the NetCDF; returns the forecast and its path."""
    from stpred.apps._grid_io import write_netcdf
    from stpred.apps._outputs import check_output_file

    if not input_path.exists():
        raise UserError(
            f"input not found: {input_path} (give a NetCDF file, WeatherBench folder, Zarr store, .h5 or .npy)"
        )
    out = check_output_file(out or default_output(input_path), "--out")
    if out.exists() and out.resolve() == input_path.resolve():
        raise UserError(f"--out {out} is the input itself; pick another output file")
    predictor = load_forecaster(ckpt, resolve_device(device))
    kind = checkpoint_kind(predictor.metadata)
    result = FORECASTERS[kind](predictor, input_path, init_time, global_attrs(predictor, ckpt, input_path))
    if result.report is not None:
        for name in result.dataset.data_vars:  # the masking note; _FillValue is NaN (netcdf_encoding)
            result.dataset[name].attrs.update(result.report.attributes())
        if result.report.message():
            print(f"{PROG}: warning: {result.report.message()}", file=sys.stderr)
    write_netcdf(result.dataset, out)
    return result, out
