"""Shared fixtures. Real data comes through the STPRED_DATA setting (the CI script sets it).

``STPRED_DATA`` may be relative (the README runs ``STPRED_DATA=../shared/data make test`` from the repository root):
it is made absolute here, once, against the folder pytest was launched from, and written back to ``os.environ`` so
that code reading it later (configs' ``paths.data_dir``, subprocesses started from a test's temporary folder) sees
the same folder. Unset, it defaults to ``<repository>/../shared/data`` when that folder exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "STPRED_DATA"


def _resolve_data_env() -> str | None:
    """The absolute STPRED_DATA, exported to the environment; ``None`` when unset and no default folder exists."""
    raw = os.environ.get(DATA_ENV)
    if raw:
        path = os.path.abspath(os.path.expanduser(raw))
    else:
        default = REPO_ROOT.parent / "shared" / "data"
        if not default.is_dir():
            return None
        path = str(default)
    os.environ[DATA_ENV] = path
    return path


DATA_ROOT = _resolve_data_env()

# Without a GPU the Triton kernels run in Triton's interpreter. It reads this at kernel definition time, so it
# is set here, before any test module imports a kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of small real files (MNIST digits, ERA5 t2m, Kinetics clips), from ``STPRED_DATA`` (absolute)."""
    if DATA_ROOT is None:
        raise RuntimeError(
            f"set {DATA_ENV} to the folder of shared real data (e.g. {DATA_ENV}=../shared/data); "
            f"the default {REPO_ROOT.parent / 'shared' / 'data'} does not exist"
        )
    path = Path(DATA_ROOT)
    if not path.is_dir():
        raise RuntimeError(f"{DATA_ENV}={DATA_ROOT} is not a folder")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): its tensors are
    tiny, and intra-op threads only contend on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kinetics_clips(shared_data: Path) -> dict[str, Path]:
    """The two real Kinetics clips of the shared data, by class name."""
    video = shared_data / "video"
    return {
        "arm wrestling": video / "kinetics_arm_wrestling.mp4",
        "cleaning pool": video / "kinetics_cleaning_pool.mp4",
    }


@pytest.fixture(scope="session")
def kinetics_label_map(shared_data: Path) -> Path:
    """The real Kinetics-400 label map (400 class names, one a line)."""
    return shared_data / "video" / "label_map_k400.txt"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
