"""Field pictures that read: colour scales from the data, north up, grey holes, a difference row, units on the bars.

Every picture is written as a real PNG and read back; a grid cell's colour is looked up at the pixel where the axes
put the cell's centre and compared with the colour map evaluated independently on the cell's value.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import torch

from stpred.callbacks import PredictionPanel
from stpred.plotting import (
    MASKED_COLOUR,
    choose_scale,
    difference_scale,
    north_up,
    panel_figure,
    save_png,
)

TOL = 2.5 / 255  # one 8-bit step of the PNG, and rounding of the colour map's table
H, W = 9, 13  # odd sizes: a flip or transpose cannot hide
LUMA = np.array([0.299, 0.587, 0.114])


def smooth(h: int = H, w: int = W) -> np.ndarray:
    """``[h, w]`` in [-1, 1] with mean about 0, varying along both axes."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.sin(xx / (w - 1) * 1.8 * np.pi + 0.3) * np.cos(yy / (h - 1) * 1.2 * np.pi - 0.3)


def sequences(field: np.ndarray, t_in: int = 3, t_out: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One sample: ``x [1, t_in, 1, H, W]`` and ``y [1, t_out, 1, H, W]``, the field repeated."""
    x = np.broadcast_to(field, (1, t_in, 1, *field.shape)).copy()
    y = np.broadcast_to(field, (1, t_out, 1, *field.shape)).copy()
    return x, y


def rendered(panel, path: Path) -> np.ndarray:
    """The panel written as a PNG and read back: ``[rows, cols, 3]`` floats in [0, 1]."""
    save_png(panel.figure, path)
    return matplotlib.image.imread(path)[..., :3]


def cell_colours(image: np.ndarray, ax, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` the PNG colour at the centre of each drawn cell (row 0 is the image's top row)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    points = ax.transData.transform(np.stack([cols.ravel(), rows.ravel()], axis=1))
    px = np.floor(points[:, 0]).astype(int)
    py = np.floor(image.shape[0] - points[:, 1]).astype(int)
    return image[py, px].reshape(*shape, 3)


def expected_colours(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    norm = np.clip((values - vmin) / (vmax - vmin), 0, 1)
    return matplotlib.colormaps[cmap](norm)[..., :3]


def test_a_kelvin_field_spans_a_sequential_map(tmp_path):
    field = 270 + 15 * smooth()
    x, y = sequences(field)
    panel = panel_figure(x, y, y + 0.5, names=["t2m"], units=["K"])
    scale, _ = panel.scales[0]
    assert scale.kind == "sequential" and scale.cmap == "viridis"
    fitted = np.concatenate([x.ravel(), y.ravel()])  # input and truth fit the scale, the prediction does not
    assert (scale.vmin, scale.vmax) == pytest.approx(tuple(np.percentile(fitted, [1, 99])), abs=1e-9)
    assert 255 < scale.vmin < 257 and 283 < scale.vmax < 285
    image = rendered(panel, tmp_path / "kelvin.png")
    got = cell_colours(image, panel.axes[(0, 0, "input")][0], field.shape)
    np.testing.assert_allclose(got, expected_colours(field, "viridis", scale.vmin, scale.vmax), atol=TOL)
    assert len(np.unique(got.reshape(-1, 3).round(3), axis=0)) > 50  # not one flat colour
    luminance = got @ LUMA
    assert luminance.max() - luminance.min() > 0.6


@pytest.mark.parametrize("ascending", [True, False])
@pytest.mark.parametrize("by", ["latitude", "latitude_order"])
def test_north_is_drawn_at_the_top_for_either_latitude_order(tmp_path, ascending, by):
    lat = np.linspace(40.0, 60.0, H) if ascending else np.linspace(60.0, 40.0, H)
    field = np.where(lat[:, None] >= 55.0, 290.0, 280.0) + 0.5 * smooth()  # warm in the north
    x, y = sequences(field)
    where = {"latitude": lat} if by == "latitude" else {"latitude_order": "ascending" if ascending else "descending"}
    panel = panel_figure(x, y, y, names=["t2m"], units=["K"], **where)
    scale, _ = panel.scales[0]
    image = rendered(panel, tmp_path / "north.png")
    for row in ("input", "truth", "prediction"):
        got = cell_colours(image, panel.axes[(0, 0, row)][0], field.shape)
        north_first = field[::-1] if ascending else field
        np.testing.assert_allclose(got, expected_colours(north_first, "viridis", scale.vmin, scale.vmax), atol=TOL)
        luminance = got @ LUMA
        assert luminance[:2].min() > 0.7 and luminance[-2:].max() < 0.3  # bright (warm) on top, dark below


def test_without_latitude_rows_stay_as_given(tmp_path):
    field = 280 + 10 * smooth()
    x, y = sequences(field)
    panel = panel_figure(x, y, y)
    scale, _ = panel.scales[0]
    got = cell_colours(rendered(panel, tmp_path / "plain.png"), panel.axes[(0, 0, "input")][0], field.shape)
    np.testing.assert_allclose(got, expected_colours(field, "viridis", scale.vmin, scale.vmax), atol=TOL)


def test_north_up_flips_ascending_rows_only():
    frames = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    np.testing.assert_array_equal(north_up(frames, [10.0, 20.0, 30.0]), frames[:, ::-1])
    np.testing.assert_array_equal(north_up(frames, [30.0, 20.0, 10.0]), frames)
    np.testing.assert_array_equal(north_up(frames, order="ascending"), frames[:, ::-1])
    np.testing.assert_array_equal(north_up(frames), frames)
    with pytest.raises(ValueError, match="4 latitudes for a grid of 3 rows"):
        north_up(frames, [1.0, 2.0, 3.0, 4.0])


def test_a_zero_mean_vorticity_field_is_diverging_and_white_at_zero(tmp_path):
    field = 3.0 * smooth()
    field[:, 5:8] = 0.0  # a calm band
    x, y = sequences(field)
    panel = panel_figure(x, y, y, names=["vorticity"], units=["1"])
    scale, _ = panel.scales[0]
    assert scale.kind == "diverging" and scale.cmap == "RdBu_r" and scale.vmin == -scale.vmax
    assert scale.vmax == pytest.approx(np.percentile(np.abs(field), 99))
    got = cell_colours(rendered(panel, tmp_path / "vort.png"), panel.axes[(0, 0, "truth")][0], field.shape)
    np.testing.assert_allclose(got, expected_colours(field, "RdBu_r", -scale.vmax, scale.vmax), atol=TOL)
    assert (got[:, 5:8] > 0.9).all()  # near white at zero
    strong_pos, strong_neg = field > 0.5 * scale.vmax, field < -0.5 * scale.vmax
    assert strong_pos.any() and strong_neg.any()
    assert (got[strong_pos][:, 0] > got[strong_pos][:, 2] + 0.2).all()  # positive red
    assert (got[strong_neg][:, 2] > got[strong_neg][:, 0] + 0.2).all()  # negative blue


@pytest.mark.parametrize(
    "values, kind",
    [
        (5.0 + 6.0 * smooth(), "sequential"),  # Celsius of both signs, mean well off zero
        (0.1 + smooth(), "diverging"),  # an anomaly with a small offset
        (np.abs(smooth()), "sequential"),  # counts
        (np.full((H, W), 283.0), "sequential"),
    ],
)
def test_the_scale_kind_follows_the_data(values, kind):
    scale = choose_scale(values)
    assert scale.kind == kind and scale.vmin < scale.vmax
    if kind == "sequential":
        assert scale.vmin <= np.median(values) <= scale.vmax


def test_nan_cells_are_grey_in_every_row(tmp_path):
    field = 270 + 15 * smooth()
    x, y = sequences(field)
    x[..., 2:4, 3:6] = np.nan
    y[..., 2:4, 3:6] = np.nan
    pred = y + 0.3
    panel = panel_figure(x, y, pred, names=["t2m"], units=["K"])
    image = rendered(panel, tmp_path / "nan.png")
    for row in ("input", "truth", "prediction", "difference"):
        got = cell_colours(image, panel.axes[(0, 0, row)][0], field.shape)
        np.testing.assert_allclose(got[2:4, 3:6], np.broadcast_to(MASKED_COLOUR, (2, 3, 3)), atol=TOL)
        rest = np.ones(field.shape, bool)
        rest[2:4, 3:6] = False
        assert (np.abs(got[rest] - MASKED_COLOUR).max(axis=-1) > 0.05).all()  # grey only where masked


def test_the_difference_row_has_its_own_diverging_scale(tmp_path):
    field = 270 + 15 * smooth()
    x, y = sequences(field)
    error = np.where(np.arange(W) < W // 2, 1.0, -1.0) * np.ones((H, 1))
    pred = y + error
    pred[0, 1, 0, 0, 0] = 1e4  # a wild prediction cell does not flatten the field scale
    panel = panel_figure(x, y, pred, names=["t2m"], units=["K"])
    scale, diff = panel.scales[0]
    calm = choose_scale(x, y)
    assert (scale.vmin, scale.vmax) == (calm.vmin, calm.vmax) and scale.vmax < 290
    assert calm.extend == "min" and scale.extend == "both"  # the wild cell only adds the arrow at the top
    assert diff.kind == "diverging" and diff.vmin == -diff.vmax and diff.vmax == pytest.approx(1.0)
    assert diff.extend == "max"
    image = rendered(panel, tmp_path / "diff.png")
    axes = panel.axes[(0, 0, "difference")]
    assert len(axes) == y.shape[1]  # one difference frame per forecast frame
    got = cell_colours(image, axes[0], field.shape)
    np.testing.assert_allclose(got, expected_colours(error, "RdBu_r", -1.0, 1.0), atol=TOL)
    left, right = got[:, : W // 2], got[:, W // 2 :]
    assert (left[..., 0] > left[..., 2] + 0.2).all() and (right[..., 2] > right[..., 0] + 0.2).all()  # red, blue
    labels = {ax.get_ylabel() for ax in panel.figure.axes}
    assert {"t2m [K]", "pred - truth [K]"} <= labels


def test_difference_scale_is_symmetric_about_zero():
    truth = np.zeros((H, W))
    pred = truth + np.linspace(-0.2, 3.0, W)
    scale = difference_scale(pred, truth)
    assert scale.vmin == -scale.vmax and scale.vmax == pytest.approx(np.percentile(np.abs(pred), 99))


def test_every_channel_gets_its_own_scale_and_bar(tmp_path):
    kelvin, wind = 270 + 15 * smooth(), 4.0 * smooth()[::-1]
    frames = np.stack([kelvin, wind])  # [2, H, W]
    x = np.broadcast_to(frames, (2, 3, 2, H, W)).copy()
    y = np.broadcast_to(frames, (2, 2, 2, H, W)).copy()
    panel = panel_figure(x, y, y, names=["t2m", "u10"], units=["K", "m s**-1"])
    assert panel.scales[0][0].kind == "sequential" and panel.scales[1][0].kind == "diverging"
    assert {(c, s) for c, s, _ in panel.axes} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    image = rendered(panel, tmp_path / "two.png")
    scale = panel.scales[1][0]
    got = cell_colours(image, panel.axes[(1, 1, "input")][-1], (H, W))
    np.testing.assert_allclose(got, expected_colours(wind, "RdBu_r", scale.vmin, scale.vmax), atol=TOL)
    assert "u10 [m s**-1]" in {ax.get_ylabel() for ax in panel.figure.axes}


def test_prediction_panel_draws_north_up_from_the_metadata(tmp_path):
    lat = np.linspace(-30.0, 30.0, H)  # ascending, as WeatherBench-1 files store it
    field = np.where(lat[:, None] > 15.0, 1.0, -1.0) * np.ones((1, W))  # normalised: +1 in the north
    mean, std = 280.0, 5.0
    x = torch.from_numpy(np.broadcast_to(field, (2, 3, 1, H, W)).copy()).float()
    y = x[:, :2].clone()
    module = SimpleNamespace(
        denormalize=lambda t: t * std + mean,
        hparams={
            "data": {"dataset": "toy", "channels": ["t2m"], "units": ["K"], "latitude": lat.tolist()},
            "model": {"name": "toy"},
        },
    )
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=2)
    callback = PredictionPanel(str(tmp_path / "panels"), num_samples=1)
    callback.on_validation_batch_end(trainer, module, {"pred": y}, {"x": x, "y": y}, 0)
    callback.on_validation_epoch_end(trainer, module)
    assert callback.last_path == tmp_path / "panels" / "val_epoch_002.png"
    page = matplotlib.image.imread(callback.last_path)[..., :3]
    assert page.shape[0] > 200 and page.shape[1] > 300
    # The scale ends: viridis yellow (285 K, the north) and its dark purple (275 K). In the left half (thumbnails,
    # no colour bar) the first yellow row must come before the first dark one.
    image = page[:, : page.shape[1] // 2]
    yellow = (image[..., 0] > 0.9) & (image[..., 1] > 0.8) & (image[..., 2] < 0.3)
    dark = (image[..., 1] < 0.05) & (image[..., 2] > 0.25)
    rows_yellow, rows_dark = np.nonzero(yellow.any(axis=1))[0], np.nonzero(dark.any(axis=1))[0]
    assert rows_yellow.size and rows_dark.size
    assert rows_yellow.min() < rows_dark.min()  # the first thing drawn from the top is the warm north
    callback.on_validation_epoch_end(trainer, module)  # nothing held: nothing drawn again
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == ["val_epoch_002.png"]
