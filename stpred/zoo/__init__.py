"""The model zoo: small demo checkpoints shipped with stpred, named ``zoo:<name>`` wherever a checkpoint path goes.

Each entry was trained on a CPU by one of the project's presets with a fixed seed (``stpred-zoo train`` retrains
them all and rewrites the files and ``zoo.json``); ``zoo.json`` records, for each, its test scores, the persistence
baseline (last input frame repeated) on the same split and metrics, the parameter count, the file size and the exact
training command. Importing this module is light: no torch, no Lightning.

Examples:
    >>> import stpred
    >>> [e.name for e in stpred.zoo.list_entries()]  # doctest: +SKIP
    ['mmnist-simvpv2', 'ns-fno2d', 'era5-t2m-simvpv2', 'kinetics-clips-simvpv2']
    >>> predictor = stpred.load_predictor("zoo:era5-t2m-simvpv2")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stpred.errors import UserError

__all__ = ["PREFIX", "ZOO_DIR", "INDEX", "ZooEntry", "list_entries", "get_entry", "resolve", "is_zoo_name"]

PREFIX = "zoo:"
ZOO_DIR = Path(__file__).resolve().parent
INDEX = ZOO_DIR / "zoo.json"


@dataclass(frozen=True)
class ZooEntry:
    """One shipped checkpoint, as ``zoo.json`` describes it.

    Attributes:
        name: the ``zoo:<name>`` name.
        path: the packaged ``.ckpt`` file.
        task: ``"forecast"`` (every entry so far) or ``"classify"``.
        data: the data it was trained and tested on, in words.
        description: model and setting, in words.
        metric: the key of :attr:`scores` that the zoo table shows first.
        scores: test-split metrics of the checkpoint (``mse``, ``mse_frame``, ``rel_l2``, ``rmse_lat``...).
        baseline: the same metrics of persistence (last input frame repeated) on the same split.
        params: number of network parameters.
        size_bytes: size of :attr:`path` in bytes.
        command: the exact training command (run from the repository root, ``STPRED_DATA`` set).
        extra: anything else recorded (seed, training seconds, epochs, stpred version).
    """

    name: str
    path: Path
    task: str
    data: str
    description: str
    metric: str
    scores: dict[str, float]
    baseline: dict[str, float]
    params: int
    size_bytes: int
    command: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """The main test score (:attr:`metric`)."""
        return float(self.scores[self.metric])

    @property
    def baseline_score(self) -> float:
        """Persistence on the main metric."""
        return float(self.baseline[self.metric])


def _read_index(index: Path = INDEX) -> list[dict[str, Any]]:
    if not index.is_file():
        return []
    return list(json.loads(index.read_text())["entries"])


def list_entries(index: Path | None = None) -> list[ZooEntry]:
    """Every shipped checkpoint, in the index's order (an empty list when no index was built)."""
    index = INDEX if index is None else Path(index)
    entries = []
    for row in _read_index(index):
        row = dict(row)
        path = index.parent / row.pop("file")
        entries.append(ZooEntry(path=path, **row))
    return entries


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (with or without the ``zoo:`` prefix).

    Raises:
        UserError: no such entry; the message lists the known names.
    """
    name = name.removeprefix(PREFIX)
    entries = list_entries()
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none (run stpred-zoo train)"
    raise UserError(f"unknown zoo checkpoint '{name}'; known: {known} (stpred-zoo list)")


def is_zoo_name(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` is a ``zoo:<name>`` reference."""
    return str(name_or_path).startswith(PREFIX)


def resolve(name_or_path: str | Path) -> Path:
    """``zoo:<name>`` -> the packaged ``.ckpt``; anything else is returned as a :class:`~pathlib.Path`.

    Raises:
        UserError: an unknown ``zoo:`` name (the message lists the known ones), or a known entry whose file is
            missing from this install.
    """
    text = str(name_or_path)
    if not text.startswith(PREFIX):
        return Path(name_or_path)
    entry = get_entry(text)
    if not entry.path.is_file():
        raise UserError(f"zoo checkpoint '{entry.name}' is listed but {entry.path} is missing; run stpred-zoo train")
    return entry.path
