"""Optimisers and schedules from plain config values (docs/conventions.md §6).

Per-step schedules (OneCycle) are stepped every optimiser step, per-epoch ones (cosine with warm-up, step decay)
every epoch; each carries its Lightning ``interval``.
"""

from __future__ import annotations

from typing import Any

import torch

from stpred.errors import ConfigError

__all__ = ["OPTIM_DEFAULTS", "build_optimizers"]

OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "momentum": 0.9,
    "scheduler": "onecycle",
    "div_factor": 25.0,
    "final_div_factor": 1e4,
    "pct_start": 0.3,
    "warmup_epochs": 0,
    "warmup_lr": 1e-5,
    "min_lr": 1e-6,
    "step_size": 100,
    "gamma": 0.5,
}


def _optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    name = cfg["optimizer"].lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    raise ConfigError(f"optim.optimizer='{cfg['optimizer']}' is not one of adam, adamw, sgd")


def _scheduler(opt: torch.optim.Optimizer, cfg: dict[str, Any], max_epochs: int, steps_per_epoch: int):
    name = (cfg["scheduler"] or "none").lower()
    if name == "none":
        return None
    if name == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=cfg["lr"],
            total_steps=max(1, max_epochs * steps_per_epoch),
            pct_start=cfg["pct_start"],
            div_factor=cfg["div_factor"],
            final_div_factor=cfg["final_div_factor"],
        )
        return {"scheduler": sched, "interval": "step"}
    if name == "cosine":
        warmup = int(cfg["warmup_epochs"])
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, max_epochs - warmup), eta_min=cfg["min_lr"]
        )
        if warmup <= 0:
            return {"scheduler": cosine, "interval": "epoch"}
        start = min(1.0, cfg["warmup_lr"] / cfg["lr"])
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=warmup)
        seq = torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warmup])
        return {"scheduler": seq, "interval": "epoch"}
    if name == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(cfg["step_size"]), gamma=cfg["gamma"])
        return {"scheduler": sched, "interval": "epoch"}
    raise ConfigError(f"optim.scheduler='{cfg['scheduler']}' is not one of onecycle, cosine, step, none")


def build_optimizers(params, cfg: dict[str, Any], *, max_epochs: int, steps_per_epoch: int) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` return value from a plain ``cfg`` (see :data:`OPTIM_DEFAULTS`)."""
    unknown = set(cfg) - set(OPTIM_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown optim keys {sorted(unknown)}; known keys: {sorted(OPTIM_DEFAULTS)}")
    full = {**OPTIM_DEFAULTS, **cfg}
    opt = _optimizer(params, full)
    sched = _scheduler(opt, full, max_epochs, steps_per_epoch)
    return {"optimizer": opt} if sched is None else {"optimizer": opt, "lr_scheduler": sched}
