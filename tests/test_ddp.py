"""Several processes evaluate each validation/test sample exactly once, so their metrics equal one process's.

Lightning's ``DistributedSampler`` pads an uneven split with repeated samples, which sum-reduced metric states would
count twice; the datamodules' evaluation loaders read rank r's samples r, r + W, ... instead
(:func:`stpred.datamodules.base.eval_sampler`), and the tasks' evaluation losses are exact sums too
(:class:`stpred.metrics.WeightedMean`). tests/test_train.py checks an even split through ``stpred-eval``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import Dataset
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from stpred.datamodules.base import ForecastDataModule, eval_sampler
from stpred.errors import UserError
from stpred.metrics import ForecastMetrics, WeightedMean

T_OUT, SIZE, CLASSES = 3, 16, 5
SPLITS = {"val": 9, "test": 21}  # odd: 2 processes get 5 + 4 and 11 + 10 samples, and one batch fewer on rank 1


class _Windows(Dataset):
    """Sample i: a deterministic target, a prediction and a class score; ``idx`` tells which sample a batch held."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 + i)
        y = torch.rand(T_OUT, 1, SIZE, SIZE, generator=g)
        return {
            "idx": torch.tensor(i),
            "y": y,
            "pred": y + 0.2 * torch.randn(y.shape, generator=g),
            "logits": torch.randn(CLASSES, generator=g),
            "label": torch.tensor(i % CLASSES),
        }


class _Module(ForecastDataModule):
    def __init__(self) -> None:
        super().__init__(batch_size=4)
        self.datasets = {split: _Windows(n) for split, n in SPLITS.items()}


def _scores(loader) -> dict:
    """The forecast metrics (scalars and per-lead curves), a weighted batch loss and the classification metrics of
    one pass; under a process group every value is reduced over all processes."""
    forecast = ForecastMetrics(T_OUT, data_range=1.0, pde=True, lat_weights=torch.linspace(0.5, 1.5, SIZE).tolist())
    loss, mean = WeightedMean(), MeanMetric()
    acc1 = MulticlassAccuracy(num_classes=CLASSES, top_k=1, average="micro")
    acc3 = MulticlassAccuracy(num_classes=CLASSES, top_k=3, average="micro")
    seen: list[int] = []
    for batch in loader:
        seen += batch["idx"].tolist()
        forecast.update(batch["pred"], batch["y"])
        batch_loss = (batch["pred"] - batch["y"]).square().mean()
        loss.update(batch_loss, weight=len(batch["idx"]))
        mean.update(batch_loss, weight=len(batch["idx"]))  # as ClassifyTask's evaluation loss
        acc1.update(batch["logits"], batch["label"])
        acc3.update(batch["logits"], batch["label"])
    out = {k: float(v) for k, v in forecast.compute().items()}
    out.update({f"lead_{k}": v.tolist() for k, v in forecast.per_lead().items()})
    out.update(loss=float(loss.compute()), mean_metric=float(mean.compute()))
    out.update(acc1=float(acc1.compute()), acc3=float(acc3.compute()))
    return {"seen": seen, "scores": out}


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        dm = _Module()  # no trainer attached: the ranks come from torch.distributed
        result = {"val": _scores(dm.val_dataloader()), "test": _scores(dm.test_dataloader())}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _close(got, want, rel: float = 1e-6) -> bool:
    if isinstance(want, list):
        return len(got) == len(want) and all(_close(g, w, rel) for g, w in zip(got, want))
    return (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=rel, abs=1e-12)


@pytest.mark.timeout(180)
def test_two_processes_read_each_evaluation_sample_once_and_reduce_to_one_process(tmp_path):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one = _Module()
    for split, n in SPLITS.items():
        # Rank r reads r, r + 2, ...: no padding, no duplicate, nothing dropped.
        assert ranks[0][split]["seen"] == list(range(0, n, 2)), split
        assert ranks[1][split]["seen"] == list(range(1, n, 2)), split
        single = _scores(one.val_dataloader() if split == "val" else one.test_dataloader())
        assert single["seen"] == list(range(n))
        for r in range(2):
            for key, want in single["scores"].items():
                assert _close(ranks[r][split]["scores"][key], want), (split, r, key)


def test_eval_sampler_splits_any_length_without_repeats_and_refuses_too_few_samples():
    dataset = _Windows(7)
    for world in (2, 3, 4):
        parts = []
        for rank in range(world):
            trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": world, "rank": rank})
            parts.append(list(eval_sampler(dataset, trainer)))
        assert sorted(sum(parts, [])) == list(range(7)), world
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    one = SimpleNamespace(distributed_sampler_kwargs=None)
    assert eval_sampler(dataset, one) is None
    off = SimpleNamespace(
        distributed_sampler_kwargs={"num_replicas": 2, "rank": 0},
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
    )
    assert eval_sampler(dataset, off) is None  # the user took the sampling over
    with pytest.raises(UserError, match="test split has 7 samples, fewer than the 8 processes"):
        eval_sampler(dataset, SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 8, "rank": 0}), "test")


@pytest.mark.timeout(300)
def test_ddp_sim_training_tests_an_odd_split_like_one_process(tmp_path):
    """``trainer=ddp_sim`` (2 CPU processes) on 9 validation and 21 test windows: the run's test metrics equal a
    one-process ``stpred-eval`` of the checkpoint it tested, and the uneven validation batches do not hang."""
    # Imported here: the spawned workers of the test above import this module, and need none of the apps.
    from _helpers import TINY_QUICKSTART
    from _hydra import compose_config

    from stpred.apps.evaluate import evaluate
    from stpred.apps.train import train

    sizes = ["data.n_train=8", "data.n_val=9", "data.n_test=21", "trainer.max_epochs=1"]
    out = tmp_path / "ddp"
    data = [*TINY_QUICKSTART, *sizes, f"data.root={tmp_path / 'ns'}"]
    two = train(compose_config("train", [*data, "trainer=ddp_sim", f"paths.output_dir={out}"]))
    tested = json.loads((out / "results.json").read_text())["best_checkpoint"]
    overrides = [f"ckpt_path={tested}", "trainer=cpu", "trainer.enable_progress_bar=false"]
    one = evaluate(compose_config("eval", [*overrides, f"paths.output_dir={tmp_path / 'one'}"]))
    assert {"loss", "mse", "mae", "rmse", "mse_frame", "mae_frame", "rel_l2", "rel_l2_step"} <= set(one)
    assert set(two) == set(one)
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-6), key
