"""The training routine behind ``stpred-train`` and ``stpred.train``: fit, test the best checkpoint, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from stpred.apps._compose import build_datamodule, build_task, instantiate_list, use_hydra_logging

__all__ = ["train"]

log = logging.getLogger("stpred.train")


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


def _settle_task_name(cfg: DictConfig) -> None:
    """``task_name`` defaults to the data config's name, which only a Hydra job knows; elsewhere it is ``train``."""
    try:
        cfg.task_name  # noqa: B018  (resolves the interpolation)
    except InterpolationResolutionError:
        cfg.task_name = "train"


def _write_results(out: Path, trainer, results: dict[str, float]) -> Path:
    """``results.json``: test metrics and checkpoint paths, read by the sweep summary and ``stpred.train``."""
    from stpred.atomic import atomic_output

    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
    last = Path(ckpt_cb.dirpath) / "last.ckpt" if ckpt_cb is not None and ckpt_cb.dirpath else None
    record = {
        "test": results,
        "best_checkpoint": best,
        "last_checkpoint": str(last) if last is not None and last.is_file() else None,
    }
    path = out / "results.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as the config says; returns the test metrics (empty when not tested)."""
    import lightning as L

    from stpred.apps._report import write_per_lead

    use_hydra_logging()
    _settle_task_name(cfg)
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    _check_resume(cfg.ckpt_path, cfg.model.name)

    dm = build_datamodule(cfg.data, "fit")
    task = build_task(cfg, dm)
    if dm.task == "classify":
        _monitor_accuracy(cfg)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    loggers = instantiate_list(cfg.get("logger"), "logger")
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
        _write_results(out, trainer, results)
        for line in _summary(out, trainer, task):
            print(line)
        if results:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(results.items()))
            print(f"test:        {shown}")
    return results
