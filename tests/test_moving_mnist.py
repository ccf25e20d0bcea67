"""Moving MNIST: IDX reading and download, the generator, splits, the fixed test set and the datamodule contract.

Real digits come from ``$STPRED_DATA/mnist`` (the 10,000 t10k digits). Files absent from the shared data (the 60k
training digits, ``mnist_test_seq.npy``) are written here as small synthetic files in the exact layouts.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _datafiles import assert_one_line

from stpred.datamodules.base import METADATA_KEYS
from stpred.datamodules.mnist_idx import (
    MNIST_FILES,
    download_mnist_file,
    md5_of,
    read_idx,
    read_idx_images,
    read_idx_labels,
    verify_mnist_file,
)
from stpred.datamodules.moving_mnist import (
    EpochSampler,
    MovingMNISTDataModule,
    MovingMNISTSequences,
    bounce_trajectories,
)
from stpred.errors import UserError

T10K = "t10k-images-idx3-ubyte.gz"


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _write_idx(path: Path, arr: np.ndarray, magic: int, gz: bool) -> Path:
    data = _idx_bytes(arr, magic)
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist_dir(shared_data: Path) -> Path:
    return shared_data / "mnist"


@pytest.fixture(scope="module")
def t10k(mnist_dir: Path) -> np.ndarray:
    return read_idx_images(mnist_dir / T10K)


def _dm(root: Path, **kw) -> MovingMNISTDataModule:
    kw = {"epoch_size": 8, "val_size": 4, "test_size": 4, "batch_size": 4, **kw}
    dm = MovingMNISTDataModule(root, **kw)
    dm.setup()
    return dm


# -- IDX -----------------------------------------------------------------------------------------------------------
def test_idx_gz_and_raw_by_magic_bytes(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    # The extension lies on purpose: gzip is recognised by its magic bytes.
    gz = _write_idx(tmp_path / "images-no-extension", images, 2051, gz=True)
    raw = _write_idx(tmp_path / "images-raw.gz", images, 2051, gz=False)
    np.testing.assert_array_equal(read_idx_images(gz), images)
    np.testing.assert_array_equal(read_idx_images(raw), images)
    np.testing.assert_array_equal(read_idx_labels(_write_idx(tmp_path / "l.gz", labels, 2049, gz=True)), labels)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "l", labels, 2049, gz=False)), labels)
    assert read_idx(gz).dtype == np.uint8 and read_idx(gz).shape == (5, 28, 28)


def test_idx_errors_are_one_clear_line(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), np.uint8)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress((1234).to_bytes(4, "big") + bytes(20)))
    with pytest.raises(UserError) as err:
        read_idx(bad)
    assert_one_line(err, str(bad), "magic 1234", "2051", "2049")
    truncated = tmp_path / "trunc"
    truncated.write_bytes(_idx_bytes(images, 2051)[:-10])
    with pytest.raises(UserError) as err:
        read_idx(truncated)
    assert_one_line(err, "truncated", str(images.size - 10))
    labels = _write_idx(tmp_path / "labels", np.zeros(3, np.uint8), 2049, gz=False)
    with pytest.raises(UserError) as err:
        read_idx_images(labels)
    assert_one_line(err, "images")
    with pytest.raises(UserError) as err:
        read_idx(tmp_path / "missing.gz")
    assert_one_line(err, "missing.gz", "data.root")


def test_shared_t10k_is_real_mnist(mnist_dir: Path, t10k: np.ndarray) -> None:
    labels = read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert t10k.shape == (10000, 28, 28) and t10k.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels).tolist()) == set(range(10))
    # Re-gzipped copies are accepted through the decompressed md5 (docs/data.md §1).
    assert verify_mnist_file(mnist_dir / T10K, "t10k-images-idx3-ubyte")
    assert verify_mnist_file(mnist_dir / "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte")
    assert md5_of(mnist_dir / T10K, decompress=True) == MNIST_FILES["t10k-images-idx3-ubyte"].raw_md5


def test_download_is_checksummed_and_atomic(tmp_path: Path, mnist_dir: Path) -> None:
    good, corrupt, dest = tmp_path / "good", tmp_path / "corrupt", tmp_path / "dest"
    good.mkdir()
    corrupt.mkdir()
    shutil.copy(mnist_dir / T10K, good / T10K)
    digits = read_idx_images(good / T10K).copy()
    digits[0, 0, 0] ^= 1
    _write_idx(corrupt / T10K, digits, 2051, gz=True)
    mirrors = (f"file://{tmp_path}/offline/", f"file://{corrupt}/", f"file://{good}/")
    path = download_mnist_file(dest, "t10k-images-idx3-ubyte", mirrors=mirrors)
    assert path == dest / T10K and path.read_bytes() == (mnist_dir / T10K).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [T10K]

    with pytest.raises(UserError) as err:
        download_mnist_file(tmp_path / "dest2", "t10k-images-idx3-ubyte", mirrors=(f"file://{corrupt}/",))
    assert_one_line(err, "checksum mismatch", "data.root=", "STPRED_DATA")
    assert list((tmp_path / "dest2").iterdir()) == []


def test_missing_files_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError) as err:
        _dm(tmp_path)
    assert_one_line(err, str(tmp_path), "train-images-idx3-ubyte", "data.root=", "STPRED_DATA", "data.download=true")
    # download=true without network: the mirrors are unreachable.
    monkeypatch.setattr("stpred.datamodules.mnist_idx.MIRRORS", (f"file://{tmp_path}/no-network/",))
    with pytest.raises(UserError) as err:
        _dm(tmp_path, download=True)
    assert_one_line(err, "could not download train-images-idx3-ubyte.gz", str(tmp_path), "data.root=", "STPRED_DATA")
    assert not any(tmp_path.iterdir())


# -- generation ----------------------------------------------------------------------------------------------------
def test_bounce_rule_hand_computed() -> None:
    # theta = 0: v = (sin 0, cos 0) = (0, 1), so the column moves by exactly 0.25 per frame and bounces at 1 and 0.
    pos = bounce_trajectories(np.array([[0.5, 0.5]]), np.array([0.0]), 9, 0.25)
    np.testing.assert_array_equal(pos[0, :, 1], [0.75, 1.0, 0.75, 0.5, 0.25, 0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(pos[0, :, 0], np.full(9, 0.5))
    np.testing.assert_array_equal((36 * pos[0, :, 1]).astype(int), [27, 36, 27, 18, 9, 0, 9, 18, 27])


def _reference_positions(start: np.ndarray, theta: float, frames: int, step: float) -> np.ndarray:
    """docs/data.md §2.2 step by step for one digit: step, clamp and flip, then record."""
    y, x = float(start[0]), float(start[1])
    vy, vx = math.sin(theta), math.cos(theta)
    out = []
    for _ in range(frames):
        y += vy * step
        x += vx * step
        if x <= 0:
            x, vx = 0.0, -vx
        if x >= 1.0:
            x, vx = 1.0, -vx
        if y <= 0:
            y, vy = 0.0, -vy
        if y >= 1.0:
            y, vy = 1.0, -vy
        out.append((y, x))
    return np.array(out)


def test_trajectories_follow_the_step_and_bounce_rule(t10k: np.ndarray) -> None:
    ds = MovingMNISTSequences(t10k[:100], np.arange(100), num_sequences=50, t_in=10, t_out=10, step_length=0.1)
    bounces = 0
    for i in range(50):
        p = ds.params(i)
        assert p.positions.shape == (2, 20, 2) and p.offsets.shape == (2, 20, 2)
        assert ((p.start >= 0) & (p.start < 1)).all() and ((p.theta >= 0) & (p.theta < 2 * math.pi)).all()
        for d in range(2):
            ref = _reference_positions(p.start[d], p.theta[d], 20, 0.1)
            np.testing.assert_array_equal(p.positions[d], ref)
            v = np.array([math.sin(p.theta[d]), math.cos(p.theta[d])])
            # frame 0 is one step from the start
            np.testing.assert_array_equal(p.positions[d, 0], np.clip(p.start[d] + v * 0.1, 0, 1))
            bounces += int(((ref == 0) | (ref == 1)).sum())
        np.testing.assert_array_equal(p.offsets, (36 * p.positions).astype(np.int64))
        assert p.offsets.min() >= 0 and p.offsets.max() <= 36
    assert bounces > 10  # the clamp-and-flip branch was exercised


def test_one_digit_frames_are_the_placed_digit(t10k: np.ndarray) -> None:
    ds = MovingMNISTSequences(t10k[:50], np.arange(50), num_sequences=5, t_in=10, t_out=10, num_digits=1)
    for i in range(5):
        p = ds.params(i)
        sample = ds[i]
        video = torch.cat([sample["x"], sample["y"]])  # [20, 1, 64, 64]
        digit = t10k[p.pool_index[0]]
        for t in range(20):
            r, c = p.offsets[0, t]
            expected = np.zeros((64, 64), np.uint8)
            expected[r : r + 28, c : c + 28] = digit
            assert torch.equal(video[t, 0], torch.from_numpy(expected).float() / 255)


def test_digits_are_max_composited(t10k: np.ndarray) -> None:
    ds = MovingMNISTSequences(t10k[:50], np.arange(50), num_sequences=5, t_in=10, t_out=10, num_digits=3)
    for i in range(5):
        p = ds.params(i)
        expected = np.zeros((20, 64, 64), np.uint8)
        for d in range(3):
            for t in range(20):
                r, c = p.offsets[d, t]
                block = expected[t, r : r + 28, c : c + 28]
                expected[t, r : r + 28, c : c + 28] = np.maximum(block, t10k[p.pool_index[d]])
        np.testing.assert_array_equal(ds.frames(i), expected)
        sample = ds[i]
        assert sample["x"].shape == (10, 1, 64, 64) and sample["y"].shape == (10, 1, 64, 64)
        assert sample["x"].dtype == torch.float32 and 0.0 <= float(sample["x"].min()) <= float(sample["x"].max()) <= 1
        assert float(sample["x"].max()) == 1.0  # MNIST digits reach 255


def test_canvas_size_and_step_length_are_configurable(t10k: np.ndarray) -> None:
    ds = MovingMNISTSequences(
        t10k[:10], np.arange(10), num_sequences=2, t_in=3, t_out=2, image_size=48, step_length=0.3
    )
    p = ds.params(0)
    np.testing.assert_array_equal(p.offsets, (20 * p.positions).astype(np.int64))
    assert ds.frames(0).shape == (5, 48, 48)
    for d in range(2):
        np.testing.assert_array_equal(p.positions[d], _reference_positions(p.start[d], p.theta[d], 5, 0.3))


# -- randomness ----------------------------------------------------------------------------------------------------
def _epoch(loader) -> torch.Tensor:
    return torch.cat([torch.cat([b["x"], b["y"]], 1) for b in loader])


def test_determinism_across_instances_and_workers(mnist_dir: Path) -> None:
    a, b = _dm(mnist_dir, seed=7), _dm(mnist_dir, seed=7, num_workers=2)
    ea, eb = _epoch(a.train_dataloader()), _epoch(b.train_dataloader())
    assert ea.shape == (8, 20, 1, 64, 64)
    assert torch.equal(ea, eb)
    assert torch.equal(_epoch(a.val_dataloader()), _epoch(b.val_dataloader()))
    other = _dm(mnist_dir, seed=8)
    assert not torch.equal(ea, _epoch(other.train_dataloader()))
    # the evaluation sets do not depend on the training seed
    assert torch.equal(_epoch(a.test_dataloader()), _epoch(other.test_dataloader()))


def test_fresh_training_sequences_each_epoch_fixed_eval(mnist_dir: Path) -> None:
    dm = _dm(mnist_dir)
    train, val, test = dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()
    sampler = train.batch_sampler.sampler  # the resumable loader batches the epoch sampler's indices
    assert isinstance(sampler, EpochSampler)
    e0, v0, t0 = _epoch(train), _epoch(val), _epoch(test)
    e1, v1, t1 = _epoch(train), _epoch(val), _epoch(test)
    assert not torch.equal(e0, e1)
    assert (e0 - e1).abs().amax(dim=(1, 2, 3, 4)).min() > 0  # every sequence changed
    assert torch.equal(v0, v1) and torch.equal(t0, t1)
    sampler.set_epoch(0)  # what Lightning does on resume
    assert torch.equal(_epoch(train), e0)
    assert [b["index"].tolist() for b in train][0] == [8, 9, 10, 11]  # epoch 1 -> global indices 8..15


# -- splits --------------------------------------------------------------------------------------------------------
def _digit_ids(ds: MovingMNISTSequences, n: int) -> set[int]:
    return {int(i) for k in range(n) for i in ds.params(k).digit_ids}


def test_t10k_only_pools_are_disjoint(mnist_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stpred.datamodules.moving_mnist"):
        dm = _dm(mnist_dir, epoch_size=400, val_size=200, test_size=200)
    assert "splitting the 10000 digits" in caplog.text and "0.8/0.1/0.1" in caplog.text
    pools = {k: set(dm.datasets[k].digit_ids.tolist()) for k in ("train", "val", "test")}
    assert [len(p) for p in pools.values()] == [8000, 1000, 1000]
    assert not (pools["train"] & pools["val"]) and not (pools["train"] & pools["test"])
    assert not (pools["val"] & pools["test"])
    assert set.union(*pools.values()) == set(range(10000))
    for split, n in (("train", 400), ("val", 200), ("test", 200)):
        used = _digit_ids(dm.datasets[split], n)
        assert used <= pools[split] and len(used) > n  # many distinct digits, all from the split's pool
    assert dm.metadata()["pool_sizes"] == {"train": 8000, "val": 1000, "test": 1000}


def test_train_file_pools_and_generated_test(tmp_path: Path, mnist_dir: Path, t10k: np.ndarray) -> None:
    # A small training file in the 60k layout: the last 1/12 (here 100 of 1200) is the validation pool.
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", t10k[:1200], 2051, gz=True)
    shutil.copy(mnist_dir / T10K, tmp_path / T10K)
    dm = _dm(tmp_path, epoch_size=300, val_size=100, test_size=50)
    np.testing.assert_array_equal(dm.datasets["train"].digit_ids, np.arange(1100))
    np.testing.assert_array_equal(dm.datasets["val"].digit_ids, np.arange(1100, 1200))
    np.testing.assert_array_equal(dm.datasets["test"].digits, t10k)  # test digits come from the other file
    assert _digit_ids(dm.datasets["train"], 300) <= set(range(1100))
    assert _digit_ids(dm.datasets["val"], 100) <= set(range(1100, 1200))
    meta = dm.metadata()
    assert meta["digit_source"] == "train-images-idx3-ubyte.gz" and meta["test_source"].startswith("generated")


def test_openstl_compat_reinstates_val_equals_test(mnist_dir: Path) -> None:
    assert _dm(mnist_dir).datasets["val"] is not _dm(mnist_dir).datasets["test"]
    dm = _dm(mnist_dir, openstl_compat=True)
    assert dm.datasets["val"] is dm.datasets["test"]


# -- mnist_test_seq.npy --------------------------------------------------------------------------------------------
def test_test_seq_is_read_time_first(tmp_path: Path, mnist_dir: Path) -> None:
    t, n = np.meshgrid(np.arange(20), np.arange(5), indexing="ij")
    arr = np.broadcast_to((10 * n + t).astype(np.uint8)[:, :, None, None], (20, 5, 64, 64)).copy()
    np.save(tmp_path / "mnist_test_seq.npy", arr)
    dm = _dm(tmp_path, test_images=str(mnist_dir / T10K), test_size=3, eval_batch_size=2)
    assert len(dm.datasets["test"]) == 3 and dm.metadata()["test_source"] == "mnist_test_seq.npy"
    batches = list(dm.test_dataloader())
    x = torch.cat([b["x"] for b in batches])
    y = torch.cat([b["y"] for b in batches])
    assert x.shape == (3, 10, 1, 64, 64) and y.shape == (3, 10, 1, 64, 64)
    for i in range(3):
        for k in range(10):
            assert torch.all(x[i, k] == (10 * i + k) / 255) and torch.all(y[i, k] == (10 * i + 10 + k) / 255)
    # all sequences of the file when test_size exceeds them
    assert len(_dm(tmp_path, test_images=str(mnist_dir / T10K), test_size=100).datasets["test"]) == 5


def test_test_seq_shape_is_validated(tmp_path: Path, mnist_dir: Path) -> None:
    np.save(tmp_path / "mnist_test_seq.npy", np.zeros((20, 2, 32, 32), np.uint8))
    with pytest.raises(UserError) as err:
        _dm(tmp_path, test_images=str(mnist_dir / T10K))
    assert_one_line(err, "mnist_test_seq.npy", "(20, 2, 32, 32)", "64x64")
    np.save(tmp_path / "mnist_test_seq.npy", np.zeros((20, 2, 64, 64), np.uint8))
    with pytest.raises(UserError) as err:
        _dm(tmp_path, test_images=str(mnist_dir / T10K), t_in=15, t_out=10)
    assert_one_line(err, "25 frames")
    dm = _dm(tmp_path, test_images=str(mnist_dir / T10K), use_test_seq=False)
    assert isinstance(dm.datasets["test"], MovingMNISTSequences)


# -- contract ------------------------------------------------------------------------------------------------------
def test_metadata_and_batch_shapes(mnist_dir: Path) -> None:
    dm = _dm(mnist_dir)
    meta = dm.metadata()
    assert set(METADATA_KEYS) <= set(meta)
    assert json.loads(json.dumps(meta)) == meta
    assert meta["dataset"] == "mmnist" and meta["channels"] == ["intensity"] and meta["units"] == ["1"]
    assert meta["mean"] == [0.0] and meta["std"] == [1.0] and meta["data_range"] == 1.0 and meta["pde"] is False
    assert meta["in_shape"] == [10, 1, 64, 64] == list(dm.in_shape) and meta["out_frames"] == 10 == dm.out_frames
    assert (meta["step_length"], meta["num_digits"], meta["image_size"]) == (0.1, 2, 64)
    assert meta["digit_source"] == T10K
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert tuple(batch["x"].shape[1:]) == dm.in_shape and batch["x"].dtype == torch.float32
        assert batch["y"].shape[1] == dm.out_frames and batch["y"].dtype == torch.float32


def test_long_horizon_shapes(mnist_dir: Path) -> None:
    dm = _dm(mnist_dir, t_in=100, t_out=400, step_length=0.15, epoch_size=2, val_size=2, test_size=2, batch_size=2)
    batch = next(iter(dm.val_dataloader()))
    assert batch["x"].shape == (2, 100, 1, 64, 64) and batch["y"].shape == (2, 400, 1, 64, 64)
    p = dm.datasets["val"].params(0)
    assert p.positions.shape == (2, 500, 2)
    assert np.abs(np.diff(p.positions, axis=1)).max() <= 0.15 + 1e-12
    teacher = _dm(mnist_dir, t_in=100, t_out=400, train_length=300, epoch_size=2, val_size=2, test_size=2, batch_size=2)
    batch = next(iter(teacher.train_dataloader()))
    assert batch["x"].shape == (2, 100, 1, 64, 64) and batch["y"].shape == (2, 200, 1, 64, 64)
    assert next(iter(teacher.test_dataloader()))["y"].shape == (2, 400, 1, 64, 64)


def test_configs_instantiate(mnist_dir: Path) -> None:
    hydra = pytest.importorskip("hydra")
    from hydra.utils import instantiate

    configs = Path(__file__).resolve().parents[1] / "configs"
    small = ["data.epoch_size=4", "data.val_size=2", "data.test_size=2", "data.num_workers=0"]
    expected = {"mmnist": ((10, 1, 64, 64), 10, 0.1, 16), "mmnist_long": ((100, 1, 64, 64), 400, 0.15, 8)}
    with hydra.initialize_config_dir(str(configs), version_base=None):
        for name, (in_shape, out_frames, step, bs) in expected.items():
            overrides = [f"+data={name}", f"+paths.data_dir={mnist_dir.parent}", "+seed=3", *small]
            cfg = hydra.compose(overrides=overrides)
            dm = instantiate(cfg.data)
            assert isinstance(dm, MovingMNISTDataModule) and dm.root == mnist_dir
            assert (dm.in_shape, dm.out_frames, dm.step_length, dm.batch_size) == (in_shape, out_frames, step, bs)
            assert dm.seed == 3 and dm.metadata()["dataset"] == name
