"""Small helpers shared by test modules (imported as ``from _helpers import ...``, like ``_hydra``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

__all__ = ["TINY_QUICKSTART", "n_params", "run_module"]

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
