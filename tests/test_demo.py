"""stpred-demo on the real Kinetics clips with tiny untrained checkpoints: numbers checked against Predictor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _helpers import run_module

import stpred
from stpred.apps.demo import main
from stpred.checkpoint import load_predictor
from stpred.datamodules.kinetics import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_offsets,
    eval_starts,
    read_label_map,
    resize_short_side,
    sample_indices,
)
from stpred.datamodules.video_io import read_clip, video_info, write_video

ARM_WRESTLING = "video/kinetics_arm_wrestling.mp4"  # 280 frames, 256 x 340, 28 fps
CLEANING_POOL = "video/kinetics_cleaning_pool.mp4"  # 300 frames, 256 x 340, 30 fps
LRCN_TINY = {"widths": (8, 16), "blocks": 1, "stem": "small", "hidden": 16, "feature_dim": 32}
SIMVP_TINY = {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2, "mlp_ratio": 2.0}


def _save_checkpoint(path: Path, name: str, kwargs: dict, metadata: dict) -> Path:
    target = {"num_classes": metadata["num_classes"]} if metadata["task"] == "classify" else {}
    target = target or {"out_frames": metadata["out_frames"]}
    net = stpred.create_model(name, in_shape=tuple(metadata["in_shape"]), **target, **kwargs)
    # Random BatchNorm statistics, so that the untrained network's outputs depend on its input.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    state = {"net." + k: v for k, v in net.state_dict().items()}
    torch.save(
        {"hyper_parameters": {"model": {"name": name, "kwargs": kwargs}, "data": metadata}, "state_dict": state}, path
    )
    return path


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory, shared_data) -> Path:
    metadata = {
        "dataset": "kinetics400",
        "task": "classify",
        "in_shape": [4, 3, 32, 32],
        "out_frames": None,
        "num_classes": 400,
        "class_names": read_label_map(shared_data / "video/label_map_k400.txt"),
        "channels": ["red", "green", "blue"],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "data_range": 1.0,
        "pde": False,
        "frame_stride": 8,
        "short_side": 40,
        "crop_size": [32, 32],
        "short_clips": "loop",
        "test_clips": 2,
        "test_crops": 3,
    }
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "k400_lrcn.ckpt", "lrcn", LRCN_TINY, metadata)


def _forecaster_metadata(channels: int, size: int, **extra) -> dict:
    names = ["intensity"] if channels == 1 else ["red", "green", "blue"]
    return {
        "dataset": "kinetics400" if channels == 3 else "mmnist",
        "task": "forecast",
        "in_shape": [4, channels, size, size],
        "out_frames": 2,
        "channels": names,
        "units": ["1"] * channels,
        "mean": [0.0] * channels,
        "std": [1.0] * channels,
        "data_range": 1.0,
        "pde": False,
        **extra,
    }


@pytest.fixture(scope="module")
def rgb_forecaster_ckpt(tmp_path_factory) -> Path:
    metadata = _forecaster_metadata(3, 32, frame_stride=2, short_side=40, crop_size=[32, 32])
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "k400_simvp.ckpt", "simvpv2", SIMVP_TINY, metadata)


@pytest.fixture(scope="module")
def grey_forecaster_ckpt(tmp_path_factory) -> Path:
    metadata = _forecaster_metadata(1, 16)  # Moving MNIST-like: no stride, no short side recorded
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "mmnist_simvp.ckpt", "simvpv2", SIMVP_TINY, metadata)


# -- classification --------------------------------------------------------------------------------------------
def _expected_probabilities(ckpt: Path, clip: Path, clips: int, crops: int) -> torch.Tensor:
    """The Kinetics test views composed here from the sampling functions, through Predictor.predict, averaged."""
    predictor = load_predictor(ckpt)
    t, _, h, w = predictor.in_shape
    stride = predictor.metadata["frame_stride"]
    n = video_info(clip).num_frames
    views = []
    for start in eval_starts(n, (t - 1) * stride + 1, clips):
        frames = resize_short_side(read_clip(clip, sample_indices(start, t, stride, n)), 40, (h, w))
        for y, x in crop_offsets(*frames.shape[1:3], (h, w), crops):
            views.append(frames[:, y : y + h, x : x + w])
    x = torch.from_numpy(np.stack(views)).permute(0, 1, 4, 2, 3).float() / 255.0  # [V, T, 3, h, w]
    assert x.shape == (clips * crops, t, 3, h, w)
    return predictor.predict(x).mean(0)


def test_classify_top_k_matches_predictor_on_the_test_views(classifier_ckpt, shared_data, tmp_path, capsys):
    clip = shared_data / ARM_WRESTLING
    main(["--ckpt", str(classifier_ckpt), str(clip), "--out", str(tmp_path), "--max-frames", "40"])

    report = json.loads((tmp_path / "kinetics_arm_wrestling_classes.json").read_text())
    probs = report["probabilities"]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0
    assert report["views"] == {"clips": 2, "crops": 3, "total": 6}
    assert report["model"] == "lrcn" and report["checkpoint"] == str(classifier_ckpt)
    # 280 frames, span 25: starts floor(255 * 1 / 4) and floor(255 * 3 / 4)
    assert report["frame_indices"] == [[63, 71, 79, 87], [191, 199, 207, 215]]
    expected = _expected_probabilities(classifier_ckpt, clip, 2, 3)
    values, indices = expected.topk(5)
    np.testing.assert_allclose(probs, values.numpy(), atol=1e-5)
    names = read_label_map(shared_data / "video/label_map_k400.txt")
    assert report["labels"] == [names[i] for i in indices.tolist()]
    printed = capsys.readouterr().out
    assert report["labels"][0] in printed and f"{probs[0]:.2%}" in printed


def test_annotated_video_has_the_clip_frames_and_a_drawn_panel(classifier_ckpt, shared_data, tmp_path):
    clip = shared_data / CLEANING_POOL
    main(["--ckpt", str(classifier_ckpt), str(clip), "--out", str(tmp_path), "--max-frames", "30", "--top-k", "3"])

    video = tmp_path / "kinetics_cleaning_pool_annotated.mp4"
    info = video_info(video)
    assert (info.num_frames, info.height, info.width) == (30, 256, 340)
    assert info.fps == pytest.approx(30.0, abs=0.01)
    diff = np.abs(read_clip(video, [0, 29]).astype(np.float32) - read_clip(clip, [0, 29]).astype(np.float32))
    # The top-left panel (three rows of labels and bars) is drawn over the clip; the rest is the clip up to
    # MPEG-4 losses.
    assert diff[:, :60, :180].mean() > 25.0
    assert diff[:, 100:].mean() < 6.0 and diff[:, :, 200:].mean() < 6.0
    assert len(json.loads((tmp_path / "kinetics_cleaning_pool_classes.json").read_text())["labels"]) == 3


def test_views_override_and_a_folder_of_clips(classifier_ckpt, shared_data, tmp_path):
    main(["--ckpt", str(classifier_ckpt), str(shared_data / "video"), "--out", str(tmp_path), "--views", "1,1"])

    for stem in ("kinetics_arm_wrestling", "kinetics_cleaning_pool"):
        report = json.loads((tmp_path / f"{stem}_classes.json").read_text())
        assert report["views"]["total"] == 1
        expected = _expected_probabilities(classifier_ckpt, shared_data / f"video/{stem}.mp4", 1, 1)
        np.testing.assert_allclose(report["probabilities"], expected.topk(5).values.numpy(), atol=1e-5)
        assert video_info(tmp_path / f"{stem}_annotated.mp4").num_frames == video_info(report["clip"]).num_frames


# -- forecasting -----------------------------------------------------------------------------------------------
def _expected_forecast(ckpt: Path, clip: Path, indices: list[int], short_side: int) -> tuple[torch.Tensor, ...]:
    """Context and truth frames prepared here, and Predictor.predict's forecast from the context."""
    predictor = load_predictor(ckpt)
    t_in, c, h, w = predictor.in_shape
    frames = resize_short_side(read_clip(clip, indices), short_side, (h, w))
    y, x = crop_offsets(*frames.shape[1:3], (h, w), 1)[0]
    frames = frames[:, y : y + h, x : x + w]
    if c == 1:
        frames = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])[..., None]
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return pixels[:t_in], pixels[t_in:], predictor.predict(pixels[:t_in])


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse)


def test_forecast_outputs_and_per_lead_metrics(rgb_forecaster_ckpt, shared_data, tmp_path):
    clip = shared_data / ARM_WRESTLING
    main(["--ckpt", str(rgb_forecaster_ckpt), str(clip), "--out", str(tmp_path), "--start", "10"])

    report = json.loads((tmp_path / "kinetics_arm_wrestling_forecast.json").read_text())
    assert report["context_indices"] == [10, 12, 14, 16] and report["forecast_indices"] == [18, 20]
    assert report["horizon"] == 2 and report["forward_passes"] == 1 and report["truth_frames"] == 2
    _, truth, forecast = _expected_forecast(rgb_forecaster_ckpt, clip, [10, 12, 14, 16, 18, 20], 40)
    mse = (forecast.double() - truth.double()).pow(2).flatten(1).mean(1).tolist()
    assert [row["lead"] for row in report["per_lead"]] == [1, 2]
    np.testing.assert_allclose([row["mse"] for row in report["per_lead"]], mse, rtol=1e-5)
    np.testing.assert_allclose([row["psnr"] for row in report["per_lead"]], [_psnr(m) for m in mse], rtol=1e-5)

    info = video_info(tmp_path / "kinetics_arm_wrestling_forecast.mp4")
    assert info.num_frames == 4 + 2  # context, then the leads
    assert info.width > 2 * info.height // 2 and info.height >= 256  # two panels side by side, scaled up
    strip = cv2.imread(str(tmp_path / "kinetics_arm_wrestling_forecast.png"))
    assert strip is not None and strip.shape[0] < strip.shape[1]


def test_autoregressive_horizon_past_out_frames(grey_forecaster_ckpt, shared_data, tmp_path):
    clip = shared_data / CLEANING_POOL
    start = 300 - 4 - 3  # the clip ends 3 frames after the context: leads 4 and 5 have no truth
    main(["--ckpt", str(grey_forecaster_ckpt), str(clip), "--out", str(tmp_path), "--start", str(start)])
    main(
        ["--ckpt", str(grey_forecaster_ckpt), str(clip), "--out", str(tmp_path / "h5"), "--start", str(start)]
        + ["--horizon", "5"]
    )

    report = json.loads((tmp_path / "h5/kinetics_cleaning_pool_forecast.json").read_text())
    assert report["horizon"] == 5 and report["forward_passes"] == 3 and report["truth_frames"] == 3
    assert report["forecast_indices"] == list(range(start + 4, start + 9))
    assert video_info(tmp_path / "h5/kinetics_cleaning_pool_forecast.mp4").num_frames == 4 + 5
    context, truth, first = _expected_forecast(grey_forecaster_ckpt, clip, list(range(start, 300)), 16)
    predictor = load_predictor(grey_forecaster_ckpt)
    second = predictor.predict(torch.cat([context, first])[-4:])
    third = predictor.predict(torch.cat([context, first, second])[-4:])
    forecast = torch.cat([first, second, third])[:5]
    mse = (forecast[:3].double() - truth.double()).pow(2).flatten(1).mean(1).tolist()
    assert len(report["per_lead"]) == 3
    np.testing.assert_allclose([row["mse"] for row in report["per_lead"]], mse, rtol=1e-5)
    # The first two leads of the rollout are the direct forecast's.
    direct = json.loads((tmp_path / "kinetics_cleaning_pool_forecast.json").read_text())
    assert direct["horizon"] == 2
    np.testing.assert_allclose([r["mse"] for r in direct["per_lead"]], mse[:2], rtol=1e-6)


# -- mistakes --------------------------------------------------------------------------------------------------
def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("stpred-demo: error: ")
    return lines[0]


def test_clip_too_short_for_the_context_says_how_many_frames(rgb_forecaster_ckpt, tmp_path, capsys):
    short = write_video(tmp_path / "short.mp4", np.full((5, 48, 64, 3), 100, np.uint8), fps=10.0)
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(rgb_forecaster_ckpt), str(short), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys)
    assert f"clip {short} has 5 frames" in line and "needs 7" in line
    assert not (tmp_path / "out").exists()


def test_unreadable_clip_is_named_and_nothing_is_written(classifier_ckpt, shared_data, tmp_path, capfd):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 200)
    args = [str(shared_data / ARM_WRESTLING), str(broken), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(classifier_ckpt), *args])
    assert exit_info.value.code == 2
    assert str(broken) in _one_error_line(capfd)  # FFmpeg's own complaints on descriptor 2 are silenced too
    assert not (tmp_path / "out").exists()  # every clip is checked before the first is demoed


def test_bad_views_is_one_line(classifier_ckpt, shared_data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(classifier_ckpt), str(shared_data / ARM_WRESTLING), "--views", "2,2"])
    assert exit_info.value.code == 2
    assert "--views 2,2" in _one_error_line(capsys)


def test_missing_clip_is_named(classifier_ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(classifier_ckpt), str(tmp_path / "missing_clip.mp4")])
    assert exit_info.value.code == 2
    line = _one_error_line(capsys)
    assert (
        line
        == f"stpred-demo: error: clip {tmp_path / 'missing_clip.mp4'} not found; pass video files or folders of them"
    )


def test_console_script_missing_checkpoint(tmp_path):
    proc = run_module("stpred.apps.demo", "--ckpt", str(tmp_path / "nope.ckpt"), "clip.mp4", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"stpred-demo: error: checkpoint not found: {tmp_path / 'nope.ckpt'} "
        "(pass the path of a .ckpt written by stpred-train)"
    ]


def test_console_script_field_forecaster_points_to_stpred_forecast(shared_data, tmp_path):
    metadata = {
        "dataset": "navier_stokes",
        "task": "forecast",
        "in_shape": [4, 1, 16, 16],
        "out_frames": 2,
        "channels": ["vorticity"],
        "mean": [0.0],
        "std": [1.0],
        "data_range": None,
        "pde": True,
    }
    ckpt = _save_checkpoint(tmp_path / "ns.ckpt", "simvpv2", SIMVP_TINY, metadata)
    proc = run_module("stpred.apps.demo", "--ckpt", str(ckpt), str(shared_data / ARM_WRESTLING), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "navier_stokes" in lines[0] and "use stpred-forecast" in lines[0], lines
    assert not (tmp_path / "demo_out").exists()
