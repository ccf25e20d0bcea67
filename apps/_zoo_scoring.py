"""Test scores of a checkpoint and of persistence (the last input frame repeated) on the same split and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["score_checkpoint", "count_params"]


def count_params(path: str | Path) -> int:
    """Parameters of the network a checkpoint rebuilds."""
    from stpred.checkpoint import load_predictor

    return sum(p.numel() for p in load_predictor(path).net.parameters())


def score_checkpoint(
    path: str | Path, data_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Test-split metrics of the checkpoint and of persistence, in the data's units.

    The datamodule is rebuilt from the checkpoint's config (``data_cfg`` replaces it), as ``stpred-eval`` does.

    Returns:
        ``(scores, baseline)``: ``{metric: value}`` for the model and for persistence
        (``x[:, -1]`` repeated ``T_out`` times), both from the same batches.
    """
    import torch
    from omegaconf import OmegaConf

    from stpred.apps._compose import build_datamodule
    from stpred.checkpoint import load_predictor, read_checkpoint
    from stpred.errors import UserError
    from stpred.metrics import ForecastMetrics

    hp = read_checkpoint(path)["hyper_parameters"]
    meta = hp["data"]
    if meta.get("task", "forecast") != "forecast":
        raise UserError(f"{path}: only forecasters are scored against persistence")
    data_cfg = data_cfg or hp.get("datamodule")
    if not data_cfg:
        raise UserError(f"{path} records no datamodule config")
    dm = build_datamodule(OmegaConf.create(data_cfg), "test")
    predictor = load_predictor(path)
    channels = int(meta["in_shape"][1])
    mean = torch.as_tensor(meta["mean"], dtype=torch.float32).reshape(1, 1, channels, 1, 1)
    std = torch.as_tensor(meta["std"], dtype=torch.float32).reshape(1, 1, channels, 1, 1)
    model_metrics, persistence_metrics = ForecastMetrics.from_metadata(meta), ForecastMetrics.from_metadata(meta)
    with torch.no_grad():
        for batch in dm.test_dataloader():
            x, y = batch["x"].float(), batch["y"].float()
            truth = y * std + mean
            valid = batch.get("y_valid")  # masked cells are scored as stpred-eval scores them: not at all
            model_metrics.update(predictor.net(x).float() * std + mean, truth, valid=valid)
            persistence_metrics.update((x[:, -1:] * std + mean).expand_as(truth), truth, valid=valid)
    scores = {k: float(v) for k, v in model_metrics.compute().items()}
    baseline = {k: float(v) for k, v in persistence_metrics.compute().items()}
    return scores, baseline
