"""Write a file so that a reader never sees it half-written and a failed write leaves the old one untouched."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output"]


def _umask() -> int:
    # The only portable way to read the umask is to set it; restored at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM (e.g. ``timeout``, a job scheduler) raises ``SystemExit`` instead of killing the
    process outright, so ``finally`` clauses remove temporary files. Only where no one else handles SIGTERM."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder after a rename in it) to the disk, so a power cut cannot tear it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error it is flushed to the disk
    (``fsync``) and renamed over ``path``, and the folder is flushed too.

    The temporary file keeps ``path``'s suffix, because writers such as OpenCV pick the format from it. On an error,
    Ctrl-C or SIGTERM it is removed and ``path`` is left as it was. The result gets the permissions the umask gives
    a new file (``0o666 & ~umask``), not the owner-only ones of a temporary file. The folder must exist.

    Examples:
        >>> with atomic_output(out_dir / "forecast.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with _sigterm_unwinds():
            yield tmp
            # after the writer: some writers replace the file they were given
            os.chmod(tmp, 0o666 & ~_umask())
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
