"""stpred-train: train a forecaster from Hydra configs, then test its best checkpoint.

Commands:
    stpred-train experiment=quickstart                       # embedded default: Navier-Stokes 32x32 + FNO-2D, CPU
    stpred-train data=mmnist model=simvpv2 trainer.max_epochs=3
    stpred-train experiment=mmnist_simvpv2 trainer=gpu       # one GPU, bf16-mixed
    stpred-train experiment=mmnist_simvpv2 trainer=ddp trainer.devices=4
    stpred-train experiment=quickstart ckpt_path=runs/quickstart/<run>/checkpoints/last.ckpt trainer.max_epochs=20
    stpred-train debug=fdr                                   # one batch of train and validation
    stpred-train -m seed=1,2,3 experiment=quickstart         # a sweep, one folder per run
    stpred-train experiment=quickstart --cfg job             # print the composed config
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

import stpred.configs
from stpred.apps._cli import guard, run_cli

__all__ = ["CONFIG_DIR", "train", "main"]

CONFIG_DIR = str(Path(stpred.configs.__file__).parent)
log = logging.getLogger("stpred.train")


def use_hydra_logging() -> None:
    """Send Lightning's log records through Hydra's handlers only (console and ``train.log``), not twice."""
    import lightning  # noqa: F401  (its import attaches its own console handler)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def _instantiate_list(group: DictConfig | None, kind: str) -> list[Any]:
    objs = []
    for conf in (group or {}).values():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info(f"Instantiating {kind} <{conf._target_}>")
            objs.append(hydra.utils.instantiate(conf))
    return objs


def build_datamodule(data_cfg: DictConfig, stage: str):
    """Instantiate, prepare and set up the datamodule; it must follow the DataModule contract."""
    log.info(f"Instantiating datamodule <{data_cfg._target_}>")
    dm = hydra.utils.instantiate(data_cfg)
    dm.prepare_data()
    dm.setup(stage)
    return dm


def task_class(kind: str) -> type:
    """The LightningModule for a datamodule's ``task`` (``"forecast"`` or ``"classify"``)."""
    from stpred.errors import UserError
    from stpred.tasks import ForecastTask

    if kind == "forecast":
        return ForecastTask
    if kind == "classify":
        from stpred.tasks.classify import ClassifyTask

        return ClassifyTask
    raise UserError(f"datamodule task '{kind}' is not one of forecast, classify")


def build_task(cfg: DictConfig, dm) -> Any:
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


def _monitor_accuracy(cfg: DictConfig) -> None:
    """Classification runs keep the checkpoint with the best validation top-1 accuracy, not the lowest MSE."""
    ckpt = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if ckpt is not None and ckpt.get("monitor") == "val/mse":
        ckpt.monitor, ckpt.mode = "val/acc1", "max"


def _check_resume(ckpt_path: str | None, model_name: str) -> None:
    if not ckpt_path:
        return
    from stpred.checkpoint import read_checkpoint
    from stpred.errors import UserError

    saved = read_checkpoint(ckpt_path)["hyper_parameters"]["model"]["name"]
    if saved != model_name:
        raise UserError(f"ckpt_path={ckpt_path} holds model '{saved}', but the config builds '{model_name}'")


def _summary(out: Path, trainer, task) -> list[str]:
    lines = [f"run folder:  {out}"]
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and ckpt_cb.best_model_path:
        lines.append(f"checkpoints: {ckpt_cb.best_model_path} (best), {Path(ckpt_cb.dirpath) / 'last.ckpt'} (last)")
    if (out / "metrics.csv").exists():
        lines.append(f"metrics:     {out / 'metrics.csv'}")
    panels = sorted((out / "panels").glob("*.png"))
    if panels:
        lines.append(f"picture:     {panels[-1]}")
    return lines


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as the config says; returns the test metrics (empty when not tested)."""
    import lightning as L

    from stpred.apps._report import write_per_lead

    use_hydra_logging()
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    _check_resume(cfg.ckpt_path, cfg.model.name)

    dm = build_datamodule(cfg.data, "fit")
    task = build_task(cfg, dm)
    if dm.task == "classify":
        _monitor_accuracy(cfg)
    callbacks = _instantiate_list(cfg.get("callbacks"), "callback")
    loggers = _instantiate_list(cfg.get("logger"), "logger")
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    n_params = sum(p.numel() for p in task.net.parameters())
    log.info(
        f"{cfg.model.name}: {n_params:,} parameters | devices {trainer.num_devices} x batch "
        f"{getattr(dm, 'batch_size', '?')} | lr {cfg.optim.lr} | precision {trainer.precision}"
    )

    if cfg.train:
        trainer.fit(task, datamodule=dm, ckpt_path=cfg.ckpt_path)
    results: dict[str, float] = {}
    if cfg.test and not trainer.fast_dev_run:
        ckpt_cb = trainer.checkpoint_callback
        best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
        logged = trainer.test(task, datamodule=dm, ckpt_path=best or (None if cfg.train else cfg.ckpt_path))
        # Under ddp_spawn the task lives in the workers; the logged values come back through trainer.test.
        results = {k.removeprefix("test/"): float(v) for k, v in (logged[0] if logged else {}).items()}
        if trainer.is_global_zero and getattr(task, "test_per_lead", None):
            csv_path, png_path = write_per_lead(task.test_per_lead, out)
            log.info(f"per-lead test curves: {csv_path}, {png_path}")
    if trainer.is_global_zero:
        for line in _summary(out, trainer, task):
            print(line)
        if results:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(results.items()))
            print(f"test:        {shown}")
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    results = guard("stpred-train", lambda: train(cfg))
    return results.get("mse", results.get("acc1"))  # the value a sweep optimises


def main() -> None:
    run_cli("stpred-train", _hydra_main)


if __name__ == "__main__":
    main()
