"""stpred-eval: test a trained checkpoint on the test split of its datamodule.

Commands:
    stpred-eval ckpt_path=runs/quickstart/<run>/checkpoints/last.ckpt
    stpred-eval ckpt_path=... data=navier_stokes data.n_test=200     # another data config than the saved one
    stpred-eval ckpt_path=... trainer=gpu
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from stpred.apps._cli import guard, run_cli
from stpred.apps._compose import CONFIG_DIR, build_datamodule, task_class, use_hydra_logging

__all__ = ["evaluate", "main"]

log = logging.getLogger("stpred.eval")


def _load_task(ckpt: dict):
    hp = dict(ckpt["hyper_parameters"])
    hp.pop("model_version", None)
    task = task_class(hp["data"].get("task", "forecast"))(**hp)
    task.load_state_dict({k.replace("_orig_mod.", ""): v for k, v in ckpt["state_dict"].items()})
    return task


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild task and datamodule from the checkpoint (``data=`` overrides the saved data config) and test."""
    from lightning.pytorch.loggers import CSVLogger

    from stpred.apps._report import write_per_lead
    from stpred.checkpoint import read_checkpoint
    from stpred.errors import UserError

    use_hydra_logging()
    ckpt = read_checkpoint(cfg.ckpt_path)
    hp = ckpt["hyper_parameters"]
    # Resolved here, inside the composed config: a `data=` override interpolates `paths.data_dir`.
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else hp.get("datamodule")
    if not data_cfg:
        raise UserError(f"{cfg.ckpt_path} records no datamodule config; pass one with data=<name>")
    dm = build_datamodule(OmegaConf.create(data_cfg), "test")
    saved = hp["data"]
    target = "num_classes" if saved.get("task") == "classify" else "out_frames"
    if list(dm.in_shape) != list(saved["in_shape"]) or getattr(dm, target) != saved[target]:
        raise UserError(
            f"data gives in_shape={list(dm.in_shape)}, {target}={getattr(dm, target)}; the checkpoint was trained "
            f"on in_shape={saved['in_shape']}, {target}={saved[target]}"
        )
    task = _load_task(ckpt)
    out = Path(cfg.paths.output_dir)
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
    guard("stpred-eval", lambda: evaluate(cfg))


def main() -> None:
    run_cli("stpred-eval", _hydra_main)


if __name__ == "__main__":
    main()
