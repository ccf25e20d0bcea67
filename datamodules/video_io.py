"""Video clips in and out: frame-exact reading with decord or OpenCV, and writing MP4 (``mp4v``) or GIF.

Reading (docs/conventions.md §8): :func:`read_clip` decodes exactly the frames asked for and returns uint8
``[T, H, W, 3]`` **RGB**. decord (``VideoReader(path, ctx=cpu(0), num_threads=1).get_batch(idx)``) is used when it
is importable; the OpenCV ``VideoCapture`` fallback converts OpenCV's BGR to RGB, seeks to the first wanted frame
and then grabs forward, retrieving (colour-converting) only the wanted frames. Both go through FFmpeg and agree to
the pixel on the Kinetics clips of the shared data. ``backend="auto"`` prefers decord and, when decord cannot open
a file or a frame, tries OpenCV before giving up.

A file that cannot be opened or decoded raises :class:`VideoReadError` (a :class:`~stpred.errors.UserError`).
Note that OpenCV's frame count comes from the container header, so a truncated file may claim more frames than it
holds; decord indexes the packets when it opens a file and refuses such files up front.

Writing: :func:`write_video` takes uint8 ``[T, H, W, 3]`` RGB (or ``[T, H, W]`` grey) and writes ``.mp4`` with
``cv2.VideoWriter(path, fourcc("mp4v"), fps, (W, H))`` from BGR contiguous frames, or ``.gif`` with Pillow, to a
temporary file in the same folder that is renamed into place, so an interrupted write never leaves a partial file.
pip OpenCV cannot encode H.264 and ``mp4v`` does not play in browsers: use GIF (or re-encode with ffmpeg) for that.

Examples:
    >>> from stpred.datamodules.video_io import read_clip, video_info, write_video
    >>> info = video_info("clip.mp4")  # doctest: +SKIP
    >>> info.num_frames, info.fps, info.height, info.width  # doctest: +SKIP
    (280, 28.0, 256, 340)
    >>> frames = read_clip("clip.mp4", [0, 4, 8, 12])  # doctest: +SKIP
    >>> frames.shape, frames.dtype  # doctest: +SKIP
    ((4, 256, 340, 3), dtype('uint8'))
    >>> write_video("out.mp4", frames, fps=7.0)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np

from stpred.atomic import atomic_output
from stpred.errors import UserError

try:
    import decord
except ImportError:  # optional: no wheels for macOS arm64 or recent Pythons
    decord = None

__all__ = [
    "Backend",
    "VideoFile",
    "VideoInfo",
    "VideoReadError",
    "available_backends",
    "clip_indices",
    "open_video",
    "read_clip",
    "video_info",
    "write_video",
]

Backend = Literal["auto", "decord", "opencv"]
BACKENDS = ("auto", "decord", "opencv")
#: With OpenCV, a gap of more wanted-frame distance than this is crossed by seeking instead of grabbing forward.
_SEEK_GAP = 48


class VideoReadError(UserError):
    """A video file that cannot be opened or decoded (missing, corrupt, truncated, unsupported codec)."""


class VideoInfo(NamedTuple):
    """What the container says about a video: it unpacks as ``(num_frames, fps, height, width)``."""

    num_frames: int
    fps: float
    height: int
    width: int


def available_backends() -> list[str]:
    """The decoding backends importable here, in the order ``"auto"`` tries them."""
    return (["decord"] if decord is not None else []) + ["opencv"]


def clip_indices(start: int, num_frames: int, stride: int = 1) -> np.ndarray:
    """Frame indices ``start, start + stride, ..., start + (num_frames - 1) * stride`` (int64 ``[num_frames]``)."""
    return start + stride * np.arange(num_frames, dtype=np.int64)


class VideoFile:
    """An open video: its :class:`VideoInfo` and frame-exact :meth:`read`; use as a context manager.

    Args:
        path: the video file.
        backend: ``"auto"`` (decord, else OpenCV), ``"decord"`` or ``"opencv"``.

    Attributes:
        num_frames: frames in the video (decord: packets indexed; OpenCV: the container's count).
        fps: average frame rate.
        backend: the backend that opened the file.

    Raises:
        VideoReadError: the file is missing or cannot be opened by any allowed backend.
    """

    def __init__(self, path: str | os.PathLike, backend: Backend = "auto") -> None:
        if backend not in BACKENDS:
            raise UserError(f"video backend '{backend}' is not one of {BACKENDS}")
        if backend == "decord" and decord is None:
            raise UserError("video backend 'decord' is not installed; pip install decord (or use backend='opencv')")
        self.path = Path(path)
        self._requested = backend
        if not self.path.is_file():
            raise VideoReadError(f"video {self.path} does not exist")
        self._vr = None
        self._cap = None
        self._size: tuple[int, int] | None = None
        errors = []
        for name in ["decord", "opencv"] if backend == "auto" else [backend]:
            if name == "decord" and decord is None:
                continue
            try:
                self.num_frames, self.fps = self._open_decord() if name == "decord" else self._open_opencv()
                self.backend = name
                break
            except VideoReadError as err:
                errors.append(f"{name}: {err}")
        else:
            raise VideoReadError(f"cannot open video {self.path} ({'; '.join(errors)})")

    # -- opening --------------------------------------------------------------------------------------------
    def _open_decord(self) -> tuple[int, float]:
        # decord indexes every packet here, so a truncated file fails now rather than mid-clip.
        try:
            vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
            num_frames, fps = len(vr), float(vr.get_avg_fps())
        except (RuntimeError, decord.DECORDError) as err:
            raise VideoReadError(_first_line(err)) from None
        if num_frames == 0:
            raise VideoReadError("no frames")
        self._vr = vr
        return int(num_frames), fps

    def _open_opencv(self) -> tuple[int, float]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise VideoReadError("OpenCV cannot open it")
        num_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if num_frames <= 0 or width <= 0 or height <= 0:
            cap.release()
            raise VideoReadError(f"OpenCV reads no frames (count {num_frames}, size {width}x{height})")
        self._cap = cap
        self._size = (height, width)
        self._next = 0  # index of the frame the next grab() returns
        return num_frames, float(cap.get(cv2.CAP_PROP_FPS))

    @property
    def info(self) -> VideoInfo:
        """``(num_frames, fps, height, width)``; with decord the size costs decoding frame 0 (once)."""
        if self._size is None:
            self._size = tuple(self.read([0]).shape[1:3])
        return VideoInfo(self.num_frames, self.fps, *self._size)

    # -- reading --------------------------------------------------------------------------------------------
    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode the frames ``indices`` (any order, repeats allowed) as uint8 ``[len(indices), H, W, 3]`` RGB.

        Raises:
            IndexError: an index outside ``[0, num_frames)``.
            VideoReadError: a frame cannot be decoded (e.g. a truncated file).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.empty((0, *self.info[2:], 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), got {idx.tolist()}")
        if self._vr is not None:
            try:
                frames = self._vr.get_batch(idx.tolist()).asnumpy()
            except (RuntimeError, decord.DECORDError) as err:
                if self._requested != "auto":
                    raise VideoReadError(f"cannot decode {self.path}: {_first_line(err)}") from None
                # decord fails on some streams OpenCV decodes (e.g. frame widths it cannot align): fall back.
                self._vr = None
                try:
                    self._open_opencv()
                except VideoReadError as err2:
                    raise VideoReadError(f"cannot decode {self.path}: {_first_line(err)}; opencv: {err2}") from None
                self.backend = "opencv"
                return self.read(idx)
            self._size = self._size or tuple(frames.shape[1:3])
            return frames
        if self._cap is None:
            raise VideoReadError(f"{self.path} is closed")
        wanted, inverse = np.unique(idx, return_inverse=True)
        return self._read_opencv(wanted)[inverse]

    def _read_opencv(self, wanted: np.ndarray) -> np.ndarray:
        cap = self._cap
        height, width = self._size
        out = np.empty((len(wanted), height, width, 3), dtype=np.uint8)
        for k, target in enumerate(wanted.tolist()):
            if target < self._next or target - self._next > _SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                self._next = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                if self._next != target:
                    raise VideoReadError(f"cannot seek {self.path} to frame {target} (landed on {self._next})")
            while self._next <= target:
                if not cap.grab():
                    raise VideoReadError(
                        f"cannot decode {self.path}: frame {self._next} of the {self.num_frames} the header "
                        "announces is missing (truncated file?)"
                    )
                self._next += 1
            ok, bgr = cap.retrieve()
            if not ok or bgr is None or bgr.shape[:2] != (height, width):
                raise VideoReadError(f"cannot decode frame {target} of {self.path}")
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[k])
        return out

    def close(self) -> None:
        """Release the decoder."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._vr = None

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def open_video(path: str | os.PathLike, backend: Backend = "auto") -> VideoFile:
    """Open ``path`` for reading; see :class:`VideoFile`."""
    return VideoFile(path, backend)


def video_info(path: str | os.PathLike, backend: Backend = "auto") -> VideoInfo:
    """``(num_frames, fps, height, width)`` of a video, from its container (nothing is decoded but frame 0 with decord).

    Raises:
        VideoReadError: the file cannot be opened.
    """
    with VideoFile(path, backend) as video:
        return video.info


def read_clip(path: str | os.PathLike, indices: Sequence[int] | np.ndarray, *, backend: Backend = "auto") -> np.ndarray:
    """Decode exactly the frames ``indices`` of a video.

    Args:
        path: the video file.
        indices: frame indices in ``[0, num_frames)``, any order, repeats allowed (see :func:`clip_indices`).
        backend: ``"auto"``, ``"decord"`` or ``"opencv"``.

    Returns:
        uint8 ``[len(indices), H, W, 3]``, RGB.

    Raises:
        VideoReadError: the file cannot be opened or a frame cannot be decoded.
        IndexError: an index is out of range.
    """
    with VideoFile(path, backend) as video:
        return video.read(indices)


# -- writing ---------------------------------------------------------------------------------------------------
def _as_rgb_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise UserError(f"write_video needs uint8 frames, got {frames.dtype}; convert: (x * 255).round().clip(0, 255)")
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise UserError(f"write_video needs frames [T, H, W, 3] (or [T, H, W]) with T >= 1, got {frames.shape}")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0, *, fourcc: str = "mp4v") -> Path:
    """Write uint8 RGB frames to ``path``: ``.gif`` through Pillow, anything else through ``cv2.VideoWriter``.

    Args:
        path: the output file; its folder is created. The suffix picks the format (``.mp4``, ``.avi``, ``.gif``).
        frames: uint8 ``[T, H, W, 3]`` RGB, or ``[T, H, W]`` / ``[T, H, W, 1]`` grey. For video codecs an odd
            height or width is padded to even by repeating the last row/column.
        fps: frames per second (GIF stores delays in 10 ms steps, so its rate is rounded).
        fourcc: OpenCV codec code for non-GIF files; ``"mp4v"`` works with pip OpenCV (``"avc1"`` does not).

    Returns:
        The path written.

    Raises:
        UserError: bad frames or fps, or the encoder cannot be opened.
    """
    path = Path(path)
    frames = _as_rgb_frames(frames)
    if not fps > 0:
        raise UserError(f"write_video needs fps > 0, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        if path.suffix.lower() == ".gif":
            _write_gif(tmp, frames, fps)
        else:
            _write_opencv(tmp, frames, fps, fourcc)
    return path


def _write_opencv(path: Path, frames: np.ndarray, fps: float, fourcc: str) -> None:
    # MPEG-4 encoders need even sizes (they silently drop an odd last row/column): repeat the edge instead.
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    if any(p[1] for p in pad):
        frames = np.pad(frames, pad, mode="edge")
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
        raise UserError(
            f"OpenCV cannot encode {path.suffix} with fourcc '{fourcc}' at {width}x{height}; use fourcc='mp4v' "
            "with .mp4, or a .gif path"
        )
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV wants BGR
    finally:
        writer.release()


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    try:
        from PIL import Image
    except ImportError:
        raise UserError("writing GIF needs Pillow; pip install pillow (or write .mp4)") from None
    images = [Image.fromarray(frame) for frame in frames]
    # GIF delays are in hundredths of a second; Pillow takes milliseconds.
    duration = max(20, round(1000.0 / fps / 10) * 10)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
