"""The clip forecaster's data: each shipped clip cut in time into train / val / test parts for ``data=frames``.

Two clips are too few for three splits by sequence, so every clip gives three image folders, its first 70 %, the
next 15 % and the last 15 % of its frames, named ``1_train_<clip>``, ``2_val_<clip>``, ``3_test_<clip>`` so that
``data=frames`` (splits in name order, ``splits: [0.34, 0.33, 0.33]``) puts each part in its split. The frames are
stored already resized and centre-cropped to ``size`` (what ``data=frames`` and ``stpred-demo`` do to a clip), so
reading them back is lossless and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PARTS", "prepare_clips"]

PARTS = (("1_train", 0.0, 0.70), ("2_val", 0.70, 0.85), ("3_test", 0.85, 1.0))


def prepare_clips(video_dir: str | Path, out: str | Path, size: int = 32) -> list[Path]:
    """Write the parts of every video in ``video_dir`` under ``out`` (RGB PNG, ``size`` x ``size``).

    Args:
        video_dir: folder of videos (``$STPRED_DATA/video``).
        out: destination folder; rewritten.

    Returns:
        The part folders, in name order.

    Raises:
        UserError: no video in ``video_dir``.
    """
    import shutil

    import cv2

    from stpred.datamodules.frames import VIDEO_SUFFIXES, read_sequence
    from stpred.errors import UserError

    video_dir, out = Path(video_dir), Path(out)
    videos = sorted(p for p in video_dir.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if video_dir.is_dir() else []
    if not videos:
        raise UserError(f"{video_dir} holds no videos; set STPRED_DATA to the shared data folder (it has video/)")
    if out.exists():
        shutil.rmtree(out)
    folders = []
    for video in videos:
        frames = read_sequence(video, (size, size), "rgb")  # [T, H, W, 3] uint8
        n = len(frames)
        for prefix, a, b in PARTS:
            folder = out / f"{prefix}_{video.stem}"
            folder.mkdir(parents=True)
            for i in range(round(a * n), round(b * n)):
                cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
            folders.append(folder)
    return sorted(folders)
