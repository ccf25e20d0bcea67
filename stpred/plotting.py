"""Drawing gridded fields that read: a colour scale chosen from the data, north up, masked cells in grey, units on bars.

Shared by the validation panels (:class:`stpred.callbacks.PredictionPanel`) and ``stpred-forecast --plot``.

* :func:`choose_scale`: a diverging map (``RdBu_r``, limits symmetric about zero) for fields of both signs whose mean
  is near zero against their spread (anomalies, vorticity); otherwise a sequential map (``viridis``) between robust
  percentiles (Kelvin, pixel intensities, flow counts). :func:`difference_scale` is the diverging scale of an error.
* :func:`north_up`: rows ordered north to south whatever the latitude order of the grid.
* :func:`draw_field`: non-finite (masked) cells in a neutral grey that no map here contains.

Only :class:`matplotlib.figure.Figure` is used, never ``pyplot``: drawing neither switches the caller's backend nor
keeps figures alive in a global registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stpred.atomic import atomic_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure
    from matplotlib.image import AxesImage

__all__ = [
    "ColourScale",
    "Panel",
    "choose_scale",
    "colourbar_label",
    "difference_scale",
    "draw_field",
    "is_ascending",
    "north_up",
    "panel_figure",
    "render_panel",
    "save_png",
]

SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"
#: Colour of masked (NaN) cells: a mid grey, absent from both maps, so a hole never reads as a value.
MASKED_COLOUR = (0.5, 0.5, 0.5)
#: Percentiles bounding a sequential scale: a few extreme cells (or a bad forecast) do not flatten the rest.
ROBUST_PERCENTILES = (1.0, 99.0)
#: A field of both signs is drawn diverging when ``|mean| <= this * std``.
DIVERGING_MEAN_TO_SPREAD = 0.5
DPI = 90
PANEL_ROWS = ("input", "truth", "prediction", "difference")


@dataclass(frozen=True)
class ColourScale:
    """How values map to colours.

    Attributes:
        kind: ``"sequential"`` or ``"diverging"`` (then ``vmin == -vmax``).
        cmap: matplotlib colour map name.
        vmin: value drawn with the map's first colour.
        vmax: value drawn with the map's last colour.
        label: colour bar label, with units.
        extend: ``"neither"``, ``"min"``, ``"max"`` or ``"both"``: which ends the data passes (arrows on the bar).
    """

    kind: str
    cmap: str
    vmin: float
    vmax: float
    label: str = ""
    extend: str = "neither"


def _finite(arrays: Sequence[Any]) -> np.ndarray:
    parts = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    values = np.concatenate(parts) if parts else np.zeros(0)
    return values[np.isfinite(values)]


def _extend(values: np.ndarray, vmin: float, vmax: float) -> str:
    low = values.size > 0 and float(values.min()) < vmin
    high = values.size > 0 and float(values.max()) > vmax
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(low, high)]


def _symmetric_limit(values: np.ndarray) -> float:
    if values.size == 0:
        return 1.0
    magnitude = np.abs(values)
    lim = float(np.percentile(magnitude, ROBUST_PERCENTILES[1]))
    return lim if lim > 0 else (float(magnitude.max()) or 1.0)


def colourbar_label(name: str, units: str = "") -> str:
    """``"t2m [K]"``; units that say nothing (empty, ``unknown``) are left out."""
    units = str(units).strip()
    if units and units.lower() not in ("unknown", "none"):
        return f"{name} [{units}]".strip()
    return str(name)


def choose_scale(*arrays: Any, label: str = "", also: Sequence[Any] = ()) -> ColourScale:
    """The colour scale of one variable, decided from its values (NaNs ignored).

    Diverging (symmetric about zero, limit the 99th percentile of ``|v|``) when the values take both signs and
    ``|mean| <= DIVERGING_MEAN_TO_SPREAD * std``; otherwise sequential between the 1st and 99th percentiles.

    Args:
        arrays: the values the scale is fitted to (e.g. input and truth), any shapes.
        label: colour bar label.
        also: values drawn on the scale without fitting it (e.g. a prediction); they only set the bar's arrows.
    """
    values = _finite(arrays)
    drawn = _finite([*arrays, *also])
    if values.size == 0:
        return ColourScale("sequential", SEQUENTIAL_CMAP, 0.0, 1.0, label, "neither")
    mean, std = float(values.mean()), float(values.std())
    if values.min() < 0 < values.max() and abs(mean) <= DIVERGING_MEAN_TO_SPREAD * std:
        lim = _symmetric_limit(values)
        return ColourScale("diverging", DIVERGING_CMAP, -lim, lim, label, _extend(drawn, -lim, lim))
    vmin, vmax = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    if vmax <= vmin:  # a constant field: a band around it, so the colour is the map's middle, not an end
        pad = max(abs(vmin) * 1e-3, 1e-6)
        vmin, vmax = vmin - pad, vmax + pad
    return ColourScale("sequential", SEQUENTIAL_CMAP, vmin, vmax, label, _extend(drawn, vmin, vmax))


def difference_scale(a: Any, b: Any, label: str = "") -> ColourScale:
    """The diverging scale of ``a - b`` (e.g. prediction - truth), symmetric about zero whatever the fields' scale."""
    diff = _finite([np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)])
    lim = _symmetric_limit(diff)
    return ColourScale("diverging", DIVERGING_CMAP, -lim, lim, label, _extend(diff, -lim, lim))


def is_ascending(latitude: Sequence[float] | None = None, order: str | None = None) -> bool:
    """Whether grid rows run south to north: from the row latitudes when given, else from ``order``
    (``"ascending"``/``"descending"``, the ``latitude_order`` metadata key); neither -> ``False``."""
    if latitude is not None:
        lat = np.asarray(latitude, dtype=np.float64).ravel()
        if lat.size > 1:
            return bool(lat[-1] > lat[0])
    return order == "ascending"


def north_up(frames: np.ndarray, latitude: Sequence[float] | None = None, order: str | None = None) -> np.ndarray:
    """``frames`` ``[..., H, W]`` with rows north to south (a reversed view when the latitudes ascend).

    Args:
        frames: gridded values, rows along axis ``-2``.
        latitude: row latitudes ``[H]``, or ``None``.
        order: ``latitude_order`` when ``latitude`` is not given.

    Raises:
        ValueError: ``latitude`` does not have one value per row.
    """
    frames = np.asarray(frames)
    if latitude is not None and len(latitude) != frames.shape[-2]:
        raise ValueError(f"{len(latitude)} latitudes for a grid of {frames.shape[-2]} rows")
    return frames[..., ::-1, :] if is_ascending(latitude, order) else frames


def draw_field(
    ax: Axes, field: np.ndarray, scale: ColourScale, extent: tuple[float, float, float, float] | None = None
) -> AxesImage:
    """Draw ``field`` ``[H, W]`` (row 0 at the top) on ``ax`` with ``scale``; NaN/inf cells in :data:`MASKED_COLOUR`."""
    import matplotlib

    cmap = matplotlib.colormaps[scale.cmap].with_extremes(bad=MASKED_COLOUR)
    data = np.ma.masked_invalid(np.asarray(field, dtype=np.float64))
    return ax.imshow(
        data, cmap=cmap, vmin=scale.vmin, vmax=scale.vmax, interpolation="nearest", origin="upper", extent=extent
    )


def add_colourbar(fig: Figure | SubFigure, image: AxesImage, axes: Sequence[Axes], scale: ColourScale) -> None:
    """A colour bar for ``image`` beside ``axes``, labelled with the scale's label (units), arrows where data pass."""
    bar = fig.colorbar(image, ax=list(axes), label=scale.label, extend=scale.extend, shrink=0.9)
    bar.ax.tick_params(labelsize=7)
    bar.ax.yaxis.label.set_size(8)


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created) through a temporary file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
    return path


def _frame_indices(n: int, max_frames: int) -> list[int]:
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_frames)})


@dataclass
class Panel:
    """A drawn validation panel.

    Attributes:
        figure: the figure.
        axes: ``(channel, sample, row)`` -> the row's axes left to right; ``row`` in :data:`PANEL_ROWS`.
        scales: channel -> ``(field scale, difference scale)``.
    """

    figure: Figure
    axes: dict[tuple[int, int, str], list[Axes]] = field(default_factory=dict)
    scales: dict[int, tuple[ColourScale, ColourScale]] = field(default_factory=dict)


def panel_figure(
    x: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    latitude: Sequence[float] | None = None,
    latitude_order: str | None = None,
    title: str = "",
    channels: Sequence[int] | None = None,
    max_frames: int = 10,
) -> Panel:
    """Per channel and sample, four rows: input, truth, prediction and prediction - truth, frames left to right.

    Input, truth and prediction of a channel share one scale fitted to its input and truth (:func:`choose_scale`);
    the difference row has its own diverging scale. Rows are drawn north up when ``latitude`` says where north is.

    Args:
        x: inputs ``[N, T_in, C, H, W]`` in physical units.
        y: targets ``[N, T_out, C, H, W]``.
        pred: predictions ``[N, T_out, C, H, W]``.
        names: channel names ``[C]`` (default ``channel 0`` ...).
        units: channel units ``[C]``.
        latitude: row latitudes ``[H]`` of a geographic grid.
        latitude_order: ``"ascending"``/``"descending"`` when ``latitude`` is not given.
        title: figure title.
        channels: channels drawn (default all).
        max_frames: at most this many frames per row, evenly spaced.
    """
    from matplotlib.figure import Figure

    x, y, pred = (north_up(np.asarray(a), latitude, latitude_order) for a in (x, y, pred))
    n, t_in, c_all = x.shape[:3]
    t_out = y.shape[1]
    channels = list(range(c_all)) if channels is None else [int(c) for c in channels]
    names = [str(v) for v in names] if names else [f"channel {c}" for c in range(c_all)]
    units = [str(v) for v in units] if units else [""] * c_all
    cols_in, cols_out = _frame_indices(t_in, max_frames), _frame_indices(t_out, max_frames)
    ncols = max(len(cols_in), len(cols_out))
    blocks = [(c, s) for c in channels for s in range(n)]
    aspect = x.shape[-2] / max(x.shape[-1], 1)
    cell = 1.2
    fig = Figure(
        figsize=(cell * ncols + 2.4, (cell * min(max(aspect, 0.4), 2.0) + 0.25) * 4 * len(blocks) + 0.5),
        dpi=DPI,
        layout="constrained",
    )
    if title:
        fig.suptitle(title, fontsize=10)
    panel = Panel(fig)
    for c in channels:
        label = colourbar_label(names[c], units[c])
        field_scale = choose_scale(x[:, :, c], y[:, :, c], label=label, also=[pred[:, :, c]])
        diff_scale = difference_scale(pred[:, :, c], y[:, :, c], label=colourbar_label("pred - truth", units[c]))
        panel.scales[c] = (field_scale, diff_scale)
    subfigs = fig.subfigures(len(blocks), 1, squeeze=False)[:, 0]
    for sub, (c, s) in zip(subfigs, blocks):
        field_scale, diff_scale = panel.scales[c]
        sub.suptitle(f"{names[c]}, sample {s}", fontsize=8)
        axes = sub.subplots(4, ncols, squeeze=False)
        rows = (
            (x[s, :, c], cols_in, 0, field_scale),
            (y[s, :, c], cols_out, t_in, field_scale),
            (pred[s, :, c], cols_out, t_in, field_scale),
            (pred[s, :, c] - y[s, :, c], cols_out, t_in, diff_scale),
        )
        images = []
        for r, (seq, cols, offset, scale) in enumerate(rows):
            drawn = []
            for col in range(ncols):
                ax = axes[r, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(cols):
                    ax.axis("off")
                    continue
                image = draw_field(ax, seq[cols[col]], scale)
                drawn.append(ax)
                if r in (0, 1):  # prediction and difference share the truth row's times
                    ax.set_title(f"t={offset + cols[col] + 1}", fontsize=7)
            axes[r, 0].set_ylabel(PANEL_ROWS[r] if r < 3 else "pred - truth", fontsize=8)
            panel.axes[(c, s, PANEL_ROWS[r])] = drawn
            images.append(image)
        add_colourbar(sub, images[0], axes[:3].ravel().tolist(), field_scale)
        add_colourbar(sub, images[3], axes[3].tolist(), diff_scale)
    return panel


def render_panel(x: np.ndarray, y: np.ndarray, pred: np.ndarray, path: str | Path, **kwargs: Any) -> Path:
    """Draw :func:`panel_figure` (same arguments) and write it as a PNG at ``path``; returns the path."""
    return save_png(panel_figure(x, y, pred, **kwargs).figure, path)
