"""Kinetics (docs/data.md §6): one clip reader for two tasks, action classification and video forecasting.

Layouts under ``root`` (``layout="auto"`` detects them in this order):

* ``cvdf`` (OpenSTL, cvdfoundation ``k400_downloader``): ``annotations/<split>.csv`` with the header
  ``label,youtube_id,time_start,time_end,split[,is_cc]`` (columns are read **by name**) and the clips
  ``<split>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``.
* ``list`` (mmaction2, SqueezeTime): ``<name>_<split>_list_videos.txt`` with ``<path> <label_id>`` lines, paths
  relative to ``videos_<split>/`` (or ``root``); or any files through ``ann_files``/``video_dirs``.
* ``folders``: ``<split>/<class name>/<file>.mp4``.

Splits are ``train``, ``val`` (``validate``/``validation`` accepted) and ``test``; validation is never silently the
test set. When the layout has no test split, ``no_test_split`` decides: ``"holdout"`` (default) tests on the val
split and validates on a fixed held-out fraction of train (``val_holdout``), ``"val_is_test"`` reuses val for
both (parity runs only: checkpoints are then chosen on the test data), ``"error"`` stops. Each is logged.

Class names come from ``label_map`` (``label_map_k400.txt``: one name a line, label-id order; also picked up from
``root`` when present), else from the CSV labels or class folders, sorted; a label of the list layout is an id.

Sampling (every index exact: ``start + stride * k``, never a truncated ``linspace``):

* ``task="classify"`` (SqueezeTime-like, docs/models.md §4.3): ``num_frames`` frames at ``frame_stride``. Training
  takes a uniformly random start, a random ``crop_size`` crop after resizing the short side to ``short_side``,
  and a horizontal flip with probability 1/2. Validation takes the centre clip and the centre crop. Test takes
  ``test_clips`` evenly spaced clips (start ``k``: ``floor((n - span) * (2k + 1) / (2 test_clips))``) times
  ``test_crops`` crops (1: centre; 3: start, centre and end of the long side, as mmaction2's ``ThreeCrop``), in
  clip-major order. Samples are ``{"x": [T, 3, h, w], "label"}`` normalised with the ImageNet mean/std (in [0, 1]
  units); with more than one test view ``{"x": [V, T, 3, h, w], "label"}``, so batches are
  ``[B, V, T, 3, h, w]`` and the classifier averages class scores over V. No MultiScaleCrop, colour jitter or
  random erasing.
* ``task="forecast"`` (OpenSTL, 4 -> 4 at stride 2, resize 256, centre crop 256): ``t_in + t_out`` consecutive
  sampled frames; ``x`` = the first ``t_in``, ``y`` = exactly the next ``t_out`` (OpenSTL's ``buffer[aft:seq]``
  is right only when ``t_in == t_out``). Values are pixels in [0, 1] (metadata ``mean`` 0, ``std`` 1,
  ``data_range`` 1), so MSE/SSIM/PSNR are in image units. Training windows and crops are random; validation and
  test take one window per video that is fixed: the centre one (``eval_window="center"``) or one drawn from
  ``(eval_seed, index)`` (``"seeded"``), with the centre crop.

A video with fewer frames than a clip spans is looped (``short_clips="loop"``: indices modulo its length, as
mmaction2) or padded with its last frame (``"pad"``).

Unreadable videos never stop an epoch. At setup, files under 1 KB, missing files and (``probe="header"``) files
whose container cannot be opened or that decode fewer frames than their container announces (``"truncated"``: a
cut download still opens, holding its first frames) are skipped, counted (:attr:`KineticsDataModule.skipped`,
``metadata()["skipped"]``) and logged with examples and the number of FFmpeg log lines kept off the terminal; a
split left empty is one :class:`~stpred.errors.UserError`. A decode that still fails in ``__getitem__`` (e.g.
with ``probe="size"``, where the same check runs at the first read) is logged, the file is remembered as bad, and
the next index (``i + 1``, ``i + 2``, ... wrapping) is returned instead, marked ``"replaced": True`` in the sample; the
dataset counts these failures (:attr:`KineticsClips.failed`). With ``num_workers > 0`` each worker process keeps its
own count and the main process's stays at zero: the warnings in the log and ``batch["replaced"]`` are then the
record. The counters are updated under a lock, so threads are safe.

Randomness: training draws come from a generator seeded by ``torch.randint``, i.e. by Lightning's
``seed_everything`` (per worker with ``workers=True``); evaluation draws nothing random.

Examples:
    >>> from stpred.datamodules.kinetics import KineticsDataModule
    >>> dm = KineticsDataModule("data/kinetics400", task="forecast", t_in=4, t_out=4, frame_stride=2)  # doctest: +SKIP
    >>> dm.setup()  # doctest: +SKIP
    >>> batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
    >>> batch["x"].shape, batch["y"].shape  # doctest: +SKIP
    (torch.Size([8, 4, 3, 256, 256]), torch.Size([8, 4, 3, 256, 256]))
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stpred.datamodules.base import DataShapes, ForecastDataModule
from stpred.datamodules.video_io import Backend, TruncatedVideoError, VideoReadError, open_video, suppressed_log_lines
from stpred.errors import UserError, check

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KineticsClips",
    "KineticsDataModule",
    "VideoEntry",
    "crop_offsets",
    "detect_layout",
    "eval_starts",
    "read_label_map",
    "resize_short_side",
    "sample_indices",
    "scan_layout",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": ("train",), "val": ("val", "validate", "validation"), "test": ("test",)}
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
LABEL_MAP_NAME = "label_map_k400.txt"
#: docs/data.md §6.1: smaller files are failed downloads.
MIN_FILE_BYTES = 1024
#: Seed of the fixed permutation that holds validation clips out of train; independent of the run's seed.
HOLDOUT_SEED = 400
#: Consecutive decode failures after which ``__getitem__`` gives up (the data is then broken, not a few files).
MAX_REPLACEMENTS = 16

Task = Literal["classify", "forecast"]
Mode = Literal["train", "val", "test"]


@dataclass(frozen=True)
class VideoEntry:
    """One clip: its file and label id (``-1`` where the split has no labels)."""

    path: str
    label: int = -1


# -- layouts ---------------------------------------------------------------------------------------------------
def read_label_map(path: str | os.PathLike) -> list[str]:
    """Class names, one a line in label-id order (``label_map_k400.txt``); blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Kinetics label map {path} not found; fix data.label_map=... (or null to use the labels)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise UserError(f"Kinetics label map {path} is empty or repeats a name; it needs one class name a line")
    return names


def _norm_label(name: str) -> str:
    # Folder names often replace spaces with underscores ("arm_wrestling"), and some CSVs quote the labels.
    return name.strip().strip('"').replace("_", " ").lower()


def _split_path(root: Path, split: str, kind: Literal["dir", "csv"]) -> Path | None:
    for name in SPLIT_NAMES[split]:
        path = root / "annotations" / f"{name}.csv" if kind == "csv" else root / name
        if path.is_file() if kind == "csv" else path.is_dir():
            return path
    return None


def detect_layout(root: Path) -> str:
    """``"cvdf"``, ``"list"`` or ``"folders"``: the first whose train files exist under ``root``."""
    if _split_path(root, "train", "csv") is not None:
        return "cvdf"
    if any(root.glob("*_train_list_videos.txt")):
        return "list"
    train = _split_path(root, "train", "dir")
    if train is not None and any(p.is_dir() for p in train.iterdir()):
        return "folders"
    raise UserError(
        f"Kinetics: no known layout in {root}: expected annotations/train.csv with train/<id>_<start>_<end>.mp4 "
        "(cvdf), <name>_train_list_videos.txt (mmaction2) or train/<class name>/<file>.mp4; fix data.root=..."
    )


def _find_clip(folder: Path, stem: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.exists():
            return path
    return folder / f"{stem}.mp4"


def _scan_cvdf(root: Path) -> dict[str, list[tuple[Path, str | None]]]:
    out = {}
    for split in SPLITS:
        csv_path = _split_path(root, split, "csv")
        if csv_path is None:
            continue
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = {name.strip() for name in reader.fieldnames or []}
            missing = {"youtube_id", "time_start", "time_end"} - fields
            if missing:
                raise UserError(
                    f"Kinetics: {csv_path} lacks the column(s) {sorted(missing)}; the header must name "
                    "label,youtube_id,time_start,time_end,split"
                )
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
        folder = root / csv_path.stem
        if not folder.is_dir() and rows and rows[0].get("split") and (root / rows[0]["split"]).is_dir():
            folder = root / rows[0]["split"]  # OpenSTL takes the folder from the first row's split column
        entries = []
        for row in rows:
            try:
                stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
            except ValueError:
                raise UserError(f"Kinetics: {csv_path} has a row with non-numeric times: {row}") from None
            entries.append((_find_clip(folder, stem), row.get("label") or None))
        out[split] = entries
    return out


def _scan_folders(root: Path) -> dict[str, list[tuple[Path, str | None]]]:
    out = {}
    for split in SPLITS:
        folder = _split_path(root, split, "dir")
        if folder is None:
            continue
        out[split] = [
            (path, cls.name)
            for cls in sorted(p for p in folder.iterdir() if p.is_dir())
            for path in sorted(cls.iterdir())
            if path.suffix.lower() in VIDEO_SUFFIXES
        ]
    return out


def _scan_lists(
    root: Path, ann_files: dict[str, str] | None, video_dirs: dict[str, str] | None
) -> dict[str, list[tuple[Path, int | None]]]:
    out = {}
    for split in SPLITS:
        if ann_files:
            given = next((ann_files[n] for n in SPLIT_NAMES[split] if n in ann_files), None)
            ann = None if given is None else (Path(given) if Path(given).is_absolute() else root / given)
            if ann is not None and not ann.is_file():
                raise UserError(f"Kinetics: list file {ann} not found; fix data.ann_files.{split}=...")
        else:
            ann = next((p for n in SPLIT_NAMES[split] for p in sorted(root.glob(f"*_{n}_list_videos.txt"))), None)
        if ann is None:
            continue
        prefix = _video_dir(root, split, video_dirs)
        entries = []
        for number, line in enumerate(ann.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().rsplit(maxsplit=1)
            try:
                entries.append((prefix / parts[0], int(parts[1])))
            except (IndexError, ValueError):
                raise UserError(f"Kinetics: {ann}:{number} is not '<path> <label_id>': {line!r}") from None
        out[split] = entries
    return out


def _video_dir(root: Path, split: str, video_dirs: dict[str, str] | None) -> Path:
    if video_dirs:
        given = next((video_dirs[n] for n in SPLIT_NAMES[split] if n in video_dirs), None)
        if given is not None:
            return Path(given) if Path(given).is_absolute() else root / given
    return next((root / f"videos_{n}" for n in SPLIT_NAMES[split] if (root / f"videos_{n}").is_dir()), root)


def scan_layout(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    ann_files: dict[str, str] | None = None,
    video_dirs: dict[str, str] | None = None,
) -> tuple[str, dict[str, list[tuple[Path, str | int | None]]]]:
    """List the clips of every split present: ``(layout, {split: [(path, label name, id or None), ...]})``.

    Nothing is opened; files may be missing (they are counted at setup).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Kinetics root {root} is not a folder; set data.root=<folder with the clips>")
    if layout == "auto":
        layout = "list" if ann_files else detect_layout(root)
    if layout == "cvdf":
        return layout, _scan_cvdf(root)
    if layout == "folders":
        return layout, _scan_folders(root)
    if layout == "list":
        return layout, _scan_lists(root, ann_files, video_dirs)
    raise UserError(f"Kinetics layout '{layout}' is not one of auto, cvdf, list, folders")


# -- sampling --------------------------------------------------------------------------------------------------
def sample_indices(
    start: int, num_frames: int, stride: int, video_frames: int, short_clips: str = "loop"
) -> np.ndarray:
    """Indices ``start + stride * k`` (``k < num_frames``), folded into a video of ``video_frames`` frames.

    Indices past the end wrap around (``"loop"``) or repeat the last frame (``"pad"``).
    """
    idx = start + stride * np.arange(num_frames, dtype=np.int64)
    return idx % video_frames if short_clips == "loop" else np.minimum(idx, video_frames - 1)


def eval_starts(video_frames: int, span: int, num_clips: int) -> list[int]:
    """Evenly spaced clip starts, ``floor((n - span) * (2k + 1) / (2 num_clips))``; one clip is the centre one."""
    room = max(video_frames - span, 0)
    return [(room * (2 * k + 1)) // (2 * num_clips) for k in range(num_clips)]


def resize_short_side(frames: np.ndarray, short_side: int | None, min_size: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Resize uint8 ``[T, H, W, 3]`` so the short side is ``short_side`` (aspect kept, long side rounded).

    The frames are then scaled up further, if needed, to at least ``min_size`` (h, w) so a crop fits; with
    ``short_side=None`` only that happens.
    """
    h, w = frames.shape[1:3]
    scale = 1.0 if short_side is None else short_side / min(h, w)
    scale = max(scale, min_size[0] / h, min_size[1] / w)
    new_h, new_w = max(int(h * scale + 0.5), min_size[0]), max(int(w * scale + 0.5), min_size[1])
    if (new_h, new_w) == (h, w):
        return frames
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (new_w, new_h), interpolation=interp) for f in frames])


def crop_offsets(height: int, width: int, crop: tuple[int, int], num_crops: int) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of deterministic crops: 1 is the centre, 3 are start/centre/end along the long side."""
    ch, cw = crop
    cy, cx = (height - ch) // 2, (width - cw) // 2
    if num_crops == 1:
        return [(cy, cx)]
    if num_crops != 3:
        raise UserError(f"Kinetics: test_crops must be 1 or 3, got {num_crops}")
    if width >= height:
        return [(cy, 0), (cy, cx), (cy, width - cw)]
    return [(0, cx), (cy, cx), (height - ch, cx)]


class KineticsClips(Dataset):
    """Clips of one split, sampled for classification or forecasting (see the module docstring).

    Args:
        entries: the clips.
        task: ``"classify"`` or ``"forecast"``.
        mode: ``"train"`` (random), ``"val"`` (one fixed view) or ``"test"`` (fixed views; several for classify).
        clip_frames: frames per clip (classify: T; forecast: ``t_in + t_out``).
        frame_stride: distance between sampled frames.
        crop_size: ``(h, w)`` of the crop.
        short_side: short side after resizing (``None``: no resize unless the crop would not fit).
        t_in: input frames (forecast).
        test_clips: temporal views at test (classify).
        test_crops: spatial views at test (classify; 1 or 3).
        hflip: random horizontal flips in training.
        short_clips: ``"loop"`` or ``"pad"`` for videos shorter than a clip's span.
        eval_window: ``"center"`` or ``"seeded"`` (forecast evaluation windows).
        eval_seed: seed of ``"seeded"`` windows.
        mean: per-channel mean subtracted from [0, 1] pixels.
        std: per-channel std they are divided by.
        backend: video backend (``"auto"``, ``"decord"``, ``"opencv"``).
        split: split name for messages.
    """

    def __init__(
        self,
        entries: list[VideoEntry],
        *,
        task: Task,
        mode: Mode,
        clip_frames: int,
        frame_stride: int,
        crop_size: tuple[int, int],
        short_side: int | None,
        t_in: int = 0,
        test_clips: int = 1,
        test_crops: int = 1,
        hflip: bool = False,
        short_clips: str = "loop",
        eval_window: str = "center",
        eval_seed: int = 0,
        mean: tuple[float, ...] = (0.0, 0.0, 0.0),
        std: tuple[float, ...] = (1.0, 1.0, 1.0),
        backend: Backend = "auto",
        split: str = "",
    ) -> None:
        self.entries = list(entries)
        self.task, self.mode = task, mode
        self.clip_frames, self.frame_stride = int(clip_frames), int(frame_stride)
        self.span = (self.clip_frames - 1) * self.frame_stride + 1
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.short_side = short_side
        self.t_in = int(t_in)
        multi = task == "classify" and mode == "test"
        self.num_clips, self.num_crops = (int(test_clips), int(test_crops)) if multi else (1, 1)
        self.hflip = bool(hflip)
        self.short_clips, self.eval_window, self.eval_seed = short_clips, eval_window, int(eval_seed)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.backend = backend
        self.split = split
        #: files that failed to decode in this process: path -> reason
        self.failed: dict[str, str] = {}
        #: samples returned in place of a failed one (in this process)
        self.replaced = 0
        self._lock = threading.Lock()

    @property
    def num_views(self) -> int:
        """Views per sample: ``test_clips * test_crops`` at classify test, else 1."""
        return self.num_clips * self.num_crops

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks do not pickle (spawned workers)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- sampling -------------------------------------------------------------------------------------------
    def clip_starts(self, index: int, video_frames: int, rng: np.random.Generator | None = None) -> list[int]:
        """First frame of each temporal view of sample ``index``; ``rng`` is used (and needed) in training."""
        room = max(video_frames - self.span, 0)
        if self.mode == "train":
            return [int(rng.integers(0, room + 1))]
        if self.task == "forecast" and self.eval_window == "seeded":
            return [int(np.random.default_rng([self.eval_seed, index]).integers(0, room + 1))]
        return eval_starts(video_frames, self.span, self.num_clips)

    def crops(
        self, height: int, width: int, rng: np.random.Generator | None = None
    ) -> list[tuple[tuple[int, int], bool]]:
        """``((y, x), flip)`` of each spatial view on frames of ``height x width`` (random in training)."""
        ch, cw = self.crop_size
        if self.mode == "train":
            offset = (int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1)))
            return [(offset, self.hflip and bool(rng.random() < 0.5))]
        return [(offset, False) for offset in crop_offsets(height, width, self.crop_size, self.num_crops)]

    def frame_indices(self, start: int, video_frames: int) -> np.ndarray:
        """The clip's frame indices from ``start`` (looped or padded in a short video)."""
        return sample_indices(start, self.clip_frames, self.frame_stride, video_frames, self.short_clips)

    # -- loading --------------------------------------------------------------------------------------------
    def load(self, index: int) -> dict[str, Any]:
        """Decode and transform sample ``index`` (no replacement).

        Raises:
            VideoReadError: the video cannot be decoded.
        """
        entry = self.entries[index]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())) if self.mode == "train" else None
        with open_video(entry.path, self.backend) as video:
            clips = [self.frame_indices(s, video.num_frames) for s in self.clip_starts(index, video.num_frames, rng)]
            # every view's frames in one decode call; repeats and overlaps decoded once
            wanted, inverse = np.unique(np.concatenate(clips), return_inverse=True)
            frames = video.read(wanted)
        frames = resize_short_side(frames, self.short_side, self.crop_size)  # [F, h, w, 3]
        crops = self.crops(*frames.shape[1:3], rng=rng)
        ch, cw = self.crop_size
        views = []
        for k in range(len(clips)):
            sel = inverse[k * self.clip_frames : (k + 1) * self.clip_frames]
            for (y, x), flip in crops:
                view = frames[sel, y : y + ch, x : x + cw]
                views.append(view[:, :, ::-1] if flip else view)
        video_t = self._to_tensor(np.stack(views))  # [V, T, 3, h, w]
        if self.task == "forecast":
            return {"x": video_t[0, : self.t_in], "y": video_t[0, self.t_in :], "index": index}
        x = video_t[0] if len(views) == 1 else video_t
        return {"x": x, "label": entry.label, "index": index}

    def _to_tensor(self, clips: np.ndarray) -> torch.Tensor:
        v, t = clips.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(clips)).flatten(0, 1)  # [V*T, h, w, 3] uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        x = x.sub_(self.mean).div_(self.std)
        return x.reshape(v, t, *x.shape[1:])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """A sample (see the module docstring); a video that fails to decode is replaced by the next index."""
        n = len(self.entries)
        last_error = None
        for attempt in range(min(n, MAX_REPLACEMENTS)):
            j = (int(index) + attempt) % n
            path = self.entries[j].path
            if path in self.failed:
                continue
            try:
                sample = self.load(j)
            except VideoReadError as err:
                last_error = err
                with self._lock:
                    self.failed[path] = str(err)
                log.warning(
                    "Kinetics %s: skipping %s (%s); %d file(s) failed to decode so far in this process",
                    self.split, path, err, len(self.failed),
                )  # fmt: skip
                continue
            sample["replaced"] = j != int(index)
            if j != int(index):
                with self._lock:
                    self.replaced += 1
            return sample
        raise VideoReadError(
            f"Kinetics {self.split}: {min(n, MAX_REPLACEMENTS)} videos from index {index} on failed to decode "
            f"(last: {last_error}); check the files under the dataset root"
        )


# -- datamodule ------------------------------------------------------------------------------------------------
def _pair(size: int | Iterable[int], name: str) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        pair = (int(size), int(size))
    else:
        pair = tuple(int(v) for v in size)
    check(len(pair) == 2 and min(pair) >= 1, f"data.{name} must be a positive int or [h, w], got {size}")
    return pair


def _probe(path: Path, mode: str, backend: Backend) -> str | None:
    """Why ``path`` must be skipped, or ``None`` when it looks readable."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size < MIN_FILE_BYTES:
        return "under 1 KB"
    if mode == "header":
        try:
            with open_video(path, backend):
                pass  # opening checks that the frames the container announces decode
        except TruncatedVideoError:
            return "truncated"
        except VideoReadError:
            return "unreadable"
    return None


class KineticsDataModule(ForecastDataModule):
    """Kinetics clips for classification (``task="classify"``) or forecasting (``task="forecast"``).

    Args:
        root: the dataset folder (see the module docstring for the layouts).
        task: ``"classify"``: ``{"x": [T, 3, h, w], "label"}`` ImageNet-normalised; ``"forecast"``:
            ``{"x": [t_in, 3, h, w], "y": [t_out, 3, h, w]}`` in [0, 1].
        layout: ``"auto"``, ``"cvdf"``, ``"list"`` or ``"folders"``.
        label_map: class-name file (one a line, label-id order), relative to ``root`` or absolute; ``None`` uses
            ``root/label_map_k400.txt`` when present, else the labels found, sorted.
        num_classes: classify: the number of classes the data must have (``setup`` checks it), so that shapes are
            known from the config alone; ``None`` takes whatever the label map or the labels give.
        ann_files: list layout: ``{split: file}`` of ``<path> <label_id>`` lines (relative to ``root``).
        video_dirs: list layout: ``{split: folder}`` the paths are relative to (default ``videos_<split>`` or root).
        num_frames: classify: frames per clip (T).
        t_in: forecast: input frames.
        t_out: forecast: target frames.
        frame_stride: distance between sampled frames (classify 4, forecast 2 in the references).
        short_side: short side after resizing; ``None`` keeps the size (a frame smaller than the crop is scaled up).
        crop_size: crop side, or ``[h, w]``.
        hflip: random horizontal flips in training; ``None``: on for classify, off for forecast.
        test_clips: classify test: temporal views per video (SqueezeTime: 10).
        test_crops: classify test: spatial views, 1 (centre) or 3 (SqueezeTime).
        short_clips: ``"loop"`` or ``"pad"``: how a video shorter than a clip's span is extended.
        eval_window: forecast val/test window: ``"center"`` or ``"seeded"`` (fixed by ``eval_seed`` and index).
        eval_seed: seed of ``"seeded"`` windows.
        no_test_split: without a test split: ``"holdout"``, ``"val_is_test"`` or ``"error"``.
        val_holdout: fraction of train held out for validation where the layout lacks a usable val split.
        probe: setup check of each file: ``"header"`` (open it and check that its frames decode) or ``"size"``
            (existence and >= 1 KB only; faster on the full 240k-clip dataset, decode failures are then caught in
            ``__getitem__``).
        backend: ``"auto"`` (decord, else OpenCV), ``"decord"`` or ``"opencv"``.
        name: dataset name in :meth:`metadata`.
        batch_size: training batch size.
        eval_batch_size: validation / test batch size; defaults to ``batch_size``.
        num_workers: DataLoader workers.
        pin_memory: pin host memory.
    """

    def __init__(
        self,
        root: str | os.PathLike = "data/kinetics400",
        *,
        task: Task = "classify",
        layout: str = "auto",
        label_map: str | None = None,
        num_classes: int | None = None,
        ann_files: dict[str, str] | None = None,
        video_dirs: dict[str, str] | None = None,
        num_frames: int = 16,
        t_in: int = 4,
        t_out: int = 4,
        frame_stride: int = 4,
        short_side: int | None = 256,
        crop_size: int | list[int] = 224,
        hflip: bool | None = None,
        test_clips: int = 1,
        test_crops: int = 1,
        short_clips: str = "loop",
        eval_window: str = "center",
        eval_seed: int = 0,
        no_test_split: str = "holdout",
        val_holdout: float = 0.05,
        probe: str = "header",
        backend: Backend = "auto",
        name: str = "kinetics400",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory
        )
        check(task in ("classify", "forecast"), f"data.task must be classify or forecast, got '{task}'")
        check(layout in ("auto", "cvdf", "list", "folders"), f"data.layout must be auto|cvdf|list|folders: '{layout}'")
        for key, value in (("num_frames", num_frames), ("t_in", t_in), ("t_out", t_out)):
            check(int(value) >= 1, f"data.{key} must be >= 1, got {value}")
        for key, value in (("frame_stride", frame_stride), ("test_clips", test_clips), ("batch_size", batch_size)):
            check(int(value) >= 1, f"data.{key} must be >= 1, got {value}")
        check(test_crops in (1, 3), f"data.test_crops must be 1 or 3, got {test_crops}")
        check(short_side is None or int(short_side) >= 1, f"data.short_side must be >= 1 or null, got {short_side}")
        self.crop_size = _pair(crop_size, "crop_size")
        check(
            short_side is None or min(self.crop_size) <= int(short_side),
            f"data.crop_size {list(self.crop_size)} does not fit in short_side {short_side}",
        )
        check(short_clips in ("loop", "pad"), f"data.short_clips must be loop or pad, got '{short_clips}'")
        check(eval_window in ("center", "seeded"), f"data.eval_window must be center or seeded, got '{eval_window}'")
        check(
            no_test_split in ("holdout", "val_is_test", "error"),
            f"data.no_test_split must be holdout, val_is_test or error, got '{no_test_split}'",
        )
        check(0.0 < val_holdout < 1.0, f"data.val_holdout must lie in (0, 1), got {val_holdout}")
        check(probe in ("header", "size"), f"data.probe must be header or size, got '{probe}'")
        check(backend in ("auto", "decord", "opencv"), f"data.backend must be auto, decord or opencv: '{backend}'")
        self.root = Path(root)
        self.task = task
        self.layout = layout
        self.label_map = label_map
        check(num_classes is None or int(num_classes) >= 2, f"data.num_classes must be >= 2 or null: {num_classes}")
        self.expected_classes = None if num_classes is None else int(num_classes)
        self.ann_files = dict(ann_files) if ann_files else None
        self.video_dirs = dict(video_dirs) if video_dirs else None
        self.num_frames, self.t_in, self.t_out = int(num_frames), int(t_in), int(t_out)
        self.frame_stride = int(frame_stride)
        self.short_side = None if short_side is None else int(short_side)
        self.hflip = (task == "classify") if hflip is None else bool(hflip)
        self.test_clips, self.test_crops = int(test_clips), int(test_crops)
        self.short_clips, self.eval_window, self.eval_seed = short_clips, eval_window, int(eval_seed)
        self.no_test_split, self.val_holdout, self.probe = no_test_split, float(val_holdout), probe
        self.backend = backend
        self.name = name
        self.class_names: list[str] = []
        #: files skipped at setup per split (missing, under 1 KB, unreadable, unlabelled)
        self.skipped: dict[str, int] = {}
        self.skip_reasons: dict[str, dict[str, int]] = {}
        self.split_info: dict[str, Any] = {}

    # -- contract -------------------------------------------------------------------------------------------
    @classmethod
    def shapes_from_config(cls, cfg: Any) -> DataShapes:
        """Classify: ``(num_frames, 3, h, w)`` and ``num_classes`` (the option, else the label map's lines);
        forecast: ``(t_in, 3, h, w)`` -> ``t_out``."""
        task = cls.config_value(cfg, "task")
        crop = _pair(cls.config_value(cfg, "crop_size"), "crop_size")
        if task == "forecast":
            t_in, t_out = int(cls.config_value(cfg, "t_in")), int(cls.config_value(cfg, "t_out"))
            return DataShapes("forecast", (t_in, 3, *crop), out_frames=t_out)
        num_classes = cls.config_value(cfg, "num_classes")
        if num_classes is None:
            root, label_map = Path(cls.config_value(cfg, "root")), cls.config_value(cfg, "label_map")
            path = root / LABEL_MAP_NAME if label_map is None else root / Path(label_map)  # an absolute map wins
            if not path.is_file():
                raise UserError(
                    f"Kinetics: the number of classes is unknown before setup (no label map at {path}); "
                    "set data.num_classes= or data.label_map="
                )
            num_classes = len(read_label_map(path))
        t = int(cls.config_value(cfg, "num_frames"))
        return DataShapes("classify", (t, 3, *crop), num_classes=int(num_classes))

    @property
    def clip_frames(self) -> int:
        """Frames decoded per clip: T (classify) or ``t_in + t_out`` (forecast)."""
        return self.num_frames if self.task == "classify" else self.t_in + self.t_out

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        t = self.num_frames if self.task == "classify" else self.t_in
        return (t, 3, *self.crop_size)

    @property
    def out_frames(self) -> int | None:
        return None if self.task == "classify" else self.t_out

    @property
    def num_classes(self) -> int:
        """Number of classes (runs ``setup``)."""
        self.setup()
        return len(self.class_names)

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN if self.task == "classify" else (0.0, 0.0, 0.0)

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD if self.task == "classify" else (1.0, 1.0, 1.0)

    @property
    def decode_failures(self) -> dict[str, int]:
        """Files that failed to decode in ``__getitem__`` per split, counted in this process."""
        return {k: len(v.failed) for k, v in self.datasets.items()}

    def metadata(self) -> dict[str, Any]:
        """Plain values per the contract plus the classes and sampling settings (runs ``setup``)."""
        self.setup()
        meta: dict[str, Any] = {
            "dataset": self.name,
            "task": self.task,
            "in_shape": list(self.in_shape),
            "out_frames": self.out_frames,
            "channels": ["red", "green", "blue"],
            "units": ["1", "1", "1"],
            "mean": list(self.mean),
            "std": list(self.std),
            "data_range": 1.0,
            "pde": False,
            "layout": self.layout,
            "frame_stride": self.frame_stride,
            "short_side": self.short_side,
            "crop_size": list(self.crop_size),
            "short_clips": self.short_clips,
            "hflip": self.hflip,
            "skipped": dict(self.skipped),
            "skip_reasons": {k: dict(v) for k, v in self.skip_reasons.items()},
            "decode_failures": self.decode_failures,
            **self.split_info,
        }
        if self.task == "classify":
            views = self.test_clips * self.test_crops
            meta.update(num_classes=len(self.class_names), class_names=list(self.class_names))
            meta.update(num_frames=self.num_frames, test_clips=self.test_clips, test_crops=self.test_crops)
            meta.update(test_views=views)
        else:
            meta.update(t_in=self.t_in, t_out=self.t_out, eval_window=self.eval_window, eval_seed=self.eval_seed)
        return meta

    # -- setup ----------------------------------------------------------------------------------------------
    def _label_names(self) -> list[str] | None:
        if self.label_map is not None:
            path = Path(self.label_map)
            return read_label_map(path if path.is_absolute() else self.root / path)
        default = self.root / LABEL_MAP_NAME
        return read_label_map(default) if default.is_file() else None

    def _resolve_labels(self, found: dict[str, list[tuple[Path, Any]]]) -> dict[str, list[tuple[Path, int]]]:
        names = self._label_names()
        ids_given = self.layout == "list"
        if names is None:
            if ids_given:
                top = max((lab for rows in found.values() for _, lab in rows if lab is not None), default=-1)
                names = [str(i) for i in range(top + 1)]
            else:
                # one class per normalised name, so "arm_wrestling" and "arm wrestling" folders are the same class
                by_norm: dict[str, str] = {}
                for lab in sorted({lab for rows in found.values() for _, lab in rows if lab}):
                    by_norm.setdefault(_norm_label(lab), lab)
                names = sorted(by_norm.values())
        self.class_names = names
        lookup = {_norm_label(n): i for i, n in enumerate(names)}
        out = {}
        for split, rows in found.items():
            resolved = []
            for path, lab in rows:
                if lab is None or lab == "":
                    resolved.append((path, -1))
                elif ids_given:
                    if not 0 <= int(lab) < len(names):
                        raise UserError(
                            f"Kinetics {split}: label id {lab} of {path} is outside the {len(names)} classes"
                        )
                    resolved.append((path, int(lab)))
                elif _norm_label(lab) in lookup:
                    resolved.append((path, lookup[_norm_label(lab)]))
                else:
                    raise UserError(
                        f"Kinetics {split}: label '{lab}' of {path.name} is not among the {len(names)} class names; "
                        "fix data.label_map=... (or null to take the classes from the labels)"
                    )
            out[split] = resolved
        return out

    def _check_split(self, split: str, rows: list[tuple[Path, int]]) -> list[VideoEntry]:
        reasons: Counter[str] = Counter()
        examples: list[str] = []
        kept = []
        log_lines = suppressed_log_lines()
        for path, label in rows:
            why = "unlabelled" if self.task == "classify" and label < 0 else _probe(path, self.probe, self.backend)
            if why is None:
                kept.append(VideoEntry(str(path), label))
                continue
            reasons[why] += 1
            if len(examples) < 3:
                examples.append(f"{path.name} ({why})")
        self.skipped[split] = sum(reasons.values())
        self.skip_reasons[split] = dict(reasons)
        log_lines = suppressed_log_lines() - log_lines
        if reasons:
            ffmpeg = f"; {log_lines} FFmpeg log line(s) kept off the terminal" if log_lines else ""
            log.warning(
                "Kinetics %s: skipping %d of %d clips (%s), e.g. %s%s",
                split, sum(reasons.values()), len(rows), dict(reasons), ", ".join(examples), ffmpeg,
            )  # fmt: skip
        if not kept:
            raise UserError(
                f"Kinetics {split}: none of the {len(rows)} clips listed under {self.root} is readable "
                f"({dict(reasons) or 'no clips'}, e.g. {', '.join(examples) or '-'}); check data.root and the files"
            )
        return kept

    def _holdout(self, train: list[VideoEntry]) -> tuple[list[VideoEntry], list[VideoEntry]]:
        if len(train) < 2:
            raise UserError(
                f"Kinetics: {len(train)} training clip(s) under {self.root} cannot give a validation hold-out"
            )
        order = np.random.default_rng(HOLDOUT_SEED).permutation(len(train))
        n_val = min(max(1, round(self.val_holdout * len(train))), len(train) - 1)
        held = set(order[:n_val].tolist())
        return [e for i, e in enumerate(train) if i not in held], [e for i, e in enumerate(train) if i in held]

    def _arrange_splits(self, entries: dict[str, list[VideoEntry]]) -> dict[str, list[VideoEntry]]:
        train, val, test = entries["train"], entries.get("val"), entries.get("test")
        if test is None:
            if val is None or self.no_test_split == "error":
                raise UserError(
                    f"Kinetics: no test split under {self.root} ({'nor a val split' if val is None else 'only val'}); "
                    "add one, or set data.no_test_split=holdout (test on val, validate on held-out train clips)"
                )
            if self.no_test_split == "val_is_test":
                log.warning(
                    "Kinetics: no test split under %s; data.no_test_split=val_is_test: the VAL split is also the "
                    "test set, so checkpoints are chosen on the test data (parity runs only)", self.root,
                )  # fmt: skip
                self.split_info["splits"] = {"val": "val", "test": "val (val_is_test)"}
                return {"train": train, "val": val, "test": val}
            train, held = self._holdout(train)
            log.warning(
                "Kinetics: no test split under %s; the val split (%d clips) is used for TESTING only, and %d "
                "training clips (data.val_holdout=%g, fixed seed %d) are held out for validation",
                self.root, len(val), len(held), self.val_holdout, HOLDOUT_SEED,
            )  # fmt: skip
            self.split_info["splits"] = {"val": f"train hold-out {self.val_holdout:g}", "test": "val"}
            return {"train": train, "val": held, "test": val}
        if val is None:
            train, held = self._holdout(train)
            log.warning(
                "Kinetics: no val split under %s; %d training clips (data.val_holdout=%g) are held out for validation",
                self.root, len(held), self.val_holdout,
            )  # fmt: skip
            self.split_info["splits"] = {"val": f"train hold-out {self.val_holdout:g}", "test": "test"}
            return {"train": train, "val": held, "test": test}
        self.split_info["splits"] = {"val": "val", "test": "test"}
        return {"train": train, "val": val, "test": test}

    def _dataset(self, entries: list[VideoEntry], mode: Mode, split: str) -> KineticsClips:
        return KineticsClips(
            entries, task=self.task, mode=mode, clip_frames=self.clip_frames, frame_stride=self.frame_stride,
            crop_size=self.crop_size, short_side=self.short_side, t_in=self.t_in, test_clips=self.test_clips,
            test_crops=self.test_crops, hflip=self.hflip, short_clips=self.short_clips,
            eval_window=self.eval_window, eval_seed=self.eval_seed, mean=self.mean, std=self.std,
            backend=self.backend, split=split,
        )  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        """Scan the layout, check every file once and build the train / val / test datasets (idempotent)."""
        if self.datasets:
            return
        self.layout, found = scan_layout(self.root, self.layout, ann_files=self.ann_files, video_dirs=self.video_dirs)
        if "train" not in found:
            raise UserError(f"Kinetics: the {self.layout} layout under {self.root} has no train split")
        resolved = self._resolve_labels(found)
        if self.task == "classify" and self.expected_classes not in (None, len(self.class_names)):
            raise UserError(
                f"Kinetics: data.num_classes={self.expected_classes} but the data under {self.root} has "
                f"{len(self.class_names)} classes; set data.num_classes={len(self.class_names)} (or null), or give "
                "data.label_map= with every class"
            )
        entries = {split: self._check_split(split, rows) for split, rows in resolved.items()}
        splits = self._arrange_splits(entries)
        self.datasets = {split: self._dataset(rows, split, split) for split, rows in splits.items()}
        self.split_info["sizes"] = {k: len(v) for k, v in self.datasets.items()}
        log.info(
            "Kinetics (%s, %s, %d classes): %s; skipped at setup %s",
            self.layout, self.task, len(self.class_names), self.split_info["sizes"], self.skipped,
        )  # fmt: skip
