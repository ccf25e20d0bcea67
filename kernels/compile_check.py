"""Compile the Triton kernels for real CUDA targets without a GPU, and read their resources.

A *case* calls an op's own Triton launcher with CPU tensors at a real launch configuration. While it runs, a
stand-in Triton driver reports the chosen target (``sm_80`` or ``sm_90``), so Triton compiles PTX and a cubin
with the ptxas it bundles, and the launch itself is a no-op. Every kernel compiled is captured and measured:
registers, stack and local memory (``cuobjdump -res-usage`` on the cubin), spill bytes (``ptxas -v`` rerun on the
kernel's PTX with Triton's flags), static and dynamic shared memory, blocks per SM against the target's limits,
tensor-core instructions and 128-bit global accesses in the SASS.

Each op package provides ``kernels/<op>/compile_cases.py`` with ``compile_cases() -> list[CompileCase]``;
:func:`compile_report` walks them all. Triton's interpreter (``TRITON_INTERPRET=1``) replaces ``@triton.jit``
functions at definition time, so in such a process the compilation runs in a child process without the flag.

Command line: ``python -m stpred.kernels.compile_check [--targets sm_80,sm_90] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CompileCase",
    "KernelReport",
    "Target",
    "TARGETS",
    "OP_CASE_MODULES",
    "all_cases",
    "compile_case",
    "compile_report",
    "stand_in_sm_count",
]


@dataclass(frozen=True)
class CompileCase:
    """One launch of an op's Triton launcher to compile (never to run)."""

    name: str  # e.g. "scan fwd B8 P128 16x16 fp32"
    run: Callable[[], None]  # calls the op's own Triton launcher with CPU tensors
    tensor_cores: bool = False  # kernels of this case must use HMMA/wgmma


@dataclass(frozen=True)
class Target:
    """Per-SM limits of one CUDA target (the devices the project benchmarks on: A100 for sm_80, H100 for sm_90)."""

    name: str
    arch: int
    sm_count: int
    regs_per_sm: int = 65536
    smem_per_sm: int = 164 * 1024  # usable by blocks
    smem_per_block: int = 163 * 1024  # opt-in maximum of one block
    smem_reserved_per_block: int = 1024  # the runtime's per-block reservation (sm_80 and later)
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32
    reg_alloc_unit: int = 256  # registers, per warp


TARGETS: dict[str, Target] = {
    "sm_80": Target("sm_80", 80, sm_count=108),
    "sm_90": Target("sm_90", 90, sm_count=132, smem_per_sm=228 * 1024, smem_per_block=227 * 1024),
}

#: The modules holding each op's ``compile_cases()``; a missing one is reported, not fatal.
OP_CASE_MODULES = (
    "stpred.kernels.conv_ssm_scan.compile_cases",
    "stpred.kernels.spectral_conv.compile_cases",
)


@dataclass
class KernelReport:
    """Resources of one compiled kernel of one case at one target (``error`` set when the case failed)."""

    case: str
    kernel: str
    target: str
    num_warps: int = 0
    num_stages: int = 0
    registers: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0
    local_bytes: int = 0
    static_smem: int = 0
    dynamic_smem: int = 0
    blocks_per_sm: int = 0
    limiter: str = ""
    tensor_cores: bool = False
    tensor_cores_required: bool = False
    ldg128: bool = False
    stg128: bool = False
    error: str | None = None

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes

    @property
    def smem(self) -> int:
        return self.static_smem + self.dynamic_smem

    def row(self) -> dict[str, object]:
        """A flat row for tables (markdown, CSV)."""
        return {
            "case": self.case,
            "kernel": self.kernel,
            "target": self.target,
            "warps": self.num_warps,
            "regs": self.registers,
            "spill_bytes": self.spill_bytes,
            "stack_bytes": self.stack_bytes,
            "smem_bytes": self.smem,
            "blocks_per_sm": self.blocks_per_sm,
            "limiter": self.limiter,
            "tensor_cores": "yes" if self.tensor_cores else "no",
            "ldg128": "yes" if self.ldg128 else "no",
            "stg128": "yes" if self.stg128 else "no",
            "error": self.error or "",
        }


# ---------------------------------------------------------------------------------------------------------------
# Stand-in driver
# ---------------------------------------------------------------------------------------------------------------

_active_target: Target | None = None
_device_ids = itertools.count(1 << 20)


def stand_in_sm_count() -> int | None:
    """The SM count of the target being compiled for, or ``None`` outside :func:`compile_case`. Launchers size
    their grids with it for CPU tensors, as they would with the device's own count."""
    return None if _active_target is None else _active_target.sm_count


class _Utils:
    def __init__(self, target: Target) -> None:
        self.target = target

    def get_device_properties(self, device: int) -> dict[str, int]:
        t = self.target
        return {
            "max_shared_mem": t.smem_per_block,
            "multiprocessor_count": t.sm_count,
            "max_num_regs": t.regs_per_sm,
            "warpSize": 32,
            "sm_clock_rate": 0,
            "mem_clock_rate": 0,
            "mem_bus_width": 0,
        }

    def load_binary(self, name, kernel, shared, device):
        return None, None, 0, 0, 1024  # module, function, n_regs, n_spills, max threads per block

    def unload_module(self, module) -> None:
        pass


class _StandInDriver:
    """Just enough of Triton's driver interface to compile for ``target`` and make launches no-ops. Each instance
    has a fresh device id, so a JIT function's per-device caches never hand it a kernel of another target (or
    of an earlier case: every kernel a case launches is compiled, from Triton's disk cache when warm)."""

    def __init__(self, target: Target) -> None:
        from triton.backends.compiler import GPUTarget

        self.gpu_target = GPUTarget("cuda", target.arch, 32)
        self.device = next(_device_ids)
        self.utils = _Utils(target)
        self.launcher_cls = lambda src, metadata: lambda *args, **kwargs: None

    def get_current_device(self) -> int:
        return self.device

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self):
        return self.gpu_target

    def get_device_capability(self, device: int | None = None) -> tuple[int, int]:
        return divmod(self.gpu_target.arch, 10)

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty

    def get_benchmarker(self):
        """Autotuners time every config: each is compiled (and captured), and all tie."""

        def bench(fn, *args, quantiles=None, **kwargs):
            fn()
            return [1.0] * len(quantiles) if quantiles else 1.0

        return bench

    def get_empty_cache_for_benchmark(self):
        import torch

        return torch.empty(0)

    def clear_cache(self, cache) -> None:
        pass


@contextlib.contextmanager
def _stand_in(target: Target) -> Iterator[list]:
    """Install the stand-in driver and capture every ``CompiledKernel`` compiled meanwhile; restore both after."""
    global _active_target
    import triton.compiler
    from triton.runtime import driver

    captured: list = []
    real_compile = triton.compiler.compile

    def capturing_compile(*args, **kwargs):
        kernel = real_compile(*args, **kwargs)
        captured.append(kernel)
        return kernel

    saved_active = driver._active  # the raw slot: reading ``driver.active`` would create a (GPU) driver
    driver.set_active(_StandInDriver(target))
    triton.compiler.compile = capturing_compile
    _active_target = target
    try:
        yield captured
    finally:
        _active_target = None
        triton.compiler.compile = real_compile
        driver._active = saved_active


# ---------------------------------------------------------------------------------------------------------------
# Reading a compiled kernel
# ---------------------------------------------------------------------------------------------------------------


def _nvidia_bin(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else name


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself uses for ``arch`` (it bundles more than one)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).path


def _res_usage(cubin: bytes) -> dict[str, int]:
    """``cuobjdump -res-usage``: REG, STACK, SHARED (static), LOCAL of the (single) kernel in ``cubin``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([_nvidia_bin("cuobjdump"), "-res-usage", str(path)], capture_output=True, text=True)
    found = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out.stdout))
    if "REG" not in found:
        raise RuntimeError(f"cuobjdump -res-usage gave no resources: {out.stdout}{out.stderr}")
    return {k: int(v) for k, v in found.items()}


def _ptxas_spills(ptx: str, arch: int, fp_fusion: bool) -> tuple[int, int, int]:
    """``(stack frame, spill stores, spill loads)`` in bytes from ``ptxas -v`` with Triton's own flags."""
    gpu = f"sm_{arch}{'a' if arch >= 90 else ''}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        cmd = [_ptxas(arch), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}"]
        cmd += [] if fp_fusion else ["--fmad=false"]
        out = subprocess.run([*cmd, str(src), "-o", str(Path(tmp) / "k.o")], capture_output=True, text=True)
    log = out.stdout + out.stderr
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"ptxas -v failed: {log}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


_TC_SASS = re.compile(r"\b(HMMA|HGMMA|IMMA|IGMMA|QGMMA)\b")
_TC_PTX = re.compile(r"\b(mma\.sync|wgmma\.mma_async)\b")
_GLOBAL_128 = re.compile(r"\b(LDG|STG)(?:\.[A-Z0-9_]+)*\.128\b")


def blocks_per_sm(target: Target, num_warps: int, registers: int, smem: int) -> tuple[int, str]:
    """Resident blocks per SM and what limits them (``threads``, ``regs``, ``smem`` or ``blocks``)."""
    threads = num_warps * 32
    regs_per_warp = -(-max(registers, 1) * 32 // target.reg_alloc_unit) * target.reg_alloc_unit
    limits = {
        "blocks": target.blocks_per_sm,
        "threads": target.threads_per_sm // threads,
        "regs": (target.regs_per_sm // regs_per_warp) // num_warps,
    }
    if smem > 0:
        limits["smem"] = target.smem_per_sm // (smem + target.smem_reserved_per_block)
    limiter = min(limits, key=lambda k: (limits[k], k != "blocks"))
    return limits[limiter], limiter


_measured: dict[tuple[str, str], KernelReport] = {}


def _report(case: CompileCase, target: Target, kernel) -> KernelReport:
    """The kernel's resources, measured once per (kernel hash, target) and relabelled for each case."""
    key = (kernel.hash, target.name)
    if key not in _measured:
        _measured[key] = _measure(case, target, kernel)
    return dataclasses.replace(_measured[key], case=case.name, tensor_cores_required=case.tensor_cores)


def _measure(case: CompileCase, target: Target, kernel) -> KernelReport:
    md = kernel.metadata
    res = _res_usage(kernel.asm["cubin"])
    stack, spill_st, spill_ld = _ptxas_spills(kernel.asm["ptx"], target.arch, bool(getattr(md, "enable_fp_fusion", 1)))
    sass = kernel.asm["sass"]
    dynamic = int(md.shared)
    static = res.get("SHARED", 0)
    blocks, limiter = blocks_per_sm(target, md.num_warps, res["REG"], static + dynamic)
    globals128 = {m.group(1) for m in _GLOBAL_128.finditer(sass)}
    return KernelReport(
        case=case.name,
        kernel=md.name,
        target=target.name,
        num_warps=md.num_warps,
        num_stages=getattr(md, "num_stages", 0),
        registers=res["REG"],
        spill_store_bytes=spill_st,
        spill_load_bytes=spill_ld,
        stack_bytes=max(stack, res.get("STACK", 0)),
        local_bytes=res.get("LOCAL", 0),
        static_smem=static,
        dynamic_smem=dynamic,
        blocks_per_sm=blocks,
        limiter=limiter,
        tensor_cores=bool(_TC_SASS.search(sass) or _TC_PTX.search(kernel.asm["ptx"])),
        tensor_cores_required=case.tensor_cores,
        ldg128="LDG" in globals128,
        stg128="STG" in globals128,
    )


# ---------------------------------------------------------------------------------------------------------------
# Running cases
# ---------------------------------------------------------------------------------------------------------------


def _interpreted() -> bool:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return True
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except ImportError:
        return False


def compile_case(case: CompileCase, target: str | Target) -> list[KernelReport]:
    """Compile every kernel ``case`` launches for ``target``, in this process (which must not be interpreting).

    Returns one report per distinct compiled kernel, or a single report with ``error`` set if the case failed.
    """
    target = TARGETS[target] if isinstance(target, str) else target
    if _interpreted():
        raise RuntimeError("TRITON_INTERPRET is on in this process; use compile_report(), which compiles in a child")
    try:
        with _stand_in(target) as captured:
            case.run()
        seen, reports = set(), []
        for kernel in captured:
            if kernel.hash not in seen:
                seen.add(kernel.hash)
                reports.append(_report(case, target, kernel))
        if not reports:
            raise RuntimeError("the case compiled no Triton kernel")
        return reports
    except Exception as exc:  # reported per case, so one failure does not hide the others
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        return [KernelReport(case=case.name, kernel="-", target=target.name, error=error)]


def all_cases() -> tuple[list[CompileCase], list[str]]:
    """Every op's cases, and a note for each op module that is missing."""
    cases, notes = [], []
    for module in OP_CASE_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
            notes.append(f"{module} is absent: its kernels are not compiled")
            continue
        cases += mod.compile_cases()
    return cases, notes


def _report_here(targets: tuple[str, ...]) -> list[KernelReport]:
    cases, _ = all_cases()
    return [r for t in targets for case in cases for r in compile_case(case, t)]


def compile_report(targets: tuple[str, ...] = ("sm_80", "sm_90")) -> list[KernelReport]:
    """Compile every op's cases for every target and return one report per kernel (see :class:`KernelReport`).

    In a process running Triton's interpreter the work is done in a child process with ``TRITON_INTERPRET``
    unset (the interpreter replaced the kernels when they were defined); the flag stays as it is here.
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; choose from {sorted(TARGETS)}")
    if not _interpreted():
        return _report_here(tuple(targets))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "stpred.kernels.compile_check", "--json", "--targets", ",".join(targets)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"compiling in a child process failed:\n{out.stderr[-4000:]}")
    return [KernelReport(**r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


COLUMNS = ("case", "kernel", "target", "warps", "regs", "spill_bytes", "stack_bytes", "smem_bytes",
           "blocks_per_sm", "limiter", "tensor_cores", "ldg128", "stg128")  # fmt: skip


def to_markdown(reports: list[KernelReport], title: str = "Compiled resources") -> str:
    """A markdown table of ``reports`` (one row per kernel, case and target)."""
    columns = COLUMNS + (("error",) if any(r.error for r in reports) else ())
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.row()[c]) for c in columns) + " |" for r in reports]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="sm_80,sm_90")
    parser.add_argument("--json", action="store_true", help="one JSON line of reports (for a parent process)")
    args = parser.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    reports = compile_report(targets)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in reports]))
    else:
        _, notes = all_cases()
        print(to_markdown(reports) + "".join(f"\nNote: {n}" for n in notes))


if __name__ == "__main__":
    # Run as ``-m``, this file is ``__main__``; the launchers consult the importable module's target.
    from stpred.kernels.compile_check import main as _main

    _main()
