"""The composed ``stpred-train`` / ``stpred-eval`` config checked as a whole before any work starts.

Each mistake is one :class:`~stpred.errors.UserError` naming the key, the value and what is allowed: types and
ranges of the data, trainer and optimiser keys, the model's and the datamodule's keyword names (with the accepted
ones), the device asked for and the data folder. Nothing here imports Lightning or builds a model.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stpred.apps._outputs import nearest_existing
from stpred.errors import UserError

__all__ = ["check_train_config", "check_trainer", "drop_switched_model_keys"]

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULERS = ("onecycle", "cosine", "step", "none")
_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
_PRECISIONS = (
    "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64", "transformer-engine",
)  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def _check_int(cfg: Mapping[str, Any], group: str, key: str, low: int, *, optional: bool = False) -> None:
    if key not in cfg or (optional and cfg[key] is None):
        return
    value = cfg[key]
    _need(_is_int(value) and value >= low, f"{group}.{key}", value, f"an integer >= {low}")


def _check_number(
    cfg: Mapping[str, Any], group: str, key: str, *, positive: bool = False, optional: bool = False
) -> None:
    if key not in cfg or (optional and cfg[key] is None):
        return
    value = cfg[key]
    ok = _is_number(value) and (value > 0 if positive else value >= 0)
    _need(ok, f"{group}.{key}", value, "a number > 0" if positive else "a number >= 0")


def _check_optim(optim: Mapping[str, Any]) -> None:
    from stpred.tasks.optim import OPTIM_DEFAULTS

    unknown = sorted(set(optim) - set(OPTIM_DEFAULTS))
    if unknown:
        raise UserError(
            f"unknown optim keys {', '.join('optim.' + k for k in unknown)}; the keys are: {', '.join(OPTIM_DEFAULTS)}"
        )
    _need(str(optim.get("optimizer", "adam")).lower() in _OPTIMIZERS, "optim.optimizer", optim.get("optimizer"),
          f"one of {', '.join(_OPTIMIZERS)}")  # fmt: skip
    scheduler = str(optim.get("scheduler") or "none").lower()
    _need(scheduler in _SCHEDULERS, "optim.scheduler", optim.get("scheduler"), f"one of {', '.join(_SCHEDULERS)}")
    for key in ("lr", "div_factor", "final_div_factor", "warmup_lr", "gamma"):
        _check_number(optim, "optim", key, positive=True)
    for key in ("weight_decay", "momentum", "min_lr"):
        _check_number(optim, "optim", key)
    if "pct_start" in optim:
        value = optim["pct_start"]
        _need(_is_number(value) and 0 < value < 1, "optim.pct_start", value, "a number between 0 and 1")
    betas = optim.get("betas", [0.9, 0.999])
    ok = isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)
    _need(ok, "optim.betas", list(betas) if isinstance(betas, (list, tuple)) else betas, "two numbers in [0, 1)")
    _check_int(optim, "optim", "warmup_epochs", 0)
    _check_int(optim, "optim", "step_size", 1)


def _limit_ok(value: Any) -> bool:
    if value is None:
        return True
    if _is_int(value):
        return value >= 0
    return _is_number(value) and 0.0 <= value <= 1.0


def check_trainer(trainer: Mapping[str, Any]) -> None:
    """Ranges of the Lightning Trainer keys people set, and whether the asked-for device exists."""
    max_epochs = trainer.get("max_epochs")
    _need(max_epochs is None or (_is_int(max_epochs) and (max_epochs >= 1 or max_epochs == -1)),
          "trainer.max_epochs", max_epochs, "an integer >= 1 (or -1 for no limit)")  # fmt: skip
    _check_int(trainer, "trainer", "min_epochs", 0, optional=True)
    max_steps = trainer.get("max_steps", -1)
    _need(_is_int(max_steps) and (max_steps >= 1 or max_steps == -1), "trainer.max_steps", max_steps,
          "an integer >= 1 (or -1 for no limit)")  # fmt: skip
    _check_int(trainer, "trainer", "check_val_every_n_epoch", 1, optional=True)
    _check_int(trainer, "trainer", "log_every_n_steps", 1, optional=True)
    _check_int(trainer, "trainer", "accumulate_grad_batches", 1, optional=True)
    _check_int(trainer, "trainer", "num_nodes", 1, optional=True)
    sanity = trainer.get("num_sanity_val_steps", 0)
    _need(_is_int(sanity) and sanity >= -1, "trainer.num_sanity_val_steps", sanity, "an integer >= -1")
    _check_number(trainer, "trainer", "gradient_clip_val", optional=True)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        _need(_limit_ok(trainer.get(key)), f"trainer.{key}", trainer.get(key),
              "null, a fraction in [0, 1] or a number of batches >= 0")  # fmt: skip
    precision = str(trainer.get("precision", "32-true"))
    _need(precision in _PRECISIONS, "trainer.precision", trainer.get("precision"), f"one of {', '.join(_PRECISIONS)}")
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    _need(accelerator in _ACCELERATORS, "trainer.accelerator", trainer.get("accelerator"),
          f"one of {', '.join(_ACCELERATORS)}")  # fmt: skip
    devices = trainer.get("devices", "auto")
    ok = devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1)) or isinstance(devices, (list, str))
    _need(ok, "trainer.devices", devices, "'auto', a count >= 1, -1 (all) or a list of device indices")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.accelerator={trainer.get('accelerator')} asks for a CUDA GPU, but none is visible to "
                "PyTorch on this machine; use trainer=cpu (or trainer.accelerator=cpu)"
            )
        wanted = devices if _is_int(devices) and devices > 0 else 1
        if wanted > torch.cuda.device_count():
            raise UserError(
                f"trainer.devices={devices} asks for {wanted} GPUs, but {torch.cuda.device_count()} are visible; "
                f"set trainer.devices={torch.cuda.device_count()}"
            )
    if accelerator == "tpu":
        raise UserError("trainer.accelerator=tpu: stpred runs on CPUs and CUDA GPUs; use trainer=cpu or trainer=gpu")


def _accepted_keywords(target: Any) -> tuple[set[str], bool]:
    """Keyword names ``target`` (a class or function) accepts, and whether it takes ``**kwargs`` as well."""
    init = target.__init__ if isinstance(target, type) else target
    params = inspect.signature(init).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _check_keywords(given: Mapping[str, Any], target: Any, what: str, prefix: str, fixed: set[str]) -> None:
    names, open_ended = _accepted_keywords(target)
    if open_ended:
        return
    unknown = sorted(set(given) - names - fixed)
    if unknown:
        accepted = ", ".join(sorted(names - fixed))
        raise UserError(
            f"{what} takes no {', '.join(prefix + k for k in unknown)}; its keys are: {accepted} "
            f"(check the spelling, or drop the key)"
        )


def _check_model(model: Mapping[str, Any]) -> None:
    from stpred.registry import model_class

    name = model.get("name")
    if not name:
        raise UserError("the model config has no name; choose one with model=<name> (stpred-zoo list shows some)")
    kwargs = model.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise UserError(f"model.kwargs must be a mapping of keyword arguments, got {kwargs!r}")
    entry = model_class(str(name))
    fixed = {"in_shape", "out_frames", "num_classes"}
    _check_keywords(kwargs, entry, f"model '{name}'", "model.kwargs.", fixed)


def _check_data_values(data: Mapping[str, Any]) -> None:
    _check_int(data, "data", "batch_size", 1)
    _check_int(data, "data", "eval_batch_size", 1, optional=True)
    _check_int(data, "data", "num_workers", 0)


def _check_data(data: Mapping[str, Any]) -> None:
    target = data.get("_target_")
    if not target:
        raise UserError("the data config has no _target_; choose a dataset with data=<name>")
    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except Exception:  # noqa: BLE001 - any import failure means the name is wrong
        raise UserError(f"data._target_={target} cannot be imported; check the class path") from None
    _check_keywords({k: v for k, v in data.items() if k != "_target_"}, cls, f"data ({cls.__name__})", "data.", set())


def _check_data_dir(cfg: DictConfig) -> None:
    try:
        data_dir = cfg.paths.data_dir
    except Exception:  # noqa: BLE001 - an unresolvable path is reported where it is used
        return
    path = Path(str(data_dir))
    probe = nearest_existing(path)
    if not probe.is_dir():
        source = "STPRED_DATA" if os.environ.get("STPRED_DATA") else "paths.data_dir"
        raise UserError(f"the data folder {path} ({source}) lies under {probe}, which is a file; point it at a folder")


def check_train_config(cfg: DictConfig) -> None:
    """Check everything ``stpred-train`` will use, before it writes or builds anything."""
    container = OmegaConf.to_container(cfg, resolve=False)
    seed = container.get("seed")
    _need(_is_int(seed) and seed >= 0, "seed", seed, "an integer >= 0")
    for key in ("train", "test", "compile"):
        _need(isinstance(container.get(key, False), bool), key, container.get(key), "true or false")
    if not cfg.train and not cfg.test:
        raise UserError("train=false test=false leaves nothing to do; drop one of them")
    # The values first, then the names that need imports: the model registry, then the datamodule (Lightning).
    data = OmegaConf.to_container(cfg.data, resolve=True)
    _check_data_values(data)
    _check_optim(OmegaConf.to_container(cfg.optim, resolve=True))
    check_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    _check_data_dir(cfg)
    loss = container.get("loss")
    if loss is not None:
        from stpred.losses import list_losses

        known = list_losses()
        _need(isinstance(loss, str) and loss in known, "loss", loss, f"null or one of {', '.join(known)}")
    _check_model(OmegaConf.to_container(cfg.model, resolve=True))
    _check_data(data)


def drop_switched_model_keys(cfg: DictConfig, model_choice: str | None, experiment: str | None,
                             overrides: list[str]) -> list[str]:  # fmt: skip
    """When ``model=`` replaces the model an ``experiment=`` preset was written for, the preset's ``model.kwargs``
    belong to the other model: drop those the chosen model's own config does not set (command-line
    ``model.kwargs.*`` overrides stay) and return the dropped names (the caller says so in one line)."""
    if not experiment or not model_choice:
        return []
    from stpred.apps._compose import CONFIG_DIR

    preset_path = Path(CONFIG_DIR) / "experiment" / f"{experiment}.yaml"
    if not preset_path.is_file():
        return []
    preset = OmegaConf.to_container(OmegaConf.load(preset_path), resolve=False)
    written_for = None
    for entry in preset.get("defaults") or []:
        if isinstance(entry, dict):
            written_for = entry.get("override /model", written_for)
    preset_kwargs = ((preset.get("model") or {}).get("kwargs") or {}) if isinstance(preset.get("model"), dict) else {}
    if written_for is None or written_for == model_choice or not preset_kwargs:
        return []
    own = OmegaConf.load(Path(CONFIG_DIR) / "model" / f"{model_choice}.yaml")
    own_kwargs = OmegaConf.to_container(own, resolve=False).get("kwargs") or {}
    given = {o.split("=", 1)[0].lstrip("+~").removeprefix("model.kwargs.") for o in overrides
             if o.lstrip("+~").startswith("model.kwargs.")}  # fmt: skip
    dropped = []
    OmegaConf.set_struct(cfg, False)
    for key in preset_kwargs:
        if key in given:
            continue
        if key in own_kwargs:
            cfg.model.kwargs[key] = own_kwargs[key]
        else:
            del cfg.model.kwargs[key]
        dropped.append(key)
    OmegaConf.set_struct(cfg, True)
    return dropped
