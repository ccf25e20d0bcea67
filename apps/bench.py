"""stpred-bench: benchmark tables written as markdown and CSV.

Commands:
    stpred-bench kernels                      # CPU (or the GPU when present), all kernel shapes
    stpred-bench kernels --quick              # smaller batches, for a quick look
    stpred-bench kernels --device cuda --out docs/bench
    stpred-bench models                       # training samples/s and inference sequences/s per preset
    stpred-bench models --experiments quickstart,ns_fno2d --batch 8
"""

from __future__ import annotations

import argparse
import csv
import platform
from pathlib import Path
from typing import Any

from stpred.apps._cli import run_cli
from stpred.errors import UserError

__all__ = ["main", "kernel_rows", "model_rows", "to_markdown"]

COLUMNS = ("op", "shape", "impl", "fwd_ms", "fwd_bwd_ms", "gbps", "pct_copy_bw", "tflops", "speedup")
MODEL_COLUMNS = ("experiment", "model", "params", "shape", "batch", "train_samples_per_s", "infer_sequences_per_s")
DEFAULT_EXPERIMENTS = ("mmnist_simvpv2", "ns_fno2d", "quickstart")


def kernel_rows(device: str, quick: bool) -> list[dict[str, Any]]:
    from stpred.kernels.conv_ssm_scan import benchmark as scan_bench
    from stpred.kernels.spectral_conv import benchmark as spectral_bench

    return scan_bench.run(device=device, quick=quick) + spectral_bench.run(device=device, quick=quick)


def _preset(experiment: str) -> tuple[str, dict[str, Any], tuple[int, int, int, int], int]:
    """Model name, kwargs, ``in_shape`` and ``out_frames`` of an experiment preset, without building its data."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from stpred.apps.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}", "paths.output_dir=."])
    data = cfg.data
    size = data.get("resolution") or data.get("image_size")
    in_shape = (int(data.t_in), int(data.get("channels", 1)), int(size), int(size))
    return cfg.model.name, OmegaConf.to_container(cfg.model.kwargs), in_shape, int(data.t_out)


def _throughput_ms(model, x, y, steps: int, device: str) -> tuple[float, float]:
    """Median ms of one training step (forward, backward, Adam) and of one no-grad forward."""
    import torch

    from stpred.kernels._bench import median_ms

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    model.train()
    train_ms = median_ms(train_step, device, warmup=1, iters=steps)
    model.eval()
    with torch.no_grad():
        infer_ms = median_ms(lambda: model(x), device, warmup=1, iters=steps)
    return train_ms, infer_ms


def model_rows(experiments: list[str], batch: int, steps: int, device: str) -> list[dict[str, Any]]:
    """Training and inference throughput of each preset's model on random data (data loading excluded)."""
    import torch

    import stpred

    rows = []
    for experiment in experiments:
        name, kwargs, in_shape, out_frames = _preset(experiment)
        model = stpred.create_model(name, in_shape=in_shape, out_frames=out_frames, **kwargs).to(device)
        x = torch.randn(batch, *in_shape, device=device)
        y = torch.randn(batch, out_frames, *in_shape[1:], device=device)
        train_ms, infer_ms = _throughput_ms(model, x, y, steps, device)
        rows.append(
            {
                "experiment": experiment,
                "model": name,
                "params": sum(p.numel() for p in model.parameters()),
                "shape": f"{list(in_shape)}->{out_frames}",
                "batch": batch,
                "train_samples_per_s": batch / (train_ms * 1e-3),
                "infer_sequences_per_s": batch / (infer_ms * 1e-3),
            }
        )
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stpred-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kernels", help="the conv-SSM scan and the spectral convolution")
    k.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    k.add_argument("--quick", action="store_true", help="smaller shapes for a quick look")
    k.add_argument("--out", default="bench", help="folder for kernels.md and kernels.csv")
    m = sub.add_parser("models", help="training and inference throughput of experiment presets")
    m.add_argument("--experiments", default=",".join(DEFAULT_EXPERIMENTS), help="comma-separated presets")
    m.add_argument("--batch", type=int, default=4)
    m.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    m.add_argument("--device", default="auto")
    m.add_argument("--out", default="bench", help="folder for models.md and models.csv")
    return parser.parse_args(argv)


def _run(argv: list[str] | None = None) -> None:
    import torch

    args = _parse(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is visible; use --device cpu")
    if args.what == "kernels":
        rows, columns = kernel_rows(device, args.quick), COLUMNS
        title = f"Kernels on {device_name(device)} (torch {torch.__version__}{', quick' if args.quick else ''})"
    else:
        experiments = [e for e in args.experiments.split(",") if e]
        rows, columns = model_rows(experiments, args.batch, args.steps, device), MODEL_COLUMNS
        title = f"Model throughput on {device_name(device)} (torch {torch.__version__}, float32)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, title, columns)
    (out / f"{args.what}.md").write_text(markdown)
    with (out / f"{args.what}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(markdown)
    print(f"written: {out / (args.what + '.md')}, {out / (args.what + '.csv')}")


def main(argv: list[str] | None = None) -> None:
    run_cli("stpred-bench", lambda: _run(argv))


if __name__ == "__main__":
    main()
