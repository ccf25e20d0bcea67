"""Model registry: one name per predictor, shared by the registry, ``configs/model/<name>.yaml`` and the CLI."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from stpred.errors import UserError

__all__ = [
    "register_model",
    "create_model",
    "create_model_from_config",
    "list_models",
    "model_class",
    "model_version",
]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model class under ``name`` (a duplicate name warns and replaces).

    A factory function may be registered too; it declares the class it builds as ``factory.model_class`` so that
    :func:`model_version` reads the real version.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS and _MODELS[name] is not fn:
            warnings.warn(f"model '{name}' registered twice; the later definition wins", stacklevel=2)
        _MODELS[name] = fn
        return fn

    return decorator


def _ensure_builtin_models() -> None:
    import stpred.models  # noqa: F401  (registers the built-in families)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern``."""
    _ensure_builtin_models()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_class(name: str) -> Callable[..., nn.Module]:
    """The class (or factory) registered as ``name``; an unknown name is a :class:`UserError` with suggestions."""
    _ensure_builtin_models()
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name[:3]}*") if name else []
        hint = f" Did you mean one of {close}?" if close else ""
        raise UserError(f"unknown model '{name}'. Available: {', '.join(sorted(_MODELS))}.{hint}")
    return _MODELS[name]


def model_version(name: str) -> int:
    """The version of the model class registered as ``name`` (1 for a class or factory that declares none)."""
    entry = model_class(name)
    cls = entry if isinstance(entry, type) else getattr(entry, "model_class", entry)
    return int(getattr(cls, "version", getattr(cls, "_version", 1)))


def create_model(name: str, *, checkpoint_path: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``None`` kwargs are dropped so configs can leave a value unset.

    Args:
        name: registry name, e.g. ``"simvpv2"``.
        checkpoint_path: optional bare ``state_dict`` file (``.pth``/``.pt``) to load into the model.
        **kwargs: the model's constructor arguments (``in_shape``, ``out_frames``, hyperparameters).
    """
    model = model_class(name)(**{k: v for k, v in kwargs.items() if v is not None})
    if checkpoint_path is not None:
        import torch

        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        model.load_state_dict({k.replace("_orig_mod.", ""): v for k, v in state.items()})
    return model


def create_model_from_config(model_cfg: dict[str, Any], in_shape: tuple[int, ...], **target: Any) -> nn.Module:
    """Build ``{"name": ..., "kwargs": {...}}`` for the data's shapes.

    Args:
        model_cfg: a model config as stored in checkpoints and ``configs/model/<name>.yaml``.
        in_shape: ``(T_in, C, H, W)`` from the datamodule.
        **target: ``out_frames=`` (forecast) or ``num_classes=`` (classify); these win over the config's entries.
    """
    kwargs = {k: v for k, v in (model_cfg.get("kwargs") or {}).items() if k not in ("in_shape", *target)}
    return create_model(model_cfg["name"], in_shape=tuple(int(v) for v in in_shape), **target, **kwargs)
