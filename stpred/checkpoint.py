"""Rebuild a trained predictor from a Lightning ``.ckpt`` alone (``weights_only=True``; no config, no dataset)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from stpred._version import __version__
from stpred.archive import verify_archive
from stpred.errors import UserError
from stpred.masking import MaskReport, fill_input, training_fill
from stpred.registry import create_model_from_config, model_version

__all__ = ["Predictor", "load_predictor", "read_checkpoint"]


class Predictor:
    """A trained network with its normalisation and metadata; ``predict`` works in the data's own units.

    Args:
        net: the network on normalised values: ``[B, T_in, C, H, W] -> [B, T_out, C, H, W]`` for a forecaster,
            ``-> [B, num_classes]`` logits for a classifier.
        metadata: the datamodule metadata stored in the checkpoint (``mean``, ``std``, shapes, units, grid,
            class names...).
        model_name: registry name of ``net``.
        valid_mask: ``[C, H, W]`` bool, the cells observed at least once in training (checkpoints of masked data);
            forecasts are NaN outside it (:mod:`stpred.masking`).
    """

    def __init__(
        self, net: nn.Module, metadata: dict[str, Any], model_name: str, valid_mask: torch.Tensor | None = None
    ) -> None:
        self.net = net.eval()
        self.metadata = metadata
        self.model_name = model_name
        self.task = metadata.get("task", "forecast")
        self.in_shape = tuple(int(v) for v in metadata["in_shape"])
        self.out_frames = int(metadata["out_frames"]) if self.task == "forecast" else None
        self.class_names = list(metadata.get("class_names") or [])
        channels = self.in_shape[1]
        self._mean = torch.as_tensor(metadata["mean"], dtype=torch.float32).reshape(1, 1, channels, 1, 1)
        self._std = torch.as_tensor(metadata["std"], dtype=torch.float32).reshape(1, 1, channels, 1, 1)
        self.valid_mask = None if valid_mask is None else valid_mask.to(torch.bool).cpu()
        self._fill = training_fill(metadata) if self.task == "forecast" else None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> Predictor:
        self.net.to(device)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Forecast (or classify) from inputs in the data's own units.

        Missing input values (NaN) are handled as :mod:`stpred.masking` says: filled as in training, the forecast
        NaN where the input is masked; NaN where the training data had none is said in one warning line.

        Args:
            x: ``[B, T_in, C, H, W]`` or a single ``[T_in, C, H, W]`` sequence, in the data's own units (physical
                units for fields, [0, 1] pixels for video).

        Returns:
            A forecaster: ``[B, T_out, C, H, W]`` (or ``[T_out, C, H, W]``) de-normalised float32 forecasts. A
            classifier: class probabilities ``[B, num_classes]`` (or ``[num_classes]``). On the predictor's device.
        """
        out, report = self.predict_with_report(x)
        if report.message():
            warnings.warn(report.message(), stacklevel=2)
        return out

    @torch.no_grad()
    def predict_with_report(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, MaskReport]:
        """:meth:`predict`, and the :class:`~stpred.masking.MaskReport` of what was masked and filled."""
        x = _as_numbers(x, self.in_shape)
        single = x.dim() == 4
        if single:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.in_shape:
            expected = ", ".join(map(str, self.in_shape))
            raise UserError(f"input of shape {tuple(x.shape)} does not fit this checkpoint: it expects [B, {expected}]")
        device = self.device
        mean, std = self._mean.to(device), self._std.to(device)
        x = x.to(device, torch.float32)
        if self.task == "classify":
            out, report = self.net((x - mean) / std).float().softmax(-1), MaskReport()
        else:
            normalised, masked, report = fill_input(x, mean, std, valid_mask=self.valid_mask, fill=self._fill)
            out = self.net(normalised).float() * std + mean
            if masked is not None:
                out = out.masked_fill(masked.unsqueeze(1), float("nan"))
        return (out[0] if single else out), report

    def top_k(self, x: torch.Tensor | np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """A classifier's ``k`` most likely class names with probabilities, for each sequence in ``x``."""
        if self.task != "classify":
            raise UserError(f"top_k needs a classification checkpoint; {self.model_name} forecasts")
        probs = self.predict(x)
        probs = probs.unsqueeze(0) if probs.dim() == 1 else probs
        values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
        names = self.class_names or [str(i) for i in range(probs.shape[-1])]
        return [[(names[i], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]


#: Where to get a checkpoint that stpred reads, for messages.
_CHECKPOINT_FIX = "pass a .ckpt written by stpred-train or stpred-import, or zoo:<name> (stpred-zoo list)"


def unreadable_reason(path: Path, exc: BaseException, fix: str = _CHECKPOINT_FIX) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in words for the user, and what to do.

    The file's first bytes tell a text file, an empty or foreign file and a damaged ``torch.save`` archive apart;
    torch's own message is kept only for what it names (a refused global, the archive's fault), never its advice to
    load with ``weights_only=False`` (which runs arbitrary code and is not how stpred reads checkpoints).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as err:
        return f"{err.strerror or err}; check the file's permissions"
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"it holds a pickled Python object ({refused.group(1)}), not only tensors and plain values, and stpred "
            f"does not unpickle code; {fix}"
        )
    if not head:
        return f"the file is empty (0 bytes), so it was not written completely; {fix}"
    if head.startswith(b"PK\x03\x04"):
        detail = re.sub(r"^PytorchStreamReader failed reading zip archive: ", "", text.strip().splitlines()[0])
        detail = detail.split(". ")[0].rstrip(".")
        return f"it is a damaged torch.save archive ({detail}), maybe cut short in a copy; copy it again or {fix}"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.start < len(head) - 4:  # a character cut at the 4096th byte is still text
                return f"{path.name} is not a checkpoint (neither a torch.save archive nor a pickle); {fix}"
        return f"{path.name} is a text file, not a checkpoint; {fix}"
    if head[:1] == b"\x80":  # a pickle protocol mark: torch.save's legacy format, cut or damaged
        return f"it is a damaged or foreign pickle ({type(exc).__name__}); {fix}"
    return f"{path.name} is not a checkpoint (neither a torch.save archive nor a pickle); {fix}"


def _as_numbers(x: object, in_shape: tuple[int, ...]) -> torch.Tensor:
    """``x`` as a real-valued tensor (any integer or float dtype; :meth:`Predictor.predict` makes it float32)."""
    expected = f"[B, {', '.join(map(str, in_shape))}]"
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = x.copy()  # torch warns about sharing memory with a read-only array
    try:
        tensor = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(
            f"predict needs a tensor or array of numbers {expected}, got {type(x).__name__}"
            + (f" of {x.dtype}" if isinstance(x, np.ndarray) else "")
        ) from None
    if tensor.is_complex():
        raise UserError(f"predict needs a tensor or array of real numbers {expected}, got {tensor.dtype} values")
    return tensor


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a ``.ckpt`` with ``weights_only=True``; a missing or foreign file is one clear :class:`UserError`.

    ``zoo:<name>`` names a shipped checkpoint (:mod:`stpred.zoo`, ``stpred-zoo list``).
    """
    from stpred.zoo import resolve

    path = resolve(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (pass the path of a .ckpt written by stpred-train)")
    verify_archive(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is not a usable checkpoint
        raise UserError(f"cannot read checkpoint {path}: {unreadable_reason(path, exc)}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hparams or "model" not in hparams or "data" not in hparams:
        raise UserError(f"{path} is not an stpred checkpoint (no model/data hyperparameters); train with stpred-train")
    return ckpt


def load_predictor(path: str | Path, map_location: str | torch.device = "cpu") -> Predictor:
    """Rebuild model, normalisation and metadata from a checkpoint written by ``stpred-train``.

    Examples:
        >>> predictor = load_predictor("runs/quickstart/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> forecast = predictor.predict(x)  # [B, T_in, C, H, W] -> [B, T_out, C, H, W], physical units

    Raises:
        UserError: ``path`` is not a path, the file is missing or not an stpred checkpoint, or ``map_location``
            names no device here (``"cuda"`` without a visible GPU).
    """
    if not isinstance(path, (str, os.PathLike)):
        shown = "None" if path is None else type(path).__name__
        raise UserError(
            f"load_predictor needs the path of a .ckpt file (str or pathlib.Path) or 'zoo:<name>', got {shown}"
        )
    device = _device(map_location)
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    model_cfg, data = hp["model"], hp["data"]
    saved_version = hp.get("stpred_version")
    if saved_version and saved_version != __version__:
        warnings.warn(f"{path} was written by stpred {saved_version}; this is {__version__}", stacklevel=2)
    current_model_version = model_version(model_cfg["name"])
    if int(hp.get("model_version", current_model_version)) != current_model_version:
        warnings.warn(
            f"{path} holds {model_cfg['name']} version {hp.get('model_version')}; the code is version "
            f"{current_model_version}",
            stacklevel=2,
        )
    if data.get("task") == "classify":
        target = {"num_classes": int(data["num_classes"])}
    else:
        target = {"out_frames": int(data["out_frames"])}
    net = create_model_from_config(model_cfg, data["in_shape"], **target)
    state = {
        k[len("net.") :].replace("_orig_mod.", ""): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")
    }
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"checkpoint {path} does not match model '{model_cfg['name']}': {first}") from None
    valid_mask = ckpt["state_dict"].get("valid_mask")
    return Predictor(net, data, model_cfg["name"], valid_mask=valid_mask).to(device)


def _device(map_location: object) -> torch.device:
    """``map_location`` as a device that exists here; a wrong name or a missing GPU is one :class:`UserError`."""
    try:
        device = torch.device(map_location)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        raise UserError(
            f"map_location={map_location!r} is not a device; use 'cpu', 'cuda' or 'cuda:N' (a torch.device)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"map_location={map_location!r} asks for CUDA, but no CUDA device is visible; use map_location='cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UserError(f"map_location={map_location!r}: this machine has {count} CUDA device(s); pick one of them")
    return device
