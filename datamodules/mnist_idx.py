"""MNIST source files: the IDX reader, discovery in a folder, and a checksummed, atomic download (docs/data.md §1).

IDX files start with a big-endian magic number: 2051 for images (then the count, rows and columns; a 16-byte
header) and 2049 for labels (then the count; an 8-byte header), followed by the uint8 payload. Files may be
gzipped or raw; the reader decides by the gzip magic bytes, not the file name.

Examples:
    >>> from stpred.datamodules.mnist_idx import find_mnist_file, read_idx_images
    >>> path = find_mnist_file("data/mnist", "t10k-images-idx3-ubyte")  # doctest: +SKIP
    >>> read_idx_images(path).shape  # doctest: +SKIP
    (10000, 28, 28)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stpred.atomic import atomic_output
from stpred.errors import UserError

__all__ = [
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MIRRORS",
    "MNIST_FILES",
    "MnistFile",
    "download_mnist_file",
    "download_url",
    "find_mnist_file",
    "md5_of",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "verify_mnist_file",
]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_DIMS = {IMAGES_MAGIC: 3, LABELS_MAGIC: 1}

#: yann.lecun.com answers 404 (A4Bio/SimVP #18); these two serve the original ``.gz`` files.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass(frozen=True)
class MnistFile:
    """Checksums of one MNIST file.

    Args:
        gz_md5: md5 of the original ``.gz`` (torchvision's list).
        raw_md5: md5 of the decompressed bytes, where known; re-gzipped copies only match this one.
    """

    gz_md5: str
    raw_md5: str | None = None


#: File stem -> checksums (docs/data.md §1).
MNIST_FILES: dict[str, MnistFile] = {
    "train-images-idx3-ubyte": MnistFile("f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte": MnistFile("d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte": MnistFile("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": MnistFile("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    if head == _GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as e:
            raise UserError(f"{path}: corrupt gzip data ({e}); delete it and download it again") from None
    return path.read_bytes()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image or label file, gzipped or raw.

    Args:
        path: the file; gzip is recognised by its magic bytes, whatever the extension.

    Returns:
        uint8 array: ``[N, rows, cols]`` for images (magic 2051), ``[N]`` for labels (magic 2049).

    Raises:
        UserError: a missing file, an unknown magic number, or a payload whose size disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such IDX file; check the path (data.root=...)")
    data = _read_bytes(path)
    if len(data) < 8:
        raise UserError(f"{path}: {len(data)} bytes is too short for an IDX header; re-download the file")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _HEADER_DIMS:
        raise UserError(
            f"{path}: not an MNIST IDX file (magic {magic}, expected {IMAGES_MAGIC} for images or "
            f"{LABELS_MAGIC} for labels); point data.root at the MNIST files"
        )
    ndim = _HEADER_DIMS[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header ({len(data)} < {header} bytes); re-download the file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise UserError(
            f"{path}: IDX header says {shape} = {expected} bytes but the payload has {len(data) - header}; "
            "the file is truncated or corrupt, re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_expecting(path: str | os.PathLike, magic: int, kind: str) -> np.ndarray:
    arr = read_idx(path)
    if arr.ndim != _HEADER_DIMS[magic]:
        raise UserError(f"{path}: expected an IDX {kind} file (magic {magic}); pass the {kind} file instead")
    return arr


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file (magic 2051).

    Returns:
        uint8 array ``[N, rows, cols]``.
    """
    return _read_expecting(path, IMAGES_MAGIC, "images")


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file (magic 2049).

    Returns:
        uint8 array ``[N]``.
    """
    return _read_expecting(path, LABELS_MAGIC, "labels")


def find_mnist_file(root: str | os.PathLike, stem: str) -> Path | None:
    """Find ``stem`` (e.g. ``"train-images-idx3-ubyte"``) in ``root``, gzipped or raw.

    Looks for ``<stem>.gz``, ``<stem>``, the dotted spelling (``train-images.idx3-ubyte``) and torchvision's
    ``MNIST/raw/`` folder.

    Returns:
        The first file found, or ``None``.
    """
    root = Path(root)
    dotted = stem.replace("-idx", ".idx")
    for folder in (root, root / "MNIST" / "raw"):
        for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
            if (folder / name).is_file():
                return folder / name
    return None


def md5_of(path: str | os.PathLike, *, decompress: bool = False) -> str:
    """md5 hex digest of a file, or of its gunzipped bytes when ``decompress``."""
    digest = hashlib.md5()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_mnist_file(path: str | os.PathLike, stem: str) -> bool:
    """Whether ``path`` holds the official bytes of ``stem``: its ``.gz`` md5, or its decompressed md5.

    Args:
        path: a gzipped or raw copy.
        stem: a key of :data:`MNIST_FILES`.
    """
    sums = MNIST_FILES[stem]
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    if gzipped and md5_of(path) == sums.gz_md5:
        return True
    if sums.raw_md5 is None:
        return False
    try:
        return md5_of(path, decompress=gzipped) == sums.raw_md5
    except (OSError, EOFError):
        return False


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class _Rejected(Exception):
    """The downloaded bytes failed the check (the temporary file is then removed)."""


def _fetch(url: str, out: Path, timeout: float) -> None:
    with open(out, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
        size = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, desc=out.name, leave=False) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def download_url(
    urls: list[str] | tuple[str, ...],
    dest: str | os.PathLike,
    check: Callable[[Path], bool],
    *,
    timeout: float = 30.0,
) -> Path:
    """Download the first URL that works into ``dest``, atomically, after ``check`` accepted the bytes.

    The bytes go to a temporary file beside ``dest`` (:func:`stpred.atomic.atomic_output`) and are renamed over it
    only once ``check(temp_path)`` is true, so an interrupted or corrupt download never leaves a half-written ``dest``
    nor a temporary file.

    Args:
        urls: candidate URLs, tried in order.
        dest: the final path; its folder is created.
        check: called with the temporary file's path; returns whether its content is right.
        timeout: socket timeout per URL in seconds.

    Returns:
        ``dest``.

    Raises:
        UserError: no URL gave accepted bytes (one line with the last reason).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reason = "no URL given"
    for url in urls:
        try:
            with atomic_output(dest) as tmp:
                _fetch(url, tmp, timeout)
                if not check(tmp):
                    raise _Rejected
            return dest
        except _Rejected:
            reason = f"{url}: checksum mismatch"
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
            reason = f"{url}: {_one_line(e)}"
    raise UserError(f"could not download {dest.name} into {dest.parent} ({reason})")


def download_mnist_file(
    root: str | os.PathLike,
    stem: str,
    *,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``<stem>.gz`` from the mirrors into ``root`` and verify its md5 (docs/data.md §1).

    Args:
        root: destination folder.
        stem: a key of :data:`MNIST_FILES`, e.g. ``"train-images-idx3-ubyte"``.
        mirrors: base URLs ending in ``/``; defaults to :data:`MIRRORS`.
        timeout: socket timeout per mirror in seconds.

    Returns:
        The path of the verified ``.gz``.

    Raises:
        UserError: offline or no mirror served the right bytes; the message names the folder and the options.
    """
    if stem not in MNIST_FILES:
        raise UserError(f"unknown MNIST file '{stem}'; use one of {sorted(MNIST_FILES)}")
    bases = MIRRORS if mirrors is None else mirrors
    dest = Path(root) / f"{stem}.gz"
    try:
        return download_url(
            [b + f"{stem}.gz" for b in bases], dest, lambda p: verify_mnist_file(p, stem), timeout=timeout
        )
    except UserError as e:
        raise UserError(
            f"{e}; without network, put the MNIST IDX files in {Path(root)} or set data.root=<folder holding them> "
            "(STPRED_DATA points at the shared data: data.root=$STPRED_DATA/mnist)"
        ) from None
