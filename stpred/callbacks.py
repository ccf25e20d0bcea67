"""Lightning callbacks: the validation picture (input / truth / prediction) written each validation epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

__all__ = ["PredictionPanel", "render_panel"]


def _frame_indices(n: int, max_frames: int) -> list[int]:
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_frames)})


def render_panel(
    x: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    data_range: float | None = None,
    channel: int = 0,
    channel_name: str = "",
    max_frames: int = 10,
) -> Path:
    """Write a PNG grid: for each sample three rows (input, truth, prediction), frames left to right.

    Args:
        x: inputs ``[N, T_in, C, H, W]`` in physical units.
        y: targets ``[N, T_out, C, H, W]``.
        pred: predictions ``[N, T_out, C, H, W]``.
        path: the PNG to write (parent folders are created).
        title: figure title.
        data_range: image data in ``[0, data_range]`` is drawn in grey on that fixed scale; otherwise each sample
            uses a diverging map scaled to its truth.
        channel: which channel to draw.
        channel_name: label for the colour bar.
        max_frames: at most this many frames per row (evenly spaced).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = x.shape[0]
    t_in, t_out = x.shape[1], y.shape[1]
    cols_in, cols_out = _frame_indices(t_in, max_frames), _frame_indices(t_out, max_frames)
    ncols = max(len(cols_in), len(cols_out))
    fig, axes = plt.subplots(3 * n, ncols, figsize=(1.3 * ncols + 1.2, 1.35 * 3 * n + 0.6), squeeze=False)
    for s in range(n):
        if data_range is not None:
            vmin, vmax, cmap = 0.0, data_range, "gray"
        else:
            lim = float(np.abs(y[s, :, channel]).max()) or 1.0
            vmin, vmax, cmap = -lim, lim, "RdBu_r"
        rows = (("input", x[s], cols_in, 0), ("truth", y[s], cols_out, t_in), ("prediction", pred[s], cols_out, t_in))
        for r, (label, seq, cols, offset) in enumerate(rows):
            for c in range(ncols):
                ax = axes[3 * s + r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(cols):
                    ax.axis("off")
                    continue
                im = ax.imshow(seq[cols[c], channel], vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
                if r < 2:  # the prediction row shares the truth row's time labels
                    ax.set_title(f"t={offset + cols[c] + 1}", fontsize=7)
            axes[3 * s + r, 0].set_ylabel(f"#{s} {label}", fontsize=8)
        fig.colorbar(im, ax=axes[3 * s : 3 * s + 3, :].ravel().tolist(), shrink=0.8, label=channel_name)
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path


class PredictionPanel(L.Callback):
    """Each validation epoch, draw the first ``num_samples`` validation sequences and the model's forecasts.

    Args:
        dirpath: folder for ``val_epoch_<NNN>.png``.
        num_samples: sequences drawn.
        every_n_epochs: draw every n-th validation epoch.
        max_frames: frames per row at most.
    """

    def __init__(self, dirpath: str, num_samples: int = 3, every_n_epochs: int = 1, max_frames: int = 10) -> None:
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.max_frames = max_frames
        self._batch: dict[str, torch.Tensor] | None = None
        self.last_path: Path | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, **_: Any
    ) -> None:
        if batch_idx != 0 or not self._active(trainer) or not isinstance(outputs, dict) or "pred" not in outputs:
            return
        k = self.num_samples
        self._batch = {
            "x": pl_module.denormalize(batch["x"][:k]).cpu(),
            "y": pl_module.denormalize(batch["y"][:k]).cpu(),
            "pred": pl_module.denormalize(outputs["pred"][:k]).cpu(),
        }

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._batch is None or not self._active(trainer):
            return
        meta = pl_module.hparams.get("data", {})
        names = meta.get("channels") or [""]
        model_name = pl_module.hparams.get("model", {}).get("name", "")
        self.last_path = render_panel(
            self._batch["x"].numpy(),
            self._batch["y"].numpy(),
            self._batch["pred"].numpy(),
            self.dirpath / f"val_epoch_{trainer.current_epoch:03d}.png",
            title=f"{model_name} on {meta.get('dataset', '')}: validation, epoch {trainer.current_epoch}",
            data_range=meta.get("data_range"),
            channel_name=str(names[0]),
            max_frames=self.max_frames,
        )
        self._batch = None
