"""A training run killed with SIGKILL anywhere resumes from its ``last.ckpt`` and ends at the weights of a run that
was never interrupted (docs/training.md, "Kill and resume").

Slow (each case trains twice in subprocesses): ``STPRED_DATA=../shared/data .venv/bin/python -m pytest -m slow
tests/test_kill_resume.py``. The whole suite runs them too.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from _helpers import checkpoint_weights, train_in_subprocess

from stpred.checkpoint import read_checkpoint

#: SimVPv2 with dropout and drop-path (so the per-step seeds matter) on 16x16 Navier-Stokes: 6 steps an epoch,
#: 3 epochs, OneCycle stepped per step, last.ckpt also every 4 steps.
RUN = [
    "data=navier_stokes",
    "model=simvpv2",
    "data.resolution=16",
    "data.n_train=24",
    "data.n_val=8",
    "data.n_test=8",
    "data.t_in=4",
    "data.t_out=3",
    "data.batch_size=4",
    "data.progress=false",
    "model.kwargs.hid_S=8",
    "model.kwargs.hid_T=16",
    "model.kwargs.N_S=2",
    "model.kwargs.N_T=2",
    "model.kwargs.mlp_ratio=2.0",
    "model.kwargs.drop=0.1",
    "model.kwargs.drop_path=0.1",
    "optim.scheduler=onecycle",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "callbacks.last_checkpoint.every_n_steps=4",
    "test=false",
]


def _train(tmp: Path, run: str, *extra: str):
    return train_in_subprocess(tmp, run, *RUN, *extra)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill")
    proc = _train(tmp, "whole")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, checkpoint_weights(tmp / "whole" / "checkpoints" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "saved_step"),
    [
        # mid-epoch, two steps after the step checkpoint of step 4: steps 5 and 6 are trained again
        ("+callbacks.fault._target_=_fault_points.AfterStep +callbacks.fault.step=10", 8),
        # just after an epoch: epoch 1's checkpoints are on disk, epoch 2 has not begun
        ("+callbacks.fault._target_=_fault_points.AtEpochStart +callbacks.fault.epoch=2", 12),
        # in the middle of rewriting last.ckpt at step 12 (the end of epoch 1)
        ("+callbacks.fault._target_=_fault_points.DuringSave +callbacks.fault.step=12", 8),
    ],
    ids=["mid-epoch", "after-epoch", "during-save"],
)
def test_sigkill_then_resume_ends_at_the_uninterruptedcheckpoint_weights(uninterrupted, kill, saved_step):
    tmp, expected = uninterrupted
    run = f"killed_{saved_step}_{abs(hash(kill)) % 10_000}"
    proc = _train(tmp, run, *kill.split())
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
    last = tmp / run / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(last)  # whole: its CRCs hold
    assert ckpt["global_step"] == saved_step

    resumed = _train(tmp, run, f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = checkpoint_weights(last)
    assert read_checkpoint(last)["global_step"] == 18
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(final[key], value), key
