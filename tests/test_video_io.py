"""Clip reading (decord and OpenCV backends) and video writing, on the real Kinetics clips of the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stpred.datamodules.video_io import (
    VideoReadError,
    available_backends,
    clip_indices,
    open_video,
    read_clip,
    video_info,
    write_video,
)
from stpred.errors import UserError

# (file, frames, fps) from the shared data's README; both are 340x256
CLIPS = [("kinetics_arm_wrestling.mp4", 280, 28.0), ("kinetics_cleaning_pool.mp4", 300, 30.0)]
BACKENDS = available_backends()
needs_decord = pytest.mark.skipif("decord" not in BACKENDS, reason="decord is not installed")


@pytest.fixture(scope="module")
def pool_clip(shared_data: Path) -> Path:
    return shared_data / "video" / "kinetics_cleaning_pool.mp4"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,frames,fps", CLIPS)
def test_video_info_matches_the_clip(shared_data, backend, name, frames, fps):
    info = video_info(shared_data / "video" / name, backend=backend)
    assert tuple(info) == (frames, fps, 256, 340)


@needs_decord
@pytest.mark.parametrize("name,frames,fps", CLIPS)
def test_backends_agree_on_pixels_and_channel_order(shared_data, name, frames, fps):
    path = shared_data / "video" / name
    idx = [0, 37, 150, frames - 1]
    a = read_clip(path, idx, backend="decord")
    b = read_clip(path, idx, backend="opencv")
    assert a.shape == b.shape == (4, 256, 340, 3) and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(np.int16) - b).mean(axis=(1, 2, 3)).max() < 1.0
    # same mean colour per channel, so neither backend hands back BGR
    np.testing.assert_allclose(a.reshape(-1, 3).mean(0), b.reshape(-1, 3).mean(0), atol=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rgb_order_on_a_blue_pool(pool_clip, backend):
    # The cleaning-pool clip is mostly pool water: in RGB, blue and green are well above red.
    red, green, blue = read_clip(pool_clip, [0, 100, 200], backend=backend).reshape(-1, 3).mean(0)
    assert blue > red + 50 and green > red + 50


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_indices_equal_single_frame_reads(pool_clip, backend):
    idx = clip_indices(start=190, num_frames=6, stride=3)  # crosses nothing special; seek lands mid-GOP
    assert idx.tolist() == [190, 193, 196, 199, 202, 205]
    clip = read_clip(pool_clip, idx, backend=backend)
    singles = np.stack([read_clip(pool_clip, [i], backend=backend)[0] for i in idx])
    np.testing.assert_array_equal(clip, singles)
    assert all(np.abs(clip[k].astype(np.int16) - clip[k + 1]).mean() > 0.5 for k in range(5)), "frames repeat"
    # any order, with repeats
    mixed = read_clip(pool_clip, [202, 190, 190, 299], backend=backend)
    np.testing.assert_array_equal(mixed[:3], clip[[4, 0, 0]])
    np.testing.assert_array_equal(mixed[3], read_clip(pool_clip, [299], backend=backend)[0])


@needs_decord
def test_opencv_seeks_to_the_same_frame_as_decord(pool_clip):
    # forward jumps of more than the seek gap, then a backward jump on the same open file
    expected = read_clip(pool_clip, [3, 120, 250, 4], backend="decord")
    with open_video(pool_clip, backend="opencv") as video:
        np.testing.assert_array_equal(video.read([250, 3, 120]), expected[[2, 0, 1]])
        np.testing.assert_array_equal(video.read([4]), expected[3:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_indices_and_files(pool_clip, tmp_path, backend):
    with pytest.raises(IndexError):
        read_clip(pool_clip, [0, 300], backend=backend)
    with pytest.raises(VideoReadError, match="does not exist"):
        read_clip(tmp_path / "nope.mp4", [0], backend=backend)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng().integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="cannot open"):
        video_info(junk, backend=backend)
    with pytest.raises(UserError, match="backend"):
        open_video(pool_clip, backend="pyav")


def test_truncated_clip_fails_to_open(pool_clip, tmp_path):
    # The clip's index (moov) sits at the end, so a cut copy has none.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(pool_clip.read_bytes()[: pool_clip.stat().st_size // 2])
    for backend in BACKENDS:
        with pytest.raises(VideoReadError):
            read_clip(cut, [0], backend=backend)


def test_write_video_round_trip(pool_clip, tmp_path):
    frames = read_clip(pool_clip, clip_indices(10, 12, 5))[:, 20:120, 30:160]  # [12, 100, 130, 3]
    out = write_video(tmp_path / "sub" / "clip.mp4", frames, fps=7.0)
    assert out == tmp_path / "sub" / "clip.mp4" and sorted(p.name for p in out.parent.iterdir()) == ["clip.mp4"]
    info = video_info(out)
    assert (info.num_frames, info.height, info.width) == (12, 100, 130) and info.fps == pytest.approx(7.0)
    back = read_clip(out, range(12))
    assert np.abs(back.astype(np.int16) - frames).mean() < 6.0  # mp4v is lossy
    np.testing.assert_allclose(back.reshape(-1, 3).mean(0), frames.reshape(-1, 3).mean(0), atol=3.0)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_written_colours_are_not_swapped(tmp_path, suffix):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)  # red, green, blue frames
    frames = np.broadcast_to(colours[:, None, None], (3, 48, 64, 3))
    path = write_video(tmp_path / f"rgb{suffix}", frames, fps=5.0)
    if suffix == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            back = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    else:
        back = read_clip(path, range(3))
    assert back.shape == (3, 48, 64, 3)
    means = back.reshape(3, -1, 3).mean(1)
    assert (np.argmax(means, axis=1) == [0, 1, 2]).all() and np.abs(means - colours).max() < 12


def test_write_video_odd_size_and_grey(tmp_path):
    grey = np.random.default_rng().integers(0, 256, (4, 33, 47), dtype=np.uint8)
    info = video_info(write_video(tmp_path / "odd.mp4", grey, fps=4.0))
    assert (info.num_frames, info.height, info.width) == (4, 34, 48)  # padded to even, not cropped
    with pytest.raises(UserError, match="uint8"):
        write_video(tmp_path / "f.mp4", grey.astype(np.float32), fps=4.0)
    with pytest.raises(UserError, match="fps"):
        write_video(tmp_path / "f.mp4", grey, fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]  # no temporary files left behind
