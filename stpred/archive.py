"""Whether a checkpoint is whole: ``torch.save`` writes a zip archive whose every record carries a CRC-32."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from stpred.errors import UserError

__all__ = ["verify_archive"]


def verify_archive(path: str | Path) -> None:
    """Read every record of the zip archive at ``path`` and check it against its CRC-32; a damaged archive (bytes
    changed or cut after it was written) is one :class:`UserError` naming the first bad record.

    A file that is not a zip archive at all is left to the loader, which says what it is.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        bad = f"its index ({exc})"
    if bad is not None:
        # Records are named <archive>/<record>; the archive's name is whatever file torch.save first wrote.
        bad = bad.split("/", 1)[-1]
        raise UserError(
            f"checkpoint {path} is damaged: its record {bad} fails its CRC-32 check (the file changed or was cut after "
            "it was written); it was not used; take another copy, e.g. the run's other checkpoint (last.ckpt or "
            "epoch_*.ckpt)"
        )
