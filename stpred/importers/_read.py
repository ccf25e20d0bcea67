"""Read reference weight files without running pickled code.

Tensors come through ``torch.load(weights_only=True)``. neuraloperator's files also name two globals (its GELU and
its ``SpectralConv`` class, stored in the constructor arguments); they are allow-listed as inert markers, never the
real objects, so nothing from the file is ever called. A metadata ``.pkl`` goes through :class:`_MetadataUnpickler`,
which accepts plain containers, numbers and strings, and the same two names as markers.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stpred.errors import UserError

__all__ = ["PickledName", "load_weights", "read_metadata_pickle", "strip_prefixes", "unwrap_state_dict"]


class PickledName:
    """A global named in a pickle (e.g. ``torch._C._nn.gelu``), kept as its name; calling it is refused."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"the file asks to call {self.name} while loading; refused (stpred never runs pickled code)")

    def __repr__(self) -> str:
        return f"<pickled name {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PickledName) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


#: Globals that neuraloperator stores in its constructor arguments; read as names only.
KNOWN_NAMES = (
    "torch._C._nn.gelu",
    "torch.nn.functional.gelu",
    "neuralop.layers.spectral_convolution.SpectralConv",
)


def _marker_class(name: str) -> type:
    # torch's weights-only unpickler wants a class or function for an allow-listed name; this class refuses to be
    # instantiated, so a file that tries to build or call it stops with an error.
    def _refuse(cls: type, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"the file asks to call {name} while loading; refused (stpred never runs pickled code)")

    return type("PickledName_" + name.replace(".", "_"), (), {"__new__": _refuse, "pickled_name": name})


_MARKERS = {name: _marker_class(name) for name in KNOWN_NAMES}


def _as_names(obj: Any) -> Any:
    """Replace the marker classes torch returns by :class:`PickledName` values, through plain containers."""
    if isinstance(obj, type) and hasattr(obj, "pickled_name"):
        return PickledName(obj.pickled_name)
    if isinstance(obj, dict):
        return {k: _as_names(v) for k, v in obj.items()}  # keeps the order, which matters (PredFormer layouts)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_names(v) for v in obj)
    return obj


def load_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with neuraloperator's two globals read as inert names.

    A file that is missing, not a torch file, or needs any other global is one :class:`UserError`.
    """
    if not path.is_file():
        raise UserError(f"weight file not found: {path}")
    try:
        with torch.serialization.safe_globals([(cls, name) for name, cls in _MARKERS.items()]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file cannot be read safely
        from stpred.checkpoint import unreadable_reason

        reason = unreadable_reason(path, exc, fix="give the file the reference implementation saved (.pth, .ckpt, .pt)")
        raise UserError(f"cannot read {path} with weights_only=True: {reason}") from None
    return _as_names(obj)


class _MetadataUnpickler(pickle.Unpickler):
    """Plain containers, numbers and strings; :data:`KNOWN_NAMES` as :class:`PickledName`; anything else refused."""

    def __init__(self, data: bytes, source: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in KNOWN_NAMES:
            return PickledName(full)
        if (module, name) in (("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")):
            return {"OrderedDict": dict, "set": set, "frozenset": frozenset}[name]
        raise UserError(f"{self.source} pickles the global {full}; refused (only plain values are read)")

    def persistent_load(self, pid: Any) -> Any:
        raise UserError(f"{self.source} holds tensors; a metadata file holds plain values only")


def read_metadata_pickle(path: Path) -> dict[str, Any]:
    """The constructor arguments neuraloperator's ``save_checkpoint`` writes to ``<name>_metadata.pkl``.

    The file is a ``torch.save`` archive (or a bare pickle); its pickle is read by a restricted unpickler that never
    imports or calls anything.
    """
    if not path.is_file():
        raise UserError(f"metadata file not found: {path}")
    raw = path.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise UserError(f"{path} is a zip archive without data.pkl; not a torch.save file")
            raw = zf.read(names[0])
    try:
        obj = _MetadataUnpickler(raw, path).load()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle
        raise UserError(f"cannot read metadata {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not the dict of constructor arguments")
    return obj


def unwrap_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], str]:
    """The state_dict inside a loaded file and a word on the container.

    Plain state_dicts, ``{"state_dict": ...}`` (OpenSTL's ``latest.pth``, Lightning ``.ckpt``) and
    ``{"model": ...}`` wrappers are accepted.
    """
    if not isinstance(obj, Mapping):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    for key, label in (("state_dict", "state_dict wrapper"), ("model", "model wrapper")):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner), label
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no tensors at its top level or under 'state_dict'; not a weight file")
    return dict(obj), "plain state_dict"


_PREFIXES = ("model.", "module.", "_orig_mod.")


def strip_prefixes(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Drop the prefixes wrappers add to every key: ``model.`` (Lightning), ``module.`` (DDP), ``_orig_mod.``."""
    stripped: list[str] = []
    while True:
        keys = [k for k in state if k != "_metadata"]
        prefix = next((p for p in _PREFIXES if keys and all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            return state, stripped
        state = {(k[len(prefix) :] if k != "_metadata" else k): v for k, v in state.items()}
        stripped.append(prefix)
