"""LightningModules that own loss, optimisation, metrics and logging; they join datamodules and models."""

from __future__ import annotations

__all__ = ["ClassifyTask", "ForecastTask", "build_optimizers"]


def __getattr__(name: str):
    # Lazy, so that `stpred.tasks.optim` (read by the config check before any work) does not import Lightning.
    if name == "ClassifyTask":
        from stpred.tasks.classify import ClassifyTask

        return ClassifyTask
    if name == "ForecastTask":
        from stpred.tasks.forecast import ForecastTask

        return ForecastTask
    if name == "build_optimizers":
        from stpred.tasks.optim import build_optimizers

        return build_optimizers
    raise AttributeError(f"module 'stpred.tasks' has no attribute {name!r}")
