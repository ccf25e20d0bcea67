"""The ``stpred-serve`` web application (Starlette): two pages, a JSON API and the files that jobs write.

Routes:
    ``GET /`` the clip page, ``GET /fields`` the field page, ``GET /static/...`` their script and style (no external
    asset of any kind: the pages work with no network).
    ``GET /api/options`` checkpoints and samples per page; ``GET /api/field-times?sample=NAME`` the init times a sample
    offers.
    ``POST /api/clips`` and ``POST /api/fields`` (multipart form: ``checkpoint``, ``sample`` or ``file``, options)
    start a job: ``202 {"job": id}``, or ``400 {"error": one line}`` for a request that cannot start.
    ``GET /api/jobs/{id}`` its state, progress text, one-line error or result (file names as URLs).
    ``GET /files/{id}/{name}`` a file a job wrote.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stpred.apps._serve_catalog import FIELD_SUFFIXES, Catalog, Checkpoint
from stpred.apps._serve_jobs import Job, JobRunner, one_line
from stpred.errors import UserError

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "serve_static"
#: Largest upload accepted: a 10 s Kinetics clip is a few MB, a month of a regional ERA5 grid tens of MB.
MAX_UPLOAD_BYTES = 512 * 2**20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


def _int_field(form, name: str, default: int | None, minimum: int) -> int | None:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{name.replace('_', '-')} must be a whole number, got '{raw}'") from None
    if value < minimum:
        raise UserError(f"{name.replace('_', '-')} must be >= {minimum}, got {value}")
    return value


async def _input_file(form, job: Job, samples: dict, suffixes: tuple[str, ...], what: str) -> Path:
    """The uploaded file saved into the job's folder, or the chosen sample's path."""
    upload = form.get("file")
    if upload is not None and not isinstance(upload, str) and upload.filename:
        original = Path(upload.filename).name
        suffix = Path(original).suffix.lower()
        if suffix not in suffixes:
            raise UserError(f"{original}: not a {what} file (expected {', '.join(suffixes)})")
        path = job.folder / "upload" / (_SAFE_NAME.sub("_", Path(original).stem)[:80] + suffix)
        path.parent.mkdir()
        size = 0
        with path.open("wb") as out:
            while chunk := await upload.read(2**20):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise UserError(f"{original} is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
                out.write(chunk)
        if size == 0:
            raise UserError(f"{original} is empty")
        job.renames[str(path)] = original
        return path
    key = str(form.get("sample") or "")
    if not key:
        raise UserError(f"choose a sample or upload a {what} file")
    if key not in samples:
        raise UserError(f"unknown sample '{key}'")
    return samples[key].path


def _checkpoint(form, catalog: Catalog, page: str) -> Checkpoint:
    key = str(form.get("checkpoint") or "")
    found = catalog.checkpoints.get(key)
    if found is None or found.page != page:
        raise UserError(f"unknown {page} checkpoint '{key}'; pick one from the list")
    return found


def _urls(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """The result with every file it names as ``/files/<job>/<name>``."""
    out = dict(result)
    for key in ("animation", "plot", "netcdf", "skill"):
        if out.get(key):
            out[key] = f"/files/{job.id}/{out[key]}"
    if out.get("maps"):
        out["maps"] = [f"/files/{job.id}/{name}" for name in out["maps"]]
    return out


def create_app(catalog: Catalog, work_dir: Path) -> Starlette:
    """The application serving ``catalog``; jobs write under ``work_dir``."""
    from stpred.apps import _serve_clips, _serve_fields
    from stpred.apps._clips import VIDEO_SUFFIXES

    runner = JobRunner(work_dir)

    async def page(request: Request) -> Response:
        name = "fields.html" if request.url.path.rstrip("/").endswith("fields") else "clips.html"
        return FileResponse(STATIC_DIR / name, media_type="text/html")

    async def options(_: Request) -> Response:
        return JSONResponse(catalog.options())

    async def field_times(request: Request) -> Response:
        sample = catalog.fields.get(request.query_params.get("sample", ""))
        if sample is None:
            return _error("unknown sample")
        return JSONResponse({"times": _sample_times(sample.path)})

    async def start(request: Request, page_name: str) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_UPLOAD_BYTES + 2**20:
            return _error(f"upload larger than {MAX_UPLOAD_BYTES // 2**20} MiB", 413)
        job = runner.new()
        try:
            async with request.form(max_files=1, max_fields=20) as form:
                checkpoint = _checkpoint(form, catalog, page_name)
                if page_name == "clips":
                    clip = await _input_file(form, job, catalog.clips, VIDEO_SUFFIXES, "video")
                    if checkpoint.kind == "classify":
                        top_k = _int_field(form, "top_k", 5, 1)
                        work = _bind(_serve_clips.classify, checkpoint.predictor, clip, top_k=top_k)
                    else:
                        start_frame = _int_field(form, "start", 0, 0)
                        horizon = _int_field(form, "horizon", None, 1)
                        work = _bind(
                            _serve_clips.forecast, checkpoint.predictor, clip, start=start_frame, horizon=horizon
                        )
                else:
                    source = await _input_file(form, job, catalog.fields, FIELD_SUFFIXES, "NetCDF, .npy or .h5")
                    init = str(form.get("init_time") or "").strip() or None
                    work = _bind(_serve_fields.forecast_fields, checkpoint.path, source, init)
        except UserError as err:
            return _error(runner._shown(job, str(err)))
        runner.start(job, work)
        return JSONResponse({"job": job.id}, status_code=202)

    async def start_clips(request: Request) -> Response:
        return await start(request, "clips")

    async def start_fields(request: Request) -> Response:
        return await start(request, "fields")

    async def job_status(request: Request) -> Response:
        job = runner.get(request.path_params["job_id"])
        if job is None:
            return _error("unknown job", 404)
        body = job.as_json()
        if job.result is not None:
            body["result"] = _urls(job, job.result)
        return JSONResponse(body)

    async def job_file(request: Request) -> Response:
        job = runner.get(request.path_params["job_id"])
        name = request.path_params["name"]
        if job is None or not _FILE_NAME.match(name) or not (job.folder / name).is_file():
            return _error("no such file", 404)
        return FileResponse(job.folder / name)

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True, "checkpoints": len(catalog.checkpoints)})

    routes = [
        Route("/", page),
        Route("/fields", page),
        Route("/api/options", options),
        Route("/api/field-times", field_times),
        Route("/api/health", health),
        Route("/api/clips", start_clips, methods=["POST"]),
        Route("/api/fields", start_fields, methods=["POST"]),
        Route("/api/jobs/{job_id:str}", job_status),
        Route("/files/{job_id:str}/{name:str}", job_file),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        yield
        runner.shutdown()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runner = runner
    return app


def _bind(fn, *args, **kwargs):
    """``work(folder, progress)`` calling ``fn(*args, folder, ..., progress=progress)`` as the job modules expect."""

    def work(folder: Path, progress) -> dict[str, Any]:
        return fn(*args, out_dir=folder, progress=progress, **kwargs)

    return work


def _sample_times(path: Path) -> list[str]:
    """The stamps of a NetCDF sample (ISO, to the minute), or the frame indices of a ``.npy`` one; else none."""
    import numpy as np

    try:
        if path.suffix == ".nc":
            import xarray as xr

            with xr.open_dataset(path) as ds:
                if "time" not in ds.coords:
                    return []
                stamps = ds["time"].values.astype("datetime64[m]")
            return [str(s) for s in stamps]
        if path.suffix == ".npy":
            return [str(i) for i in range(len(np.load(path, mmap_mode="r", allow_pickle=False)))]
    except (OSError, ValueError, TypeError):
        return []
    return []
