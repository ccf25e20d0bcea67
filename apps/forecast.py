"""stpred-forecast: forecast weather and traffic grids from a saved checkpoint, written as CF-style NetCDF.

Commands:
    stpred-forecast --ckpt runs/era5_uk/checkpoints/last.ckpt era5_t2m_2019-03_uk.nc
    stpred-forecast --ckpt last.ckpt era5_t2m_2019-03_uk.nc --init-time 2019-03-20T12:00 --out uk.nc --plot
    stpred-forecast --ckpt last.ckpt /data/weatherbench/5.625deg     # a WeatherBench-1 folder, or a .zarr store
    stpred-forecast --ckpt taxibj.ckpt BJ16_M32x32_T30_InOut.h5 --init-time 2016033148
    stpred-forecast --ckpt ns_fno2d.ckpt vorticity.npy               # [T, C, H, W] in physical units

The checkpoint's metadata decides how INPUT is read. A weather checkpoint (``variables``, ``latitude``,
``longitude``) reads its variables and levels on its (cropped) grid from a NetCDF file, a WeatherBench-1 folder or a
Zarr store; a grid-flow checkpoint (TaxiBJ, ``flow_min``/``flow_max``) reads an ST-ResNet ``.h5`` file and scales it
as training did; any other forecaster reads a ``.npy`` array. The model sees the ``T_in`` stamps ending at
``--init-time`` (default: the input's last ones); the forecast is written in the data's own units.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stpred.apps._cli import ArgumentParser, resolve_device, run_cli
from stpred.errors import UserError

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from stpred.checkpoint import Predictor

__all__ = ["Forecast", "checkpoint_kind", "default_output", "forecast_figure", "main", "plot_forecast", "run_forecast"]

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
    """

    dataset: xr.Dataset
    last_input: np.ndarray
    frames: np.ndarray
    names: list[str]
    units: list[str]
    init: str | None
    leads: list[str]
    extent: tuple[float, float, float, float] | None = None


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


def _predict(predictor: Predictor, window: np.ndarray) -> np.ndarray:
    """``[T_in, C, H, W]`` physical -> ``[T_out, C, H, W]`` float32 physical, on the predictor's device."""
    import torch

    return predictor.predict(torch.from_numpy(window)).cpu().numpy().astype(np.float32)


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
    frames = _predict(predictor, window.frames)
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
    counts = unscale_flows(_predict(predictor, scale_flows(window.counts, low, scale)), low, scale)
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
    )


def forecast_array(predictor: Predictor, path: Path, init_text: str | None, attrs: Mapping[str, Any]) -> Forecast:
    """Any other forecaster: a ``.npy`` ``[T, C, H, W]`` in physical units, its last ``T_in`` frames."""
    from stpred.apps._grid_io import array_dataset, read_array_window

    if init_text is not None:
        raise UserError(f"--init-time needs time stamps, and {path} (an array) has none; drop --init-time")
    meta = predictor.metadata
    window = read_array_window(path, predictor.in_shape)
    frames = _predict(predictor, window)
    dataset = array_dataset(frames, meta, attrs)
    return Forecast(
        dataset=dataset,
        last_input=window[-1],
        frames=frames,
        names=[str(n) for n in dataset["channel"].values],
        units=[str(u) for u in dataset["channel_units"].values],
        init=None,
        leads=[f"+{k} step" for k in range(1, len(frames) + 1)],
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
        "checkpoint": str(ckpt.resolve()),
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
    return "\n".join(lines)


def run_forecast(
    ckpt: Path, input_path: Path, *, init_time: str | None = None, out: Path | None = None, device: str = "auto"
) -> tuple[Forecast, Path]:
    """Forecast from ``input_path`` with the checkpoint and write the NetCDF; returns the forecast and its path."""
    from stpred.apps._grid_io import write_netcdf

    if not input_path.exists():
        raise UserError(
            f"input not found: {input_path} (give a NetCDF file, WeatherBench folder, Zarr store, .h5 or .npy)"
        )
    out = (out or default_output(input_path)).absolute()
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist; create it or pick another --out")
    if out.exists() and out.resolve() == input_path.resolve():
        raise UserError(f"--out {out} is the input itself; pick another output file")
    predictor = load_forecaster(ckpt, resolve_device(device))
    kind = checkpoint_kind(predictor.metadata)
    result = FORECASTERS[kind](predictor, input_path, init_time, global_attrs(predictor, ckpt, input_path))
    write_netcdf(result.dataset, out)
    return result, out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "input", type=Path, help="NetCDF file, WeatherBench-1 folder, Zarr store, ST-ResNet .h5 or .npy"
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a forecasting .ckpt written by stpred-train")
    parser.add_argument("--init-time", help="last input stamp, ISO (2019-03-31T12:00) or YYYYMMDDSS; default: the last")
    parser.add_argument("--out", type=Path, help="output NetCDF (default: <input stem>_forecast.nc here)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--plot", action="store_true", help="also write a PNG beside the NetCDF")
    return parser.parse_args(argv)


def _run(argv: list[str] | None) -> None:
    args = _parse(argv)
    result, out = run_forecast(args.ckpt, args.input, init_time=args.init_time, out=args.out, device=args.device)
    png = None
    if args.plot:
        png = out.with_suffix(".png")
        plot_forecast(result, png)
    print(summary(result, out, png))


def main(argv: list[str] | None = None) -> None:
    run_cli(PROG, lambda: _run(argv))


if __name__ == "__main__":
    main()
