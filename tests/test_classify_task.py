"""ClassifyTask: optimisation, multi-view averaging, streaming top-k accuracy, plain checkpoints; SimVPv2 classifier."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import stpred
from stpred import ConfigError, create_model
from stpred.models.simvp import SimVPv2
from stpred.tasks import ClassifyTask

IN_SHAPE = (4, 3, 16, 16)
NUM_CLASSES = 6
TINY_LRCN = {"name": "lrcn", "kwargs": {"widths": [8, 16], "blocks": 1, "stem": "small", "hidden": 16, "dropout": 0.0}}
TINY_SIMVP = {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2, "mlp_ratio": 2.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def _metadata(in_shape=IN_SHAPE, num_classes=NUM_CLASSES) -> dict:
    return {
        "dataset": "synthetic",
        "task": "classify",
        "in_shape": list(in_shape),
        "num_classes": num_classes,
        "class_names": [f"class_{i}" for i in range(num_classes)],
        "mean": [0.485, 0.456, 0.406][: in_shape[1]],
        "std": [0.229, 0.224, 0.225][: in_shape[1]],
    }


def _samples(n: int, views: int | None = None, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    shape = IN_SHAPE if views is None else (views, *IN_SHAPE)
    return [{"x": torch.randn(shape, generator=g), "label": torch.tensor(i % NUM_CLASSES)} for i in range(n)]


class TinyClips(L.LightningDataModule):
    """Synthetic random clips in memory, following the DataModule contract for classification."""

    task = "classify"
    in_shape = IN_SHAPE
    num_classes = NUM_CLASSES

    def __init__(self, eval_views: int | None = None) -> None:
        super().__init__()
        self.eval_views = eval_views

    def metadata(self) -> dict:
        return _metadata()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_samples(8, seed=1), batch_size=4, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_samples(6, self.eval_views, seed=2), batch_size=4)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_samples(6, self.eval_views, seed=3), batch_size=4)


def _trainer(tmp_path: Path, **kw) -> L.Trainer:
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "default_root_dir": tmp_path,
    }
    return L.Trainer(**{**defaults, **kw})


class FixedLogits(torch.nn.Module):
    """Returns the clip's first row of pixels as logits, so tests choose the scores: ``[B, 1, 1, 1, K] -> [B, K]``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, 0, 0, 0, :]


# --- optimisation ---


def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = ClassifyTask(
        model=TINY_LRCN, data=_metadata(), optim={"optimizer": "adam", "lr": 1e-2, "scheduler": "none"},
        label_smoothing=0.1,
    )  # fmt: skip
    batch = {"x": torch.randn(6, *IN_SHAPE), "label": torch.arange(6)}
    loader = DataLoader([{"x": batch["x"][i], "label": batch["label"][i]} for i in range(6)], batch_size=6)

    def loss_now() -> float:
        task.train()  # batch statistics, as in the training steps
        with torch.no_grad():
            return F.cross_entropy(task(batch["x"]), batch["label"]).item()

    before = loss_now()
    _trainer(tmp_path, max_steps=30, limit_val_batches=0).fit(task, train_dataloaders=loader)
    after = loss_now()
    assert after < 0.3 * before, (before, after)


def test_fit_with_a_real_trainer_logs_classification_metrics(tmp_path: Path) -> None:
    task = ClassifyTask(
        model=TINY_LRCN,
        data=_metadata(),
        optim={"optimizer": "sgd", "lr": 0.05, "scheduler": "cosine", "warmup_epochs": 1},
    )
    trainer = _trainer(tmp_path, max_epochs=2, num_sanity_val_steps=1, log_every_n_steps=1)
    trainer.fit(task, datamodule=TinyClips())
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/acc1", "val/loss", "val/acc1", "val/acc5", "val/acc1_best"):
        assert key in logged, key
    assert 0.0 <= float(logged["val/acc1"]) <= float(logged["val/acc5"]) <= 1.0
    assert float(logged["val/acc1_best"]) >= float(logged["val/acc1"])
    (tested,) = trainer.test(task, datamodule=TinyClips(eval_views=3), verbose=False)
    assert set(tested) == {"test/acc1", "test/acc5", "test/loss"}


# --- multi-view averaging and top-k ---


def test_multi_view_probabilities_are_averaged_softmaxes() -> None:
    task = ClassifyTask(model=TINY_LRCN, data=_metadata()).eval()
    x = torch.randn(3, 5, *IN_SHAPE)  # [B, V, T, C, H, W]
    with torch.no_grad():
        probs = task.predict_proba(x)
        by_hand = torch.stack(
            [torch.stack([task(x[b, v][None])[0].softmax(-1) for v in range(5)]).mean(0) for b in range(3)]
        )
        single = task.predict_proba(x[:, 0])
    assert probs.shape == (3, NUM_CLASSES)
    assert torch.allclose(probs, by_hand, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert torch.allclose(single, task(x[:, 0]).softmax(-1), atol=1e-6)


def _hand_topk(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    return (probs.topk(k, dim=-1).indices == labels[:, None]).any(-1).float().mean().item()


@pytest.mark.parametrize("views", [None, 4])
def test_validate_and_test_accuracy_match_a_hand_computation(tmp_path: Path, views: int | None) -> None:
    k = 10
    task = ClassifyTask(model=TINY_LRCN, data=_metadata((1, 1, 1, k), k))
    task.net = FixedLogits()
    g = torch.Generator().manual_seed(7)
    n = 23  # batches of 8, 8, 7: the metric is micro-averaged over samples, not over batches
    shape = (n, 1, 1, 1, 1, k) if views is None else (n, views, 1, 1, 1, k)
    scores = 3 * torch.randn(shape, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    loader = DataLoader([{"x": scores[i], "label": labels[i]} for i in range(n)], batch_size=8)

    logits = scores.reshape(n, -1, k)
    probs = logits.softmax(-1).mean(1)
    acc1, acc5 = _hand_topk(probs, labels, 1), _hand_topk(probs, labels, 5)
    nll = -probs[torch.arange(n), labels].log().mean().item()
    assert 0.0 < acc1 < acc5 < 1.0  # the data exercise both
    if views is not None:
        # Averaging logits instead of probabilities would give another loss: the test tells them apart.
        logit_avg = logits.mean(1).softmax(-1)
        assert abs(-logit_avg[torch.arange(n), labels].log().mean().item() - nll) > 1e-2

    trainer = _trainer(tmp_path)
    (val,) = trainer.validate(task, dataloaders=loader, verbose=False)
    assert val["val/acc1"] == pytest.approx(acc1, abs=1e-6)
    assert val["val/acc5"] == pytest.approx(acc5, abs=1e-6)
    assert val["val/loss"] == pytest.approx(nll, rel=1e-5)
    (tested,) = trainer.test(task, dataloaders=loader, verbose=False)
    assert tested == pytest.approx({"test/acc1": acc1, "test/acc5": acc5, "test/loss": nll}, rel=1e-5)


def test_top5_is_capped_by_the_number_of_classes() -> None:
    task = ClassifyTask(model=TINY_LRCN, data=_metadata(num_classes=3))
    assert task.val_acc5.top_k == 3 and task.val_acc1.top_k == 1


# --- checkpoints ---


def test_checkpoint_is_plain_and_loads_weights_only(tmp_path: Path) -> None:
    task = ClassifyTask(model=TINY_LRCN, data=_metadata(), optim={"optimizer": "adamw", "lr": 1e-3})
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=TinyClips())
    path = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(path)

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    json.dumps(hp)  # plain values only
    assert hp["model"] == TINY_LRCN and hp["data"] == _metadata() and hp["loss"] == "cross_entropy"
    assert hp["model_version"] == 1 and "stpred_version" in hp

    net = create_model(hp["model"]["name"], in_shape=hp["data"]["in_shape"], num_classes=hp["data"]["num_classes"],
                       **hp["model"]["kwargs"])  # fmt: skip
    net.load_state_dict({k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    x = torch.randn(2, *IN_SHAPE)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), task.eval()(x))

    # load_predictor rebuilds the classifier from the file alone and returns class probabilities.
    predictor = stpred.load_predictor(path)
    assert predictor.task == "classify" and predictor.out_frames is None
    mean = torch.tensor(hp["data"]["mean"]).view(1, 1, -1, 1, 1)
    std = torch.tensor(hp["data"]["std"]).view(1, 1, -1, 1, 1)
    with torch.no_grad():
        expected = net((x - mean) / std).softmax(-1)
    torch.testing.assert_close(predictor.predict(x), expected)
    best = predictor.top_k(x, k=2)
    assert len(best) == 2 and best[0][0][1] == pytest.approx(float(expected[0].max()), rel=1e-5)


# --- construction errors ---


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"loss": "mse"}, "cross_entropy"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"data": {"in_shape": [4, 3, 16, 16]}}, "num_classes"),
        ({"model": {"kwargs": {}}}, "name"),
    ],
)
def test_config_errors(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        ClassifyTask(**{"model": TINY_LRCN, "data": _metadata(), **kwargs})


# --- SimVPv2 as a classifier (the forecast path is covered by tests/test_models.py) ---


def test_simvp_classifier_forward_backward_and_no_decoder() -> None:
    model = create_model("simvpv2", in_shape=(8, 3, 32, 32), num_classes=5, **TINY_SIMVP).train()
    y = model(torch.randn(3, 8, 3, 32, 32))
    assert y.shape == (3, 5) and torch.isfinite(y).all()
    F.cross_entropy(y, torch.tensor([0, 2, 4])).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not hasattr(model, "decoder")
    assert model.head.fc.in_features == 8 * TINY_SIMVP["hid_S"]
    # Pooled translator features -> linear, by hand:
    model.eval()
    x = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.allclose(model(x), model.head.fc(feats.mean(dim=(-2, -1))), atol=1e-5)


def test_simvp_forecast_counts_unchanged_and_exactly_one_target() -> None:
    small = {"hid_S": 32, "hid_T": 256, "N_S": 2, "N_T": 8}
    counts = [
        sum(p.numel() for p in SimVPv2(in_shape=(10, 1, 64, 64), out_frames=10, device="meta").parameters()),
        sum(p.numel() for p in SimVPv2(in_shape=(4, 2, 32, 32), out_frames=4, device="meta", **small).parameters()),
        sum(p.numel() for p in SimVPv2(in_shape=(12, 1, 32, 64), out_frames=12, device="meta", **small).parameters()),
    ]
    assert counts == [46_769_665, 9_961_058, 12_758_305]
    clf = SimVPv2(in_shape=(10, 1, 64, 64), num_classes=400, device="meta")
    decoder = sum(
        p.numel()
        for n, p in SimVPv2(in_shape=(10, 1, 64, 64), out_frames=10, device="meta").named_parameters()
        if "decoder" in n
    )
    assert sum(p.numel() for p in clf.parameters()) == 46_769_665 - decoder + 640 * 400 + 400
    with pytest.raises(ConfigError, match="exactly one"):
        SimVPv2(in_shape=(10, 1, 64, 64), out_frames=10, num_classes=5, **TINY_SIMVP)
    with pytest.raises(ConfigError, match="exactly one"):
        create_model("simvpv2", in_shape=(10, 1, 64, 64), **TINY_SIMVP)
    with pytest.raises(ConfigError, match="num_classes"):
        SimVPv2(in_shape=(10, 1, 64, 64), num_classes=1, **TINY_SIMVP)


# --- configs and the app, end to end on the real Kinetics clips of the shared data ---


@pytest.mark.parametrize("experiment, name", [("kinetics_squeezetime", "squeezetime"), ("kinetics_lrcn", "lrcn")])
def test_experiments_compose_and_build(tmp_path: Path, experiment: str, name: str) -> None:
    from _hydra import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.data._target_ == "stpred.datamodules.kinetics.KineticsDataModule" and cfg.data.task == "classify"
    assert cfg.model.name == name and cfg.loss == "cross_entropy" and cfg.trainer.gradient_clip_val == 40.0
    assert cfg.optim.optimizer == "sgd" and cfg.optim.scheduler == "cosine"
    if name == "squeezetime":
        assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.015, 0.9, 7.0e-5)
        assert (cfg.optim.warmup_epochs, cfg.trainer.max_epochs, cfg.data.batch_size) == (8, 100, 64)
    kwargs = dict(cfg.model.kwargs)
    net = create_model(name, in_shape=(16, 3, 224, 224), num_classes=400, device="meta", **kwargs)
    n = sum(p.numel() for p in net.parameters())
    assert n == (29_706_688 if name == "squeezetime" else 12_067_792)


def test_train_app_runs_a_classifier_on_real_clips(tmp_path: Path, shared_data: Path) -> None:
    import os

    from _hydra import compose_config

    from stpred.apps.train import train

    video = shared_data / "video"
    root = tmp_path / "k400"
    clips = {
        "arm_wrestling": video / "kinetics_arm_wrestling.mp4",
        "cleaning_pool": video / "kinetics_cleaning_pool.mp4",
    }
    for split, names in {"train": ["a", "b"], "val": ["v"], "test": ["t"]}.items():
        for folder, clip in clips.items():
            (root / split / folder).mkdir(parents=True)
            for n in names:
                os.symlink(clip, root / split / folder / f"{n}.mp4")
    out = tmp_path / "run"
    cfg = compose_config(
        "train",
        [
            "experiment=kinetics_squeezetime",
            f"data.root={root}",
            f"data.label_map={video / 'label_map_k400.txt'}",
            "data.num_frames=4",
            "data.frame_stride=2",
            "data.short_side=40",
            "data.crop_size=32",
            "data.test_clips=2",
            "data.test_crops=3",
            "data.batch_size=2",
            "model.kwargs.depths=[1,1,1,1]",
            "model.kwargs.widths=[4,4,8,8]",
            "model.kwargs.pos_dim=null",
            "model.kwargs.gate_channels=4",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            f"paths.output_dir={out}",
        ],
    )
    results = train(cfg)
    assert set(results) == {"acc1", "acc5", "loss"}
    # Two test clips, each averaged over 2 clips x 3 crops.
    assert results["acc1"] in (0.0, 0.5, 1.0) and results["acc5"] in (0.0, 0.5, 1.0)
    assert results["acc1"] <= results["acc5"] and 0.0 < results["loss"] < 50.0
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/acc1", "val/acc5", "val/acc1_best", "train/loss_epoch", "test/acc1"} <= set(header)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    json.dumps(hp)
    assert hp["model"]["name"] == "squeezetime" and hp["data"]["num_classes"] == 400
    assert hp["data"]["in_shape"] == [4, 3, 32, 32] and hp["data"]["test_views"] == 6
    best = list((out / "checkpoints").glob("epoch_*.ckpt"))
    assert best, "the best checkpoint (by val/acc1) is missing"

    # The label map travels in the checkpoint: a predictor rebuilt from the file alone names classes on a real clip.
    label_map = (video / "label_map_k400.txt").read_text().splitlines()
    assert hp["data"]["class_names"] == label_map
    from stpred.datamodules.video_io import read_clip

    frames = read_clip(clips["arm_wrestling"], [0, 2, 4, 6])  # uint8 [4, H, W, 3]
    clip = torch.nn.functional.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0, size=(32, 32), mode="bilinear"
    )
    ranked = stpred.load_predictor(best[0]).top_k(clip, k=5)[0]
    assert len(ranked) == 5 and all(name in label_map for name, _ in ranked)
    assert sum(p for _, p in ranked) <= 1.0 + 1e-6 and ranked[0][1] >= ranked[-1][1]
