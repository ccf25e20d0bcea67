"""stpred-bench: benchmark tables written as markdown and CSV.

Commands:
    stpred-bench kernels                      # CPU (or the GPU when present), all kernel shapes
    stpred-bench kernels --quick              # smaller batches, for a quick look
    stpred-bench kernels --device cuda --out docs/bench
    stpred-bench kernels --compile-only       # no GPU needed: registers, spills, smem, blocks/SM at sm_80/sm_90
    stpred-bench models                       # training samples/s and inference sequences/s per preset
    stpred-bench models --experiments quickstart,ns_fno2d --batch 8
    stpred-bench generation                   # ConvS5 time per generated frame at frames 10, 100, 400
    stpred-bench generation --published       # at the published size (d_model 256, 8 layers)
    stpred-bench gpu --doc docs/benchmarks.md # one CUDA GPU: CUDA tests, then every table into the doc (make gpu-check)
"""

from __future__ import annotations

import argparse
import csv
import platform
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stpred.apps._cli import ArgumentParser, CommandParser, run_cli

__all__ = ["main", "kernel_rows", "model_rows", "to_markdown"]

COLUMNS = ("op", "shape", "impl", "fwd_ms", "fwd_bwd_ms", "gbps", "pct_copy_bw", "pct_copy_fwd", "pct_copy_bwd",
           "tflops", "speedup")  # fmt: skip
MODEL_COLUMNS = ("experiment", "model", "params", "shape", "batch", "mode", "train_samples_per_s",
                 "infer_sequences_per_s", "peak_mem_mb")  # fmt: skip
#: How ``model_rows`` runs a model: plain float32, bf16 autocast (``bf16-mixed``), or ``torch.compile``d float32.
MODEL_MODES = ("fp32", "bf16-mixed", "compiled")
GENERATION_COLUMNS = ("model", "config", "params", "batch", "context", "frame", "ms_per_frame", "vs_first")
DEFAULT_EXPERIMENTS = ("mmnist_simvpv2", "ns_fno2d", "quickstart")


def kernel_rows(device: str, quick: bool) -> list[dict[str, Any]]:
    from stpred.kernels.conv_ssm_scan import benchmark as scan_bench
    from stpred.kernels.spectral_conv import benchmark as spectral_bench

    return scan_bench.run(device=device, quick=quick) + spectral_bench.run(device=device, quick=quick)


def preset(experiment: str, overrides: tuple[str, ...] = ()) -> tuple[DictConfig, tuple[int, ...], dict[str, int]]:
    """The composed config of an experiment preset and its model's ``in_shape`` and target, without its data."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from stpred.apps._compose import CONFIG_DIR
    from stpred.datamodules.base import shapes_from_data_config

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"experiment={experiment}", "paths.output_dir=.", *overrides],
            return_hydra_config=True,
        )
    # The datamodule class the config names answers its shapes from the config (no data is read).
    shapes = shapes_from_data_config(cfg.data)
    return cfg, tuple(int(v) for v in shapes.in_shape), shapes.target()


def _throughput_ms(model, x, y, steps: int, device: str, bf16: bool = False) -> tuple[float, float]:
    """Median ms of one training step (forward, backward, Adam) and of one no-grad forward."""
    import contextlib

    import torch

    from stpred.kernels import median_ms

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.functional.cross_entropy if y.dtype == torch.long else torch.nn.functional.mse_loss
    device_type = torch.device(device).type

    def autocast():
        return torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()

    def infer() -> None:
        with autocast():
            model(x)

    model.train()
    train_ms = median_ms(train_step, device, warmup=2, iters=steps)
    model.eval()
    with torch.no_grad():
        infer_ms = median_ms(infer, device, warmup=2, iters=steps)
    return train_ms, infer_ms


def model_rows(
    experiments: list[str], batch: int, steps: int, device: str, modes: tuple[str, ...] = ("fp32",)
) -> list[dict[str, Any]]:
    """Training and inference throughput of each preset's model on random data (data loading excluded), in each of
    ``modes`` (:data:`MODEL_MODES`), with the peak device memory on CUDA."""
    import torch

    from stpred.errors import UserError
    from stpred.registry import create_model_from_config

    unknown = sorted(set(modes) - set(MODEL_MODES))
    if unknown:
        raise UserError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODEL_MODES)}")
    cuda = device.startswith("cuda")
    rows = []
    for experiment in experiments:
        cfg, in_shape, target = preset(experiment)
        name = cfg.model.name
        for mode in modes:
            model = create_model_from_config(OmegaConf.to_container(cfg.model), in_shape, **target).to(device)
            n_params = sum(p.numel() for p in model.parameters())
            net = torch.compile(model) if mode == "compiled" else model
            x = torch.randn(batch, *in_shape, device=device)
            if "num_classes" in target:
                y = torch.randint(target["num_classes"], (batch,), device=device)
            else:
                y = torch.randn(batch, target["out_frames"], *in_shape[1:], device=device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            train_ms, infer_ms = _throughput_ms(net, x, y, steps, device, bf16=mode == "bf16-mixed")
            rows.append(
                {
                    "experiment": experiment,
                    "model": name,
                    "params": n_params,
                    "shape": f"{list(in_shape)}->{next(iter(target.values()))}",
                    "batch": batch,
                    "mode": mode,
                    "train_samples_per_s": batch / (train_ms * 1e-3),
                    "infer_sequences_per_s": batch / (infer_ms * 1e-3),
                    "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
                }
            )
            del model, net
    return rows


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def to_markdown(rows: list[dict[str, Any]], title: str, columns: tuple[str, ...] = COLUMNS) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _compile_rows() -> tuple[list[dict[str, Any]], tuple[str, ...], str]:
    """Per-kernel resources of every op's compile cases at sm_80 and sm_90 (see stpred.kernels.compile_check)."""
    import triton

    from stpred.kernels import compile_check

    reports = compile_check.compile_report()
    _, notes = compile_check.all_cases()
    columns = compile_check.COLUMNS + (("error",) if any(r.error for r in reports) else ())
    title = f"Compiled Triton kernels, sm_80 and sm_90 (triton {triton.__version__}, no GPU)"
    title += "".join(f"; {n}" for n in notes)
    return [r.row() for r in reports], columns, title


def _experiments(text: str) -> list[str]:
    """``--experiments``: comma-separated preset names, each a file of ``configs/experiment`` (checked up front, so
    that a misspelt last one does not fail after the others have been measured)."""
    import stpred.configs
    from stpred.errors import UserError

    known = sorted(p.stem for p in (Path(stpred.configs.__file__).parent / "experiment").glob("*.yaml"))
    names = [e.strip() for e in text.split(",") if e.strip()]
    if not names:
        raise UserError(f"--experiments names no preset; choose from {', '.join(known)}")
    unknown = [e for e in names if e not in known]
    if unknown:
        raise UserError(f"--experiments: unknown preset(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="stpred-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", parser_class=CommandParser)
    k = sub.add_parser("kernels", help="the conv-SSM scan and the spectral convolution")
    k.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    k.add_argument("--quick", action="store_true", help="smaller shapes for a quick look")
    k.add_argument("--out", default="bench", help="folder for kernels.md and kernels.csv")
    k.add_argument(
        "--compile-only",
        action="store_true",
        help="compile every Triton kernel for sm_80 and sm_90 (no GPU needed) and tabulate its resources "
        "(kernels_compile.md and kernels_compile.csv)",
    )
    m = sub.add_parser("models", help="training and inference throughput of experiment presets")
    m.add_argument("--experiments", default=",".join(DEFAULT_EXPERIMENTS), help="comma-separated presets")
    m.add_argument("--batch", type=int, default=4)
    m.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    m.add_argument("--device", default="auto")
    m.add_argument("--modes", default="fp32", help=f"comma-separated, of {','.join(MODEL_MODES)}")
    m.add_argument("--out", default="bench", help="folder for models.md and models.csv")
    g = sub.add_parser("generation", help="ConvS5 time per generated frame at several horizons")
    g.add_argument("--frames", default="10,100,400", help="comma-separated horizons")
    g.add_argument("--published", action="store_true", help="the published size instead of the CPU config")
    g.add_argument("--device", default="auto")
    g.add_argument("--out", default="bench", help="folder for generation.md and generation.csv")
    u = sub.add_parser("gpu", help="on one CUDA GPU: the CUDA tests, then the kernel, model and generation tables")
    u.add_argument("--doc", default="docs/benchmarks.md", help="markdown file that receives the device's section")
    u.add_argument("--experiments", default=",".join(DEFAULT_EXPERIMENTS), help="comma-separated presets")
    u.add_argument("--batch", type=int, default=16)
    u.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    u.add_argument("--test-timeout", type=float, default=200, help="seconds for the CUDA tests")
    args = parser.parse_args(argv)
    if args.what is None:
        parser.error("give a command: kernels, models, generation or gpu")
    for key in ("batch", "steps"):
        if getattr(args, key, 1) < 1:
            parser.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    return args


def _check(args: argparse.Namespace) -> argparse.Namespace:
    """Every value checked and converted before a benchmark runs: devices, horizons, presets, modes, outputs."""
    from stpred.apps._bench_generation import check_device, parse_horizons
    from stpred.apps._outputs import check_output_file, check_output_folder
    from stpred.errors import UserError

    if args.what == "gpu":
        args.experiments = _experiments(args.experiments)
        check_output_file(args.doc, "--doc")
        return args
    if args.what == "generation":
        args.frames = parse_horizons(args.frames)
    if args.what == "models":
        args.experiments = _experiments(args.experiments)
        args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        unknown = sorted(set(args.modes) - set(MODEL_MODES))
        if not args.modes:
            raise UserError(f"--modes names no mode; choose from {', '.join(MODEL_MODES)}")
        if unknown:
            raise UserError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODEL_MODES)}")
    check_output_folder(args.out, "--out")
    if not (args.what == "kernels" and args.compile_only):
        args.device = check_device(args.device)
    return args


def _run(argv: list[str] | None = None) -> None:
    import torch

    args = _check(_parse(argv))
    if args.what == "gpu":
        _gpu_check(args)
        return
    device = args.device
    name = args.what
    if args.what == "kernels" and args.compile_only:
        rows, columns, title = _compile_rows()
        name = "kernels_compile"
    elif args.what == "kernels":
        rows, columns = kernel_rows(device, args.quick), COLUMNS
        title = f"Kernels on {device_name(device)} (torch {torch.__version__}{', quick' if args.quick else ''})"
    elif args.what == "models":
        modes = args.modes
        rows, columns = model_rows(args.experiments, args.batch, args.steps, device, modes), MODEL_COLUMNS
        title = f"Model throughput on {device_name(device)} (torch {torch.__version__}, {', '.join(modes)})"
    else:
        from stpred.apps._bench_generation import run as generation_rows

        published = {"d_model": 256, "ssm_size": 256, "n_layers": 8} if args.published else {}
        rows, columns = generation_rows(device, args.frames, **published), GENERATION_COLUMNS
        title = f"ConvS5 generation per frame on {device_name(device)} (torch {torch.__version__})"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, title, columns)
    (out / f"{name}.md").write_text(markdown)
    with (out / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(markdown)
    print(f"written: {out / (name + '.md')}, {out / (name + '.csv')}")


def _gpu_check(args: argparse.Namespace) -> None:
    """``make gpu-check``: CUDA tests, copy bandwidth, kernel, model and generation tables, into ``args.doc``."""
    import time

    import torch

    from stpred.apps._bench_generation import run as generation_rows
    from stpred.apps._gpu_check import run_cuda_tests, write_device_section
    from stpred.errors import UserError
    from stpred.kernels import copy_bandwidth_gbps

    if not torch.cuda.is_available():
        raise UserError("stpred-bench gpu needs a CUDA device and none is visible; run it on a GPU machine")
    device, started = "cuda", time.perf_counter()
    name = device_name(device)
    repo = Path.cwd()
    passed, test_line = run_cuda_tests(repo, args.test_timeout)
    print(f"CUDA tests: {test_line}")
    copy = copy_bandwidth_gbps(device)
    print(f"copy bandwidth: {copy:.0f} GB/s")
    sections = [
        f"Measured with `stpred-bench gpu` (torch {torch.__version__}); CUDA tests: {test_line}"
        f"{'' if passed else ' **(FAILED)**'}; device-to-device copy bandwidth {copy:.0f} GB/s.",
        to_markdown(kernel_rows(device, quick=False), f"Kernels on {name}"),
    ]
    models = model_rows(args.experiments, args.batch, args.steps, device, MODEL_MODES)
    sections.append(to_markdown(models, f"Model throughput on {name} (batch {args.batch})", MODEL_COLUMNS))
    published = {"d_model": 256, "ssm_size": 256, "n_layers": 8}
    generation = generation_rows(device, [10, 100, 400], **published)
    sections.append(to_markdown(generation, f"ConvS5 generation per frame on {name} (published size)",
                                GENERATION_COLUMNS))  # fmt: skip
    doc = Path(args.doc)
    write_device_section(doc, name, "\n\n".join(sections))
    print("\n\n".join(sections))
    print(f"written: {doc} (section '## GPU: {name}'), {time.perf_counter() - started:.0f} s in all")
    if not passed:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    run_cli("stpred-bench", lambda: _run(argv))


if __name__ == "__main__":
    main()
