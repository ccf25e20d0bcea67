"""The table printed after a sweep (``stpred-train -m ...``): one row per run, its overrides and test metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["SweepSummary", "sweep_rows", "to_markdown"]


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per run folder of ``sweep_dir`` (in job order): ``run``, the overrides that differ between runs,
    ``status`` (``done`` when the run wrote ``results.json``) and its test metrics."""
    runs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    overrides = [_overrides(run) for run in runs]
    varied = [k for k in dict.fromkeys(k for o in overrides for k in o) if len({o.get(k) for o in overrides}) > 1]
    rows = []
    for run, run_overrides in zip(runs, overrides):
        row: dict[str, Any] = {"run": run.name, **{k: run_overrides.get(k, "") for k in varied}}
        results_file = run / "results.json"
        if results_file.is_file():
            row["status"] = "done"
            row.update(dict(sorted(json.loads(results_file.read_text()).get("test", {}).items())))
        else:
            row["status"] = "failed"
        rows.append(row)
    return rows


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    items = [str(o) for o in OmegaConf.load(path)] if path.is_file() else []
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in items)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class SweepSummary(Callback):
    """After the last job of a multirun, print the table and write ``summary.md`` and ``summary.csv`` beside it."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = sweep_rows(sweep_dir)
        if not rows:
            return
        table = to_markdown(rows)
        (sweep_dir / "summary.md").write_text(table + "\n")
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with (sweep_dir / "summary.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        print(f"sweep summary ({sweep_dir / 'summary.csv'}):")
        print(table)
