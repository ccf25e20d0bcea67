"""The clips a user names, shared by ``stpred-demo`` and ``stpred-serve``: video files, folders of images (one clip
each) and folders of them, each opened once before anything is written; and the ``--views`` of a classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stpred.datamodules.frames import VIDEO_SUFFIXES
from stpred.errors import UserError

if TYPE_CHECKING:
    from stpred.datamodules.video_io import VideoInfo

__all__ = ["VIDEO_SUFFIXES", "collect_clips", "parse_views", "probe_clips"]


def parse_views(text: str | None, metadata: dict) -> tuple[int, int]:
    """``(clips, crops)`` from ``--views CLIPS,CROPS``, else the checkpoint's ``test_clips`` x ``test_crops``."""
    if text is None:
        return int(metadata.get("test_clips") or 1), int(metadata.get("test_crops") or 1)
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"--views must be CLIPS,CROPS (e.g. 10,3), got '{text}'")
    clips, crops = (int(p) for p in parts)
    if clips < 1 or crops not in (1, 3):
        raise UserError(f"--views {text}: clips must be >= 1 and crops 1 (centre) or 3 (three along the long side)")
    return clips, crops


def _clips_of_folder(path: Path) -> list[Path]:
    """A folder of images is one clip; otherwise its video files and its sub-folders of images."""
    from stpred.datamodules.frames import IMAGE_SUFFIXES, image_files, sequence_paths

    videos = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and p.name[0] != "."]
    if image_files(path):
        if videos:
            raise UserError(
                f"folder {path} holds both images and video files ({videos[0].name}); a folder of images is one "
                "clip: put the videos elsewhere, or pass them by name"
            )
        return [path]
    found = sequence_paths(path)
    if not found:
        raise UserError(
            f"folder {path} holds no video files ({', '.join(VIDEO_SUFFIXES)}), no images "
            f"({', '.join(IMAGE_SUFFIXES)}) and no folders of images"
        )
    return found


def collect_clips(paths: list[str]) -> list[Path]:
    """The clips named: video files, folders of images (each one clip), and folders standing for the video files
    and image folders inside them (name order, hidden entries skipped)."""
    from stpred.apps._video_demo import clip_name

    clips: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            clips += _clips_of_folder(path)
        elif path.is_file():
            clips.append(path)
        else:
            raise UserError(f"clip {path} not found; pass video files or folders of them")
    stems: dict[str, Path] = {}
    for clip in clips:
        name = clip_name(clip)
        if name in stems and stems[name] != clip:
            raise UserError(f"clips {stems[name]} and {clip} share the name '{name}'; their outputs would clash")
        stems[name] = clip
    return list(dict.fromkeys(clips))


def probe_clips(clips: list[Path]) -> dict[Path, VideoInfo]:
    """Open every clip once, so that an unreadable or cut one stops the run before anything is written.

    Opening a video decodes its last frame and compares the frames that decode with what the container announces
    (:mod:`stpred.datamodules.video_io`); FFmpeg's own log lines are kept off the terminal and counted in the error.
    A folder of images has every image decoded and its size compared with the first's
    (:meth:`stpred.datamodules.frames.ImageSequence.check`); its frame rate is 0 (unknown).
    """
    from stpred.datamodules.frames import ImageSequence
    from stpred.datamodules.video_io import video_info

    return {clip: ImageSequence(clip).check().info if clip.is_dir() else video_info(clip) for clip in clips}
