"""stpred: spatiotemporal and video prediction.

Datamodules (``stpred.datamodules``) feed interchangeable predictors (``stpred.create_model``) trained by
Lightning tasks (``stpred.tasks``); hot loops run on Triton kernels (``stpred.kernels``).
"""

from __future__ import annotations

from stpred._version import __version__
from stpred.errors import ConfigError, UserError
from stpred.registry import create_model, list_models, register_model

__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "register_model",
    "load_predictor",
    "Predictor",
    "train",
    "UserError",
    "ConfigError",
]


def __getattr__(name: str):
    # Lazy, so that `import stpred` stays light and never imports Lightning.
    if name in ("load_predictor", "Predictor"):
        from stpred import checkpoint

        return getattr(checkpoint, name)
    if name == "train":
        from stpred.apps.api import train

        return train
    raise AttributeError(f"module 'stpred' has no attribute {name!r}")
