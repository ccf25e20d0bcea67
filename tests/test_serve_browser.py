"""stpred-serve in a real browser: the console command on a loopback port, driven by headless Chromium (Selenium).

Chromium and its driver are Debian's (``make test`` installs them); Selenium is given both paths, so its manager
downloads nothing. A missing browser fails the test: it is part of the project's set-up, not optional. Screenshots are
written into the test's temporary folder and their paths printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import pytest
from _serve_fixtures import CLIP, array_forecaster, clip_forecaster, era5_forecaster

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    """The base URL of ``stpred-serve`` started as a subprocess (``--port 0``: any free) with the shipped zoo, which
    the pages are driven with, and three tiny checkpoints of the tests beside it."""
    folder = tmp_path_factory.mktemp("browser_ckpt")
    ckpts = [clip_forecaster(folder), era5_forecaster(folder, shared_data), array_forecaster(folder)]
    log = (folder / "server.log").open("w")
    env = {**os.environ, "STPRED_DATA": str(shared_data), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "stpred.apps.serve", "--host", "127.0.0.1", "--port", "0"]
    for ckpt in ckpts:
        args += ["--ckpt", str(ckpt)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=folder)
    try:
        line = proc.stdout.readline()  # "stpred-serve: http://127.0.0.1:PORT/ (...)"
        assert line.startswith("stpred-serve: http://"), (line, (folder / "server.log").read_text())
        url = line.split()[1].rstrip("/")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=5) as reply:
                    if json.loads(reply.read())["ok"]:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"stpred-serve did not answer on {url}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        assert path.is_file(), f"{path} is missing: `make test` installs Debian's chromium and chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1250",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_state(driver, states: tuple[str, ...], timeout: float = JOB_TIMEOUT_S) -> str:
    """Wait until the page's ``body[data-state]`` is one of ``states``; the status texts seen on the way are checked."""
    from selenium.webdriver.support.ui import WebDriverWait

    seen: set[str] = set()

    def finished(d):
        seen.add(d.find_element("id", "status").text)
        return d.execute_script("return document.body.dataset.state") in states and d

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(finished)
    return driver.execute_script("return document.body.dataset.state")


def _natural_size(driver, element_id: str) -> tuple[int, int]:
    return tuple(
        driver.execute_script(
            "const i = document.getElementById(arguments[0]); return i.complete ? [i.naturalWidth, i.naturalHeight] "
            ": [0, 0];",
            element_id,
        )
    )


def _open(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def _choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def test_clip_page_forecasts_an_uploaded_clip_then_refuses_a_bad_one(served, browser, shared_data, tmp_path):
    from PIL import Image

    _open(browser, served + "/")
    _choose(browser, "checkpoint", "zoo:kinetics-clips-simvpv2")
    browser.find_element("id", "file").send_keys(str(shared_data / CLIP))
    start = browser.find_element("id", "start")
    start.clear()
    start.send_keys("10")
    browser.find_element("id", "run").click()
    assert _wait_state(browser, ("done", "error")) == "done", browser.find_element("id", "error").text
    assert browser.find_element("id", "error").text == ""
    assert _natural_size(browser, "animation") == (2 * 256 + 8, 256 + 2 * 24)
    width, height = _natural_size(browser, "plot")
    assert width > 200 and height > 100
    scores = browser.find_element("id", "scores").text
    assert scores.startswith("mean PSNR ") and "persistence" in scores
    assert scores.endswith("context frames " + ", ".join(str(k) for k in range(10, 18)))
    assert float(scores.split()[2]) > 15.0  # a trained forecaster (the untrained one scores about 4 dB)
    animation = browser.find_element("id", "animation").get_attribute("src")
    with urllib.request.urlopen(animation) as reply, Image.open(BytesIO(reply.read())) as image:
        assert image.n_frames == 8 + 8  # it plays: context then the eight leads
    shot = tmp_path / "clip_page.png"
    assert browser.save_screenshot(str(shot))
    print(f"\nscreenshot of the clip page: {shot}")

    bad = tmp_path / "holiday.mp4"
    bad.write_text("not a video, only text renamed .mp4\n" * 10)
    browser.find_element("id", "file").clear()
    browser.find_element("id", "file").send_keys(str(bad))
    browser.find_element("id", "run").click()
    assert _wait_state(browser, ("error",)) == "error"
    error = browser.find_element("id", "error").text
    assert "holiday.mp4" in error and "\n" not in error and error.startswith("cannot open video")
    assert not browser.find_element("id", "result").is_displayed()
    shot = tmp_path / "clip_page_bad_upload.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot after the bad upload: {shot}")
    with urllib.request.urlopen(served + "/api/health", timeout=10) as reply:
        assert json.loads(reply.read())["ok"]  # the server goes on


def test_field_page_forecasts_era5_with_a_lead_slider(served, browser, tmp_path):
    _open(browser, served + "/fields")
    _choose(browser, "checkpoint", "zoo:era5-t2m-simvpv2")
    _choose(browser, "sample", "era5_t2m_2019-03_uk.nc")
    from selenium.webdriver.support.ui import WebDriverWait

    # the page proposes an init time with 12 h of truth after it, once the file's stamps have come
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.timesPending") == "0")
    init = browser.find_element("id", "init-time")
    assert init.get_attribute("value") == "2019-03-31T11:00"
    init.clear()
    init.send_keys("2019-03-20T12:00")
    browser.find_element("id", "run").click()
    assert _wait_state(browser, ("done", "error")) == "done", browser.find_element("id", "error").text
    first = browser.find_element("id", "map").get_attribute("src")
    assert first.endswith("/lead_01.png") and _natural_size(browser, "map")[0] > 300
    assert browser.find_element("id", "lead-label").text == "lead +1h (1/12)"
    slider = browser.find_element("id", "lead")
    from selenium.webdriver.common.keys import Keys

    slider.send_keys(Keys.END)
    WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "map").get_attribute("src").endswith("lead_12.png"))
    WebDriverWait(browser, 30).until(lambda d: _natural_size(d, "map")[0] > 300)
    assert browser.find_element("id", "lead-label").text == "lead +12h (12/12)"
    assert _natural_size(browser, "skill")[0] > 200
    scores = browser.find_element("id", "scores").text
    assert scores.startswith("init 2019-03-20T12:00, t2m [K]: mean RMSE") and "over 12 lead(s)" in scores
    link = browser.find_element("id", "download").get_attribute("href")
    with urllib.request.urlopen(link) as reply:
        assert link.endswith("/forecast.nc") and reply.read(4) == b"\x89HDF"
    shot = tmp_path / "field_page.png"
    assert browser.save_screenshot(str(shot))
    print(f"\nscreenshot of the field page: {shot}")
