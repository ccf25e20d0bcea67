"""stpred-eval: test a trained checkpoint on the test split of its datamodule.

Commands:
    stpred-eval ckpt_path=runs/quickstart/<run>/checkpoints/last.ckpt
    stpred-eval ckpt_path=... +data.n_test=200                     # the saved data config with another test size
    stpred-eval ckpt_path=... data=navier_stokes data.resolution=32  # another data config than the saved one
    stpred-eval ckpt_path=... trainer=gpu
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from stpred.apps._cli import guard, run_cli
from stpred.apps._compose import CONFIG_DIR, build_datamodule, check_shapes_match, task_class, use_hydra_logging
from stpred.apps._config_check import check_trainer
from stpred.apps._outputs import check_output_folder
from stpred.apps._run_folder import after_failed_run

__all__ = ["evaluate", "main"]

log = logging.getLogger("stpred.eval")


def _load_task(ckpt: dict):
    hp = dict(ckpt["hyper_parameters"])
    hp.pop("model_version", None)
    task = task_class(hp["data"].get("task", "forecast"))(**hp)
    task.load_state_dict({k.replace("_orig_mod.", ""): v for k, v in ckpt["state_dict"].items()})
    return task


def evaluate(cfg: DictConfig, data_choice: str | None = None) -> dict[str, float]:
    """Rebuild task and datamodule from the checkpoint (``data=`` overrides the saved data config) and test.

    ``data_choice`` is the ``data=`` name given on the command line, if any (an unknown one is refused).

    The trainer keys, the checkpoint (whole, an stpred one) and the data's shapes against the checkpoint's are
    checked before any data is read; a failed start leaves no run folder behind.
    """
    out = Path(cfg.paths.output_dir)
    try:
        if data_choice and cfg.get("data") is None:
            from stpred.errors import UserError

            known = sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml"))
            raise UserError(f"unknown data '{data_choice}' (config group 'data'); available: {', '.join(known)}")
        return _evaluate(cfg, out)
    except BaseException as exc:
        after_failed_run(out, cfg.paths.get("log_dir"), exc)
        raise


def _evaluate(cfg: DictConfig, out: Path) -> dict[str, float]:
    from stpred.checkpoint import read_checkpoint
    from stpred.datamodules.base import shapes_from_data_config
    from stpred.errors import UserError

    check_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    check_output_folder(out, "hydra.run.dir")
    ckpt = read_checkpoint(cfg.ckpt_path)
    hp = ckpt["hyper_parameters"]
    # Resolved here, inside the composed config: a `data=` override interpolates `paths.data_dir`. Keys without a
    # data config (`+data.n_test=50`) change the checkpoint's own.
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    data_cfg = given if "_target_" in given else {**(hp.get("datamodule") or {}), **given}
    if "_target_" not in data_cfg:
        raise UserError(f"{cfg.ckpt_path} records no datamodule config; pass one with data=<name>")
    check_shapes_match(
        f"ckpt_path={cfg.ckpt_path}",
        hp["data"],
        shapes_from_data_config(data_cfg),
        "set the data keys to match (stpred-zoo show or the run's config.yaml lists them)",
    )

    from lightning.pytorch.loggers import CSVLogger

    from stpred.apps._report import write_per_lead

    use_hydra_logging()
    dm = build_datamodule(OmegaConf.create(data_cfg), "test")
    task = _load_task(ckpt)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=CSVLogger(out, name="", version=""), callbacks=[])
    logged = trainer.test(task, datamodule=dm)
    results = {k.removeprefix("test/"): float(v) for k, v in (logged[0] if logged else {}).items()}
    if trainer.is_global_zero:
        print(f"checkpoint: {cfg.ckpt_path}")
        print("test:       " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(results.items())))
        if getattr(task, "test_per_lead", None):
            csv_path, png_path = write_per_lead(task.test_per_lead, out)
            print(f"per lead:   {csv_path}, {png_path}")
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    # `data` is an optional group for stpred-eval, so Hydra passes an unknown name over in silence.
    data_choice = HydraConfig.get().runtime.choices.get("data")
    guard("stpred-eval", lambda: evaluate(cfg, data_choice))


def main() -> None:
    run_cli("stpred-eval", _hydra_main)


if __name__ == "__main__":
    main()
