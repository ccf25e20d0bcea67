"""Classification head shared by the forecasting backbones: pooled features -> dropout -> linear."""

from __future__ import annotations

import torch
import torch.nn as nn

from stpred.errors import check

__all__ = ["ClassifierHead"]


class ClassifierHead(nn.Module):
    """Global average pooling over every axis after the channel axis, then a linear layer.

    Args:
        in_features: feature channels ``D``.
        num_classes: number of classes.
        dropout: dropout before the linear layer.

    Shapes:
        ``[B, D, *spatial]`` (any number of trailing axes, e.g. ``[B, D, T, H, W]``) or ``[B, D]`` ->
        logits ``[B, num_classes]``.
    """

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        check(in_features > 0, f"ClassifierHead: in_features must be positive, got {in_features}")
        check(num_classes > 1, f"num_classes must be at least 2, got {num_classes}")
        check(0.0 <= dropout < 1.0, f"ClassifierHead: dropout must be in [0, 1), got {dropout}")
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.flatten(2).mean(-1) if features.dim() > 2 else features
        return self.fc(self.drop(pooled))
