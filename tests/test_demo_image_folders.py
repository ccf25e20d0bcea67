"""``stpred-demo`` on folders of images: a folder is one clip, read as ``data=frames`` reads a sequence.

The frames are written here (a bright blob moving right on a dark background, PNG, unpadded names ``1.png ...
12.png`` so that name order and natural order differ); a tiny FNO-2D is trained on such sequences through
``data=frames``; the demo's outputs are compared with forecasts made here from the arrays that were written.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _hydra import compose_config

import stpred
from stpred.apps.demo import main
from stpred.apps.train import train
from stpred.checkpoint import load_predictor
from stpred.datamodules.frames import FramesDataModule, ImageSequence, image_files
from stpred.datamodules.kinetics import crop_offsets, eval_starts, sample_indices
from stpred.datamodules.video_io import video_info, write_video
from stpred.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTH, HEIGHT, WIDTH, SIDE = 12, 20, 28, 16
TINY_TRAIN = [
    "data=frames",
    "data.t_in=3",
    "data.t_out=2",
    f"data.image_size={SIDE}",
    "data.splits=[0.5,0.25,0.25]",
    "model=fno2d",
    "model.kwargs.modes=3",
    "model.kwargs.width=8",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optim.scheduler=none",
    "data.batch_size=4",
]


def _blob(n: int, offset: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 RGB ``[n, height, width, 3]``: a bright 6 x 5 blob sliding right by 2 pixels a frame."""
    frames = np.full((n, height, width, 3), 15, np.uint8)
    for k in range(n):
        x = (offset + 2 * k) % (width - 4)
        frames[k, 6:12, x : x + 5] = (240, 190, 110)
    return frames


def _write_pngs(folder: Path, frames: np.ndarray) -> Path:
    """``1.png, 2.png, ... 12.png`` (no padding: in plain name order ``10.png`` would come second)."""
    folder.mkdir(parents=True)
    for k, frame in enumerate(frames, 1):
        assert cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def _grey_centre(frames: np.ndarray, side: int) -> torch.Tensor:
    """Independent reference: short side to ``side`` (INTER_AREA down), centre crop, OpenCV luma -> ``[T, 1, s, s]``."""
    h, w = frames.shape[1:3]
    new_w = int(w * side / h + 0.5)
    x0 = (new_w - side) // 2
    out = []
    for f in frames:
        small = cv2.resize(f, (new_w, side), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(np.ascontiguousarray(small[:, x0 : x0 + side]), cv2.COLOR_RGB2GRAY))
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32) / 255.0)


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("frames") / "seqs"
    seqs = {f"seq_{i}": _blob(LENGTH, 3 * i) for i in range(4)}
    for name, frames in seqs.items():
        _write_pngs(root / name, frames)
    return root, seqs


@pytest.fixture(scope="module")
def trained_ckpt(sequences, tmp_path_factory) -> Path:
    root, _ = sequences
    out = tmp_path_factory.mktemp("run")
    results = train(compose_config("train", [*TINY_TRAIN, f"data.root={root}", f"paths.output_dir={out}"]))
    assert np.isfinite(results["mse"])
    return out / "checkpoints" / "last.ckpt"


# -- the reader ------------------------------------------------------------------------------------------------
def test_images_are_taken_in_natural_order_and_read_as_written(sequences):
    root, seqs = sequences
    names = [p.name for p in image_files(root / "seq_1")]
    assert names == [f"{k}.png" for k in range(1, LENGTH + 1)]
    with ImageSequence(root / "seq_1") as images:
        assert images.info == (LENGTH, 0.0, HEIGHT, WIDTH)
        np.testing.assert_array_equal(images.read([9, 0, 9]), seqs["seq_1"][[9, 0, 9]])


def test_the_datamodule_reads_the_same_frames(sequences):
    root, seqs = sequences
    dm = FramesDataModule(str(root), t_in=3, t_out=2, stride=3, image_size=SIDE, splits=[0.5, 0.25, 0.25])
    dm.setup()
    assert dm.datasets["val"].names == ["seq_2"]
    want = _grey_centre(seqs["seq_2"], SIDE)
    sample = dm.datasets["val"][2]  # window from frame 6
    np.testing.assert_allclose(sample["x"].numpy(), want[6:9].numpy(), atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(sample["y"].numpy(), want[9:11].numpy(), atol=1 / 255 + 1e-6)


# -- forecasting -----------------------------------------------------------------------------------------------
def test_trained_on_frames_then_demo_on_a_folder_of_images(sequences, trained_ckpt, tmp_path):
    root, seqs = sequences
    clip = root / "seq_3"
    main(["--ckpt", str(trained_ckpt), str(clip), "--out", str(tmp_path), "--start", "4", "--horizon", "5"])

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "seq_3_forecast.json",
        "seq_3_forecast.mp4",
        "seq_3_forecast.png",
    ]
    report = json.loads((tmp_path / "seq_3_forecast.json").read_text())
    assert report["clip"] == str(clip) and report["model"] == "fno2d"
    assert report["context_indices"] == [4, 5, 6] and report["forecast_indices"] == [7, 8, 9, 10, 11]
    assert report["horizon"] == 5 and report["forward_passes"] == 3 and report["truth_frames"] == 5

    predictor = load_predictor(trained_ckpt)
    assert predictor.in_shape == (3, 1, SIDE, SIDE) and predictor.out_frames == 2
    pixels = _grey_centre(seqs["seq_3"], SIDE)
    first = predictor.predict(pixels[4:7])
    second = predictor.predict(torch.cat([pixels[4:7], first])[-3:])
    third = predictor.predict(torch.cat([pixels[4:7], first, second])[-3:])
    forecast = torch.cat([first, second, third])[:5]
    mse = (forecast.double() - pixels[7:12].double()).pow(2).flatten(1).mean(1).tolist()
    np.testing.assert_allclose([row["mse"] for row in report["per_lead"]], mse, rtol=1e-5, atol=1e-9)
    assert [row["frame_index"] for row in report["per_lead"]] == [7, 8, 9, 10, 11]

    info = video_info(tmp_path / "seq_3_forecast.mp4")
    assert info.num_frames == 3 + 5  # context, then the leads
    assert info.width > info.height >= 256  # two panels of 16 x 16 side by side, scaled up
    strip = cv2.imread(str(tmp_path / "seq_3_forecast.png"))
    assert strip is not None and strip.shape[0] < strip.shape[1]


def test_a_folder_of_image_folders_demos_each(sequences, trained_ckpt, tmp_path, capsys):
    root, _ = sequences
    main(["--ckpt", str(trained_ckpt), str(root), "--out", str(tmp_path)])
    for name in ("seq_0", "seq_1", "seq_2", "seq_3"):
        report = json.loads((tmp_path / f"{name}_forecast.json").read_text())
        assert report["clip"] == str(root / name) and report["horizon"] == 2 and report["truth_frames"] == 2
    assert len(list(tmp_path.iterdir())) == 4 * 3
    assert capsys.readouterr().out.count("2 frames forecast from frames [0, 1, 2]") == 4


# -- classification --------------------------------------------------------------------------------------------
def test_classify_a_folder_of_images_samples_the_test_views(tmp_path):
    metadata = {
        "dataset": "kinetics400",
        "task": "classify",
        "in_shape": [4, 3, 16, 16],
        "out_frames": None,
        "num_classes": 7,
        "class_names": [f"class_{k}" for k in range(7)],
        "channels": ["red", "green", "blue"],
        "mean": [0.45, 0.45, 0.45],
        "std": [0.25, 0.25, 0.25],
        "data_range": 1.0,
        "pde": False,
        "frame_stride": 2,
        "short_side": 20,
        "short_clips": "loop",
        "test_clips": 2,
        "test_crops": 3,
    }
    kwargs = {"widths": (8, 16), "blocks": 1, "stem": "small", "hidden": 16, "feature_dim": 32}
    net = stpred.create_model("lrcn", in_shape=(4, 3, 16, 16), num_classes=7, **kwargs)
    state = {"net." + k: v for k, v in net.state_dict().items()}
    ckpt = tmp_path / "lrcn.ckpt"
    hyper = {"model": {"name": "lrcn", "kwargs": kwargs}, "data": metadata}
    torch.save({"hyper_parameters": hyper, "state_dict": state}, ckpt)
    frames = _blob(LENGTH, 1, height=24, width=40)
    clip = _write_pngs(tmp_path / "blob", frames)

    main(["--ckpt", str(ckpt), str(clip), "--out", str(tmp_path / "out"), "--top-k", "3"])

    report = json.loads((tmp_path / "out/blob_classes.json").read_text())
    assert report["views"] == {"clips": 2, "crops": 3, "total": 6} and report["video_frames"] == LENGTH
    starts = eval_starts(LENGTH, 7, 2)  # span (4 - 1) * 2 + 1
    assert report["frame_indices"] == [sample_indices(s, 4, 2, LENGTH).tolist() for s in starts] == [
        [1, 3, 5, 7],
        [3, 5, 7, 9],
    ]
    views = []
    for s in starts:
        chosen = frames[sample_indices(s, 4, 2, LENGTH)]
        small = np.stack([cv2.resize(f, (33, 20), interpolation=cv2.INTER_AREA) for f in chosen])  # 40*20/24
        for y, x in crop_offsets(20, 33, (16, 16), 3):
            views.append(small[:, y : y + 16, x : x + 16])
    x = torch.from_numpy(np.stack(views)).permute(0, 1, 4, 2, 3).float() / 255.0
    expected = load_predictor(ckpt).predict(x).mean(0)
    np.testing.assert_allclose(report["probabilities"], expected.topk(3).values.numpy(), atol=1e-5)
    info = video_info(tmp_path / "out/blob_annotated.mp4")
    assert (info.num_frames, info.height, info.width) == (LENGTH, 24, 40)


# -- damaged folders -------------------------------------------------------------------------------------------
def _one_error_line(capfd) -> str:
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("stpred-demo: error: ")
    return lines[0]


def _damaged(kind: str, folder: Path) -> tuple[Path, str]:
    """A folder of 12 frames made bad in one way; the path and a piece of the expected error line."""
    frames = _blob(LENGTH, 0)
    if kind == "no images":
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("frames go here\n")
        return folder, f"folder {folder} holds no video files"
    _write_pngs(folder, frames)
    if kind == "unreadable png":
        (folder / "7.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        return folder, f"{folder / '7.png'}: not a readable image"
    if kind == "truncated jpeg":
        ok, data = cv2.imencode(".jpg", frames[0])
        assert ok
        (folder / "5.png").unlink()
        (folder / "5.jpg").write_bytes(data.tobytes()[: len(data) // 2])
        return folder, f"{folder / '5.jpg'}: not a readable image (Premature end of JPEG file)"
    if kind == "other size":
        cv2.imwrite(str(folder / "11.png"), np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8))
        return folder, f"{folder / '11.png'} is {WIDTH + 2}x{HEIGHT} but {folder / '1.png'} is {WIDTH}x{HEIGHT}"
    if kind == "images and videos":
        write_video(folder / "extra.mp4", frames, fps=5.0)
        return folder, f"folder {folder} holds both images and video files (extra.mp4)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["no images", "unreadable png", "truncated jpeg", "other size", "images and videos"])
def test_a_damaged_folder_is_one_line_exit_2_and_nothing_written(kind, sequences, trained_ckpt, tmp_path, capfd):
    root, _ = sequences
    bad, expected = _damaged(kind, tmp_path / "bad")
    out = tmp_path / "out"
    # A good clip first: every clip is checked before the first is demoed.
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(trained_ckpt), str(root / "seq_0"), str(bad), "--out", str(out)])
    assert exit_info.value.code == 2
    line = _one_error_line(capfd)  # the image decoders' own complaints on descriptor 2 are silenced too
    assert expected in line, line
    assert not out.exists()


def test_the_datamodule_refuses_frames_of_two_sizes(tmp_path):
    root = tmp_path / "seqs"
    for i in range(3):
        _write_pngs(root / f"seq_{i}", _blob(8, i))
    cv2.imwrite(str(root / "seq_1" / "3.png"), np.zeros((HEIGHT + 4, WIDTH, 3), np.uint8))
    dm = FramesDataModule(str(root), t_in=2, t_out=2, image_size=SIDE, splits=[0.4, 0.3, 0.3])
    with pytest.raises(UserError, match=r"seq_1/3\.png is 28x24 but .*seq_1/1\.png is 28x20"):
        dm.setup()
