"""The ways into training besides a plain run: stpred.train from Python, sweeps with their summary, TensorBoard,
per-epoch batch limits, and stpred-eval on another data config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from _helpers import TINY_QUICKSTART, run_module

import stpred

TINY = [*TINY_QUICKSTART, "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def ns_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ns_cache")


def test_python_entry_point_returns_the_run_folder_metrics_and_predictor(tmp_path, ns_root):
    import torch

    run = stpred.train(*TINY, f"data.root={ns_root}", output_dir=tmp_path / "run")
    assert run.run_dir == tmp_path / "run"
    record = json.loads((run.run_dir / "results.json").read_text())
    assert record["test"] == pytest.approx(run.test) and run.test["mse"] > 0
    assert run.checkpoint is not None and run.checkpoint.is_file() and run.last_checkpoint.is_file()
    predictor = run.predictor
    assert predictor.in_shape == (4, 1, 16, 16) and predictor.out_frames == 3
    out = predictor.predict(torch.zeros(2, 4, 1, 16, 16))
    assert out.shape == (2, 3, 1, 16, 16) and torch.isfinite(out).all()


def test_default_run_folder_is_named_after_the_data_config(tmp_path):
    from stpred.apps.api import compose_train_config

    cfg = compose_train_config("data=era5_uk", "model=simvpv2", "paths.root_dir=" + str(tmp_path))
    assert Path(cfg.paths.output_dir).parent == tmp_path / "runs" / "era5_uk"
    assert compose_train_config("experiment=quickstart").task_name == "quickstart"


def test_sweep_writes_a_summary_of_every_run(tmp_path, ns_root):
    result = run_module(
        "stpred.apps.train",
        *["-m", *TINY, f"data.root={ns_root}", "trainer.limit_train_batches=2", "seed=1,2", "logger=tensorboard"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = (tmp_path / "runs" / "quickstart").glob("multirun_*")
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["seed"] for r in rows] == ["1", "2"] and {r["status"] for r in rows} == {"done"}
    for row in rows:
        run = sweep / row["run"]
        expected = json.loads((run / "results.json").read_text())["test"]
        assert float(row["mse"]) == pytest.approx(expected["mse"], rel=1e-6)
        # limit_train_batches=2 (no `+` needed): two optimiser steps in the one epoch
        steps = {int(r["step"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss_step")}
        assert steps == {0, 1}
        assert list((run / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    assert "| run | seed | status |" in result.stdout


def test_eval_takes_a_data_override(tmp_path, ns_root):
    run = stpred.train(*TINY, f"data.root={ns_root}", output_dir=tmp_path / "run")
    data = [o.replace("experiment=quickstart", "data=navier_stokes") for o in TINY if o.startswith(("data", "exp"))]
    result = run_module(
        "stpred.apps.evaluate",
        *[f"ckpt_path={run.checkpoint}", *data, f"data.root={ns_root}", "trainer.enable_progress_bar=false"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("test:"))
    mse = float(line.split("mse=")[1].split(",")[0])
    assert mse == pytest.approx(run.test["mse"], rel=1e-3)
