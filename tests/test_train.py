"""The spine end to end on a tiny Navier-Stokes setting: training, resume, checkpoints, predictors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import TINY_QUICKSTART
from _hydra import compose_config

import stpred
from stpred.apps.evaluate import evaluate
from stpred.apps.train import train

TINY_DATA = TINY_QUICKSTART


@pytest.fixture(scope="module")
def ns_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ns_cache")


def _run(tmp_path: Path, ns_root: Path, extra: list[str], name: str = "run") -> tuple[Path, dict]:
    out = tmp_path / name
    cfg = compose_config("train", [*TINY_DATA, f"data.root={ns_root}", f"paths.output_dir={out}", *extra])
    results = train(cfg)
    return out, results


def _epoch_rows(metrics_csv: Path, key: str) -> list[tuple[int, float]]:
    rows = list(csv.DictReader(metrics_csv.open()))
    return [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ns_root) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("trained")
    return _run(tmp, ns_root, ["trainer.max_epochs=4"])


def test_training_run_writes_its_folder_and_validation_loss_drops(trained):
    out, results = trained
    for rel in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "panels/val_epoch_003.png"):
        assert (out / rel).is_file(), rel
    assert list((out / "checkpoints").glob("epoch_*.ckpt")), "best checkpoint missing"
    val = _epoch_rows(out / "metrics.csv", "val/loss")
    assert [e for e, _ in val] == [0, 1, 2, 3]
    assert val[-1][1] < 0.8 * val[0][1], f"validation loss did not drop: {val}"
    assert {"mse", "mae", "rmse", "rel_l2", "rel_l2_step"} <= set(results)
    assert 0.0 < results["rel_l2"] < 1.5
    lead = list(csv.DictReader((out / "test_per_lead.csv").open()))
    assert [int(r["lead"]) for r in lead] == [1, 2, 3]


def test_checkpoint_loads_weights_only_and_rebuilds_the_predictor_alone(trained, tmp_path):
    out, _ = trained
    ckpt_path = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert hp["model"]["name"] == "fno2d" and hp["data"]["dataset"] == "navier_stokes"
    json.dumps(hp)  # plain values only

    predictor = stpred.load_predictor(ckpt_path)
    x = torch.randn(2, *predictor.in_shape) * 2.0 + 0.5
    got = predictor.predict(x)
    mean = torch.tensor(hp["data"]["mean"]).view(1, 1, -1, 1, 1)
    std = torch.tensor(hp["data"]["std"]).view(1, 1, -1, 1, 1)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net = stpred.create_model(
        "fno2d", in_shape=predictor.in_shape, out_frames=predictor.out_frames, **hp["model"]["kwargs"]
    )
    net.load_state_dict(state)
    with torch.no_grad():
        expected = net.eval()((x - mean) / std) * std + mean
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got.shape == (2, predictor.out_frames, *predictor.in_shape[1:])

    # A fresh interpreter with nothing but the checkpoint path.
    x_path = tmp_path / "x.pt"
    torch.save(x, x_path)
    code = (
        "import sys, torch, stpred; p = stpred.load_predictor(sys.argv[1]); "
        "y = p.predict(torch.load(sys.argv[2], weights_only=True)); torch.save(y, sys.argv[3])"
    )
    y_path = tmp_path / "y.pt"
    subprocess.run([sys.executable, "-c", code, str(ckpt_path), str(x_path), str(y_path)], check=True, cwd=tmp_path)
    torch.testing.assert_close(torch.load(y_path, weights_only=True), expected, rtol=1e-5, atol=1e-5)


def test_resume_continues_at_the_saved_step(trained, tmp_path, ns_root):
    out, _ = trained
    last = out / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    steps_per_epoch = saved["global_step"] // 4
    assert saved["epoch"] == 3 and steps_per_epoch > 0

    resumed, _ = _run(tmp_path, ns_root, ["trainer.max_epochs=5", f"ckpt_path={last}", "test=false"])
    train_rows = _epoch_rows(resumed / "metrics.csv", "train/loss_epoch")
    assert [e for e, _ in train_rows] == [4], "resumed run must train only the remaining epoch"
    new = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert new["global_step"] == saved["global_step"] + steps_per_epoch


def test_resume_with_another_model_is_refused(trained, tmp_path, ns_root):
    out, _ = trained
    last = out / "checkpoints" / "last.ckpt"
    simvp = ["model=simvpv2", "~model.kwargs.modes", "~model.kwargs.width", "~model.kwargs.mode"]
    with pytest.raises(stpred.UserError, match="holds model 'fno2d'"):
        _run(tmp_path, ns_root, [*simvp, f"ckpt_path={last}"])


def _evaluate(ckpt: Path, out: Path, trainer: str) -> dict:
    cfg = compose_config(
        "eval",
        [f"ckpt_path={ckpt}", f"trainer={trainer}", "trainer.enable_progress_bar=false", f"paths.output_dir={out}"],
    )
    return evaluate(cfg)


def test_eval_reproduces_test_metrics_and_two_ddp_processes_reduce_exactly(trained, tmp_path):
    out, results = trained
    best = next((out / "checkpoints").glob("epoch_*.ckpt"))
    single = _evaluate(best, tmp_path / "one", "cpu")
    for key in ("mse", "mae", "rel_l2", "rel_l2_step"):
        assert single[key] == pytest.approx(results[key], rel=1e-6), key
    assert (tmp_path / "one" / "test_per_lead.csv").is_file()
    # 8 test windows split 4 + 4 over two processes: no padding, so streaming sums must reduce to the same values.
    ddp = _evaluate(best, tmp_path / "two", "ddp_sim")
    for key in ("mse", "mae", "rmse", "mse_frame", "rel_l2", "rel_l2_step"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
