"""Where a console script will write, checked before any heavy work (decoding, forecasting, benchmarking) starts.

A path under a regular file, an existing folder where a file goes (or a file where a folder goes) and a folder the
user may not write to are each one :class:`~stpred.errors.UserError` naming the path, the reason and the fix. The
checks create nothing, so a refused run leaves the disk as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from stpred.errors import UserError

__all__ = ["check_output_file", "check_output_folder", "nearest_existing"]


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` itself or the closest of its parents that exists (the root always does)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def _writable(folder: Path) -> bool:
    """Whether new entries may be made in ``folder`` (root may anywhere except read-only places such as /proc/sys)."""
    return os.access(folder, os.W_OK | os.X_OK)


def check_output_folder(folder: str | os.PathLike, option: str) -> Path:
    """An output folder that exists or can be made (by the writer, later): its absolute path.

    Args:
        folder: the folder the script writes its files into (made when missing).
        option: the option that named it, for messages (``"--out"``).

    Raises:
        UserError: ``folder`` is a file, lies under a file, or cannot be written to.
    """
    folder = Path(folder).absolute()
    found = nearest_existing(folder)
    if found == folder and not folder.is_dir():
        raise UserError(f"{option} {folder} is a file, not a folder; give a folder (it is made when missing)")
    if not found.is_dir():
        raise UserError(f"{option} {folder} cannot be made: {found} is a file, not a folder; pick another {option}")
    if not _writable(found):
        raise UserError(f"{option} {folder}: folder {found} is not writable; pick a folder you can write to")
    return folder


def check_output_file(path: str | os.PathLike, option: str, fix: str | None = None) -> Path:
    """An output file whose folder exists and is writable, and which is not a folder: its absolute path.

    Args:
        path: the file the script writes (replaced whole when it exists).
        option: the option that named it, for messages (``"--out"``).
        fix: what to do instead, for messages (default: ``pick another <option>``).

    Raises:
        UserError: ``path`` is a folder, its folder is missing, lies under a file or is not writable.
    """
    path = Path(path).absolute()
    fix = fix or f"pick another {option}"
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder, not a file; {fix}")
    found = nearest_existing(path.parent)
    if not found.is_dir():
        raise UserError(f"cannot write {path}: {found} is a file, not a folder; {fix}")
    if found != path.parent:
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist; create it or {fix}")
    if not _writable(found):
        raise UserError(f"cannot write {path}: folder {found} is not writable; {fix}")
    return path
