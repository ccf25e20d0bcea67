"""stpred-import: turn weights saved by a reference implementation into an stpred checkpoint.

The checkpoint is self-describing, like one written by stpred-train: stpred.load_predictor, stpred-eval, stpred-demo
and stpred-forecast read it as they read a trained one. Files are loaded with weights_only=True (and neuraloperator's
metadata pickle with a restricted unpickler); nothing in them is executed.

Commands:
    stpred-import simvp_mmnist.pth --data mmnist --out mmnist_simvpv2.ckpt          # OpenSTL model zoo / checkpoint.pth
    stpred-import latest.pth --in-shape 10,1,64,64 --out simvp.ckpt                 # OpenSTL trainer's latest.pth
    stpred-import best.ckpt --in-shape 10,1,64,64 --out simvp.ckpt                  # OpenSTL-Lightning (model. keys)
    stpred-import checkpoint.pth --model predformer --heads 8 --in-shape 10,1,64,64 --out predformer.ckpt
    stpred-import fno_state_dict.pt --data navier_stokes --out ns_fno2d.ckpt        # neuraloperator save_checkpoint
    stpred-import fno.pt --in-shape 10,1,64,64 --mean 0.1 --std 0.5 --out fno.ckpt  # torch.save(model.state_dict())
    stpred-import SqueezeTime_K400_71.64.pth --in-shape 16,3,224,224 --out k400_squeezetime.ckpt   # mmaction2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stpred.apps._cli import ArgumentParser, run_cli
from stpred.apps._outputs import check_output_file
from stpred.errors import UserError

__all__ = ["main", "run_import"]

PROG = "stpred-import"


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def data_metadata(name: str, options: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metadata, data config)`` of ``configs/data/<name>.yaml`` with ``key=value`` options, from its datamodule
    (which may read its files or generate data, as stpred-train would)."""
    from omegaconf import OmegaConf

    from stpred.apps._compose import build_datamodule, compose

    for opt in options:
        if "=" not in opt:
            raise UserError(f"--data-option takes key=value, got {opt!r}")
    cfg = compose("train", [f"data={name}", *[f"data.{opt}" for opt in options]])
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    dm = build_datamodule(OmegaConf.create(data_cfg), "fit")
    return dm.metadata(), data_cfg


def run_import(args: argparse.Namespace) -> list[str]:
    """Import ``args.weights`` as the flags say; returns the report lines."""
    from stpred.importers import import_weights

    check_output_file(args.out, "--out")  # before reading weights or building a datamodule
    data, data_cfg = None, None
    if args.data is not None:
        if args.mean is not None or args.std is not None:
            raise UserError("--mean/--std are for imports without --data; the data config gives the normalisation")
        data, data_cfg = data_metadata(args.data, args.data_option)
    elif args.data_option:
        raise UserError("--data-option needs --data <config name>")
    report = import_weights(
        args.weights,
        args.out,
        model=args.model,
        in_shape=args.in_shape,
        out_frames=args.out_frames,
        arrangement=args.arrangement,
        heads=args.heads,
        metadata_file=args.metadata,
        data=data,
        datamodule=data_cfg,
        mean=args.mean,
        std=args.std,
        force=args.force,
    )
    return report.lines()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("weights", type=Path, help="the reference file (.pth, .ckpt, .pt; for a pair, either file)")
    parser.add_argument("--out", type=Path, required=True, help="the stpred .ckpt to write")
    parser.add_argument(
        "--model", choices=("simvpv2", "predformer", "fno2d", "squeezetime"), help="default: read from the keys"
    )
    parser.add_argument("--in-shape", help="T,C,H,W of one input (default: from --data); H, W are not in the file")
    parser.add_argument("--out-frames", type=int, help="forecast length (default: from --data, else the model's own)")
    parser.add_argument("--arrangement", help="PredFormer: TSST, STTS, TS, ST, TST, STS, full or fac_ts")
    parser.add_argument("--heads", type=int, help="PredFormer: attention heads (the file stores heads * dim_head)")
    parser.add_argument("--metadata", type=Path, help="neuraloperator: the _metadata.pkl, when not beside the .pt")
    parser.add_argument("--data", help="a data config name (configs/data/<name>.yaml): shapes and normalisation")
    parser.add_argument(
        "--data-option", action="append", default=[], metavar="KEY=VALUE", help="override a data config key"
    )
    parser.add_argument("--mean", type=_floats, help="without --data: per-channel mean, comma-separated (default 0)")
    parser.add_argument("--std", type=_floats, help="without --data: per-channel std, comma-separated (default 1)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_cli(PROG, lambda: print("\n".join(run_import(_parse(argv)))))


if __name__ == "__main__":
    main()
