"""Faults during training (docs/training.md, "Faults" and "Kill and resume"): a NaN loss stops the run naming the
step and leaves the checkpoints on disk as they were; SIGTERM saves, says so in one line and exits 143; a finished
run extended with a larger ``trainer.max_epochs`` restarts its schedule (said in one line) and, resumed into a new
folder, keeps the best score of the first part.

Slow (a dozen small training runs in subprocesses): ``STPRED_DATA=../shared/data .venv/bin/python -m pytest -m slow
tests/test_faults.py``. The whole suite runs them too.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from _helpers import TINY_QUICKSTART, checkpoint_weights, train_in_subprocess

from stpred.checkpoint import read_checkpoint

#: 24 training trajectories in batches of 4: 6 steps an epoch.
STEPS_PER_EPOCH = 6

pytestmark = pytest.mark.slow


def _train(tmp: Path, run: str, *extra: str):
    return train_in_subprocess(tmp, run, *TINY_QUICKSTART, *extra)


def _best_score(path: Path) -> float:
    states = read_checkpoint(path)["callbacks"]
    return min(float(s["best_model_score"]) for k, s in states.items() if "val/mse" in k)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("stpred-train:")]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


def test_nan_loss_stops_at_its_step_and_keeps_the_checkpoints(tmp):
    clean = _train(tmp, "clean", "trainer.max_epochs=1")
    assert clean.returncode == 0, clean.stderr[-3000:]
    nan_step = STEPS_PER_EPOCH + 2  # the second batch of epoch 1
    proc = _train(
        tmp,
        "nan",
        "trainer.max_epochs=3",
        "callbacks.last_checkpoint.every_n_steps=4",
        "+callbacks.fault._target_=_fault_points.NanInput",
        f"+callbacks.fault.step={nan_step}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr[-3000:]
    assert errors[0].startswith(f"stpred-train: error: the training loss is nan at step {nan_step} (epoch 1, batch 1)")
    assert "the checkpoints on disk were kept" in errors[0]
    folder = tmp / "nan" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    last = read_checkpoint(folder / "last.ckpt")
    assert last["global_step"] == STEPS_PER_EPOCH  # the step-8 save never happened
    expected = checkpoint_weights(tmp / "clean" / "checkpoints" / "last.ckpt")
    for key, value in checkpoint_weights(folder / "last.ckpt").items():
        assert torch.equal(value, expected[key]), key
    assert "stopped: TrainingDiverged: the training loss is nan" in (tmp / "nan" / "train.log").read_text()


def test_a_diverging_learning_rate_never_writes_nonfinitecheckpoint_weights(tmp):
    proc = _train(tmp, "lr", "optim.lr=1e6", "trainer.max_epochs=3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and ("hold NaN or inf" in errors[0] or "the training loss is" in errors[0]), errors
    for path in (tmp / "lr").rglob("*.ckpt"):
        for key, value in checkpoint_weights(path).items():
            assert torch.isfinite(value).all(), (path, key)


@pytest.fixture(scope="module")
def two_epochs(tmp) -> Path:
    proc = _train(tmp, "two", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "two" / "checkpoints" / "last.ckpt"


def test_sigterm_saves_says_so_exits_143_and_resumes_exactly(tmp, two_epochs):
    run = "term"
    proc = _train(
        tmp, run, "trainer.max_epochs=2", "+callbacks.fault._target_=_fault_points.SigtermAfterStep",
        "+callbacks.fault.step=3",
    )  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-3000:]
    last = tmp / run / "checkpoints" / "last.ckpt"
    assert _errors(proc.stderr) == [
        f"stpred-train: stopped by SIGTERM at step 3; saved {last}; resume with ckpt_path={last}"
    ]
    assert read_checkpoint(last)["global_step"] == 3
    resumed = _train(tmp, run, "trainer.max_epochs=2", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_checkpoint(last)["global_step"] == 2 * STEPS_PER_EPOCH
    expected = checkpoint_weights(two_epochs)
    for key, value in checkpoint_weights(last).items():
        assert torch.equal(value, expected[key]), key


def _logged_lrs(run: Path) -> dict[int, float]:
    """The learning rate LearningRateMonitor logged at each epoch start, by global step."""
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    column = next(k for k in rows[0] if k.startswith("lr-"))
    return {int(r["step"]): float(r[column]) for r in rows if r.get(column)}


@pytest.mark.parametrize(("scheduler", "first_lr"), [("onecycle", 1e-2 / 25), ("cosine", 1e-2)])
def test_extending_a_finished_run_restarts_the_schedule_and_keeps_the_best(tmp, scheduler, first_lr):
    first, second = f"{scheduler}_a", f"{scheduler}_b"
    proc = _train(tmp, first, "trainer.max_epochs=2", f"optim.scheduler={scheduler}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = tmp / first / "checkpoints" / "last.ckpt"
    extended = _train(tmp, second, "trainer.max_epochs=3", f"optim.scheduler={scheduler}", f"ckpt_path={last}")
    assert extended.returncode == 0, extended.stderr[-3000:]
    said = f"resuming after epoch 2 with trainer.max_epochs=3 (the checkpoint planned 2): the {scheduler} schedule "
    assert said + "restarts over the remaining 1 epochs" in (tmp / second / "train.log").read_text()
    new_last = tmp / second / "checkpoints" / "last.ckpt"
    assert read_checkpoint(new_last)["global_step"] == 3 * STEPS_PER_EPOCH
    assert math.isclose(_logged_lrs(tmp / second)[2 * STEPS_PER_EPOCH], first_lr, rel_tol=1e-6)
    # The best of the whole run: epoch 2 had to beat the first part's best to replace it.
    assert _best_score(new_last) <= _best_score(last)
