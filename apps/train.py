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

import hydra
from omegaconf import DictConfig

from stpred.apps._cli import guard, run_cli
from stpred.apps._compose import CONFIG_DIR, settle_model_switch
from stpred.apps._training import train

__all__ = ["CONFIG_DIR", "train", "main"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    settle_model_switch(cfg, choices.get("model"), choices.get("experiment"), list(hydra_cfg.overrides.task))
    results = guard("stpred-train", lambda: train(cfg))
    return results.get("mse", results.get("acc1"))  # the value a sweep optimises


def main() -> None:
    run_cli("stpred-train", _hydra_main)


if __name__ == "__main__":
    main()
