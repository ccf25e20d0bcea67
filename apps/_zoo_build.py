"""Rebuild zoo entries: train a preset, export its best checkpoint without optimiser state, score it against
persistence on the test split, and record it in ``zoo.json``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from stpred.apps._zoo_clips import prepare_clips
from stpred.apps._zoo_scoring import count_params, score_checkpoint
from stpred.errors import UserError
from stpred.zoo import INDEX, ZOO_DIR
from stpred.zoo.presets import SEED, ZooPreset

__all__ = ["train_command", "train_entry", "export_checkpoint", "portable_paths", "write_index_entry"]

log = logging.getLogger("stpred.zoo")

#: What a packaged checkpoint keeps of Lightning's file; optimiser, scheduler, loop and callback state are dropped.
KEPT_KEYS = ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "hparams_name", "hyper_parameters")
#: Stored in place of the data folder of the training machine, so stpred-eval finds the data on any machine.
DATA_DIR_TOKEN = "${oc.env:STPRED_DATA,data}"


def _overrides(p: ZooPreset, run_root: Path) -> list[str]:
    return [o.format(clips=(run_root / "clips").as_posix()) for o in p.overrides] + [f"seed={SEED}"]


def train_command(p: ZooPreset, run_root: Path = Path("runs/zoo")) -> str:
    """The shell command that trains ``p`` (from the repository root, ``STPRED_DATA`` set)."""
    train = " ".join(["stpred-train", *_overrides(p, run_root), f"hydra.run.dir={(run_root / p.name).as_posix()}"])
    return f"stpred-zoo clips {(run_root / 'clips').as_posix()} && {train}" if p.clips else train


def _data_dir() -> Path:
    value = os.environ.get("STPRED_DATA")
    if not value:
        raise UserError("STPRED_DATA is not set; point it at the folder of shared data (mnist/, weather/, video/...)")
    return Path(value).expanduser().resolve()


def portable_paths(value: Any, data_dir: Path, token: str) -> Any:
    """``value`` (nested dicts/lists) with every string path under ``data_dir`` rewritten to start with ``token``."""
    if isinstance(value, dict):
        return {k: portable_paths(v, data_dir, token) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, data_dir, token) for v in value]
    if isinstance(value, str) and value.startswith(str(data_dir)):
        return token + value[len(str(data_dir)) :]
    return value


def export_checkpoint(src: Path, dest: Path, data_dir: Path) -> Path:
    """Write ``src`` to ``dest`` with weights and hyperparameters only (``state_dict`` keys as Lightning wrote them).

    Paths under ``data_dir`` become ``${oc.env:STPRED_DATA,data}/...`` in the datamodule config (resolved by
    stpred-eval) and ``$STPRED_DATA/...`` in the metadata.
    """
    import torch

    from stpred.atomic import atomic_output

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    out = {k: ckpt[k] for k in KEPT_KEYS if k in ckpt}
    hp = dict(out["hyper_parameters"])
    hp["datamodule"] = portable_paths(hp.get("datamodule"), data_dir, DATA_DIR_TOKEN)
    hp["data"] = portable_paths(hp["data"], data_dir, "$STPRED_DATA")
    out["hyper_parameters"] = hp
    with atomic_output(dest) as tmp:
        torch.save(out, tmp)
    return dest


def write_index_entry(record: dict[str, Any], index: Path = INDEX, order: list[str] | None = None) -> None:
    """Insert or replace ``record`` (by name) in ``index``; entries follow ``order`` when given."""
    from stpred.atomic import atomic_output

    rows = json.loads(index.read_text())["entries"] if index.is_file() else []
    rows = [r for r in rows if r["name"] != record["name"]] + [record]
    if order:
        rank = {name: i for i, name in enumerate(order)}
        rows.sort(key=lambda r: rank.get(r["name"], len(rank)))
    with atomic_output(index) as tmp:
        tmp.write_text(json.dumps({"format": 1, "entries": rows}, indent=2) + "\n")


def _run_training(p: ZooPreset, run_root: Path) -> tuple[Path, float]:
    from stpred.apps._compose import compose_train_config
    from stpred.apps._training import train

    run_dir = run_root / p.name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a stale best checkpoint of an earlier run must not be picked up
    cfg = compose_train_config(*_overrides(p, run_root), output_dir=run_dir)
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    return _best_checkpoint(run_dir), seconds


def _best_checkpoint(run_dir: Path) -> Path:
    record = run_dir / "results.json"
    if not record.is_file():
        raise UserError(f"{run_dir} holds no results.json; train it first (stpred-zoo train)")
    results = json.loads(record.read_text())
    best = results.get("best_checkpoint") or results.get("last_checkpoint")
    if not best:
        raise UserError(f"{record} names no checkpoint")
    return Path(best)


def train_entry(
    p: ZooPreset,
    *,
    run_root: Path = Path("runs/zoo"),
    dest_dir: Path = ZOO_DIR,
    reuse_run: bool = False,
    order: list[str] | None = None,
) -> dict[str, Any]:
    """Train ``p`` (or, with ``reuse_run``, take its finished run folder), export, score, and index it.

    Returns:
        The ``zoo.json`` record written.
    """
    from stpred._version import __version__
    from stpred.checkpoint import read_checkpoint

    data_dir = _data_dir()
    if p.clips:
        prepare_clips(data_dir / "video", run_root / "clips")
    seconds = None
    if reuse_run:
        best = _best_checkpoint(run_root / p.name)
    else:
        best, seconds = _run_training(p, run_root)
    dest = export_checkpoint(best, dest_dir / f"{p.name}.ckpt", data_dir)
    ckpt = read_checkpoint(dest)
    scores, baseline = score_checkpoint(dest)
    record = {
        "name": p.name,
        "file": dest.name,
        "task": ckpt["hyper_parameters"]["data"].get("task", "forecast"),
        "data": p.data,
        "description": p.description,
        "metric": p.metric,
        "scores": scores,
        "baseline": baseline,
        "params": count_params(dest),
        "size_bytes": dest.stat().st_size,
        "command": train_command(p, run_root),
        "extra": {
            "seed": SEED,
            "epoch": int(ckpt.get("epoch", -1)),
            "global_step": int(ckpt.get("global_step", -1)),
            "model": ckpt["hyper_parameters"]["model"]["name"],
            "train_seconds": None if seconds is None else round(seconds, 1),
            "stpred_version": __version__,
        },
    }
    write_index_entry(record, dest_dir / INDEX.name, order)
    return record
