"""stpred-zoo: the shipped demo checkpoints (``zoo:<name>`` wherever a checkpoint path goes).

Commands:
    stpred-zoo list                                  # name, data, task, main score vs persistence, params, size
    stpred-zoo show era5-t2m-simvpv2                 # one entry in full, with its training command
    STPRED_DATA=../shared/data stpred-zoo train      # retrain every entry (fixed seeds), rewrite files and zoo.json
    STPRED_DATA=../shared/data stpred-zoo train ns-fno2d era5-t2m-simvpv2
    STPRED_DATA=../shared/data stpred-zoo clips runs/zoo/clips   # the clip forecaster's train/val/test parts
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stpred.apps._cli import ArgumentParser, CommandParser, run_cli

__all__ = ["main", "format_table"]

PROG = "stpred-zoo"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def format_table(entries) -> str:
    """One line per entry: name, data, task, main score vs persistence, params, size."""
    if not entries:
        return "no zoo checkpoints in this install; build them with `stpred-zoo train`"
    rows = [("name", "task", "score (test)", "persistence", "params", "size", "data")]
    for e in entries:
        rows.append(
            (
                e.name,
                e.task,
                f"{e.metric}={e.score:.4g}",
                f"{e.baseline_score:.4g}",
                f"{e.params:,}",
                _size(e.size_bytes),
                e.data,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def _show(name: str) -> None:
    from dataclasses import asdict

    from stpred.zoo import get_entry

    entry = get_entry(name)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(entry).items()}
    record["ckpt"] = f"zoo:{entry.name}"
    print(json.dumps(record, indent=2))


def _train(names: list[str], run_root: Path, dest: Path | None, reuse_runs: bool) -> None:
    from stpred.apps._zoo_build import train_entry
    from stpred.zoo import ZOO_DIR
    from stpred.zoo.presets import PRESETS, preset

    chosen = [preset(n) for n in names] if names else list(PRESETS)
    order = [p.name for p in PRESETS]
    for p in chosen:
        record = train_entry(p, run_root=run_root, dest_dir=dest or ZOO_DIR, reuse_run=reuse_runs, order=order)
        m = record["metric"]
        print(
            f"{p.name}: {m}={record['scores'][m]:.4g} (persistence {record['baseline'][m]:.4g}), "
            f"{record['params']:,} params, {_size(record['size_bytes'])}, "
            f"{record['extra']['train_seconds']} s training",
            flush=True,
        )


def _parse(argv: list[str] | None):
    parser = ArgumentParser(prog=PROG, description="The shipped demo checkpoints (zoo:<name>).")
    sub = parser.add_subparsers(dest="command", parser_class=CommandParser)
    sub.add_parser("list", help="each shipped checkpoint: data, task, main score vs persistence, params, size")
    show = sub.add_parser("show", help="one entry in full")
    show.add_argument("name")
    train = sub.add_parser("train", help="retrain entries with fixed seeds (needs STPRED_DATA); all when none named")
    train.add_argument("names", nargs="*")
    train.add_argument("--runs", type=Path, default=Path("runs/zoo"), help="run folders (default runs/zoo)")
    train.add_argument("--dest", type=Path, default=None, help="where the .ckpt files and zoo.json go (the package)")
    train.add_argument(
        "--reuse-runs", action="store_true", help="export and score the finished run folders instead of training"
    )
    clips = sub.add_parser("clips", help="cut the shipped clips ($STPRED_DATA/video) into train/val/test parts")
    clips.add_argument("out", type=Path, nargs="?", default=Path("runs/zoo/clips"))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("give a command: list, show, train or clips")
    return args


def _run(argv: list[str] | None) -> None:
    args = _parse(argv)
    if args.command == "list":
        from stpred.zoo import list_entries

        print(format_table(list_entries()))
    elif args.command == "show":
        _show(args.name)
    elif args.command == "train":
        _train(args.names, args.runs, args.dest, args.reuse_runs)
    elif args.command == "clips":
        import os

        from stpred.apps._zoo_clips import prepare_clips
        from stpred.errors import UserError

        data = os.environ.get("STPRED_DATA")
        if not data:
            raise UserError("STPRED_DATA is not set; point it at the folder of shared data (it has video/)")
        for folder in prepare_clips(Path(data) / "video", args.out):
            print(folder)


def main(argv: list[str] | None = None) -> None:
    """Console entry point; ``argv`` defaults to ``sys.argv[1:]``."""
    run_cli(PROG, lambda: _run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
