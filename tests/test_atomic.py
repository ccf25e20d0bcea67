"""stpred.atomic.atomic_output: the result's permissions follow the umask; errors, Ctrl-C and SIGTERM leave nothing."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stpred.atomic import atomic_output


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_output_gets_the_permissions_of_the_umask(tmp_path: Path, mask: int) -> None:
    before = os.umask(mask)
    try:
        with atomic_output(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        # a plain open() is the reference for what a new file gets under this umask
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(before)
    got = stat.S_IMODE((tmp_path / "out.json").stat().st_mode)
    assert got == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "plain.json"]


def test_an_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.h5"
    target.write_bytes(b"old")
    for error in (ValueError, KeyboardInterrupt):
        with pytest.raises(error), atomic_output(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".h5"
            tmp.write_bytes(b"half")
            raise error
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.h5"]


WRITER = """
import signal, sys, time
from pathlib import Path
from stpred.atomic import atomic_output
# A shell that starts a job in the background makes it ignore SIGINT, and Python then keeps that; the test is about
# what atomic_output does on KeyboardInterrupt, so restore Python's own handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
with atomic_output(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"x" * 4096)
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_writer_leaves_no_file(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out / "cache.h5")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert len(list(out.iterdir())) == 1  # the temporary file exists while writing
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0, err
    assert list(out.iterdir()) == [], err
