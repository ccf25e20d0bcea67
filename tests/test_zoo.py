"""The model zoo: shipped checkpoints listed, loadable by ``zoo:<name>``, and their recorded scores reproducible."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stpred.apps._zoo_build import KEPT_KEYS
from stpred.checkpoint import load_predictor, read_checkpoint
from stpred.errors import UserError
from stpred.zoo import INDEX, list_entries, resolve
from stpred.zoo.presets import PRESETS
from tests._helpers import run_module

pytestmark = pytest.mark.usefixtures("one_thread")

ENTRIES = {e.name: e for e in list_entries()}
CHEAP = ("ns-fno2d", "era5-t2m-simvpv2")  # test splits small enough to score in a few seconds


def test_index_lists_every_preset_with_its_file():
    assert list(ENTRIES) == [p.name for p in PRESETS]
    rows = json.loads(INDEX.read_text())["entries"]
    for row, p in zip(rows, PRESETS):
        entry = ENTRIES[p.name]
        assert entry.path.is_file() and entry.path.parent == INDEX.parent
        assert entry.size_bytes == entry.path.stat().st_size == row["size_bytes"]
        assert entry.size_bytes < 8_000_000
        assert p.overrides[0] in entry.command and "seed=42" in entry.command
        assert entry.metric in entry.scores and entry.metric in entry.baseline
        assert set(entry.scores) == set(entry.baseline)


def test_list_prints_every_entry(tmp_path):
    done = run_module("stpred.apps.zoo", "list", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(ENTRIES) + 1
    for entry, line in zip(ENTRIES.values(), lines[1:]):
        assert line.startswith(entry.name)
        assert f"{entry.metric}={entry.score:.4g}" in line and f"{entry.baseline_score:.4g}" in line
        assert f"{entry.params:,}" in line


@pytest.mark.parametrize("name", [p.name for p in PRESETS])
def test_entry_loads_by_name(name):
    entry = ENTRIES[name]
    predictor = load_predictor(f"zoo:{name}")
    assert sum(p.numel() for p in predictor.net.parameters()) == entry.params
    assert resolve(f"zoo:{name}") == entry.path
    x = torch.rand(2, *predictor.in_shape)
    y = predictor.predict(x)
    assert y.shape == (2, predictor.out_frames, *predictor.in_shape[1:]) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", [p.name for p in PRESETS])
def test_checkpoint_holds_weights_and_portable_hyperparameters_only(name, shared_data):
    ckpt = read_checkpoint(f"zoo:{name}")
    assert set(ckpt) <= set(KEPT_KEYS) and "optimizer_states" not in ckpt
    assert all(k.startswith("net.") for k in ckpt["state_dict"])  # as Lightning wrote them
    text = json.dumps(ckpt["hyper_parameters"], default=str)
    assert str(shared_data) not in text  # no path of the training machine's data folder


@pytest.mark.parametrize("name", CHEAP)
def test_recorded_scores_reproduce(name, shared_data):
    from stpred.apps._zoo_scoring import score_checkpoint

    entry = ENTRIES[name]
    scores, baseline = score_checkpoint(f"zoo:{name}")
    for recorded, measured in ((entry.scores, scores), (entry.baseline, baseline)):
        assert set(measured) == set(recorded)
        for key, value in recorded.items():
            assert measured[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    assert scores[entry.metric] < baseline[entry.metric]  # the shipped forecaster beats persistence


def test_persistence_baseline_against_direct_computation(shared_data):
    """ns-fno2d's recorded persistence rel_l2, recomputed here from the test windows by hand."""
    from omegaconf import OmegaConf

    from stpred.apps._compose import build_datamodule

    hp = read_checkpoint("zoo:ns-fno2d")["hyper_parameters"]
    dm = build_datamodule(OmegaConf.create(hp["datamodule"]), "test")
    mean, std = float(hp["data"]["mean"][0]), float(hp["data"]["std"][0])
    errors = []
    for batch in dm.test_dataloader():
        x = batch["x"].double().numpy() * std + mean
        y = batch["y"].double().numpy() * std + mean
        for xs, ys in zip(x, y):
            guess = np.repeat(xs[-1:], len(ys), axis=0)
            errors.append(np.linalg.norm(guess - ys) / np.linalg.norm(ys))
    assert len(errors) == hp["data"]["splits"]["test"]
    assert math.isclose(ENTRIES["ns-fno2d"].baseline["rel_l2"], float(np.mean(errors)), rel_tol=1e-4)


def test_unknown_name_is_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        load_predictor("zoo:no-such-model")
    message = str(err.value)
    assert "\n" not in message and "no-such-model" in message
    assert all(name in message for name in ENTRIES)
    done = run_module("stpred.apps.zoo", "show", "no-such-model", cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no-such-model" in done.stderr


def test_other_paths_pass_through(tmp_path):
    assert resolve(tmp_path / "a.ckpt") == tmp_path / "a.ckpt"
    assert resolve("runs/x/last.ckpt").as_posix() == "runs/x/last.ckpt"
