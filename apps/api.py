"""Training from Python (notebooks, scripts): the same configs and run folders as ``stpred-train``.

Examples:
    >>> import stpred
    >>> run = stpred.train("experiment=quickstart", "trainer.max_epochs=2")  # doctest: +SKIP
    >>> run.run_dir, run.test["rel_l2"]  # doctest: +SKIP
    >>> run.predictor.predict(x)  # [B, T_in, C, H, W] -> [B, T_out, C, H, W]  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stpred.apps._compose import compose_train_config

__all__ = ["TrainedRun", "train", "compose_train_config"]


@dataclass
class TrainedRun:
    """What a training run left: its folder, test metrics, checkpoint paths and the rebuilt predictor."""

    run_dir: Path
    test: dict[str, float]
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    config: DictConfig

    @property
    def checkpoint(self) -> Path | None:
        """The best checkpoint by the validation metric, else ``last.ckpt``."""
        return self.best_checkpoint or self.last_checkpoint

    @property
    def predictor(self) -> Any:
        """:class:`stpred.Predictor` of :attr:`checkpoint` (loaded on first use)."""
        from stpred.checkpoint import load_predictor
        from stpred.errors import UserError

        if self.checkpoint is None:
            raise UserError(f"run {self.run_dir} wrote no checkpoint (was train=false or fast_dev_run set?)")
        if not hasattr(self, "_predictor"):
            self._predictor = load_predictor(self.checkpoint)
        return self._predictor


def train(*overrides: str, output_dir: str | Path | None = None) -> TrainedRun:
    """Train and test as ``stpred-train <overrides>`` would; return the run.

    Args:
        *overrides: command-line style overrides, e.g. ``"experiment=quickstart"``, ``"trainer.max_epochs=2"``.
        output_dir: the run folder; by default ``runs/<task_name>/<date>_<time>`` like the console script.
    """
    from stpred.apps._training import train as run_training

    cfg = compose_train_config(*overrides, output_dir=output_dir)
    test = run_training(cfg)
    run_dir = Path(cfg.paths.output_dir)
    record_file = run_dir / "results.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    best, last = record.get("best_checkpoint"), record.get("last_checkpoint")
    return TrainedRun(
        run_dir=run_dir,
        test=test,
        best_checkpoint=Path(best) if best else None,
        last_checkpoint=Path(last) if last else None,
        config=cfg,
    )
