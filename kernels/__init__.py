"""Custom ops with PyTorch references, Triton kernels, autograd wrappers and dispatch.

Importing this package never requires Triton or a GPU.
"""

from stpred.kernels._bench import copy_bandwidth_gbps, median_ms
from stpred.kernels._dispatch import get_backend, has_triton, resolve_impl, set_backend, triton_interpreted

__all__ = [
    "set_backend",
    "get_backend",
    "has_triton",
    "resolve_impl",
    "triton_interpreted",
    "median_ms",
    "copy_bandwidth_gbps",
]
