"""Every config group composes, and every experiment builds its datamodule object and its model."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from _hydra import compose_config
from omegaconf import OmegaConf

import stpred
from stpred.apps.bench import preset
from stpred.apps.train import CONFIG_DIR
from stpred.datamodules.base import shapes_from_data_config
from stpred.registry import create_model_from_config

GROUPS = ("data", "model", "trainer", "callbacks", "logger", "experiment", "debug")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_every_registered_model_has_a_config_and_back():
    assert _options("model") == stpred.list_models()


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group, tmp_path):
    options = _options(group)
    assert options, f"config group {group} is empty"
    for option in options:
        cfg = compose_config("train", [f"{group}={option}", f"paths.output_dir={tmp_path}"])
        assert cfg.data._target_ and cfg.model.name and cfg.trainer._target_


def test_every_data_config_answers_its_shapes(tmp_path):
    # shapes_from_config of the class each data config names; tests/test_datamodule_contract.py checks the values
    for option in _options("data"):
        cfg = compose_config("train", [f"data={option}", f"paths.output_dir={tmp_path}"])
        shapes = shapes_from_data_config(cfg.data)
        assert len(shapes.in_shape) == 4 and shapes.task in ("forecast", "classify"), option


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_experiment_builds_its_datamodule_and_model(experiment, tmp_path):
    # Point the data at an empty folder (or file, for a data config that names one), so nothing real is read.
    composed = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    data = f"data.path={tmp_path / 'missing.nc'}" if composed.data.get("path") else f"data.root={tmp_path}"
    cfg, in_shape, target = preset(experiment, (data,))
    assert cfg.task_name == experiment
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.task == ("classify" if "num_classes" in target else "forecast")
    model = create_model_from_config(OmegaConf.to_container(cfg.model), in_shape, **target)
    assert sum(p.numel() for p in model.parameters()) > 0
    trainer = hydra.utils.instantiate(cfg.trainer, accelerator="cpu", devices=1, logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_mmnist_simvpv2_preset_is_the_published_model(tmp_path):
    cfg = compose_config("train", ["experiment=mmnist_simvpv2", f"paths.output_dir={tmp_path}"])
    model = stpred.create_model("simvpv2", in_shape=(10, 1, 64, 64), out_frames=10, **cfg.model.kwargs)
    assert abs(sum(p.numel() for p in model.parameters()) - 46.77e6) / 46.77e6 < 1e-3
    assert cfg.optim.lr == 1e-3 and cfg.optim.scheduler == "onecycle" and cfg.data.batch_size == 16


def test_switching_a_presets_model_drops_the_presets_model_keys(tmp_path):
    """`experiment=quickstart model=predformer`: the preset's FNO keys (modes, width, mode) are dropped and PredFormer
    gets its own defaults; a command-line model key stays."""
    from stpred.apps._compose import compose_train_config
    from stpred.apps._config_check import check_train_config

    cfg = compose_train_config("experiment=quickstart", "model=predformer", output_dir=tmp_path / "run")
    kwargs = cfg.model.kwargs
    assert cfg.model.name == "predformer" and not {"modes", "width", "mode"} & set(kwargs)
    assert kwargs.dim == 256 and kwargs.patch_size == 8  # configs/model/predformer.yaml
    check_train_config(cfg)  # no unknown keyword is passed on
    kept = compose_train_config("experiment=quickstart", "model=fno3d", "model.kwargs.width=12", output_dir=tmp_path)
    assert kept.model.kwargs.width == 12 and "mode" not in kept.model.kwargs
    same = compose_train_config("experiment=quickstart", output_dir=tmp_path)
    assert (same.model.kwargs.modes, same.model.kwargs.width) == (8, 20)
