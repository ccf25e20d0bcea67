"""Checkpoints written by earlier stpred releases keep loading and predicting as they did (to float rounding).

``tests/data/stpred-0.1.0_fno2d_ns16.ckpt`` was written by stpred 0.1.0 (commit 7962005, before the model and task
bases): the quickstart preset shrunk to 16x16 Navier-Stokes, FNO-2D width 8, modes 4, one epoch. Its ``_io.npz`` holds
an input ``x`` [2, 4, 1, 16, 16] and the forecast ``y`` [2, 3, 1, 16, 16] that 0.1.0's ``load_predictor`` gave.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

import stpred
from stpred.checkpoint import read_checkpoint

DATA = Path(__file__).resolve().parent / "data"
CKPT = DATA / "stpred-0.1.0_fno2d_ns16.ckpt"


def test_a_0_1_0_checkpoint_predicts_what_0_1_0_predicted():
    io = np.load(DATA / "stpred-0.1.0_fno2d_ns16_io.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same model version: no warning
        predictor = stpred.load_predictor(CKPT)
    assert predictor.model_name == "fno2d" and predictor.in_shape == (4, 1, 16, 16) and predictor.out_frames == 3
    y = predictor.predict(torch.from_numpy(io["x"])).numpy()
    # Same weights and code path; only float summation order may differ with the thread count (seen: 3e-9).
    np.testing.assert_allclose(y, io["y"], rtol=1e-5, atol=1e-7)


def test_a_0_1_0_checkpoint_rebuilds_its_task():
    from stpred.apps._compose import task_class

    hp = dict(read_checkpoint(CKPT)["hyper_parameters"])
    assert hp["stpred_version"] == "0.1.0" and hp["model_version"] == 1
    hp.pop("model_version")
    task = task_class(hp["data"].get("task", "forecast"))(**hp)
    state = read_checkpoint(CKPT)["state_dict"]
    task.load_state_dict(state)  # strict: every key and shape of 0.1.0's task is still there
    predictor = stpred.load_predictor(CKPT)
    x = torch.from_numpy(np.load(DATA / "stpred-0.1.0_fno2d_ns16_io.npz")["x"])
    with torch.no_grad():
        torch.testing.assert_close(task.net.eval()(x), predictor.net(x), rtol=0, atol=0)
