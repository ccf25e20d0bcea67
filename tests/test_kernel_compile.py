"""Every Triton kernel compiles for sm_80 and sm_90 without a GPU, with no spills, enough occupancy and, where a
case asks for them, tensor-core instructions (see stpred.kernels.compile_check)."""

from __future__ import annotations

import pytest

from stpred.kernels.compile_check import TARGETS, all_cases, blocks_per_sm, compile_report

pytest.importorskip("triton")

CASES, NOTES = all_cases()
TARGET_NAMES = tuple(TARGETS)


@pytest.fixture(scope="session")
def reports():
    """One compile of every case for both targets (in a child process when this one interprets Triton)."""
    return compile_report(TARGET_NAMES)


def test_cases_exist():
    assert any(c.name.startswith("scan ") for c in CASES), [c.name for c in CASES]
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("target", TARGET_NAMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kernel_resources(reports, case, target):
    mine = [r for r in reports if r.case == case.name and r.target == target]
    assert mine, f"no report for {case.name} at {target}"
    for r in mine:
        where = f"{r.kernel} ({case.name}, {target})"
        assert r.error is None, f"{where} failed to compile: {r.error}"
        assert r.spill_bytes == 0, f"{where} spills {r.spill_bytes} bytes"
        assert r.stack_bytes == 0 and r.local_bytes == 0, f"{where} uses a local stack: {r.stack_bytes} B"
        assert r.blocks_per_sm >= 2, f"{where}: {r.blocks_per_sm} block/SM ({r.limiter}, {r.registers} regs)"
        if case.tensor_cores:
            assert r.tensor_cores, f"{where} has no HMMA/wgmma instruction"


def test_scan_uses_128_bit_global_accesses(reports):
    """The scan is a streaming kernel: its loads and stores (fp32 and bf16) must be vectorised to 128 bits."""
    scan = [r for r in reports if r.case.startswith("scan ")]
    assert scan
    for r in scan:
        assert r.ldg128 and r.stg128, f"{r.kernel} ({r.case}, {r.target}): ldg128={r.ldg128} stg128={r.stg128}"


def test_blocks_per_sm_against_hand_counts():
    sm80 = TARGETS["sm_80"]
    # 4 warps x 32 threads x 128 regs = 16K regs/block -> 4 blocks in 64K.
    assert blocks_per_sm(sm80, 4, 128, 0) == (4, "regs")
    # 129 regs round up to 136 per thread (256 per warp): 65536 // (136*32) = 15 warps -> 3 blocks of 4 warps.
    assert blocks_per_sm(sm80, 4, 129, 0) == (3, "regs")
    # 8 warps x 32 regs: 8 blocks by threads (2048 / 256); 100 KB smem + 1 KB reserved -> 1 block of 164 KB.
    assert blocks_per_sm(sm80, 8, 32, 0) == (8, "threads")
    assert blocks_per_sm(sm80, 8, 32, 100 * 1024) == (1, "smem")
    assert blocks_per_sm(TARGETS["sm_90"], 8, 32, 100 * 1024) == (2, "smem")
    assert blocks_per_sm(sm80, 1, 16, 0) == (32, "blocks")


def test_bench_has_compile_only_option():
    from stpred.apps.bench import _parse

    assert _parse(["kernels", "--compile-only", "--out", "x"]).compile_only
    assert not _parse(["kernels"]).compile_only


def test_interpreter_flag_is_left_alone(reports):
    """Without a GPU conftest turns Triton's interpreter on for this process; compiling (in a child) leaves it on,
    and compiling in this process is refused with a clear message."""
    import os

    import torch
    from triton import knobs

    from stpred.kernels.compile_check import compile_case

    assert reports
    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1" and knobs.runtime.interpret
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            compile_case(CASES[0], "sm_80")
