"""Shared fixtures. Real data comes through the STPRED_DATA setting (the CI script sets it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter. It reads this at kernel definition time, so it
# is set here, before any test module imports a kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of small real files (MNIST digits, ERA5 t2m, Kinetics clips), from ``STPRED_DATA``."""
    root = os.environ.get("STPRED_DATA")
    if not root:
        raise RuntimeError("set STPRED_DATA to the folder of shared real data (e.g. ../shared/data)")
    path = Path(root)
    if not path.is_dir():
        raise RuntimeError(f"STPRED_DATA={root} is not a folder")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
