"""KineticsDataModule on the real Kinetics clips of the shared data, arranged by the tests in the real layouts.

The folders are built here: symlinks to the two real clips named as the cvdf downloader names them
(``<youtube_id>_<start:06d>_<end:06d>.mp4``) with their ``annotations/<split>.csv``, the class-folder layout and
mmaction2's list files. The ids and times are made up; the videos and the label map are real. Corrupt files are a
truncated copy of a real clip, the same clip re-muxed with its index first and then truncated (a file whose header
opens but whose later frames are gone), random bytes and an empty file.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from _datafiles import ARM, POOL, assert_one_line, make_cvdf
from _hydra import compose_config

from stpred.datamodules import METADATA_KEYS
from stpred.datamodules.kinetics import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KineticsDataModule,
    crop_offsets,
    eval_starts,
    sample_indices,
)
from stpred.datamodules.video_io import read_clip
from stpred.errors import UserError

SMALL = {"short_side": 64, "crop_size": 56, "num_frames": 8, "frame_stride": 4, "batch_size": 2}


@pytest.fixture(scope="module")
def clips(kinetics_clips: dict[str, Path]) -> dict[str, Path]:
    return kinetics_clips


@pytest.fixture(scope="module")
def label_map(kinetics_label_map: Path) -> list[str]:
    return kinetics_label_map.read_text().splitlines()


SPLITS = {
    "train": [(ARM, "aw_train_a"), (POOL, "cp_train_a"), (ARM, "aw_train_b"), (POOL, "cp_train_b")],
    "val": [(ARM, "aw_val"), (POOL, "cp_val")],
    "test": [(POOL, "cp_test"), (ARM, "aw_test")],
}


@pytest.fixture(scope="module")
def cvdf_root(tmp_path_factory, clips) -> Path:
    return make_cvdf(tmp_path_factory.mktemp("k400_cvdf"), clips, SPLITS)


def expected_clip(path, indices, crop, offset=None) -> torch.Tensor:
    """[T, 3, h, w] in [0, 1]: the frames ``indices`` cropped at ``offset`` (centre when None), no resize."""
    frames = read_clip(path, indices)
    h, w = frames.shape[1:3]
    y, x = offset if offset is not None else ((h - crop) // 2, (w - crop) // 2)
    return torch.from_numpy(frames[:, y : y + crop, x : x + crop].copy()).permute(0, 3, 1, 2).float() / 255


def denorm(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    return x * torch.tensor(IMAGENET_STD).reshape(3, 1, 1) + mean


# -- index arithmetic ------------------------------------------------------------------------------------------
def test_sampling_arithmetic():
    assert sample_indices(10, 4, 2, 280).tolist() == [10, 12, 14, 16]
    assert sample_indices(270, 4, 4, 280, "loop").tolist() == [270, 274, 278, 2]
    assert sample_indices(270, 4, 4, 280, "pad").tolist() == [270, 274, 278, 279]
    assert eval_starts(280, 61, 1) == [109]  # (280 - 61) // 2
    assert eval_starts(280, 61, 4) == [27, 82, 136, 191]
    assert eval_starts(40, 61, 3) == [0, 0, 0]
    assert crop_offsets(256, 340, (224, 224), 3) == [(16, 0), (16, 58), (16, 116)]
    assert crop_offsets(340, 256, (224, 224), 3) == [(0, 16), (58, 16), (116, 16)]


# -- layouts and labels ----------------------------------------------------------------------------------------
def test_cvdf_labels_are_label_map_positions(cvdf_root, clips, label_map, shared_data):
    dm = KineticsDataModule(cvdf_root, label_map=str(shared_data / "video" / "label_map_k400.txt"), **SMALL)
    dm.setup()
    assert dm.layout == "cvdf" and dm.num_classes == 400 and dm.class_names == label_map
    arm, pool = label_map.index(ARM), label_map.index(POOL)
    assert (arm, pool) == (6, 62)
    for split, rows in SPLITS.items():
        entries = dm.datasets[split].entries
        assert [Path(e.path).name.split("_0")[0] for e in entries] == [yid for _, yid in rows]
        assert [e.label for e in entries] == [arm if lab == ARM else pool for lab, _ in rows]
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].tolist() == [arm, pool] and batch["x"].shape == (2, 8, 3, 56, 56)
    meta = dm.metadata()
    assert set(METADATA_KEYS) <= set(meta) and meta["class_names"][6] == ARM and meta["num_classes"] == 400
    assert meta["splits"] == {"val": "val", "test": "test"} and meta["skipped"] == {"train": 0, "val": 0, "test": 0}


def test_cvdf_columns_read_by_name_and_classes_sorted_without_a_map(tmp_path, clips):
    splits = {"train": [(POOL, "cp_a"), (ARM, "aw_a")], "val": [(ARM, "aw_b")], "test": [(POOL, "cp_b")]}
    root = make_cvdf(tmp_path, clips, splits, header="split,time_end,youtube_id,label,time_start")
    dm = KineticsDataModule(root, **SMALL)
    dm.setup()
    assert dm.class_names == [ARM, POOL]
    assert [(Path(e.path).name, e.label) for e in dm.datasets["train"].entries] == [
        ("cp_a_000000_000010.mp4", 1),
        ("aw_a_000010_000020.mp4", 0),
    ]


def test_class_folders_and_no_test_split(tmp_path, clips, shared_data, caplog):
    for split, names in {"train": ["a", "b", "c"], "val": ["v"]}.items():
        for folder, label in (("arm_wrestling", ARM), ("cleaning pool", POOL)):  # one folder with underscores
            (tmp_path / split / folder).mkdir(parents=True)
            for n in names:
                os.symlink(clips[label], tmp_path / split / folder / f"{n}.mp4")
    shutil.copy(shared_data / "video" / "label_map_k400.txt", tmp_path / "label_map_k400.txt")  # found in root
    with caplog.at_level(logging.WARNING, logger="stpred.datamodules.kinetics"):
        dm = KineticsDataModule(tmp_path, **SMALL)
        dm.setup()
    assert dm.layout == "folders" and dm.num_classes == 400
    assert "val split (2 clips) is used for TESTING" in caplog.text
    paths = {k: {e.path for e in v.entries} for k, v in dm.datasets.items()}
    assert paths["test"] == {str(tmp_path / "val" / f / "v.mp4") for f in ("arm_wrestling", "cleaning pool")}
    assert len(paths["val"]) == 1 and len(paths["train"]) == 5 and not paths["val"] & paths["train"]
    assert sorted(e.label for e in dm.datasets["test"].entries) == [6, 62]
    assert dm.metadata()["splits"]["test"] == "val"

    with pytest.raises(UserError, match="no test split"):
        KineticsDataModule(tmp_path, no_test_split="error", **SMALL).setup()
    dm = KineticsDataModule(tmp_path, no_test_split="val_is_test", **SMALL)
    dm.setup()
    assert [e.path for e in dm.datasets["val"].entries] == [e.path for e in dm.datasets["test"].entries]


def test_mmaction_list_layout(tmp_path, clips, shared_data):
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        (tmp_path / f"videos_{split}" / "sub").mkdir(parents=True)
        lines = []
        for k in range(n):
            for label, lid in ((ARM, 6), (POOL, 62)):
                name = f"sub/{label.replace(' ', '_')}_{k}.mp4"
                os.symlink(clips[label], tmp_path / f"videos_{split}" / name)
                lines.append(f"{name} {lid}")
        (tmp_path / f"kinetics400_{split}_list_videos.txt").write_text("\n".join(lines) + "\n")
    map_path = shared_data / "video" / "label_map_k400.txt"
    dm = KineticsDataModule(tmp_path, label_map=str(map_path), **SMALL)
    dm.setup()
    assert dm.layout == "list" and dm.num_classes == 400
    assert [e.label for e in dm.datasets["train"].entries] == [6, 62, 6, 62]
    assert dm.datasets["test"][1]["label"] == 62


def test_label_outside_the_map_is_a_user_error(tmp_path, clips, shared_data):
    root = make_cvdf(tmp_path, clips, {"train": [(ARM, "a"), ("juggling chainsaws", "b")]})
    with pytest.raises(UserError, match="juggling chainsaws"):
        KineticsDataModule(root, label_map=str(shared_data / "video" / "label_map_k400.txt"), **SMALL).setup()
    with pytest.raises(UserError, match="no known layout"):
        KineticsDataModule(tmp_path / "annotations", **SMALL).setup()


# -- classification samples ------------------------------------------------------------------------------------
def test_classify_train_and_val_samples(cvdf_root, clips):
    dm = KineticsDataModule(cvdf_root, num_frames=8, frame_stride=4, short_side=None, crop_size=112, batch_size=2)
    dm.setup()
    assert dm.task == "classify" and dm.in_shape == (8, 3, 112, 112) and dm.out_frames is None
    # validation: the centre clip and crop, exactly, ImageNet-normalised
    sample = dm.datasets["val"][1]
    path = dm.datasets["val"].entries[1].path
    n = 300 if "cp_" in Path(path).name else 280
    start = (n - 29) // 2
    expected = expected_clip(path, start + 4 * np.arange(8), 112)
    assert sample["x"].dtype == torch.float32 and sample["x"].shape == (8, 3, 112, 112)
    torch.testing.assert_close(denorm(sample["x"]), expected, atol=1e-5, rtol=0)
    assert sample["label"] == 1 and sample["replaced"] is False
    # training: random but reproducible from the torch seed, in [0, 1] once de-normalised
    torch.manual_seed(3)
    a = dm.datasets["train"][0]["x"]
    torch.manual_seed(3)
    b = dm.datasets["train"][0]["x"]
    torch.manual_seed(4)
    c = dm.datasets["train"][0]["x"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert denorm(a).min() >= -1e-5 and denorm(a).max() <= 1 + 1e-5
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (2, 8, 3, 112, 112) and batch["label"].shape == (2,)


def test_classify_test_views(cvdf_root):
    dm = KineticsDataModule(cvdf_root, num_frames=4, frame_stride=8, short_side=128, crop_size=112)
    dm.test_clips, dm.test_crops, dm.eval_batch_size = 2, 3, 2
    dm.setup()
    sample = dm.datasets["test"][1]
    assert sample["x"].shape == (6, 4, 3, 112, 112)  # [V = 2 clips x 3 crops, T, C, H, W]
    x = denorm(sample["x"])
    # clip-major: views 0-2 share frames and differ in crop, views 0 and 3 differ in time
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2]) and not torch.equal(x[0], x[3])
    # the left and right crops of a 128 x 170 frame overlap in 54 columns: 112 - (170 - 112)
    torch.testing.assert_close(x[0][..., 58:], x[2][..., :54])
    batch = next(iter(dm.test_dataloader()))
    assert batch["x"].shape == (2, 6, 4, 3, 112, 112) and batch["label"].tolist() == [1, 0]


# -- forecasting samples ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("t_in,t_out", [(4, 4), (3, 5)])
def test_forecast_targets_are_the_frames_after_the_inputs(cvdf_root, t_in, t_out):
    dm = KineticsDataModule(
        cvdf_root, task="forecast", t_in=t_in, t_out=t_out, frame_stride=2, short_side=None, crop_size=96
    )
    dm.setup()
    assert dm.task == "forecast" and dm.in_shape == (t_in, 3, 96, 96) and dm.out_frames == t_out
    ds = dm.datasets["test"]
    for i in range(len(ds)):
        sample = ds[i]
        n = 300 if "cp_" in Path(ds.entries[i].path).name else 280
        idx = (n - 15) // 2 + 2 * np.arange(8)  # 8 frames at stride 2 span 15
        expected = expected_clip(ds.entries[i].path, idx, 96)
        torch.testing.assert_close(sample["x"], expected[:t_in], atol=0, rtol=0)
        torch.testing.assert_close(sample["y"], expected[t_in:], atol=0, rtol=0)
    meta = dm.metadata()
    assert meta["mean"] == [0.0, 0.0, 0.0] and meta["std"] == [1.0, 1.0, 1.0] and meta["data_range"] == 1.0
    assert meta["out_frames"] == t_out and meta["t_in"] == t_in and "class_names" not in meta


def test_forecast_eval_windows_are_fixed(cvdf_root):
    common = {"task": "forecast", "frame_stride": 2, "short_side": 64, "crop_size": 64}
    dm = KineticsDataModule(cvdf_root, eval_window="seeded", eval_seed=11, **common)
    dm.setup()
    ds = dm.datasets["val"]
    torch.manual_seed(0)
    a = ds[0]
    torch.manual_seed(1)
    b = ds[0]
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    start = int(np.random.default_rng([11, 0]).integers(0, 280 - 15 + 1))
    assert ds.clip_starts(0, 280) == [start]
    centre = KineticsDataModule(cvdf_root, **common)
    centre.setup()
    assert centre.datasets["val"].clip_starts(0, 280) == [(280 - 15) // 2]
    torch.manual_seed(0)
    t0 = dm.datasets["train"][0]["x"]
    torch.manual_seed(1)
    assert not torch.equal(t0, dm.datasets["train"][0]["x"])  # training windows do move


def test_short_videos_loop(cvdf_root):
    # 12 frames at stride 32 span 353 frames, more than either clip holds: indices wrap around
    dm = KineticsDataModule(cvdf_root, task="forecast", t_in=6, t_out=6, frame_stride=32, short_side=None, crop_size=64)
    dm.setup()
    ds = dm.datasets["val"]
    sample = ds[0]
    idx = (32 * np.arange(12)) % 280
    expected = expected_clip(ds.entries[0].path, idx, 64)
    torch.testing.assert_close(torch.cat([sample["x"], sample["y"]]), expected, atol=0, rtol=0)


# -- unreadable files ------------------------------------------------------------------------------------------
def faststart(data: bytes) -> bytes:
    """Move an MP4's ``moov`` box before ``mdat`` (fixing the ``stco`` chunk offsets), like ``-movflags faststart``."""

    def boxes(buf, start, end):
        while start < end:
            size, kind = struct.unpack(">I4s", buf[start : start + 8])
            yield start, size, kind.decode("latin1")
            start += size

    top = list(boxes(data, 0, len(data)))
    moov_at, moov_size = next((i, s) for i, s, k in top if k == "moov")
    moov = bytearray(data[moov_at : moov_at + moov_size])

    def shift(start, end):
        for i, size, kind in boxes(moov, start, end):
            if kind in ("trak", "mdia", "minf", "stbl"):
                shift(i + 8, i + size)
            elif kind == "stco":
                (count,) = struct.unpack(">I", moov[i + 12 : i + 16])
                for k in range(count):
                    o = i + 16 + 4 * k
                    moov[o : o + 4] = struct.pack(">I", struct.unpack(">I", moov[o : o + 4])[0] + moov_size)
            elif kind == "co64":
                raise AssertionError("64-bit chunk offsets not handled")

    shift(8, moov_size)
    head = b"".join(data[i : i + s] for i, s, k in top if k == "ftyp")
    rest = b"".join(data[i : i + s] for i, s, k in top if k not in ("ftyp", "moov"))
    return head + bytes(moov) + rest


def test_corrupt_files_are_skipped_and_counted(tmp_path, clips, caplog):
    bad = ("truncated", "random", "tiny", "absent")
    splits = {
        "train": [(ARM, "good"), *((ARM, b) for b in bad), (POOL, "ok")],
        "val": [(ARM, "v")],
        "test": [(POOL, "t")],
    }
    root = make_cvdf(tmp_path, clips, splits, own=bad)
    data = clips[ARM].read_bytes()
    (root / "train" / "truncated_000010_000020.mp4").write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng()
    (root / "train" / "random_000020_000030.mp4").write_bytes(rng.integers(0, 256, 8000, dtype=np.uint8).tobytes())
    (root / "train" / "tiny_000030_000040.mp4").write_bytes(data[:500])
    with caplog.at_level(logging.WARNING, logger="stpred.datamodules.kinetics"):
        dm = KineticsDataModule(root, task="forecast", frame_stride=2, short_side=64, crop_size=64, batch_size=1)
        dm.setup()
    assert dm.skipped == {"train": 4, "val": 0, "test": 0}
    assert dm.skip_reasons["train"] == {"unreadable": 2, "under 1 KB": 1, "missing": 1}
    assert "skipping 4 of 6 clips" in caplog.text and dm.metadata()["skipped"]["train"] == 4
    seen = [batch["x"].shape for batch in dm.train_dataloader()]
    assert seen == [(1, 4, 3, 64, 64)] * 2


def test_decode_failure_mid_epoch_is_replaced_and_counted(tmp_path, clips, caplog):
    splits = {"train": [(ARM, "a"), (POOL, "b")], "val": [(ARM, "cut"), (POOL, "v"), (ARM, "swapped")]}
    root = make_cvdf(tmp_path, clips, splits, own=("cut", "swapped"))
    # Index first, then cut in half: the header opens (OpenCV announces 280 frames) but frames past ~137 are gone.
    cut = faststart(clips[ARM].read_bytes())
    (root / "val" / "cut_000000_000010.mp4").write_bytes(cut[: len(cut) // 2])
    shutil.copy(clips[POOL], root / "val" / "swapped_000020_000030.mp4")
    # probe="size": nothing is opened at setup (the header probe would already skip the cut file as truncated)
    dm = KineticsDataModule(root, no_test_split="val_is_test", probe="size", **{**SMALL, "frame_stride": 8})
    dm.setup()
    assert dm.skipped["val"] == 0
    (root / "val" / "swapped_000020_000030.mp4").write_bytes(np.random.default_rng().bytes(6000))  # replaced later
    ds = dm.datasets["val"]
    with caplog.at_level(logging.WARNING, logger="stpred.datamodules.kinetics"):
        first = ds[0]  # the cut file: opening it finds frames past ~137 missing
        labels = [b["label"].tolist() for b in torch.utils.data.DataLoader(ds, batch_size=3)]
    assert first["replaced"] is True and first["index"] == 1 and first["label"] == 1
    assert labels == [[1, 1, 1]]  # 0 (cut) -> 1; 1; 2 (garbage) -> 0 (known bad) -> 1
    assert set(ds.failed) == {e.path for e in ds.entries if "cut_" in e.path or "swapped_" in e.path}
    assert dm.decode_failures["val"] == 2 and ds.replaced == 3
    assert caplog.text.count("skipping") == 2  # each bad file is tried once, then skipped directly


def test_all_unreadable_is_one_user_error(tmp_path, clips):
    root = make_cvdf(tmp_path, clips, {"train": [(ARM, "a"), (POOL, "b")], "val": [(ARM, "v")]}, own=("a", "b"))
    for name in ("a_000000_000010.mp4", "b_000010_000020.mp4"):
        (root / "train" / name).write_bytes(np.random.default_rng().bytes(4000))
    with pytest.raises(UserError, match=r"train: none of the 2 clips .* is readable .*unreadable"):
        KineticsDataModule(root, **SMALL).setup()


# -- configs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option,task,in_shape",
    [("kinetics", "classify", (16, 3, 224, 224)), ("kinetics_forecast", "forecast", (4, 3, 256, 256))],
)
def test_configs_build_the_datamodule(cvdf_root, kinetics_label_map, tmp_path, option, task, in_shape):
    overrides = [f"data={option}", f"paths.output_dir={tmp_path}", f"data.root={cvdf_root}"]
    cfg = compose_config("train", [*overrides, f"data.label_map={kinetics_label_map}"])
    assert cfg.data._target_ == "stpred.datamodules.kinetics.KineticsDataModule"
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.task == task and dm.in_shape == in_shape
    dm.setup()
    assert dm.metadata()["sizes"] == {"train": 4, "val": 2, "test": 2}
    if task == "classify":
        # data.num_classes (400 in the config) is checked against the classes the data has: here only 2
        # without the label map
        two = hydra.utils.instantiate(compose_config("train", overrides).data)
        with pytest.raises(UserError) as err:
            two.setup()
        assert_one_line(err, "data.num_classes=400", "2 classes", "data.num_classes=2")
