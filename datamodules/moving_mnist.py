"""Moving MNIST (``mmnist``, docs/data.md §2): sequences generated on the fly from MNIST digits, plus the fixed
test set.

Generation follows OpenSTL's ``MovingMNIST`` (after Srivastava et al. 2015): each of ``num_digits`` 28x28 digits
starts at ``U[0,1)^2`` with a direction ``U[0, 2pi)``; every frame it first steps ``step_length`` along its
direction, clamps a coordinate that left [0, 1] and flips that coordinate's direction, then records the position,
so frame 0 is already one step from the start. The pixel offset is ``int((image_size - 28) * pos)``; digits are
composited by pixel-wise max and divided by 255 (no further normalisation: mean 0, std 1).

Randomness: every sequence draws from its own ``numpy.random.Generator`` seeded from ``(seed, stream, epoch,
index)``, so generation does not depend on worker count, order or process. Training sees fresh sequences each
epoch because :class:`EpochSampler` yields *global* indices ``epoch * epoch_size + i`` and the dataset derives
``(epoch, i)`` from them; validation and test sets only ever see epoch 0, so they are fixed.

Splits (docs/data.md §2.4): digits come from disjoint pools.

* With the 60k training file: train digits ``0 .. N - N//12 - 1`` (0..54,999), validation ``N - N//12 .. N - 1``
  (55,000..59,999); test is ``mnist_test_seq.npy`` when present, else a fixed set generated from the t10k digits.
* With only the t10k file: its digits are split by a fixed permutation into train / val / test pools of
  80% / 10% / 10% (8,000 / 1,000 / 1,000); test is ``mnist_test_seq.npy`` when present, else generated from the
  test pool.

Examples:
    >>> from stpred.datamodules.moving_mnist import MovingMNISTDataModule
    >>> dm = MovingMNISTDataModule("data/mnist", epoch_size=64, val_size=16, test_size=16)  # doctest: +SKIP
    >>> dm.setup()  # doctest: +SKIP
    >>> batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
    >>> batch["x"].shape, batch["y"].shape  # doctest: +SKIP
    (torch.Size([16, 10, 1, 64, 64]), torch.Size([16, 10, 1, 64, 64]))
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.utils.data import DataLoader, Dataset, Sampler

from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.datamodules.mnist_idx import download_mnist_file, find_mnist_file, read_idx_images
from stpred.datamodules.resumable import training_loader
from stpred.errors import UserError, check

__all__ = [
    "EpochSampler",
    "MovingMNISTDataModule",
    "MovingMNISTSequences",
    "MovingMNISTTestSeq",
    "SequenceParams",
    "bounce_trajectories",
    "render_sequence",
]

log = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_SEQ = "mnist_test_seq.npy"

#: Random streams, so train, validation and test sequences never share a generator seed.
TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2
#: 60,000 // 12 = 5,000 validation digits, i.e. digits 55,000..59,999 of the training file (docs/data.md §2.4).
VAL_HOLDOUT_DIVISOR = 12
#: When only the t10k digits exist: fractions of its digits for the train / val / test pools.
T10K_POOL_FRACTIONS = (0.8, 0.1, 0.1)
#: Seed of the fixed permutation that splits the t10k digits; independent of the run's seed so pools never move.
POOL_SEED = 20150101


def bounce_trajectories(start: np.ndarray, theta: np.ndarray, num_frames: int, step_length: float) -> np.ndarray:
    """Positions of bouncing digits, exactly by the OpenSTL / Srivastava rule.

    Each frame first steps ``pos += v * step_length`` with ``v = (sin theta, cos theta)`` in (row, col) order;
    a coordinate ``<= 0`` or ``>= 1`` is clamped into [0, 1] and its velocity sign flipped; then the position is
    recorded. Frame 0 is therefore one step from ``start``.

    Args:
        start: ``[D, 2]`` start positions (row, col) in [0, 1).
        theta: ``[D]`` directions in radians.
        num_frames: number of frames T.
        step_length: step per frame in units of the free range (0.1 gives 3.6 px on a 64 canvas).

    Returns:
        float64 ``[D, T, 2]`` positions (row, col) in [0, 1].
    """
    start = np.asarray(start, dtype=np.float64).reshape(-1, 2)
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    vel = np.stack([np.sin(theta), np.cos(theta)], axis=-1)
    out = np.empty((start.shape[0], num_frames, 2))
    for d in range(start.shape[0]):
        for axis in range(2):
            out[d, :, axis] = _bounce_1d(float(start[d, axis]), float(vel[d, axis]), num_frames, float(step_length))
    return out


def _bounce_1d(pos: float, vel: float, num_frames: int, step_length: float) -> list[float]:
    # Scalar Python floats: the rule is sequential, and this is ~20x faster than numpy ops on 2x2 arrays while
    # doing the very same float64 arithmetic as the reference.
    out = []
    for _ in range(num_frames):
        pos += vel * step_length
        if pos <= 0.0:
            pos, vel = 0.0, -vel
        elif pos >= 1.0:
            pos, vel = 1.0, -vel
        out.append(pos)
    return out


def render_sequence(digits: np.ndarray, offsets: np.ndarray, image_size: int) -> np.ndarray:
    """Place digits on blank canvases and composite them by pixel-wise max.

    Args:
        digits: uint8 ``[D, h, w]`` digit images.
        offsets: integer ``[D, T, 2]`` top-left (row, col) of each digit in each frame.
        image_size: canvas side.

    Returns:
        uint8 ``[T, image_size, image_size]``.
    """
    _, num_frames, _ = offsets.shape
    h, w = digits.shape[1:]
    canvas = np.zeros((num_frames, image_size, image_size), dtype=np.uint8)
    # windows[t, r, c] is the writable h x w view of frame t at offset (r, c): one gather / max / scatter per digit
    # covers all frames, and no index repeats within it because a digit sits once in each frame.
    windows = sliding_window_view(canvas, (h, w), axis=(1, 2), writeable=True)
    frame = np.arange(num_frames)
    for digit, off in zip(digits, offsets):
        rows, cols = off[:, 0], off[:, 1]
        windows[frame, rows, cols] = np.maximum(windows[frame, rows, cols], digit)
    return canvas


def _to_sample(frames: np.ndarray, t_in: int, index: int) -> dict[str, torch.Tensor | int]:
    # numpy, not torch: single-threaded in the main process too, and the same correctly rounded float32 division.
    video = torch.from_numpy(np.divide(frames[:, None], np.float32(255.0), dtype=np.float32))  # [T, 1, H, W]
    return {"x": video[:t_in], "y": video[t_in:], "index": index}


@dataclass(frozen=True)
class SequenceParams:
    """Everything random about one sequence.

    Attributes:
        start: ``[D, 2]`` start positions (row, col).
        theta: ``[D]`` directions.
        pool_index: ``[D]`` indices into the dataset's digit pool.
        digit_ids: ``[D]`` indices of those digits in the source IDX file.
        positions: ``[D, T, 2]`` recorded positions in [0, 1].
        offsets: ``[D, T, 2]`` pixel offsets ``int((image_size - 28) * positions)``.
    """

    start: np.ndarray
    theta: np.ndarray
    pool_index: np.ndarray
    digit_ids: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray


class MovingMNISTSequences(Dataset):
    """Moving MNIST sequences generated on the fly from a digit pool.

    Index ``i`` maps to ``(epoch, local) = divmod(i, num_sequences)`` and to the generator seed
    ``(seed, stream, epoch, local)``; indices below ``num_sequences`` are the fixed epoch-0 set, larger ones
    (from :class:`EpochSampler`) give fresh sequences.

    Args:
        digits: uint8 ``[N, h, w]`` digit pool.
        digit_ids: ``[N]`` indices of the pool's digits in the source file (for split bookkeeping).
        num_sequences: sequences per epoch (the dataset's length).
        t_in: input frames.
        t_out: target frames.
        num_digits: digits per sequence.
        image_size: canvas side.
        step_length: step per frame (0.1 OpenSTL, 0.15 long-horizon).
        seed: base seed (non-negative).
        stream: separates train / val / test generators.
    """

    def __init__(
        self,
        digits: np.ndarray,
        digit_ids: np.ndarray,
        *,
        num_sequences: int,
        t_in: int,
        t_out: int,
        num_digits: int = 2,
        image_size: int = 64,
        step_length: float = 0.1,
        seed: int = 0,
        stream: int = TRAIN_STREAM,
    ) -> None:
        check(
            digits.ndim == 3 and len(digits) > 0, f"digit pool must be a non-empty [N, h, w] array, got {digits.shape}"
        )
        check(len(digit_ids) == len(digits), "digit_ids must have one entry per digit")
        check(
            image_size >= max(digits.shape[1:]),
            f"image_size {image_size} is smaller than the digits {digits.shape[1:]}",
        )
        self.digits = np.ascontiguousarray(digits, dtype=np.uint8)
        self.digit_ids = np.asarray(digit_ids, dtype=np.int64)
        self.num_sequences = num_sequences
        self.t_in = t_in
        self.t_out = t_out
        self.num_digits = num_digits
        self.image_size = image_size
        self.step_length = step_length
        self.seed = seed
        self.stream = stream

    def __len__(self) -> int:
        return self.num_sequences

    def generator(self, index: int) -> np.random.Generator:
        """The generator of sequence ``index`` (global, may exceed ``len``)."""
        epoch, local = divmod(int(index), self.num_sequences)
        return np.random.default_rng([self.seed, self.stream, epoch, local])

    def params(self, index: int) -> SequenceParams:
        """Draw the start, direction and digits of sequence ``index`` and derive its trajectory."""
        rng = self.generator(index)
        start = rng.random((self.num_digits, 2))
        theta = rng.random(self.num_digits) * (2.0 * math.pi)
        pool_index = rng.integers(0, len(self.digits), self.num_digits)
        positions = bounce_trajectories(start, theta, self.t_in + self.t_out, self.step_length)
        free = self.image_size - self.digits.shape[1]
        offsets = (free * positions).astype(np.int64)
        return SequenceParams(start, theta, pool_index, self.digit_ids[pool_index], positions, offsets)

    def frames(self, index: int) -> np.ndarray:
        """uint8 ``[T_in + T_out, H, W]`` frames of sequence ``index``."""
        p = self.params(index)
        return render_sequence(self.digits[p.pool_index], p.offsets, self.image_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        """``{"x": [T_in, 1, H, W], "y": [T_out, 1, H, W], "index": int}``, float32 in [0, 1]."""
        return _to_sample(self.frames(index), self.t_in, int(index))


class MovingMNISTTestSeq(Dataset):
    """The fixed Srivastava test set ``mnist_test_seq.npy``: uint8 ``(T, N, H, W)``, **time first**.

    Sample ``i`` is ``arr[:, i]``: frames ``0 .. t_in-1`` are the input, ``t_in .. t_in+t_out-1`` the target.
    The array is memory-mapped and opened lazily in each worker (pickling a memmap would copy 800 MB).

    Args:
        path: the ``.npy`` file.
        t_in: input frames.
        t_out: target frames; the file needs at least ``t_in + t_out`` frames (the first ones are used).
        image_size: expected canvas side.
        num_sequences: use the first ``min(num_sequences, N)`` sequences; all when ``None``.
    """

    def __init__(
        self, path: str | os.PathLike, *, t_in: int, t_out: int, image_size: int = 64, num_sequences: int | None = None
    ) -> None:
        self.path = Path(path)
        self.t_in = t_in
        self.t_out = t_out
        arr = self._open()
        frames, count, height, width = self._validate(arr, image_size)
        self.length = count if num_sequences is None else min(count, num_sequences)
        if self.length < (num_sequences or 0):
            log.info("%s holds %d sequences; test_size %d capped to %d", self.path, count, num_sequences, count)
        if frames > t_in + t_out:
            log.info("%s has %d frames; using frames 0..%d", self.path, frames, t_in + t_out - 1)
        self._arr: np.ndarray | None = None

    def _open(self) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(
                f"{self.path}: not a readable .npy array ({' '.join(str(e).split())}); re-download it"
            ) from None

    def _validate(self, arr: np.ndarray, image_size: int) -> tuple[int, int, int, int]:
        need = self.t_in + self.t_out
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise UserError(
                f"{self.path}: expected uint8 (T, N, H, W) time-first frames, got {arr.dtype} {arr.shape}; "
                "use the original mnist_test_seq.npy"
            )
        frames, count, height, width = arr.shape
        if frames < need or (height, width) != (image_size, image_size):
            raise UserError(
                f"{self.path}: shape {arr.shape} (T, N, H, W) does not fit t_in + t_out = {need} frames of "
                f"{image_size}x{image_size}; set data.t_in/t_out/image_size to match or data.use_test_seq=false"
            )
        return frames, count, height, width

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arr"] = None
        return state

    def __len__(self) -> int:
        return self.length

    def frames(self, index: int) -> np.ndarray:
        """uint8 ``[T_in + T_out, H, W]``: ``arr[:t_in + t_out, index]``."""
        if self._arr is None:
            self._arr = self._open()
        return np.asarray(self._arr[: self.t_in + self.t_out, index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        """``{"x": [T_in, 1, H, W], "y": [T_out, 1, H, W], "index": int}``, float32 in [0, 1]."""
        return _to_sample(self.frames(index), self.t_in, int(index))


class EpochSampler(Sampler[int]):
    """Yields the global indices ``epoch * epoch_size .. (epoch + 1) * epoch_size - 1``, then advances the epoch.

    Lightning calls :meth:`set_epoch` before each training epoch (also through its distributed wrapper), which
    makes resumed runs see the same sequences; without it, each pass over the sampler moves to the next epoch.
    The sampler lives in the main process, so this works with any ``num_workers`` and persistent workers.

    Args:
        epoch_size: indices per epoch.
        epoch: the first epoch.
    """

    def __init__(self, epoch_size: int, epoch: int = 0) -> None:
        self.epoch_size = epoch_size
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.epoch_size

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1
        return iter(range(epoch * self.epoch_size, (epoch + 1) * self.epoch_size))


@dataclass(frozen=True)
class _Sources:
    train_images: Path | None
    test_images: Path | None
    test_seq: Path | None


class MovingMNISTDataModule(ForecastDataModule):
    """Moving MNIST forecasting: ``{"x": [B, T_in, 1, H, W], "y": [B, T_out, 1, H, W]}`` in [0, 1].

    Args:
        root: folder with the MNIST IDX files (gzipped or raw) and optionally ``mnist_test_seq.npy``.
        train_images: the 60k training digits, a name in ``root`` or a path; ``None`` looks for
            ``train-images-idx3-ubyte[.gz]``.
        test_images: the 10k t10k digits, likewise; ``None`` looks for ``t10k-images-idx3-ubyte[.gz]``.
        test_seq: the fixed test set, likewise; ``None`` looks for ``mnist_test_seq.npy``.
        use_test_seq: use ``mnist_test_seq.npy`` as the test set when found; ``False`` always generates it.
        download: fetch missing IDX files from the mirrors (md5-checked) in ``prepare_data``.
        t_in: input frames.
        t_out: target frames (the evaluation horizon).
        train_length: total frames of training sequences, e.g. 300 for ConvS5's teacher-forced training; then
            training ``y`` has ``train_length - t_in`` frames. ``None``: ``t_in + t_out``.
        num_digits: digits per sequence.
        image_size: canvas side.
        step_length: step per frame: 0.1 (OpenSTL), 0.15 (ConvSSM long-horizon).
        epoch_size: fresh training sequences per epoch.
        val_size: fixed validation sequences.
        test_size: fixed test sequences (capped by the sequences in ``mnist_test_seq.npy``).
        openstl_compat: reinstate OpenSTL's val = test (for parity claims only; selects checkpoints on test).
        seed: seed of the training stream (``None``: 0).
        eval_seed: seed of the fixed validation and test sets, kept apart from ``seed`` so that runs with
            different seeds are evaluated on the same sequences.
        name: dataset name in :meth:`metadata` (``"mmnist"``, ``"mmnist_long"``).
        batch_size: training batch size.
        eval_batch_size: validation / test batch size; defaults to ``batch_size``.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str | os.PathLike = "data/mnist",
        *,
        train_images: str | None = None,
        test_images: str | None = None,
        test_seq: str | None = None,
        use_test_seq: bool = True,
        download: bool = False,
        t_in: int = 10,
        t_out: int = 10,
        train_length: int | None = None,
        num_digits: int = 2,
        image_size: int = 64,
        step_length: float = 0.1,
        epoch_size: int = 10_000,
        val_size: int = 3_000,
        test_size: int = 10_000,
        openstl_compat: bool = False,
        seed: int | None = 0,
        eval_seed: int = 2015,
        name: str = "mmnist",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        for key, value in (("t_in", t_in), ("t_out", t_out), ("num_digits", num_digits), ("image_size", image_size)):
            check(int(value) >= 1, f"data.{key} must be >= 1, got {value}")
        for key, value in (("epoch_size", epoch_size), ("val_size", val_size), ("test_size", test_size)):
            check(int(value) >= 1, f"data.{key} must be >= 1, got {value}")
        seed = 0 if seed is None else seed
        check(step_length > 0, f"data.step_length must be > 0, got {step_length}")
        check(seed >= 0 and eval_seed >= 0, f"data.seed and data.eval_seed must be >= 0, got {seed}, {eval_seed}")
        check(batch_size >= 1, f"data.batch_size must be >= 1, got {batch_size}")
        check(
            train_length is None or train_length > t_in,
            f"data.train_length must exceed t_in={t_in} (or be null), got {train_length}",
        )
        self.root = Path(root)
        self.train_images = train_images
        self.test_images = test_images
        self.test_seq = test_seq
        self.use_test_seq = use_test_seq
        self.download = download
        self.t_in, self.t_out = int(t_in), int(t_out)
        self.train_length = None if train_length is None else int(train_length)
        self.num_digits, self.image_size, self.step_length = int(num_digits), int(image_size), float(step_length)
        self.epoch_size, self.val_size, self.test_size = int(epoch_size), int(val_size), int(test_size)
        self.openstl_compat = openstl_compat
        self.seed, self.eval_seed = int(seed), int(eval_seed)
        self.name = name
        self.split_info: dict[str, Any] = {}

    # -- contract -------------------------------------------------------------------------------------------
    @classmethod
    def shapes_from_config(cls, cfg: Any) -> DataShapes:
        """``(t_in, 1, image_size, image_size)`` -> ``t_out`` frames (``train_length`` only changes training ``y``)."""
        size = int(cls.config_value(cfg, "image_size"))
        t_in, t_out = int(cls.config_value(cfg, "t_in")), int(cls.config_value(cfg, "t_out"))
        return DataShapes("forecast", (t_in, 1, size, size), out_frames=t_out)

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return (self.t_in, 1, self.image_size, self.image_size)

    @property
    def out_frames(self) -> int:
        return self.t_out

    def metadata(self) -> dict[str, Any]:
        """Plain values per the contract, plus the generation settings and the digit sources (runs ``setup``)."""
        self.setup()
        return {
            "dataset": self.name,
            "task": self.task,
            "in_shape": list(self.in_shape),
            "out_frames": self.t_out,
            "channels": ["intensity"],
            "units": ["1"],
            "mean": [0.0],
            "std": [1.0],
            "data_range": 1.0,
            "pde": False,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "train_length": self.train_length or self.t_in + self.t_out,
            "step_length": self.step_length,
            "num_digits": self.num_digits,
            "image_size": self.image_size,
            "seed": self.seed,
            "eval_seed": self.eval_seed,
            "openstl_compat": self.openstl_compat,
            **self.split_info,
        }

    # -- files ----------------------------------------------------------------------------------------------
    def _locate(self, given: str | None, default: str, option: str) -> Path | None:
        if given is not None:
            path = Path(given) if Path(given).is_absolute() else self.root / given
            if not path.is_file():
                raise UserError(f"{option} file {path} not found; fix data.{option}=... or data.root=...")
            return path
        if default.endswith(".npy"):
            path = self.root / default
            return path if path.is_file() else None
        return find_mnist_file(self.root, default)

    def _sources(self) -> _Sources:
        return _Sources(
            train_images=self._locate(self.train_images, TRAIN_IMAGES, "train_images"),
            test_images=self._locate(self.test_images, TEST_IMAGES, "test_images"),
            test_seq=self._locate(self.test_seq, TEST_SEQ, "test_seq") if self.use_test_seq else None,
        )

    def prepare_data(self) -> None:
        """Download the missing IDX digit files when ``download`` is set (rank 0 only, under Lightning)."""
        if not self.download:
            return
        src = self._sources()
        if src.train_images is None:
            download_mnist_file(self.root, TRAIN_IMAGES)
        if src.test_seq is None and src.test_images is None:
            download_mnist_file(self.root, TEST_IMAGES)

    def _missing_error(self) -> UserError:
        return UserError(
            f"Moving MNIST: no MNIST digits in {self.root.resolve()} (looked for {TRAIN_IMAGES}[.gz] and "
            f"{TEST_IMAGES}[.gz]); set data.root=<folder holding them> (STPRED_DATA points at the shared data: "
            "data.root=$STPRED_DATA/mnist) or data.download=true"
        )

    # -- splits ---------------------------------------------------------------------------------------------
    def _digit_pools(self, src: _Sources) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
        """Disjoint ``(digits, source ids)`` per split; ``test`` is ``None`` when the test set is the ``.npy``."""
        if src.train_images is not None:
            digits = read_idx_images(src.train_images)
            n_val = len(digits) // VAL_HOLDOUT_DIVISOR
            if n_val == 0:
                raise UserError(f"{src.train_images}: {len(digits)} digits are too few to hold out a validation pool")
            ids = np.arange(len(digits))
            pools = {"train": ids[: len(digits) - n_val], "val": ids[len(digits) - n_val :]}
            self.split_info = {"digit_source": src.train_images.name, "pool_scheme": "train file: last 1/12 is val"}
            result = {k: (digits[v], v) for k, v in pools.items()}
            result["test"] = self._t10k_test_pool(src)
            self.split_info["test_source"] = src.test_seq.name if src.test_seq else f"generated from {TEST_IMAGES}"
            return result
        if src.test_images is None:
            raise self._missing_error()
        digits = read_idx_images(src.test_images)
        perm = np.random.default_rng(POOL_SEED).permutation(len(digits))
        n_train = int(T10K_POOL_FRACTIONS[0] * len(digits))
        n_val = int(T10K_POOL_FRACTIONS[1] * len(digits))
        parts = {
            "train": np.sort(perm[:n_train]),
            "val": np.sort(perm[n_train : n_train + n_val]),
            "test": np.sort(perm[n_train + n_val :]),
        }
        if min(len(v) for v in parts.values()) == 0:
            raise UserError(f"{src.test_images}: {len(digits)} digits are too few to split into train/val/test pools")
        log.info(
            "Moving MNIST: no %s in %s; splitting the %d digits of %s into disjoint pools train %d / val %d / "
            "test %d (fractions %s, fixed permutation seed %d)",
            TRAIN_IMAGES, self.root, len(digits), src.test_images.name, len(parts["train"]), len(parts["val"]),
            len(parts["test"]), "/".join(str(f) for f in T10K_POOL_FRACTIONS), POOL_SEED,
        )  # fmt: skip
        self.split_info = {"digit_source": src.test_images.name, "pool_scheme": "t10k split 0.8/0.1/0.1"}
        result = {k: (digits[v], v) for k, v in parts.items()}
        if src.test_seq is not None:
            result["test"] = None
        self.split_info["test_source"] = src.test_seq.name if src.test_seq else "generated from the t10k test pool"
        return result

    def _t10k_test_pool(self, src: _Sources) -> tuple[np.ndarray, np.ndarray] | None:
        if src.test_seq is not None:
            return None
        if src.test_images is None:
            raise UserError(
                f"Moving MNIST: no test set in {self.root.resolve()}: put {TEST_SEQ} or {TEST_IMAGES}.gz there "
                "(or set data.test_seq=... / data.download=true)"
            )
        digits = read_idx_images(src.test_images)
        return digits, np.arange(len(digits))

    def _generated(
        self, pool: tuple[np.ndarray, np.ndarray], size: int, stream: int, seed: int, t_out: int
    ) -> MovingMNISTSequences:
        return MovingMNISTSequences(
            pool[0], pool[1], num_sequences=size, t_in=self.t_in, t_out=t_out, num_digits=self.num_digits,
            image_size=self.image_size, step_length=self.step_length, seed=seed, stream=stream,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        """Build the train / val / test datasets once (idempotent)."""
        if self.datasets:
            return
        if self.download:
            # prepare_data fetches only what is missing; here for use outside a Trainer (or a rank that skipped it)
            self.prepare_data()
        src = self._sources()
        pools = self._digit_pools(src)
        train_t_out = (self.train_length or self.t_in + self.t_out) - self.t_in
        train = self._generated(pools["train"], self.epoch_size, TRAIN_STREAM, self.seed, train_t_out)
        val = self._generated(pools["val"], self.val_size, VAL_STREAM, self.eval_seed, self.t_out)
        if pools["test"] is None:
            test = MovingMNISTTestSeq(
                src.test_seq, t_in=self.t_in, t_out=self.t_out, image_size=self.image_size, num_sequences=self.test_size
            )
        else:
            test = self._generated(pools["test"], self.test_size, TEST_STREAM, self.eval_seed, self.t_out)
        if self.openstl_compat:
            log.warning("Moving MNIST: openstl_compat=true, validation uses the TEST set (parity runs only)")
            val = test
        self.datasets = {"train": train, "val": val, "test": test}
        self.split_info["sizes"] = {k: len(v) for k, v in self.datasets.items()}
        self.split_info["pool_sizes"] = {k: (None if p is None else len(p[1])) for k, p in pools.items()}
        log.info("Moving MNIST: %s", self.split_info)

    def train_dataloader(self) -> DataLoader:
        """Training loader over fresh sequences each epoch (see :class:`EpochSampler`)."""
        if "train" not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: split 'train' is not set up; call setup() first")
        dataset = self.datasets["train"]
        return training_loader(
            dataset,
            batch_size=self.batch_size,
            processes=self.data_parallel_size(),
            sampler=EpochSampler(len(dataset)),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
