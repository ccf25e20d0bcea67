"""What the Hydra apps share: the config folder, composing configs, and building datamodules and tasks from them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import stpred.configs

__all__ = [
    "compose_train_config",
    "settle_model_switch",
    "CONFIG_DIR",
    "compose",
    "use_hydra_logging",
    "build_datamodule",
    "task_class",
    "build_task",
    "instantiate_list",
    "check_shapes_match",
]

CONFIG_DIR = str(Path(stpred.configs.__file__).parent)
log = logging.getLogger("stpred")


def compose(config_name: str, overrides: Sequence[str] = (), *, hydra_config: bool = False) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style ``overrides``, outside a Hydra job.

    ``${hydra:...}`` interpolations do not resolve outside a job, so callers set ``paths.output_dir`` themselves.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def compose_train_config(*overrides: str, output_dir: str | Path | None = None) -> DictConfig:
    """The ``stpred-train`` config for ``overrides``, with the run folder made concrete.

    The folder is ``output_dir`` or, as the console script does, ``runs/<task_name>/<date>_<time>`` under
    ``paths.log_dir``.
    """
    cfg = compose("train", overrides, hydra_config=True)
    choices = cfg.hydra.runtime.choices
    OmegaConf.set_struct(cfg, False)
    task_name = OmegaConf.to_container(cfg, resolve=False)["task_name"]
    if isinstance(task_name, str) and "${hydra:" in task_name:
        cfg.task_name = choices["data"]
    if output_dir is None:
        output_dir = Path(cfg.paths.log_dir) / cfg.task_name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    cfg.paths.output_dir = str(output_dir)
    del cfg["hydra"]
    OmegaConf.set_struct(cfg, True)
    settle_model_switch(cfg, choices.get("model"), choices.get("experiment"), list(overrides))
    return cfg


def settle_model_switch(cfg: DictConfig, model: str | None, experiment: str | None, overrides: list[str]) -> None:
    """``model=`` replacing the model an ``experiment=`` preset was written for: the preset's model keys are
    dropped (:func:`~stpred.apps._config_check.drop_switched_model_keys`), said in one log line."""
    from stpred.apps._config_check import drop_switched_model_keys

    dropped = drop_switched_model_keys(cfg, model, experiment, overrides)
    if dropped:
        log.info(
            f"experiment={experiment} sets model.kwargs {', '.join(dropped)} for another model; with model={model} "
            "they were dropped (the model's own defaults apply; set model.kwargs.<key>= to choose)"
        )


def use_hydra_logging() -> None:
    """Send Lightning's log records through Hydra's handlers only (console and ``train.log``), not twice."""
    import lightning  # noqa: F401  (its import attaches its own console handler)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def instantiate_list(group: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (callbacks, loggers)."""
    import hydra

    objs = []
    for conf in (group or {}).values():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info(f"Instantiating {kind} <{conf._target_}>")
            objs.append(hydra.utils.instantiate(conf))
    return objs


def build_datamodule(data_cfg: DictConfig | dict, stage: str):
    """Instantiate, prepare and set up the datamodule; it must follow the DataModule contract."""
    import hydra

    data_cfg = OmegaConf.create(data_cfg) if isinstance(data_cfg, dict) else data_cfg
    log.info(f"Instantiating datamodule <{data_cfg._target_}>")
    dm = hydra.utils.instantiate(data_cfg)
    dm.prepare_data()
    dm.setup(stage)
    return dm


def task_class(kind: str) -> type:
    """The LightningModule for a datamodule's ``task`` (``"forecast"`` or ``"classify"``)."""
    from stpred.errors import UserError

    if kind == "forecast":
        from stpred.tasks import ForecastTask

        return ForecastTask
    if kind == "classify":
        from stpred.tasks.classify import ClassifyTask

        return ClassifyTask
    raise UserError(f"datamodule task '{kind}' is not one of forecast, classify")


def build_task(cfg: DictConfig, dm) -> Any:
    """The task for the datamodule's ``task``, with the config's model, loss, optimiser and compile settings."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    classify = dm.task == "classify"
    target = f"num_classes={dm.num_classes}" if classify else f"out_frames={dm.out_frames}"
    log.info(f"Instantiating model <{model['name']}> for in_shape={tuple(dm.in_shape)} {target}")
    extra: dict[str, Any] = {"label_smoothing": float(cfg.label_smoothing)} if classify else {}
    if cfg.loss is not None:
        extra["loss"] = cfg.loss
    return task_class(dm.task)(
        model=model,
        data=dm.metadata(),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        compile=bool(cfg.compile),
        compile_kwargs=OmegaConf.to_container(cfg.compile_kwargs, resolve=True),
        datamodule=OmegaConf.to_container(cfg.data, resolve=True),
        **extra,
    )


def check_shapes_match(what: str, saved: dict[str, Any], shapes: Any, fix: str) -> None:
    """The data's shapes (a :class:`~stpred.datamodules.base.DataShapes`) must be those a checkpoint's metadata
    ``saved`` was trained on; otherwise one line naming both, ``what`` (the checkpoint as given) and ``fix``."""
    from stpred.errors import UserError

    target = "num_classes" if saved.get("task") == "classify" else "out_frames"
    given = shapes.target().get(target)
    if list(saved["in_shape"]) != list(shapes.in_shape) or saved.get(target) != given:
        raise UserError(
            f"{what} was trained on in_shape={list(saved['in_shape'])}, {target}={saved.get(target)}, but the data "
            f"gives in_shape={list(shapes.in_shape)}, {target}={given}; {fix}"
        )
