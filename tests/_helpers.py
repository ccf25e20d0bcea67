"""Small helpers shared by test modules (imported as ``from _helpers import ...``, like ``_hydra``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

__all__ = [
    "TINY_MODEL_KWARGS",
    "TINY_QUICKSTART",
    "checkpoint_weights",
    "n_params",
    "run_module",
    "train_in_subprocess",
]

#: Small hyperparameters of every registered model, used by the model tests (a new model adds its entry here).
TINY_MODEL_KWARGS: dict[str, dict] = {
    "simvpv2": {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2, "mlp_ratio": 2.0},
    "fno2d": {"width": 8, "modes": 4, "depth": 2},
    "squeezetime": {"forecast_hid": 8, "forecast_depth": 1, "forecast_down": 1, "gate_channels": 4},
    "lrcn": {"widths": [8, 8, 16], "blocks": 1, "stem": "small", "hidden": 16, "feature_dim": 32},
    "fno3d": {"width": 8, "modes": 4, "depth": 2},
    "sfno": {"width": 8, "modes": 4, "modes_t": 2, "latent_steps": 4, "num_spectral_layers": 2},
    "convs5": {"d_model": 8, "ssm_size": 4, "n_layers": 1, "widths": [4, 8], "norm_groups": 4, "value_range": "real"},
    "predformer": dict(arrangement="STS", n_units=1, patch_size=4, dim=16, heads=2, dim_head=8, mlp_hidden=32),
}

#: The quickstart preset shrunk to seconds: 16x16 Navier-Stokes, 24 training trajectories, a 4 -> 3 FNO-2D.
TINY_QUICKSTART = [
    "experiment=quickstart",
    "data.resolution=16",
    "data.n_train=24",
    "data.n_val=8",
    "data.n_test=8",
    "data.t_in=4",
    "data.t_out=3",
    "data.batch_size=4",
    "optim.scheduler=none",
    "optim.lr=1e-2",
    "data.progress=false",
    "model.kwargs.modes=4",
    "model.kwargs.width=8",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def n_params(module: torch.nn.Module) -> int:
    """Number of parameters (meta-device modules too)."""
    return sum(p.numel() for p in module.parameters())


def run_module(
    module: str, *args: str | Path, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` (a console script's module) in ``cwd``; text output captured.

    ``env`` entries are added to this process's environment.
    """
    command = [sys.executable, "-m", module, *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=full_env)


def train_in_subprocess(tmp: Path, run: str, *overrides: str) -> subprocess.CompletedProcess:
    """``stpred-train <overrides>`` in a subprocess, data under ``tmp/ns``, run folder ``tmp/<run>``; this folder is
    on ``PYTHONPATH`` so that ``+callbacks.fault._target_=_fault_points.<Class>`` can put faults in."""
    tests = Path(__file__).resolve().parent
    return run_module(
        "stpred.apps.train",
        *overrides,
        f"data.root={tmp / 'ns'}",
        f"hydra.run.dir={tmp / run}",
        cwd=tmp,
        timeout=600,
        env={"PYTHONPATH": str(tests)},
    )


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The network's tensors (``net.*``) of a checkpoint, read as the apps read it (CRCs checked)."""
    from stpred.checkpoint import read_checkpoint

    return {k: v for k, v in read_checkpoint(path)["state_dict"].items() if k.startswith("net.")}
