"""Backend choice for every op: Triton on CUDA when it is importable, the PyTorch reference elsewhere.

``STPRED_DISABLE_TRITON=1`` or ``set_backend("reference")`` forces the reference; ``set_backend("triton")``
forces Triton (on CPU this only works under ``TRITON_INTERPRET=1``). A layer's own ``impl`` argument
(``"auto" | "triton" | "torch"``) overrides the global backend.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = ["set_backend", "get_backend", "has_triton", "triton_interpreted", "resolve_impl"]

_BACKENDS = ("auto", "triton", "reference")
_backend = "auto"


def set_backend(name: str) -> None:
    """Set the global backend: ``"auto"``, ``"triton"`` or ``"reference"``."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown kernel backend '{name}'; choose one of {_BACKENDS}")
    _backend = name


def get_backend() -> str:
    return _backend


# Marked constant so that torch.compile calls it at trace time instead of tracing the cached import probe.
@torch.compiler.assume_constant_result
def has_triton() -> bool:
    """Whether the ``triton`` package can be imported (it need not have a GPU)."""
    return _probe_triton()


@functools.cache
def _probe_triton() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """Return ``"triton"`` or ``"torch"`` for a call on ``tensors``.

    Args:
        impl: the caller's request, ``"auto"``, ``"triton"`` or ``"torch"``.
        tensors: the op's inputs; ``"auto"`` picks Triton only when all are on CUDA.
    """
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got '{impl}'")
    if impl == "torch":
        return "torch"
    if impl == "triton":
        if not has_triton():
            raise RuntimeError("impl='triton' was requested but the 'triton' package is not installed")
        return "triton"
    if _backend == "reference" or os.environ.get("STPRED_DISABLE_TRITON", "0") == "1":
        return "torch"
    if _backend == "triton":
        return "triton" if has_triton() else "torch"
    on_cuda = all(t.is_cuda for t in tensors)
    return "triton" if on_cuda and has_triton() else "torch"
