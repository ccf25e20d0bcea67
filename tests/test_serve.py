"""stpred-serve's HTTP API without a browser: a real server on a loopback port (a thread of this process).

Results are checked against independent references: the clip forecast and top-k against stpred-demo's JSON on the
same clip, the field forecast against stpred-forecast's NetCDF, the field RMSE against truth read here with xarray or
numpy; bad uploads must end in one line naming the upload, with the server still answering.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from _serve_fixtures import (
    CLIP,
    ERA5_FILE,
    array_forecaster,
    clip_classifier,
    clip_forecaster,
    era5_forecaster,
)

from stpred.apps import demo as demo_cli
from stpred.apps._forecasting import run_forecast
from stpred.apps.serve import listen, main
from stpred.metrics import latitude_area_weights

pytestmark = pytest.mark.usefixtures("one_thread")

JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, shared_data) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve_ckpt")
    return {
        "clip_simvp": clip_forecaster(folder),
        "k400_lrcn": clip_classifier(folder, shared_data),
        "era5_simvp": era5_forecaster(folder, shared_data),
        "ns_fno": array_forecaster(folder),
    }


@pytest.fixture(scope="module")
def server(ckpts, shared_data, tmp_path_factory):
    """``http://127.0.0.1:<port>`` of a server offering the four checkpoints and the shared samples."""
    import uvicorn

    from stpred.apps._serve_app import create_app
    from stpred.apps._serve_catalog import build_catalog

    catalog = build_catalog([str(p) for p in ckpts.values()], [], [], use_zoo=False, data_dir=str(shared_data))
    sock = listen("127.0.0.1", 0)
    config = uvicorn.Config(create_app(catalog, tmp_path_factory.mktemp("serve_work")), log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "the server did not start"
    yield url
    uv.should_exit = True
    thread.join(10)
    sock.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_json(url: str) -> tuple[int, dict]:
    status, body = get(url)
    return status, json.loads(body)


def post(url: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None) -> tuple[int, dict]:
    """A multipart/form-data POST, as the page's ``FormData`` sends it."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in (files or {}).items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def run_job(server: str, page: str, fields: dict[str, str], files=None) -> dict:
    """Start a job and poll it to its end; every progress text seen is kept under ``"seen"``."""
    status, body = post(f"{server}/api/{page}", fields, files)
    assert status == 202, body
    seen = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        _, job = get_json(f"{server}/api/jobs/{body['job']}")
        seen.append(job["status"])
        if job["state"] in ("done", "error"):
            return {**job, "seen": seen}
        time.sleep(0.1)
    raise AssertionError(f"job still running after {JOB_TIMEOUT_S} s: {seen[-1]}")


def test_pages_and_options(server):
    for path, marker in (("/", b'data-page="clips"'), ("/fields", b'data-page="fields"')):
        status, html = get(server + path)
        assert status == 200 and marker in html
        assert b"http://" not in html and b"https://" not in html  # nothing fetched from elsewhere
    for asset in ("serve.js", "serve.css"):
        status, text = get(f"{server}/static/{asset}")
        assert status == 200 and b"http://" not in text and b"https://" not in text and b"@import" not in text
    _, options = get_json(server + "/api/options")
    kinds = {page: {c["key"]: c["kind"] for c in options[page]["checkpoints"]} for page in ("clips", "fields")}
    assert kinds == {
        "clips": {"clip_simvp": "forecast", "k400_lrcn": "classify"},
        "fields": {"era5_simvp": "weather", "ns_fno": "array"},
    }
    assert options["clips"]["samples"] == ["kinetics_arm_wrestling.mp4", "kinetics_cleaning_pool.mp4"]
    assert options["fields"]["samples"] == ["era5_t2m_2019-03_uk.nc"]
    _, times = get_json(server + "/api/field-times?sample=era5_t2m_2019-03_uk.nc")
    assert times["times"][0] == "2019-03-01T00:00" and times["times"][-1] == "2019-03-31T23:00"
    assert len(times["times"]) == 31 * 24


def test_clip_forecast_matches_stpred_demo(server, ckpts, shared_data, tmp_path):
    from PIL import Image

    job = run_job(server, "clips", {"checkpoint": "clip_simvp", "sample": Path(CLIP).name, "start": "10"})
    assert job["state"] == "done", job["error"]
    result = job["result"]
    demo_cli.main(
        ["--ckpt", str(ckpts["clip_simvp"]), str(shared_data / CLIP), "--start", "10", "--out", str(tmp_path)]
    )
    expected = json.loads((tmp_path / "kinetics_arm_wrestling_forecast.json").read_text())
    assert result["context_indices"] == expected["context_indices"] == [10, 12, 14, 16]
    assert result["forecast_indices"] == expected["forecast_indices"]
    for got, want in zip(result["per_lead"], expected["per_lead"], strict=True):
        assert got["mse"] == pytest.approx(want["mse"], rel=1e-6)
    assert result["mean_psnr"] == pytest.approx(expected["mean_psnr"], rel=1e-6)
    # Persistence, independently: the last context frame against each true frame, 32 x 32 centre crop at short side 40.
    from stpred.datamodules.kinetics import crop_offsets, resize_short_side
    from stpred.datamodules.video_io import read_clip

    frames = resize_short_side(read_clip(shared_data / CLIP, np.array([16, 18, 20, 22])), 40, (32, 32))
    y, x = crop_offsets(*frames.shape[1:3], (32, 32), 1)[0]
    frames = frames[:, y : y + 32, x : x + 32].astype(np.float64) / 255
    for lead, row in enumerate(result["persistence"], 1):
        assert row["mse"] == pytest.approx(((frames[lead] - frames[0]) ** 2).mean(), rel=1e-5)
    status, data = get(server + result["animation"])
    assert status == 200
    path = tmp_path / "animation.webp"
    path.write_bytes(data)
    with Image.open(path) as image:
        assert image.format == "WEBP" and image.n_frames == 4 + 3  # context, then the three leads
        assert image.size == (2 * 256 + 8, 256 + 2 * 24)  # 32 px panels scaled to 256, side by side, title bars
    status, png = get(server + result["plot"])
    assert status == 200 and png.startswith(b"\x89PNG")


def test_classifier_top_k_matches_stpred_demo(server, ckpts, shared_data, tmp_path):
    job = run_job(server, "clips", {"checkpoint": "k400_lrcn", "sample": Path(CLIP).name, "top_k": "3"})
    assert job["state"] == "done", job["error"]
    demo_cli.main(["--ckpt", str(ckpts["k400_lrcn"]), str(shared_data / CLIP), "--top-k", "3", "--out", str(tmp_path)])
    expected = json.loads((tmp_path / "kinetics_arm_wrestling_classes.json").read_text())
    top = job["result"]["top"]
    assert [t["label"] for t in top] == expected["labels"]
    assert [t["probability"] for t in top] == pytest.approx(expected["probabilities"], rel=1e-6)
    assert job["result"]["views"] == {"clips": 1, "crops": 1}


@pytest.mark.parametrize(
    "name, make, needle",
    [
        ("notes.mp4", lambda clip: b"this is a text file, not a video\n" * 20, "notes.mp4"),
        ("cut.mp4", lambda clip: clip.read_bytes()[: clip.stat().st_size // 3], "cut.mp4"),
    ],
)
def test_bad_clip_upload_is_one_line_and_the_server_goes_on(server, shared_data, name, make, needle):
    job = run_job(server, "clips", {"checkpoint": "clip_simvp"}, {"file": (name, make(shared_data / CLIP))})
    assert job["state"] == "error" and job["result"] is None
    assert "\n" not in job["error"] and needle in job["error"]
    assert "/upload/" not in job["error"]  # the server's own folders are not shown
    status, health = get_json(server + "/api/health")
    assert status == 200 and health["ok"]


def test_requests_that_cannot_start_are_answered_at_once(server):
    cases = [
        ({"checkpoint": "clip_simvp"}, {"file": ("notes.txt", b"hello")}, "not a video file"),
        ({"checkpoint": "clip_simvp"}, {"file": ("empty.mp4", b"")}, "empty"),
        ({"checkpoint": "clip_simvp"}, None, "choose a sample or upload"),
        ({"checkpoint": "nope", "sample": "kinetics_cleaning_pool.mp4"}, None, "unknown clips checkpoint"),
        ({"checkpoint": "era5_simvp", "sample": "kinetics_cleaning_pool.mp4"}, None, "unknown clips checkpoint"),
        ({"checkpoint": "clip_simvp", "sample": "kinetics_cleaning_pool.mp4", "start": "-1"}, None, "start"),
    ]
    for fields, files, needle in cases:
        status, body = post(server + "/api/clips", fields, files)
        assert status == 400 and needle in body["error"] and "\n" not in body["error"], (fields, body)
    assert get(server + "/files/0000/../../etc/passwd")[0] == 404
    assert get(server + "/api/jobs/unknown")[0] == 404


def test_era5_forecast_matches_stpred_forecast_and_truth(server, ckpts, shared_data, tmp_path):
    init = "2019-03-20T12:00"
    job = run_job(server, "fields", {"checkpoint": "era5_simvp", "sample": Path(ERA5_FILE).name, "init_time": init})
    assert job["state"] == "done", job["error"]
    result = job["result"]
    assert result["init"] == init and result["leads"][0] == "+1h" and len(result["maps"]) == 12
    status, nc = get(server + result["netcdf"])
    assert status == 200 and nc.startswith(b"\x89HDF")
    (tmp_path / "served.nc").write_bytes(nc)
    run_forecast(ckpts["era5_simvp"], shared_data / ERA5_FILE, init_time=init, out=tmp_path / "cli.nc", device="cpu")
    with xr.open_dataset(tmp_path / "served.nc") as served, xr.open_dataset(tmp_path / "cli.nc") as cli:
        forecast = served["t2m"].isel(init_time=0).to_numpy()  # [12, lat, lon] in the file's row order
        np.testing.assert_allclose(forecast, cli["t2m"].isel(init_time=0).to_numpy(), rtol=1e-6)
        lat = served["latitude"].to_numpy()
        lon = served["longitude"].to_numpy()
    # Truth and persistence straight from the ERA5 file, on the forecast's grid.
    hour = np.timedelta64(1, "h")
    with xr.open_dataset(shared_data / ERA5_FILE) as ds:
        block = ds["t2m"].sel(latitude=lat, longitude=lon)
        stamp = np.datetime64(init, "ns")
        truth = block.sel(time=stamp + hour * np.arange(1, 13)).to_numpy().astype(np.float64)
        last = block.sel(time=stamp).to_numpy().astype(np.float64)
    w = latitude_area_weights(lat).numpy().astype(np.float64)[:, None]
    expected = np.sqrt(((forecast - truth) ** 2 * w).mean(axis=(1, 2)) / w.mean())
    held = np.sqrt(((last[None] - truth) ** 2 * w).mean(axis=(1, 2)) / w.mean())
    np.testing.assert_allclose(np.array(result["rmse"])[:, 0], expected, rtol=1e-4)
    np.testing.assert_allclose(np.array(result["persistence_rmse"])[:, 0], held, rtol=1e-4)
    for url in [*result["maps"][:2], result["skill"]]:
        status, png = get(server + url)
        assert status == 200 and png.startswith(b"\x89PNG")


def test_era5_init_time_outside_the_file_is_one_line(server):
    job = run_job(server, "fields", {"checkpoint": "era5_simvp", "sample": Path(ERA5_FILE).name, "init_time": "2020"})
    assert job["state"] == "error" and "\n" not in job["error"] and "outside" in job["error"]


def test_array_upload_with_an_init_frame(server, ckpts, tmp_path):
    rng = np.random.default_rng(3)
    series = rng.standard_normal((9, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "vort.npy", series)
    data = (tmp_path / "vort.npy").read_bytes()
    job = run_job(server, "fields", {"checkpoint": "ns_fno", "init_time": "5"}, {"file": ("vort.npy", data)})
    assert job["state"] == "done", job["error"]
    result = job["result"]
    assert result["init"] == "frame 5" and result["truth_leads"] == 2
    status, nc = get(server + result["netcdf"])
    (tmp_path / "out.nc").write_bytes(nc)
    with xr.open_dataset(tmp_path / "out.nc") as ds:
        forecast = ds["forecast"].to_numpy().astype(np.float64)  # [2, 1, 16, 16]
    # The model saw frames 3..5: the forecast is the checkpoint's on exactly those (stpred-forecast on the cut array).
    from stpred.checkpoint import load_predictor

    predictor = load_predictor(ckpts["ns_fno"])
    np.testing.assert_allclose(forecast, predictor.predict(series[3:6]).numpy(), rtol=1e-5, atol=1e-6)
    truth = series[6:8].astype(np.float64)
    rmse = np.sqrt(((forecast - truth) ** 2).mean(axis=(2, 3)))
    held = np.sqrt(((series[5:6].astype(np.float64) - truth) ** 2).mean(axis=(2, 3)))
    np.testing.assert_allclose(result["rmse"], rmse, rtol=1e-5)
    np.testing.assert_allclose(result["persistence_rmse"], held, rtol=1e-5)


@pytest.mark.parametrize(
    "init, array, needle",
    [
        (None, np.zeros((8, 2, 16, 16), np.float32), "(8, 2, 16, 16)"),
        ("1", np.zeros((8, 1, 16, 16), np.float32), "init frame 1 is outside 2 .. 7"),
        ("x", np.zeros((8, 1, 16, 16), np.float32), "frame index"),
    ],
)
def test_bad_array_upload_is_one_line(server, tmp_path, init, array, needle):
    np.save(tmp_path / "a.npy", array)
    fields = {"checkpoint": "ns_fno", **({"init_time": init} if init else {})}
    job = run_job(server, "fields", fields, {"file": ("a.npy", (tmp_path / "a.npy").read_bytes())})
    assert job["state"] == "error" and needle in job["error"] and "\n" not in job["error"], job["error"]
    assert get_json(server + "/api/health")[1]["ok"]


# -- the command line ---------------------------------------------------------------------------------------------
def _one_error_line(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stpred-serve: error: "), lines
    return lines[0]


def test_bad_port_and_missing_checkpoint_exit_2(ckpts, tmp_path, capsys):
    assert "70000" in _one_error_line(["--no-zoo", "--ckpt", str(ckpts["ns_fno"]), "--port", "70000"], capsys)
    assert "--port" in _one_error_line(["--port", "eighty"], capsys)
    missing = tmp_path / "missing.ckpt"
    assert str(missing) in _one_error_line(["--no-zoo", "--ckpt", str(missing)], capsys)
    busy = listen("127.0.0.1", 0)
    try:
        port = str(busy.getsockname()[1])
        line = _one_error_line(["--no-zoo", "--ckpt", str(ckpts["ns_fno"]), "--port", port], capsys)
        assert f"127.0.0.1:{port}" in line
    finally:
        busy.close()
    assert "no checkpoints" in _one_error_line(["--no-zoo"], capsys)


def test_zoo_entries_are_offered_beside_the_given_checkpoints(ckpts, monkeypatch):
    from types import SimpleNamespace

    from stpred import zoo
    from stpred.apps._serve_catalog import build_catalog

    entry = SimpleNamespace(
        name="tiny-ns", path=ckpts["ns_fno"], description="a tiny FNO", scores={"rel_l2": 0.5}, baseline={"rel_l2": 1}
    )
    monkeypatch.setattr(zoo, "list_entries", lambda *args, **kwargs: [entry])
    monkeypatch.setattr(
        zoo, "resolve", lambda name: ckpts["clip_simvp"] if str(name) == "zoo:tiny-clip" else Path(name)
    )
    catalog = build_catalog(["zoo:tiny-clip", str(ckpts["ns_fno"])], [], [], use_zoo=True, data_dir="")
    assert {k: (c.page, c.kind) for k, c in catalog.checkpoints.items()} == {
        "zoo:tiny-ns": ("fields", "array"),
        "zoo:tiny-clip": ("clips", "forecast"),
        "ns_fno": ("fields", "array"),
    }
    fields = catalog.options()["fields"]["checkpoints"]
    assert fields[0]["scores"] == {"rel_l2": 0.5} and "a tiny FNO" in fields[0]["label"]
    assert catalog.clips == {} and catalog.fields == {}
