"""Background work for ``stpred-serve``: one job at a time (the CPU is the limit), its status readable while it runs.

A job writes its files into its own folder. A user's mistake (:class:`UserError`: a damaged clip, an array of the
wrong shape, an init time outside the file) ends the job with that message on one line, the upload's file name in
place of the server's path; any other failure ends it with the exception's type and message on one line and the
traceback on the server's stderr. Either way the server keeps serving.
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stpred.errors import UserError

__all__ = ["Job", "JobRunner", "one_line"]


def one_line(message: str) -> str:
    return " ".join(str(message).split())


@dataclass
class Job:
    """A piece of work: ``state`` is ``"queued"``, ``"running"``, ``"done"`` or ``"error"``."""

    id: str
    folder: Path
    state: str = "queued"
    status: str = "waiting for the previous job"
    error: str | None = None
    result: dict[str, Any] | None = None
    renames: dict[str, str] = field(default_factory=dict)  # server paths -> names shown in messages

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "status": self.status, "error": self.error, "result": self.result}


class JobRunner:
    """Runs ``work(folder, progress) -> dict`` jobs one after another on a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stpred-serve-job")

    def new(self) -> Job:
        """A job with its folder made; start it with :meth:`start`."""
        job = Job(uuid.uuid4().hex[:16], Path())
        job.folder = self.root / job.id
        job.folder.mkdir(parents=True)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, job: Job, work: Callable[[Path, Callable[[str], None]], dict[str, Any]]) -> None:
        self._pool.submit(self._run, job, work)

    def _run(self, job: Job, work: Callable[[Path, Callable[[str], None]], dict[str, Any]]) -> None:
        def progress(text: str) -> None:
            job.status = text

        job.state, job.status = "running", "starting"
        try:
            result = work(job.folder, progress)
        except UserError as err:
            job.error = self._shown(job, str(err))
            job.state = "error"
        except Exception as err:  # noqa: BLE001 - the server outlives any one job
            traceback.print_exc()
            job.error = self._shown(job, f"{type(err).__name__}: {err}")
            job.state = "error"
        else:
            job.result, job.status, job.state = result, "done", "done"

    @staticmethod
    def _shown(job: Job, message: str) -> str:
        for server_path, name in job.renames.items():
            message = message.replace(server_path, name)
        return one_line(message.replace(str(job.folder) + "/", ""))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
