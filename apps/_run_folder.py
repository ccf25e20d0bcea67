"""The run folder of a Hydra app after a failure: a start that failed leaves nothing behind, a run that had
begun keeps its folder with the error at the end of its ``train.log``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

__all__ = ["after_failed_run", "close_file_logs"]

log = logging.getLogger("stpred")


def _run_folder_leftovers(out: Path) -> bool:
    """Whether ``out`` holds nothing but what a start writes (Hydra's ``.hydra/`` and ``<app>.log``, the resolved
    ``config.yaml``)."""
    return out.is_dir() and all(p.name in (".hydra", "config.yaml") or p.suffix == ".log" for p in out.iterdir())


def close_file_logs(folder: Path) -> None:
    """Detach and close the log files (Hydra's ``train.log``) inside ``folder``, so that it can be removed."""
    folder = folder.resolve()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler) and folder in Path(handler.baseFilename).resolve().parents:
                logger.removeHandler(handler)
                handler.close()


def after_failed_run(out: Path, log_dir: str | None, exc: BaseException) -> None:
    """A failed start leaves no run folder behind (nor the empty folders above it, ``log_dir`` included); a run that had
    begun keeps its folder, the error logged at the end of its log."""
    if _run_folder_leftovers(out):
        close_file_logs(out)
        shutil.rmtree(out, ignore_errors=True)
        log_dir = Path(str(log_dir)).resolve() if log_dir else None
        parent = out.resolve().parent
        while log_dir is not None and (parent == log_dir or log_dir in parent.parents) and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    elif out.is_dir():
        log.error(f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
