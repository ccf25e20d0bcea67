"""The training routine behind ``stpred-train`` and ``stpred.train``: fit, test the best checkpoint, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from stpred.apps._compose import build_datamodule, build_task, check_shapes_match, instantiate_list, use_hydra_logging
from stpred.apps._config_check import check_train_config
from stpred.apps._outputs import check_output_folder
from stpred.apps._run_folder import after_failed_run
from stpred.errors import UserError

__all__ = ["train"]

log = logging.getLogger("stpred.train")


def _monitor_accuracy(cfg: DictConfig) -> None:
    """Classification runs keep the checkpoint with the best validation top-1 accuracy, not the lowest MSE."""
    ckpt = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if ckpt is not None and ckpt.get("monitor") == "val/mse":
        ckpt.monitor, ckpt.mode = "val/acc1", "max"


def _resume_checkpoint(cfg: DictConfig) -> str | None:
    """The resolved ``ckpt_path``, checked before any data is read: the file is whole and holds the model, the data
    shapes and the tensor shapes the config builds; otherwise one line naming both sides."""
    if not cfg.ckpt_path:
        return None
    from stpred.checkpoint import read_checkpoint
    from stpred.datamodules.base import shapes_from_data_config
    from stpred.registry import create_model_from_config
    from stpred.zoo import resolve

    given = cfg.ckpt_path
    path = str(resolve(given))
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    saved_model = hp["model"]["name"]
    if saved_model != cfg.model.name:
        raise UserError(f"ckpt_path={given} holds model '{saved_model}', but the config builds '{cfg.model.name}'")
    shapes = shapes_from_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    check_shapes_match(
        f"ckpt_path={given}",
        hp["data"],
        shapes,
        "resume with the data settings it was trained with, or start a new run (ckpt_path=null)",
    )
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    own = create_model_from_config(model_cfg, shapes.in_shape, **shapes.target()).state_dict()
    for key, value in ckpt["state_dict"].items():
        key = key.replace("_orig_mod.", "").removeprefix("net.")
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            old_kwargs, new_kwargs = hp["model"].get("kwargs") or {}, model_cfg.get("kwargs") or {}
            keys = sorted(k for k in set(old_kwargs) | set(new_kwargs) if old_kwargs.get(k) != new_kwargs.get(k))
            differ = [f"{k} {old_kwargs.get(k)} -> {new_kwargs.get(k)}" for k in keys]
            raise UserError(
                f"ckpt_path={given} holds {key} of shape {list(value.shape)}, the config builds {list(own[key].shape)}"
                + (f" (model.kwargs differ: {', '.join(differ)})" if differ else "")
                + "; resume with the model settings it was trained with, or start a new run (ckpt_path=null)"
            )
    return path


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
    """Fit and test as the config says; returns the test metrics (empty when not tested).

    The config is checked as a whole first; a start that fails leaves no run folder behind.
    """
    _settle_task_name(cfg)
    out = Path(cfg.paths.output_dir)
    try:
        return _train(cfg, out)
    except BaseException as exc:
        after_failed_run(out, cfg.paths.get("log_dir"), exc)
        raise


def _train(cfg: DictConfig, out: Path) -> dict[str, float]:
    check_train_config(cfg)
    check_output_folder(out, "hydra.run.dir")
    resume = _resume_checkpoint(cfg)

    import lightning as L

    from stpred.apps._report import write_per_lead
    from stpred.faults import FiniteGuard, SigtermCheckpoint, SIGTERMException
    from stpred.resume import AtomicCheckpointIO, LoaderPosition, SeedEachStep

    use_hydra_logging()
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = build_datamodule(cfg.data, "fit")
    task = build_task(cfg, dm)
    if dm.task == "classify":
        _monitor_accuracy(cfg)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    sigterm = SigtermCheckpoint(_last_checkpoint_path(callbacks, out))
    # FiniteGuard first: a non-finite loss stops the step before any other callback saves.
    callbacks = [FiniteGuard(), SeedEachStep(cfg.seed), LoaderPosition(), *callbacks, sigterm]
    loggers = instantiate_list(cfg.get("logger"), "logger")
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    n_params = sum(p.numel() for p in task.net.parameters())
    log.info(
        f"{cfg.model.name}: {n_params:,} parameters | devices {trainer.num_devices} x batch "
        f"{getattr(dm, 'batch_size', '?')} | lr {cfg.optim.lr} | precision {trainer.precision}"
    )

    if cfg.train:
        try:
            trainer.fit(task, datamodule=dm, ckpt_path=resume)
        except SIGTERMException:
            _stop_on_sigterm(sigterm)
    results: dict[str, float] = {}
    if cfg.test and not trainer.fast_dev_run:
        ckpt_cb = trainer.checkpoint_callback
        best = ckpt_cb.best_model_path if ckpt_cb is not None and ckpt_cb.best_model_path else None
        logged = trainer.test(task, datamodule=dm, ckpt_path=best or (None if cfg.train else resume))
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


def _last_checkpoint_path(callbacks: list, out: Path) -> Path:
    """Where ``last.ckpt`` goes: the folder of the configured last-checkpoint writer, else ``<run>/checkpoints``."""
    from stpred.resume import LastCheckpoint

    for callback in callbacks:
        if isinstance(callback, LastCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / "last.ckpt"
    return out / "checkpoints" / "last.ckpt"


def _stop_on_sigterm(sigterm) -> None:
    """SIGTERM stopped the fit: say where the run was saved, in one line, and exit 143 (128 + SIGTERM)."""
    import sys

    if sigterm.saved is not None:
        print(
            f"stpred-train: stopped by SIGTERM at step {sigterm.step}; saved {sigterm.saved}; resume with "
            f"ckpt_path={sigterm.saved}",
            file=sys.stderr,
        )
    else:
        print("stpred-train: stopped by SIGTERM before training began; nothing was saved", file=sys.stderr)
    raise SystemExit(143)
