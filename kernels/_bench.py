"""Timing helpers shared by the kernel benchmarks: medians after warm-up, device events on CUDA."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["median_ms", "copy_bandwidth_gbps"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn: Callable[[], object],
    device: torch.device | str,
    *,
    warmup: int = 3,
    iters: int = 10,
    setup: Callable[[], object] | None = None,
) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA events on GPU, ``perf_counter`` on CPU).

    ``setup()``, when given, runs before every call of ``fn`` and is not timed (e.g. refilling a buffer that
    ``fn`` consumes).
    """
    device = torch.device(device)
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        if setup is not None:
            setup()
            _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbps(device: torch.device | str, n_bytes: int = 1 << 28) -> float:
    """Measured device-to-device copy bandwidth (read + write bytes per second, in GB/s)."""
    device = torch.device(device)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=3, iters=10)
    return 2 * n_bytes / (ms * 1e-3) / 1e9
