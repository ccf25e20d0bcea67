"""Files written after testing: per-lead-time metric curves as CSV and PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from stpred.atomic import atomic_output
from stpred.plotting import DPI, save_png

__all__ = ["write_per_lead"]


def write_per_lead(per_lead: dict[str, list[float]], out_dir: str | Path, *, stage: str = "test") -> tuple[Path, Path]:
    """Write ``<stage>_per_lead.csv`` (one row per lead time) and a PNG of each curve; return both paths.

    Both files are written through temporary files; the figure is a plain :class:`~matplotlib.figure.Figure`, so the
    caller's matplotlib backend is left alone.
    """
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(per_lead)
    leads = len(next(iter(per_lead.values()))) if per_lead else 0
    csv_path = out_dir / f"{stage}_per_lead.csv"
    with atomic_output(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lead", *names])
        for t in range(leads):
            writer.writerow([t + 1, *(f"{per_lead[n][t]:.6g}" for n in names)])
    fig = Figure(figsize=(3.2 * max(1, len(names)), 2.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, max(1, len(names)), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(range(1, leads + 1), per_lead[name], marker="o", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("lead (frames)")
        ax.grid(alpha=0.3)
    return csv_path, save_png(fig, out_dir / f"{stage}_per_lead.png")
