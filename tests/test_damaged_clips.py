"""Damaged clips: cut MKV/MP4 files are refused at open time, frame counts are what decodes, FFmpeg stays quiet.

The clips are made here with ``cv2.VideoWriter`` (``mp4v``): 40 frames of seeded noise with a 16 x 16 corner block
whose grey level encodes the frame index (``6 * i``), in MKV and MP4. Damaged copies keep the first 30 % or 70 % of
the bytes: the MKVs still open (holding only the frames before the cut), the MP4s lose their index (``moov`` is
written last). A second MKV has its Segment ``Duration`` rewritten to announce one frame more than it holds, as
some muxers do, so an intact file whose header lies is told apart from a cut one.
"""

from __future__ import annotations

import logging
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_demo import LRCN_TINY, SIMVP_TINY, _forecaster_metadata, _save_checkpoint

from stpred.apps.demo import main
from stpred.datamodules.kinetics import IMAGENET_MEAN, IMAGENET_STD, KineticsDataModule
from stpred.datamodules.video_io import (
    TruncatedVideoError,
    VideoReadError,
    available_backends,
    open_video,
    suppressed_log_lines,
    video_info,
)

FRAMES, HEIGHT, WIDTH, FPS = 40, 64, 96, 10.0
CONTAINERS = ("mkv", "mp4")
FRACTIONS = (0.3, 0.7)
BACKENDS = available_backends()
#: What FFmpeg's logger prints: "[matroska,webm @ 0x55d1c0] Read error", and decord's "[12:00:00] ...cc:83: ERROR"
NATIVE_LINE = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]|^\[\d\d:\d\d:\d\d\] ", re.M)


def _frame(index: int, rng: np.random.Generator) -> np.ndarray:
    frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)  # noise: files of tens of KB, not < 1 KB
    frame[:16, :16] = 6 * index
    return frame


def _written() -> np.ndarray:
    """uint8 ``[FRAMES, HEIGHT, WIDTH, 3]``: the frames every clip is made of (BGR as written, RGB as read: grey)."""
    rng = np.random.default_rng(0)
    return np.stack([_frame(i, rng) for i in range(FRAMES)])


WRITTEN = _written()


def _index_of(frame: np.ndarray) -> int:
    """The written frame nearest to a decoded one (mp4v is lossy; the corner block alone is too coarse)."""
    grey = frame.astype(np.float32).mean(-1)
    return int(np.argmin(((WRITTEN.astype(np.float32).mean(-1) - grey) ** 2).mean(axis=(1, 2))))


def _write(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for frame in WRITTEN:
        writer.write(frame)
    writer.release()
    return path


def _cut(path: Path, fraction: float, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def _announce_one_more(path: Path, out: Path) -> Path:
    """A copy whose Matroska Segment Duration (ms, 8-byte float) announces FRAMES + 1 frames."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration element, 8-byte float
    assert at > 0 and struct.unpack(">d", data[at + 3 : at + 11])[0] == pytest.approx(1000 * FRAMES / FPS)
    data[at + 3 : at + 11] = struct.pack(">d", 1000 * (FRAMES + 1) / FPS)
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """``intact.<ext>``, ``cut30.<ext>``, ``cut70.<ext>`` for both containers, and ``lying.mkv``."""
    folder = tmp_path_factory.mktemp("made_clips")
    out = {}
    for ext in CONTAINERS:
        out[f"intact.{ext}"] = _write(folder / f"intact.{ext}")
        for fraction in FRACTIONS:
            name = f"cut{round(100 * fraction)}.{ext}"
            out[name] = _cut(out[f"intact.{ext}"], fraction, folder / name)
    out["lying.mkv"] = _announce_one_more(out["intact.mkv"], folder / "lying.mkv")
    return out


def _assert_quiet(capfd) -> str:
    err = capfd.readouterr().err
    assert not NATIVE_LINE.search(err), err
    return err


# -- video_io ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", CONTAINERS)
def test_intact_clips_count_what_was_written_in_every_backend(clips, ext, capfd):
    counts = {}
    for backend in BACKENDS:
        with open_video(clips[f"intact.{ext}"], backend) as video:
            counts[backend] = video.num_frames
            frames = video.read([0, 17, FRAMES - 1])
        assert [_index_of(f) for f in frames] == [0, 17, FRAMES - 1]
    assert counts == dict.fromkeys(BACKENDS, FRAMES)
    _assert_quiet(capfd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_header_announcing_one_frame_too_many_is_not_truncation(clips, backend, capfd):
    lying = clips["lying.mkv"]
    header = cv2.VideoCapture(str(lying))
    assert int(header.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES + 1  # the lie the count must not trust
    header.release()
    with open_video(lying, backend) as video:
        assert video.num_frames == FRAMES
        assert _index_of(video.read([FRAMES - 1])[0]) == FRAMES - 1
    _assert_quiet(capfd)


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("ext", CONTAINERS)
def test_cut_clips_are_refused_at_open_in_one_line(clips, ext, fraction, backend, capfd):
    cut = clips[f"cut{round(100 * fraction)}.{ext}"]
    before = suppressed_log_lines()
    # the MKV still opens, holding its first frames: it must be told truncated, not read as a short clip
    expected = TruncatedVideoError if ext == "mkv" else VideoReadError
    with pytest.raises(expected) as err:
        video_info(cut, backend=backend)
    message = str(err.value)
    assert "\n" not in message and str(cut) in message and "re-download" in message
    if ext == "mkv":
        assert re.search(rf"\d+ frames decode of the {FRAMES} its container announces", message), message
    assert suppressed_log_lines() > before and "kept off the terminal" in message
    _assert_quiet(capfd)


# -- stpred-demo -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    metadata = {
        "dataset": "kinetics400", "task": "classify", "in_shape": [4, 3, 32, 32], "out_frames": None,
        "num_classes": 3, "class_names": ["a", "b", "c"], "channels": ["red", "green", "blue"],
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "data_range": 1.0, "pde": False,
        "frame_stride": 2, "short_side": 40, "crop_size": [32, 32], "short_clips": "loop",
        "test_clips": 1, "test_crops": 1,
    }  # fmt: skip
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "cls.ckpt", "lrcn", LRCN_TINY, metadata)


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory) -> Path:
    metadata = _forecaster_metadata(3, 32, frame_stride=2, short_side=40, crop_size=[32, 32])
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "fc.ckpt", "simvpv2", SIMVP_TINY, metadata)


@pytest.mark.parametrize("kind", ["classify", "forecast"])
@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("ext", CONTAINERS)
def test_demo_refuses_a_cut_clip_and_writes_nothing(clips, classifier, forecaster, kind, ext, fraction, tmp_path,
                                                    capfd):
    cut = clips[f"cut{round(100 * fraction)}.{ext}"]
    out = tmp_path / "out"
    ckpt = classifier if kind == "classify" else forecaster
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(ckpt), str(clips["intact.mkv"]), str(cut), "--out", str(out)])  # the good one first
    assert exit_info.value.code == 2
    lines = _assert_quiet(capfd).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("stpred-demo: ") and str(cut) in lines[0] and "re-download" in lines[0]
    assert ("truncated" in lines[0]) == (ext == "mkv")
    assert not out.exists()


def test_demo_still_runs_on_the_intact_clips(clips, classifier, tmp_path, capfd):
    out = tmp_path / "out"
    main(["--ckpt", str(classifier), str(clips["intact.mkv"]), str(clips["lying.mkv"]), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == [
        "intact_annotated.mp4", "intact_classes.json", "lying_annotated.mp4", "lying_classes.json",
    ]  # fmt: skip
    assert video_info(out / "lying_annotated.mp4").num_frames == FRAMES
    _assert_quiet(capfd)


# -- Kinetics datamodule -----------------------------------------------------------------------------------------
def _folders_root(root: Path, clips: dict[str, Path], train: list[str]) -> Path:
    """``<split>/<class>/<name>``: the train files named, and one intact clip per class in val and test."""
    both = ["intact.mkv", "intact.mp4"]
    for split, names in {"train": train, "val": both, "test": both[::-1]}.items():
        for k, name in enumerate(names):
            folder = root / split / ("even" if k % 2 == 0 else "odd")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{k}_{name}").symlink_to(clips[name])
    return root


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["classify", "forecast"])
def test_datamodule_skips_and_counts_cut_clips(clips, tmp_path, task, backend, caplog, capfd):
    train = ["intact.mkv", "cut30.mkv", "intact.mp4", "cut70.mkv", "cut30.mp4", "lying.mkv", "cut70.mp4"]
    root = _folders_root(tmp_path, clips, train)
    size = {"short_side": 64, "crop_size": 48, "frame_stride": 2, "batch_size": 1, "backend": backend}
    size.update({"num_frames": 8} if task == "classify" else {"t_in": 4, "t_out": 4})
    with caplog.at_level(logging.WARNING, logger="stpred.datamodules.kinetics"):
        dm = KineticsDataModule(root, task=task, **size)
        dm.setup()
    assert dm.skipped == {"train": 4, "val": 0, "test": 0}
    assert dm.skip_reasons["train"] == {"truncated": 2, "unreadable": 2}
    assert dm.metadata()["skipped"]["train"] == 4
    summary = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(summary) == 1 and "skipping 4 of 7 clips" in summary[0]
    assert re.search(r"; \d+ FFmpeg log line\(s\) kept off the terminal", summary[0]), summary[0]
    kept = sorted(Path(e.path).name for e in dm.datasets["train"].entries)
    assert kept == ["0_intact.mkv", "2_intact.mp4", "5_lying.mkv"]
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and not any(bool(b["replaced"].any()) for b in batches)
    _assert_quiet(capfd)
