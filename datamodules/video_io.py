"""Video clips in and out: frame-exact reading with decord or OpenCV, and writing MP4 (``mp4v``) or GIF.

Reading (docs/conventions.md §8): :func:`read_clip` decodes exactly the frames asked for and returns uint8
``[T, H, W, 3]`` **RGB**. decord (``VideoReader(path, ctx=cpu(0), num_threads=1).get_batch(idx)``) is used when it
is importable; the OpenCV ``VideoCapture`` fallback converts OpenCV's BGR to RGB, seeks to the first wanted frame
and then grabs forward, retrieving (colour-converting) only the wanted frames. Both go through FFmpeg and agree to
the pixel on the Kinetics clips of the shared data. ``backend="auto"`` prefers decord and, when decord cannot open
a file or a frame, tries OpenCV before giving up.

Frame counts are what can be decoded, never the container header alone. Opening a file checks it once per
process (the result is cached by path, size and modification time): decord's count (packets indexed) is confirmed
by decoding its last frame; OpenCV's header count is confirmed by seeking two frames before it and grabbing to the
end, and where the header lies (an intact MKV may announce a frame more than it holds) the frames are counted by
decoding from the start. Both backends then report the same count. A file whose decodable frames fall short of what
its container announces (``duration x fps``: a cut MKV still opens, holding only its first frames) raises
:class:`TruncatedVideoError`; any file that cannot be opened or decoded raises :class:`VideoReadError` (both are
:class:`~stpred.errors.UserError`, one line naming the file and the fix).

FFmpeg (inside decord and inside OpenCV) prints its complaints about a bad file from C to descriptor 2. Every open
and decode runs with descriptor 2 sent to a temporary file; those lines are counted
(:func:`suppressed_log_lines`) and the first one is quoted in the error, so the user's terminal sees one line.

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

import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    "TruncatedVideoError",
    "VideoFile",
    "VideoInfo",
    "VideoReadError",
    "available_backends",
    "clip_indices",
    "open_video",
    "read_clip",
    "suppressed_log_lines",
    "video_info",
    "write_video",
]

Backend = Literal["auto", "decord", "opencv"]
BACKENDS = ("auto", "decord", "opencv")
#: With OpenCV, a gap of more wanted-frame distance than this is crossed by seeking instead of grabbing forward.
_SEEK_GAP = 48
#: Frames a decodable length may fall short of the container's ``duration x fps`` before the file counts as cut
#: (rounding of the duration makes intact files announce a frame more): this many, or 1 % of the count if more.
_HEADER_SLACK = 2
_FIX = "re-download the file, or re-encode what is left of it (ffmpeg -i BROKEN -c:v libx264 FIXED.mp4)"


class VideoReadError(UserError):
    """A video file that cannot be opened or decoded (missing, corrupt, truncated, unsupported codec)."""


class TruncatedVideoError(VideoReadError):
    """A video that opens but decodes fewer frames than its container announces (a cut or partial download)."""


# -- FFmpeg's own log lines --------------------------------------------------------------------------------------
class _NativeLog:
    """Lines libav/decord wrote to descriptor 2 during one capture (counted only by the capture that ends last)."""

    def __init__(self) -> None:
        self.lines = 0
        self.first: str | None = None

    def add(self, other: _NativeLog) -> None:
        self.lines += other.lines
        self.first = self.first or other.first

    def describe(self) -> str:
        if not self.lines:
            return ""
        quoted = f" such as '{self.first}'" if self.first else ""
        return f"; FFmpeg printed {self.lines} log line(s){quoted}, kept off the terminal"


_capture_lock = threading.Lock()
_capture_depth = 0
_capture_state: tuple[int, object] | None = None  # (saved descriptor 2, temporary file)
_suppressed_total = 0
_ADDRESS = re.compile(r"^\[([^\]@]+?) @ 0x[0-9a-f]+\]\s*")


def suppressed_log_lines() -> int:
    """FFmpeg/decord log lines kept off descriptor 2 so far in this process."""
    return _suppressed_total


def _tidy(line: str) -> str:
    return _ADDRESS.sub(r"\1: ", line.strip())[:120]


@contextmanager
def _captured_native_log() -> Iterator[_NativeLog]:
    """Send descriptor 2 to a temporary file while decoders run; count what they wrote there.

    Nested and concurrent (threads) captures share one redirection, which the last one to leave undoes and tallies.
    """
    global _capture_depth, _capture_state, _suppressed_total
    log = _NativeLog()
    with _capture_lock:
        if _capture_depth == 0:
            try:
                sys.stderr.flush()
                sink = tempfile.TemporaryFile(mode="w+b")
                saved = os.dup(2)
                os.dup2(sink.fileno(), 2)
                _capture_state = (saved, sink)
            except (OSError, ValueError):  # no usable descriptor 2: nothing to capture
                _capture_state = None
        _capture_depth += 1
    try:
        yield log
    finally:
        with _capture_lock:
            _capture_depth -= 1
            if _capture_depth == 0 and _capture_state is not None:
                saved, sink = _capture_state
                _capture_state = None
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                lines = [ln for ln in sink.read().decode("utf-8", "replace").splitlines() if ln.strip()]
                sink.close()
                log.lines, log.first = len(lines), (_tidy(lines[0]) if lines else None)
                _suppressed_total += len(lines)


#: Frame counts already confirmed in this process: (path, size, mtime_ns, backend) -> decodable frames.
_verified: dict[tuple[str, int, int, str], int] = {}


def _cache_key(path: Path, backend: str) -> tuple[str, int, int, str]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, backend)


def _too_short(decoded: int, announced: int) -> bool:
    return announced > 0 and decoded < announced - max(_HEADER_SLACK, math.ceil(0.01 * announced))


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
        num_frames: frames that decode (checked when the file is first opened in this process, see the module).
        fps: average frame rate.
        backend: the backend that opened the file.
        native_log: FFmpeg lines kept off descriptor 2 while this file was opened and read (``.lines``, ``.first``).

    Raises:
        TruncatedVideoError: the file decodes fewer frames than its container announces.
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
        self.native_log = _NativeLog()
        errors = []
        with _captured_native_log() as log:
            for name in ["decord", "opencv"] if backend == "auto" else [backend]:
                if name == "decord" and decord is None:
                    continue
                try:
                    self.num_frames, self.fps = self._open_decord() if name == "decord" else self._open_opencv()
                    self.backend = name
                    break
                except TruncatedVideoError as err:  # another backend decodes the same packets: no second try
                    errors = [str(err)]
                    break
                except VideoReadError as err:
                    errors.append(f"{name}: {err}")
        self.native_log.add(log)
        if errors and not hasattr(self, "backend"):
            self.close()
            if len(errors) == 1 and errors[0].startswith("truncated"):
                raise TruncatedVideoError(
                    f"video {self.path} is {errors[0]}{self.native_log.describe()}; {_FIX}"
                ) from None
            raise VideoReadError(
                f"cannot open video {self.path} ({'; '.join(errors)}){self.native_log.describe()}; it is damaged, "
                f"cut short or not a video: {_FIX}"
            )

    # -- opening --------------------------------------------------------------------------------------------
    def _open_decord(self) -> tuple[int, float]:
        try:
            vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
            num_frames, fps = len(vr), float(vr.get_avg_fps())
        except (RuntimeError, decord.DECORDError) as err:
            raise VideoReadError(_first_line(err)) from None
        if num_frames == 0:
            raise VideoReadError("no frames")
        key = _cache_key(self.path, "decord")
        if key not in _verified:
            # decord counts the packets it indexed: the last one must decode, and a cut MKV holds only the packets
            # before the cut, so compare with the duration the container announces (OpenCV reads it).
            try:
                vr.get_batch([num_frames - 1])
            except (RuntimeError, decord.DECORDError) as err:
                raise VideoReadError(
                    f"its last frame ({num_frames - 1} of {num_frames}) does not decode: {_first_line(err)}"
                ) from None
            announced = _announced_frames(self.path)
            if _too_short(num_frames, announced):
                raise TruncatedVideoError(
                    f"truncated or damaged: {num_frames} frames decode of the {announced} its container announces"
                )
            _verified[key] = int(num_frames)
        self._vr = vr
        return int(num_frames), fps

    def _open_opencv(self) -> tuple[int, float]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise VideoReadError("OpenCV cannot open it")
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if announced <= 0 or width <= 0 or height <= 0:
            cap.release()
            raise VideoReadError(f"OpenCV reads no frames (count {announced}, size {width}x{height})")
        key = _cache_key(self.path, "opencv")
        num_frames = _verified.get(key)
        if num_frames is None:
            num_frames = _count_opencv(cap, announced)
            if num_frames == 0:
                cap.release()
                raise VideoReadError(f"none of the {announced} frames its container announces decodes")
            if _too_short(num_frames, announced):
                cap.release()
                raise TruncatedVideoError(
                    f"truncated or damaged: {num_frames} frames decode of the {announced} its container announces"
                )
            _verified[key] = num_frames
            self._next = -1  # position unknown after counting: the next read seeks
        else:
            self._next = 0  # index of the frame the next grab() returns
        self._cap = cap
        self._size = (height, width)
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
            VideoReadError: a frame cannot be decoded (e.g. a damaged file).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.empty((0, *self.info[2:], 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), got {idx.tolist()}")
        with _captured_native_log() as log:
            try:
                return self._read(idx)
            finally:
                self.native_log.add(log)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        if self._vr is not None:
            try:
                frames = self._vr.get_batch(idx.tolist()).asnumpy()
            except (RuntimeError, decord.DECORDError) as err:
                if self._requested != "auto":
                    raise VideoReadError(f"cannot decode {self.path}: {_first_line(err)}; {_FIX}") from None
                # decord fails on some streams OpenCV decodes (e.g. frame widths it cannot align): fall back.
                self._vr = None
                try:
                    num_frames, _ = self._open_opencv()
                except VideoReadError as err2:
                    raise VideoReadError(
                        f"cannot decode {self.path}: {_first_line(err)}; opencv: {err2}; {_FIX}"
                    ) from None
                if num_frames != self.num_frames:
                    raise VideoReadError(
                        f"cannot decode {self.path}: decord counts {self.num_frames} frames, OpenCV {num_frames}; "
                        f"{_FIX}"
                    ) from None
                self.backend = "opencv"
                return self._read(idx)
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
            if target < self._next or self._next < 0 or target - self._next > _SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                self._next = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
                if self._next != target:
                    raise VideoReadError(f"cannot seek {self.path} to frame {target} (landed on {self._next})")
            while self._next <= target:
                if not cap.grab():
                    raise VideoReadError(
                        f"cannot decode {self.path}: frame {self._next} of its {self.num_frames} is missing; {_FIX}"
                    )
                self._next += 1
            ok, bgr = cap.retrieve()
            if not ok or bgr is None or bgr.shape[:2] != (height, width):
                raise VideoReadError(f"cannot decode frame {target} of {self.path}; {_FIX}")
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


def _grab_to_end(cap: cv2.VideoCapture) -> int:
    grabbed = 0
    while cap.grab():
        grabbed += 1
    return grabbed


def _count_opencv(cap: cv2.VideoCapture, announced: int) -> int:
    """Frames that decode, counted past ``announced - 2``; from the start where a seek there goes astray."""
    target = max(0, announced - 2)
    if target > 0:
        cap.set(cv2.CAP_PROP_POS_FRAMES, target)
        if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == target:
            grabbed = _grab_to_end(cap)
            if grabbed > 0:
                return target + grabbed
        # the header announces frames that are not there (or the seek misses): count them all
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) != 0:
            return 0
    return _grab_to_end(cap)


def _announced_frames(path: Path) -> int:
    """The frame count the container announces (OpenCV: ``nb_frames``, else ``duration x fps``); 0 if unknown."""
    cap = cv2.VideoCapture(str(path))
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def open_video(path: str | os.PathLike, backend: Backend = "auto") -> VideoFile:
    """Open ``path`` for reading; see :class:`VideoFile`."""
    return VideoFile(path, backend)


def video_info(path: str | os.PathLike, backend: Backend = "auto") -> VideoInfo:
    """``(num_frames, fps, height, width)`` of a video; ``num_frames`` are the frames that decode (see the module).

    Raises:
        TruncatedVideoError: the file decodes fewer frames than its container announces.
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
