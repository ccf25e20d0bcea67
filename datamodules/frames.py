"""Your own videos (``data=frames``): a folder of video files or of image sequences, forecast in pixel space.

``root`` holds sequences, taken in name order: video files (``.mp4``, ``.avi``, ``.mkv``, ``.webm``, ``.mov``,
``.gif``, read with :mod:`stpred.datamodules.video_io`) and/or folders of images (``seq_001/0001.png ...``,
``.png``/``.jpg``/``.jpeg``/``.bmp``/``.tif``/``.tiff``, frames in natural name order so that ``2.png`` comes before
``10.png``, read with OpenCV through :class:`ImageSequence`, which ``stpred-demo`` uses too). Every frame is
resized so its short side is ``min(image_size)`` and centre-cropped to ``image_size`` (what ``stpred-demo`` does
to a clip), converted to grey (``color: grey``, OpenCV's luma) or kept RGB, and held in memory as uint8.

Samples are windows of ``t_in + t_out`` frames, ``frame_stride`` frames apart, starting every ``stride`` frames
within one sequence: ``{"x": [T_in, C, H, W], "y": [T_out, C, H, W], "index"}`` float32 in [0, 1] (mean 0, std 1,
``data_range`` 1, so metrics are in pixel units). Splits are fractions ``[train, val, test]`` of the sequences in
name order (a split with a positive fraction gets at least one): a sequence belongs to one split only. Sequences
shorter than one window are skipped with a warning.

Examples:
    >>> from stpred.datamodules.frames import FramesDataModule
    >>> dm = FramesDataModule("my_videos/", t_in=4, t_out=4, image_size=64)  # doctest: +SKIP
    >>> dm.setup()  # doctest: +SKIP
    >>> next(iter(dm.train_dataloader()))["x"].shape  # doctest: +SKIP
    torch.Size([16, 4, 1, 64, 64])
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.datamodules.kinetics import crop_offsets, resize_short_side
from stpred.datamodules.video_io import VideoInfo, _captured_native_log, read_clip, video_info
from stpred.errors import UserError, check

__all__ = [
    "FrameWindows",
    "FramesDataModule",
    "ImageSequence",
    "find_sequences",
    "image_files",
    "prepare_frames",
    "read_image",
    "read_sequence",
    "sequence_cuts",
    "sequence_paths",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CHANNEL_NAMES = {"grey": ["intensity"], "rgb": ["red", "green", "blue"]}
READ_CHUNK = 64  # video frames decoded at a time, so a long clip is resized before the next chunk is read


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = [int(image_size)] * 2 if isinstance(image_size, (int, float)) else [int(v) for v in image_size]
    check(len(size) == 2 and min(size) >= 1, f"data.image_size={image_size} must be a size or [H, W] of positive ints")
    return size[0], size[1]


def natural_key(name: str) -> tuple:
    """Sort key of a file name with its digit runs compared as numbers: ``frame2`` < ``frame10``."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def image_files(folder: str | Path) -> list[Path]:
    """The images of ``folder`` (:data:`IMAGE_SUFFIXES`, hidden files skipped) in natural name order."""
    folder = Path(folder)
    found = [q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")]
    return sorted((q for q in found if q.is_file()), key=lambda q: natural_key(q.name))


def sequence_paths(root: str | Path) -> list[Path]:
    """The video files of ``root`` and its sub-folders holding images, in name order (hidden entries skipped)."""
    found = []
    for p in sorted(Path(root).iterdir()):
        if p.name.startswith("."):
            continue
        if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and image_files(p)):
            found.append(p)
    return found


def find_sequences(root: str | Path) -> list[Path]:
    """The video files and image folders of ``root``, in name order.

    Raises:
        UserError: ``root`` missing or holding neither.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a folder; point it at a folder of videos or image sequences")
    found = sequence_paths(root)
    if not found:
        raise UserError(
            f"data.root={root} holds no videos ({'/'.join(VIDEO_SUFFIXES)}) and no folders of images "
            f"({'/'.join(IMAGE_SUFFIXES)}); put one sequence per video file or per sub-folder"
        )
    return found


def prepare_frames(frames: np.ndarray, size: tuple[int, int], color: str) -> np.ndarray:
    """uint8 RGB ``[T, h, w, 3]`` -> uint8 ``[T, H, W, C]``: short side to ``min(size)``, centre crop, grey or RGB."""
    height, width = size
    frames = resize_short_side(frames, min(height, width), (height, width))
    y, x = crop_offsets(*frames.shape[1:3], (height, width), 1)[0]
    frames = frames[:, y : y + height, x : x + width]
    if color == "grey":
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])[..., None]
    return np.ascontiguousarray(frames)


#: Decoder complaints that mean an image was cut short: OpenCV still returns it, grey below the cut.
_DAMAGE = re.compile(r"premature end|corrupt|truncat|bad huffman|invalid", re.IGNORECASE)


def read_image(path: str | Path) -> np.ndarray:
    """One image as uint8 ``[H, W, 3]`` RGB (OpenCV's ``IMREAD_COLOR``: grey and 16-bit images become 8-bit RGB).

    The decoders' own lines on descriptor 2 are kept off the terminal, as for videos.

    Raises:
        UserError: the file cannot be decoded, or its decoder reports it cut short (a partial JPEG).
    """
    with _captured_native_log() as native:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    said = f" ({native.first})" if native.first else ""
    if image is None or (native.first and _DAMAGE.search(native.first)):
        raise UserError(f"{path}: not a readable image{said}; it is damaged or not an image: remove or replace it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageSequence:
    """A folder of images read as one clip, like :class:`~stpred.datamodules.video_io.VideoFile`.

    The frames are the folder's images in natural name order (:func:`image_files`); every frame must have the size
    of the first. Opening decodes the first image; :meth:`check` decodes them all (``stpred-demo`` does, so that a
    damaged folder stops it before anything is written) and :meth:`read` checks each frame it decodes.

    Attributes:
        files: the images, in frame order.
        num_frames: their number.
        fps: 0.0 (images carry no frame rate).

    Raises:
        UserError: ``folder`` missing or holding no images, an image that does not decode, or one of another size.
    """

    fps = 0.0

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder)
        if not self.path.is_dir():
            raise UserError(f"{self.path} is not a folder of images")
        self.files = image_files(self.path)
        if not self.files:
            raise UserError(
                f"folder {self.path} holds no images ({'/'.join(IMAGE_SUFFIXES)}); put a clip's frames in it as "
                "0001.png, 0002.png, ..."
            )
        self.num_frames = len(self.files)
        self.size = read_image(self.files[0]).shape[:2]

    @property
    def info(self) -> VideoInfo:
        """``(num_frames, fps, height, width)``; fps is 0.0."""
        return VideoInfo(self.num_frames, self.fps, *self.size)

    def _frame(self, index: int) -> np.ndarray:
        image = read_image(self.files[index])
        if image.shape[:2] != self.size:
            (h, w), (h0, w0) = image.shape[:2], self.size
            raise UserError(
                f"{self.files[index]} is {w}x{h} but {self.files[0]} is {w0}x{h0}: the frames of one clip "
                "(a folder of images) must share one size; resize them alike"
            )
        return image

    def check(self) -> ImageSequence:
        """Decode every frame once (and drop it): raises on the first unreadable one or one of another size."""
        for k in range(1, self.num_frames):
            self._frame(k)
        return self

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The frames ``indices`` (any order, repeats allowed) as uint8 ``[len(indices), H, W, 3]`` RGB."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), got {idx.tolist()}")
        frames = np.empty((idx.size, *self.size, 3), np.uint8)
        for j, k in enumerate(idx.tolist()):
            frames[j] = self._frame(k)
        return frames

    def close(self) -> None:
        """Nothing is held open; for symmetry with :class:`VideoFile`."""

    def __enter__(self) -> ImageSequence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_sequence(path: Path, size: tuple[int, int], color: str) -> np.ndarray:
    """All frames of a video file or an image folder, prepared (:func:`prepare_frames`): uint8 ``[T, H, W, C]``."""
    if path.is_dir():
        images = ImageSequence(path)
        parts = [prepare_frames(images.read([k]), size, color) for k in range(images.num_frames)]
    else:
        count = video_info(path).num_frames
        parts = [
            prepare_frames(read_clip(path, np.arange(a, min(a + READ_CHUNK, count))), size, color)
            for a in range(0, count, READ_CHUNK)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, *size, 1 if color == "grey" else 3), np.uint8)


def sequence_cuts(fractions: Sequence[float], n: int) -> list[int]:
    """Boundaries ``[0, a, b, c]`` of train/val/test among ``n`` sequences: a split with a positive fraction gets
    at least one sequence (taken from train), so that 5 sequences at ``[0.8, 0.1, 0.1]`` give 3 / 1 / 1."""
    val, test = (max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:])
    train = min(round(fractions[0] * n), n - val - test)
    if train < 1:
        raise UserError(f"data.root: {n} sequences are too few for splits {list(fractions)}; add sequences")
    return [0, train, train + val, train + val + test]


class FrameWindows(Dataset):
    """Windows over the sequences of one split.

    Args:
        sequences: uint8 ``[T_k, H, W, C]`` per sequence.
        names: the sequences' file or folder names.
        windows: int64 ``[M, 2]``: ``(sequence, first frame)``.
        t_in: input frames.
        t_out: target frames.
        frame_stride: frames between a window's frames.
    """

    def __init__(
        self,
        sequences: list[np.ndarray],
        names: list[str],
        windows: np.ndarray,
        t_in: int,
        t_out: int,
        frame_stride: int = 1,
    ) -> None:
        self.sequences = sequences
        self.names = names
        self.windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
        self.t_in, self.t_out, self.frame_stride = t_in, t_out, frame_stride

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"x": [T_in, C, H, W], "y": [T_out, C, H, W], "index"}`` float32 in [0, 1]."""
        if not 0 <= index < len(self.windows):
            raise IndexError(index)
        k, s = (int(v) for v in self.windows[index])
        stop = s + (self.t_in + self.t_out - 1) * self.frame_stride + 1
        window = torch.from_numpy(self.sequences[k][s : stop : self.frame_stride]).permute(0, 3, 1, 2).float() / 255.0
        return {"x": window[: self.t_in], "y": window[self.t_in :], "index": int(index)}


class FramesDataModule(ForecastDataModule):
    """Video forecasting from your own folder of videos or image sequences (see the module docstring).

    Args:
        root: the folder of sequences.
        t_in: input frames.
        t_out: target frames.
        stride: frames between window starts within a sequence.
        frame_stride: frames between the frames of a window (2 keeps every other frame).
        image_size: ``H = W``, or ``[H, W]``, of the model's frames.
        color: ``"grey"`` (one channel) or ``"rgb"``.
        splits: fractions ``[train, val, test]`` of the sequences, in name order.
        name: the dataset name recorded in ``metadata()``.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str,
        *,
        t_in: int = 10,
        t_out: int = 10,
        stride: int = 1,
        frame_stride: int = 1,
        image_size: int | Sequence[int] = 64,
        color: Literal["grey", "rgb"] = "grey",
        splits: Sequence[float] = (0.8, 0.1, 0.1),
        name: str = "frames",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        check(root is not None and str(root) != "", "data.root is not set; point it at your folder of videos")
        check(int(t_in) >= 1 and int(t_out) >= 1, f"data: t_in={t_in}, t_out={t_out} must be at least 1")
        check(int(stride) >= 1 and int(frame_stride) >= 1, "data.stride and data.frame_stride must be at least 1")
        check(color in CHANNEL_NAMES, f"data.color={color!r}; use grey or rgb")
        fractions = [float(v) for v in splits]
        check(
            len(fractions) == 3 and min(fractions) >= 0 and 0 < sum(fractions) <= 1 + 1e-9,
            f"data.splits={list(splits)} must be three fractions [train, val, test] summing to <= 1",
        )
        self.root = str(root)
        self.t_in, self.t_out = int(t_in), int(t_out)
        self.stride, self.frame_stride = int(stride), int(frame_stride)
        self.size = _size(image_size)
        self.color = color
        self.fractions = fractions
        self.name = str(name)
        self.split_info: dict[str, Any] = {}

    @classmethod
    def shapes_from_config(cls, cfg: Mapping[str, Any]) -> DataShapes:
        """``(t_in, C, H, W)`` -> ``t_out`` from the options alone: C by ``color``, ``(H, W)`` by ``image_size``."""
        args = {k: cls.config_value(cfg, k) for k in ("t_in", "t_out", "image_size", "color")}
        channels = len(CHANNEL_NAMES.get(str(args["color"]), ["?"]))
        return DataShapes("forecast", (int(args["t_in"]), channels, *_size(args["image_size"])), int(args["t_out"]))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        paths = find_sequences(self.root)
        n = len(paths)
        cuts = sequence_cuts(self.fractions, n)
        span = (self.t_in + self.t_out - 1) * self.frame_stride + 1
        for i, split in enumerate(SPLITS):
            chosen = paths[cuts[i] : cuts[i + 1]]
            sequences, names, windows = [], [], []
            for path in chosen:
                frames = read_sequence(path, self.size, self.color)
                if len(frames) < span:
                    log.warning("%s: %d frames, fewer than one window of %d; skipped", path, len(frames), span)
                    continue
                windows += [(len(sequences), s) for s in range(0, len(frames) - span + 1, self.stride)]
                sequences.append(frames)
                names.append(path.name)
            if not windows:
                raise UserError(
                    f"data.root={self.root}: the {split} split ({len(chosen)} of {n} sequences) holds no window of "
                    f"{span} frames; add sequences (each split needs at least one), or change data.splits, "
                    "data.t_in, data.t_out or data.frame_stride"
                )
            self.datasets[split] = FrameWindows(
                sequences, names, np.asarray(windows), self.t_in, self.t_out, self.frame_stride
            )
            self.split_info[split] = {"sequences": names, "windows": len(windows)}

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return (self.t_in, len(CHANNEL_NAMES[self.color]), *self.size)

    @property
    def out_frames(self) -> int:
        return self.t_out

    def metadata(self) -> dict[str, Any]:
        """The contract keys (pixel units in [0, 1]), plus ``frame_stride`` (read by ``stpred-demo``), the window
        stride, the image size and the sequences of each split."""
        c = len(CHANNEL_NAMES[self.color])
        return {
            "dataset": self.name,
            "task": self.task,
            "in_shape": list(self.in_shape),
            "out_frames": self.t_out,
            "channels": list(CHANNEL_NAMES[self.color]),
            "units": ["1"] * c,
            "mean": [0.0] * c,
            "std": [1.0] * c,
            "data_range": 1.0,
            "pde": False,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "stride": self.stride,
            "frame_stride": self.frame_stride,
            "image_size": list(self.size),
            "color": self.color,
            "splits": self.split_info,
        }
