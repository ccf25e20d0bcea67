"""LightningModules that own loss, optimisation, metrics and logging; they join datamodules and models."""

from stpred.tasks.classify import ClassifyTask
from stpred.tasks.forecast import ForecastTask
from stpred.tasks.optim import build_optimizers

__all__ = ["ClassifyTask", "ForecastTask", "build_optimizers"]
