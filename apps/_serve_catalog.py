"""What ``stpred-serve`` offers: its checkpoints (the zoo's and those named on the command line) and sample inputs.

Each checkpoint is loaded once at start-up, so a missing or unreadable one is reported before the server listens,
and sorted onto a page: video classifiers and video forecasters (``stpred-demo``'s kinds) go to the clip page, every
other forecaster (weather, grid flows, arrays such as Navier-Stokes vorticity) to the field page.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stpred.errors import UserError

__all__ = ["Catalog", "Checkpoint", "Sample", "FIELD_SUFFIXES", "build_catalog"]

#: Field inputs the page accepts (``stpred-forecast`` also reads folders and Zarr stores, which do not upload).
FIELD_SUFFIXES = (".nc", ".npy", ".h5")
SHARED_FIELDS = ("weather/era5_t2m_2019-03_uk.nc",)


@dataclass
class Checkpoint:
    """One checkpoint offered on a page.

    Attributes:
        key: its name on the page and in requests (``zoo:<name>``, or the file's stem).
        path: the ``.ckpt`` file.
        page: ``"clips"`` or ``"fields"``.
        kind: ``"classify"``, ``"forecast"`` (video) or the field kind (``"weather"``, ``"flow"``, ``"array"``).
        label: what the page's list shows.
        predictor: the loaded predictor (clip checkpoints are served from memory).
        info: plain facts for the page (model, data, input shape, scores).
    """

    key: str
    path: Path
    page: str
    kind: str
    label: str
    predictor: Any = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """A file offered as input: ``key`` (its name on the page) and ``path``."""

    key: str
    path: Path


@dataclass
class Catalog:
    checkpoints: dict[str, Checkpoint]
    clips: dict[str, Sample]
    fields: dict[str, Sample]

    def on_page(self, page: str) -> list[Checkpoint]:
        return [c for c in self.checkpoints.values() if c.page == page]

    def options(self) -> dict[str, Any]:
        """The JSON the pages build their lists from."""

        def entry(c: Checkpoint) -> dict[str, Any]:
            return {"key": c.key, "label": c.label, "kind": c.kind, **c.info}

        return {
            "clips": {"checkpoints": [entry(c) for c in self.on_page("clips")], "samples": sorted(self.clips)},
            "fields": {"checkpoints": [entry(c) for c in self.on_page("fields")], "samples": sorted(self.fields)},
        }


def _describe(key: str, path: Path, note: str = "") -> Checkpoint:
    from stpred.apps._forecasting import checkpoint_kind
    from stpred.apps._video_demo import demo_kind
    from stpred.checkpoint import load_predictor

    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; give a .ckpt written by stpred-train or a zoo:<name>")
    predictor = load_predictor(path)
    meta = predictor.metadata
    try:
        kind, page = demo_kind(predictor, path), "clips"
    except UserError:
        if predictor.task != "forecast":
            raise
        kind, page = checkpoint_kind(meta), "fields"
    info = {
        "model": predictor.model_name,
        "data": str(meta.get("dataset", "unknown")),
        "task": predictor.task,
        "in_shape": list(predictor.in_shape),
        "out_frames": predictor.out_frames,
    }
    label = f"{key} ({predictor.model_name}, {info['data']}, {kind})" + (f": {note}" if note else "")
    return Checkpoint(key, path, page, kind, label, predictor if page == "clips" else None, info)


def _zoo_checkpoints() -> list[Checkpoint]:
    """The zoo's entries that load; one that does not is named on stderr and left out."""
    from stpred.zoo import list_entries

    found = []
    for entry in list_entries():
        try:
            checkpoint = _describe(f"zoo:{entry.name}", entry.path, entry.description)
        except Exception as err:  # noqa: BLE001 - one broken entry must not stop the server
            print(f"stpred-serve: warning: zoo:{entry.name} left out ({' '.join(str(err).split())})", file=sys.stderr)
            continue
        checkpoint.info["scores"] = dict(entry.scores)
        checkpoint.info["baseline"] = dict(entry.baseline)
        found.append(checkpoint)
    return found


def _resolve(ref: str) -> tuple[str, Path]:
    from stpred.zoo import is_zoo_name, resolve

    if is_zoo_name(ref):
        return ref, resolve(ref)
    path = Path(ref)
    return path.stem, path


def _unique(key: str, taken: dict[str, Any]) -> str:
    n, candidate = 2, key
    while candidate in taken:
        candidate, n = f"{key}-{n}", n + 1
    return candidate


def _samples(paths: list[Path]) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    for path in paths:
        key = _unique(path.name, samples)
        samples[key] = Sample(key, path)
    return samples


def _field_inputs(given: list[str]) -> list[Path]:
    paths = []
    for ref in given:
        path = Path(ref)
        if not path.is_file():
            raise UserError(f"input file not found: {path}; give NetCDF (.nc), .npy or .h5 files with --inputs")
        paths.append(path)
    return paths


def build_catalog(
    ckpts: list[str], clips: list[str], inputs: list[str], use_zoo: bool = True, data_dir: str | None = None
) -> Catalog:
    """The checkpoints and samples of a server.

    Args:
        ckpts: ``--ckpt`` values (paths or ``zoo:<name>``).
        clips: ``--clips`` values (video files or folders of them).
        inputs: ``--inputs`` field files.
        use_zoo: offer every shipped zoo checkpoint too.
        data_dir: the shared data folder (``STPRED_DATA``): its Kinetics clips and ERA5 file become samples.

    Raises:
        UserError: a missing or unreadable checkpoint or sample, or no checkpoint at all.
    """
    from stpred.apps._clips import collect_clips

    checkpoints: dict[str, Checkpoint] = {}
    for checkpoint in _zoo_checkpoints() if use_zoo else []:
        checkpoints[checkpoint.key] = checkpoint
    for ref in ckpts:
        key, path = _resolve(ref)
        checkpoint = _describe(_unique(key, checkpoints) if not ref.startswith("zoo:") else key, path)
        checkpoints[checkpoint.key] = checkpoint
    if not checkpoints:
        raise UserError("no checkpoints to serve: give --ckpt PATH (or zoo:<name>), or install stpred with its zoo")
    clip_paths = collect_clips(clips) if clips else []
    field_paths = _field_inputs(inputs)
    data_dir = data_dir if data_dir is not None else os.environ.get("STPRED_DATA")
    if data_dir and Path(data_dir).is_dir():
        video = Path(data_dir) / "video"
        clip_paths += collect_clips([str(video)]) if video.is_dir() else []
        field_paths += [p for p in (Path(data_dir) / rel for rel in SHARED_FIELDS) if p.is_file()]
    return Catalog(checkpoints, _samples(list(dict.fromkeys(clip_paths))), _samples(list(dict.fromkeys(field_paths))))
