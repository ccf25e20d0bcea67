"""``ClassifyTask``: clip classification ``[B, T, C, H, W] -> [B, num_classes]`` with top-1/top-5 accuracy.

Evaluation batches may carry several views of each clip, ``x: [B, V, T, C, H, W]`` (e.g. 10 clips x 3 crops):
the class probabilities (softmax) are averaged over the views before the top-k (docs/metrics.md §7), and the
validation/test loss is the negative log of the averaged probability of the true class (plain cross-entropy when
V = 1). Training batches with views are folded into the batch, one sample per view.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from stpred._version import __version__
from stpred.errors import ConfigError
from stpred.tasks.base import TaskBase

__all__ = ["ClassifyTask", "REQUIRED_METADATA", "average_views"]

REQUIRED_METADATA = ("in_shape", "num_classes")


def average_views(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities averaged over views: logits ``[B, V, K]`` -> probabilities ``[B, K]``."""
    return logits.float().softmax(dim=-1).mean(dim=1)


class ClassifyTask(TaskBase):
    """Trains a registered classifier; logs ``*/loss``, ``*/acc1``, ``*/acc5`` and ``val/acc1_best``.

    Everything it takes is a plain value, so checkpoints load with ``weights_only=True``.

    Args:
        model: ``{"name": registry name, "kwargs": {...}}``; ``in_shape``/``num_classes`` come from ``data``.
        data: the datamodule's ``metadata()`` (``in_shape``, ``num_classes``, class names...).
        optim: optimiser and schedule, see :data:`stpred.tasks.optim.OPTIM_DEFAULTS`.
        loss: a classification loss of :func:`stpred.losses.list_losses` (``"cross_entropy"``).
        label_smoothing: label smoothing of the training cross-entropy.
        compile: compile the network in place (``self.net.compile``) in ``configure_model``.
        compile_kwargs: keyword arguments for ``torch.compile``.
        datamodule: the datamodule's config (plain dict), kept so evaluation can rebuild the data.
        stpred_version: the library version that wrote the checkpoint.
    """

    kind = "classify"
    required_metadata = REQUIRED_METADATA
    metadata_hint = "a classification datamodule provides"
    model_example = "squeezetime"

    def __init__(
        self,
        model: dict[str, Any],
        data: dict[str, Any],
        optim: dict[str, Any] | None = None,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.0,
        compile: bool = False,
        compile_kwargs: dict[str, Any] | None = None,
        datamodule: dict[str, Any] | None = None,
        stpred_version: str = __version__,
    ) -> None:
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(model, data, loss, loss_options={"label_smoothing": float(label_smoothing)})
        self.num_classes = int(data["num_classes"])
        self.build_net(num_classes=self.num_classes)
        self.top_k = min(5, self.num_classes)
        self.train_acc1 = self._accuracy(1)
        self.val_acc1, self.val_acc5, self.val_loss = self._accuracy(1), self._accuracy(self.top_k), MeanMetric()
        self.test_acc1, self.test_acc5, self.test_loss = self._accuracy(1), self._accuracy(self.top_k), MeanMetric()
        self.val_acc1_best = MaxMetric()

    def _accuracy(self, k: int) -> MulticlassAccuracy:
        return MulticlassAccuracy(num_classes=self.num_classes, top_k=k, average="micro")

    # -- model ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised clips ``[B, T, C, H, W]`` -> logits ``[B, num_classes]``."""
        return self.net(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, num_classes]`` from ``[B, T, C, H, W]`` or views ``[B, V, T, C, H, W]``."""
        if x.dim() == 5:
            x = x.unsqueeze(1)
        b = x.shape[0]
        logits = self(rearrange(x, "b v t c h w -> (b v) t c h w"))
        return average_views(rearrange(logits, "(b v) k -> b v k", b=b))

    # -- steps ----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, label = batch["x"], batch["label"]
        if x.dim() == 6:
            label = label.repeat_interleave(x.shape[1])
            x = x.flatten(0, 1)
        logits = self(x)
        loss = self.loss_fn(logits, label)
        self.train_acc1(logits.detach(), label)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0])
        self.log("train/acc1", self.train_acc1, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], acc1, acc5, loss_metric: MeanMetric) -> None:
        probs = self.predict_proba(batch["x"])
        label = batch["label"]
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), label)
        loss_metric.update(loss, weight=label.shape[0])
        acc1.update(probs, label)
        acc5.update(probs, label)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_acc1, self.val_acc5, self.val_loss)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_acc1, self.test_acc5, self.test_loss)

    def _compute(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = {"acc1": getattr(self, f"{stage}_acc1"), "acc5": getattr(self, f"{stage}_acc5")}
        metrics["loss"] = getattr(self, f"{stage}_loss")
        values = {k: m.compute().float() for k, m in metrics.items()}
        for m in metrics.values():
            m.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._compute("val")
        # The metric objects already reduced across processes; sync_dist averages identical values.
        self.log("val/loss", values["loss"], prog_bar=True, sync_dist=True)
        self.log("val/acc1", values["acc1"], prog_bar=True, sync_dist=True)
        self.log("val/acc5", values["acc5"], sync_dist=True)
        if not self.trainer.sanity_checking:
            self.val_acc1_best.update(values["acc1"])
            self.log("val/acc1_best", self.val_acc1_best.compute(), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        values = self._compute("test")
        self.log_dict({f"test/{k}": v for k, v in values.items()}, sync_dist=True)
