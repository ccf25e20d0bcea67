"""Turn a reference weight file into a self-describing stpred checkpoint (what ``stpred-train`` writes).

The checkpoint holds ``hyper_parameters`` (``model`` ``{name, kwargs}``, the datamodule ``data`` metadata, the
``datamodule`` config when known, ``stpred_version``, ``model_version`` and the task's other arguments) and
``state_dict`` with ``net.``-prefixed keys, so :func:`stpred.load_predictor`, ``stpred-eval``, ``stpred-demo`` and
``stpred-forecast`` read it like a trained one. It is written atomically and checked by loading it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stpred._version import __version__
from stpred.atomic import atomic_output
from stpred.checkpoint import load_predictor
from stpred.errors import UserError
from stpred.importers._read import load_weights, read_metadata_pickle, strip_prefixes, unwrap_state_dict
from stpred.importers.neuralop import fno_plan, looks_like_neuralop_fno
from stpred.importers.openstl import looks_like_simvp, simvp_plan
from stpred.importers.plan import Plan, apply_plan, parse_in_shape
from stpred.importers.predformer import looks_like_predformer, predformer_plan
from stpred.importers.squeezetime import IMAGENET_MEAN, IMAGENET_STD, looks_like_squeezetime, squeezetime_plan
from stpred.registry import model_version

__all__ = ["ImportReport", "MODELS", "default_metadata", "import_weights", "plan_import", "read_reference"]

#: stpred models with an importer, and the reference each reads.
MODELS = {
    "simvpv2": "OpenSTL SimVP_Model, gSTA translator (.pth state_dict, latest.pth, Lightning .ckpt)",
    "predformer": "PredFormer reference PredFormer_Model (.pth, also with DDP's module. prefix)",
    "fno2d": "neuraloperator 2.0 FNO, 2-D (state_dict .pt with _metadata, or save_checkpoint's pair)",
    "squeezetime": "SqueezeTime mmaction2 recognizer, Bottleneck depth 50+ (K400/K600/HMDB51 .pth)",
}
#: The models in MODELS that classify clips (the others forecast).
CLASSIFIERS = ("squeezetime",)


@dataclass
class Reference:
    """A reference file as read: tensors, constructor arguments (neuralop), and how it was wrapped."""

    path: Path
    state: dict[str, Any]
    meta: dict[str, Any] | None
    container: str
    prefixes: list[str] = field(default_factory=list)
    model: str | None = None


@dataclass
class ImportReport:
    """What :func:`import_weights` wrote."""

    out: Path
    family: str
    model: str
    kwargs: dict[str, Any]
    in_shape: tuple[int, int, int, int]
    out_frames: int | None
    params: int
    reference_params: int
    container: str
    notes: list[str]
    num_classes: int | None = None

    def lines(self) -> list[str]:
        kw = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        target = f"num_classes={self.num_classes}" if self.num_classes is not None else f"out_frames={self.out_frames}"
        return [
            f"read:       {self.family} ({self.container})",
            f"model:      {self.model}(in_shape={list(self.in_shape)}, {target}, {kw})",
            f"parameters: {self.params:,} (the reference counts {self.reference_params:,}; "
            "complex weights count once there, twice here)" if self.params != self.reference_params
            else f"parameters: {self.params:,} (as the reference counts them)",
            *[f"note:       {n}" for n in self.notes],
            f"wrote:      {self.out} (checked: load_predictor rebuilds it with the same tensors)",
        ]


def _pair_paths(path: Path) -> tuple[Path, Path | None]:
    """neuralop's ``save_checkpoint`` pair: ``<name>_state_dict.pt`` and ``<name>_metadata.pkl``."""
    name = path.name
    if name.endswith("_metadata.pkl"):
        return path.with_name(name[: -len("_metadata.pkl")] + "_state_dict.pt"), path
    if name.endswith("_state_dict.pt"):
        meta = path.with_name(name[: -len("_state_dict.pt")] + "_metadata.pkl")
        return path, meta if meta.is_file() else None
    return path, None


def read_reference(path: str | Path, *, metadata: str | Path | None = None) -> Reference:
    """Read a reference file (tensors with ``weights_only=True``, neuralop metadata with a restricted unpickler)."""
    weights, meta_path = _pair_paths(Path(path))
    if metadata is not None:
        meta_path = Path(metadata)
    obj = load_weights(weights)
    state, container = unwrap_state_dict(obj, weights)
    state, prefixes = strip_prefixes(state)
    meta = state.pop("_metadata", None)
    if meta_path is not None:
        meta = read_metadata_pickle(meta_path)
        container += f" + {meta_path.name}"
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{weights}: _metadata is a {type(meta).__name__}, not the dict of constructor arguments")
    model = None
    if looks_like_simvp(state):
        model = "simvpv2"
    elif looks_like_predformer(state):
        model = "predformer"
    elif looks_like_neuralop_fno(state):
        model = "fno2d"
    elif looks_like_squeezetime(state):
        model = "squeezetime"
    if prefixes:
        container += " with key prefix " + "".join(prefixes)
    return Reference(weights, state, meta, container, prefixes, model)


def plan_import(
    ref: Reference,
    *,
    model: str | None = None,
    in_shape: Any = None,
    out_frames: int | None = None,
    arrangement: str | None = None,
    heads: int | None = None,
) -> Plan:
    """The plan for ``ref``: the stpred model, its hyperparameters and where each tensor goes."""
    if model is None:
        if ref.model is None:
            first = next(iter(ref.state), "nothing")
            raise UserError(
                f"{ref.path}: cannot tell which reference wrote it (first key {first}); pass --model, one of "
                f"{', '.join(MODELS)}"
            )
        model = ref.model
    if model not in MODELS:
        raise UserError(f"--model {model} has no importer; importers exist for {', '.join(MODELS)}")
    if ref.model is not None and ref.model != model:
        raise UserError(f"{ref.path} holds {ref.model} weights ({MODELS[ref.model]}), not {model}")
    if ref.model is None:
        raise UserError(f"{ref.path} does not look like {MODELS[model]}: first key {next(iter(ref.state), 'none')}")
    if in_shape is None:
        raise UserError("pass --in-shape T,C,H,W (or --data <config>): the grid size is not stored in the file")
    shape = parse_in_shape(in_shape)
    if out_frames is not None and int(out_frames) < 1:
        raise UserError(f"--out-frames must be a positive int, got {out_frames}")
    if model != "predformer" and (arrangement is not None or heads is not None):
        raise UserError(f"--arrangement and --heads are PredFormer options; {model} takes neither")
    if model == "squeezetime":
        if out_frames is not None:
            raise UserError(f"--out-frames {out_frames}: {MODELS[model]} classifies clips; it forecasts no frames")
        return squeezetime_plan(ref.state, shape)
    if model == "simvpv2":
        return simvp_plan(ref.state, shape, out_frames)
    if model == "predformer":
        return predformer_plan(ref.state, shape, out_frames, arrangement=arrangement, heads=heads)
    return fno_plan(ref.state, ref.meta, shape, out_frames)


def default_metadata(
    in_shape: tuple[int, int, int, int],
    out_frames: int | None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Datamodule-style metadata when no data config is given: identity normalisation unless ``mean``/``std``.

    With ``num_classes`` (an imported clip classifier): RGB pixels in [0, 1] and, unless ``mean``/``std``, the
    ImageNet normalisation the reference applies; class names unknown (``--data`` gives them).
    """
    c = in_shape[1]
    if num_classes is not None and c == 3:
        mean = list(IMAGENET_MEAN) if mean is None else mean
        std = list(IMAGENET_STD) if std is None else std
    mean = [0.0] * c if mean is None else [float(v) for v in mean]
    std = [1.0] * c if std is None else [float(v) for v in std]
    if len(mean) != c or len(std) != c:
        raise UserError(f"--mean and --std need one value per channel (C={c}), got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise UserError(f"--std values must be positive, got {std}")
    if num_classes is not None:
        return {
            "dataset": "imported",
            "task": "classify",
            "in_shape": list(in_shape),
            "out_frames": None,
            "num_classes": int(num_classes),
            "class_names": None,
            "channels": ["red", "green", "blue"] if c == 3 else None,
            "mean": mean,
            "std": std,
            "data_range": 1.0,
            "pde": False,
        }
    return {
        "dataset": "imported",
        "task": "forecast",
        "in_shape": list(in_shape),
        "out_frames": int(out_frames),
        "channels": None,
        "units": None,
        "mean": mean,
        "std": std,
        "data_range": None,
        "pde": False,
    }


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def import_weights(
    path: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    in_shape: Any = None,
    out_frames: int | None = None,
    arrangement: str | None = None,
    heads: int | None = None,
    metadata_file: str | Path | None = None,
    data: dict[str, Any] | None = None,
    datamodule: dict[str, Any] | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    force: bool = False,
) -> ImportReport:
    """Import reference weights as an stpred checkpoint at ``out``.

    Args:
        path: the reference file (for neuralop's pair, either file).
        out: the ``.ckpt`` to write; its folder must exist; an existing file needs ``force``.
        model: stpred registry name; default read from the keys.
        in_shape: ``(T, C, H, W)`` or ``"T,C,H,W"``; default ``data["in_shape"]``.
        out_frames: forecast length; default ``data["out_frames"]``, else the model's natural one.
        arrangement: PredFormer arrangement; default read from the keys.
        heads: PredFormer attention heads (the file stores only ``heads * dim_head``).
        metadata_file: neuralop constructor arguments, when not beside the weights.
        data: a datamodule's ``metadata()`` (plain values); ``None``: identity normalisation (see ``mean``/``std``).
        datamodule: the data config (plain dict) stored for ``stpred-eval``.
        mean: per-channel mean when ``data`` is not given.
        std: per-channel std when ``data`` is not given.
        force: replace an existing ``out``.

    Raises:
        UserError: an unreadable file, an unsupported option, or the first tensor whose shape does not fit.
    """
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    if not out.parent.is_dir():
        found = next((parent for parent in out.parents if parent.exists()), None)
        if found is not None and not found.is_dir():
            raise UserError(f"cannot write {out}: {found} is a file, not a folder; pick another --out")
        raise UserError(f"the folder of --out {out} does not exist")
    if data is not None:
        classify = data.get("task") == "classify"
        data_shape = [int(v) for v in data["in_shape"]]
        if in_shape is not None and list(parse_in_shape(in_shape)) != data_shape:
            raise UserError(f"--in-shape {in_shape} differs from the data config's in_shape {data_shape}")
        if not classify and out_frames is not None and int(out_frames) != int(data["out_frames"]):
            raise UserError(f"--out-frames {out_frames} differs from the data config's out_frames {data['out_frames']}")
        in_shape, out_frames = data_shape, (out_frames if classify else int(data["out_frames"]))
    ref = read_reference(path, metadata=metadata_file)
    task = "classify" if (model or ref.model) in CLASSIFIERS else "forecast"
    if data is not None and data.get("task", "forecast") != task:
        raise UserError(f"the data config is a {data.get('task')} task; {ref.path} holds weights that {task}")
    plan = plan_import(ref, model=model, in_shape=in_shape, out_frames=out_frames, arrangement=arrangement, heads=heads)
    if task == "classify" and data is not None and int(data["num_classes"]) != plan.num_classes:
        raise UserError(f"the file classifies {plan.num_classes} classes; the data config has {data['num_classes']}")
    net, converted = apply_plan(plan, ref.state)
    if data is not None:
        meta = dict(data)
    else:
        meta = default_metadata(plan.in_shape, plan.out_frames, mean, std, num_classes=plan.num_classes)
    meta["in_shape"] = list(plan.in_shape)
    meta["out_frames"] = None if task == "classify" else int(plan.out_frames)
    ckpt = {
        "state_dict": {f"net.{k}": v for k, v in converted.items()},
        "hyper_parameters": {
            "model": {"name": plan.model, "kwargs": dict(plan.kwargs)},
            "data": meta,
            "optim": None,
            "loss": "cross_entropy" if task == "classify" else "mse",
            "compile": False,
            "compile_kwargs": None,
            "datamodule": datamodule,
            "stpred_version": __version__,
            "model_version": model_version(plan.model),
        },
        "stpred_import": {
            "source": Path(path).name,
            "family": plan.family,
            "container": ref.container,
            "reference_params": int(plan.reference_params),
        },
        "epoch": 0,
        "global_step": 0,
    }
    params = _n_params(net)
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
        _verify(tmp, plan, converted, params)
    return ImportReport(
        out, plan.family, plan.model, dict(plan.kwargs), plan.in_shape, plan.out_frames, params,
        int(plan.reference_params), ref.container, list(plan.notes), plan.num_classes,
    )  # fmt: skip


def _verify(path: Path, plan: Plan, converted: dict[str, torch.Tensor], params: int) -> None:
    """Load the written checkpoint as every app does and compare parameter count and tensors."""
    loaded = load_predictor(path).net
    got = _n_params(loaded)
    if got != params:
        raise UserError(f"the written checkpoint rebuilds {plan.model} with {got:,} parameters, not {params:,}")
    state = loaded.state_dict()
    for key, value in converted.items():
        if not torch.equal(state[key], value):
            raise UserError(f"the written checkpoint's {key} differs from the imported tensor")
