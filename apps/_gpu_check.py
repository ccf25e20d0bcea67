"""Pieces of ``stpred-bench gpu`` (``make gpu-check``): the CUDA test run, the device section of a markdown file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["CUDA_TEST_FILES", "run_cuda_tests", "write_device_section"]

#: The tests that exercise kernels and models; on a CUDA machine they run the Triton kernels compiled, not interpreted.
CUDA_TEST_FILES = (
    "tests/test_kernel_conv_ssm_scan.py",
    "tests/test_kernel_spectral_conv.py",
    "tests/test_layer_conv_ssm.py",
    "tests/test_layer_spectral_conv.py",
    "tests/test_models.py",
)


def run_cuda_tests(repo: Path, timeout_s: float) -> tuple[bool, str]:
    """Run the kernel and model tests with the GPU visible and the Triton interpreter off.

    Returns ``(passed, summary line)``; a source tree without ``tests/`` is reported, not failed.
    """
    files = [f for f in CUDA_TEST_FILES if (repo / f).is_file()]
    if not files:
        return True, f"no tests found under {repo} (an installed package); kernel tests not run"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *files],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return False, f"CUDA tests did not finish in {timeout_s:.0f} s"
    # pytest's closing line ends stdout; a run that died before it leaves its reason last on stderr.
    lines = [line for text in (proc.stdout, proc.stderr) for line in text.splitlines() if line.strip()]
    stdout_lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = (stdout_lines or lines or [f"pytest exited {proc.returncode} with no output"])[-1]
    return proc.returncode == 0, f"{summary} ({time.perf_counter() - started:.0f} s)"


def write_device_section(doc: Path, device: str, body: str) -> None:
    """Put ``body`` under ``## GPU: <device>`` in ``doc``, replacing an earlier section for the same device."""
    from stpred.atomic import atomic_output

    heading = f"## GPU: {device}"
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    with atomic_output(doc) as tmp:
        tmp.write_text(text)
