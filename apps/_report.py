"""Files written after testing: per-lead-time metric curves as CSV and PNG."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["write_per_lead"]


def write_per_lead(per_lead: dict[str, list[float]], out_dir: str | Path, *, stage: str = "test") -> tuple[Path, Path]:
    """Write ``<stage>_per_lead.csv`` (one row per lead time) and a PNG of each curve; return both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(per_lead)
    leads = len(next(iter(per_lead.values()))) if per_lead else 0
    csv_path = out_dir / f"{stage}_per_lead.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lead", *names])
        for t in range(leads):
            writer.writerow([t + 1, *(f"{per_lead[n][t]:.6g}" for n in names)])
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot(range(1, leads + 1), per_lead[name], marker="o", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("lead (frames)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = out_dir / f"{stage}_per_lead.png"
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return csv_path, png_path
