"""Stochastic depth shared by the residual blocks of SimVPv2 and PredFormer."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["DropPath"]


class DropPath(nn.Module):
    """Per-sample stochastic depth: zero a residual branch for a random subset of the batch, rescale the rest.

    Args:
        p: probability of dropping the branch for one sample.

    Shapes:
        any ``[B, ...]`` -> the same shape.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep
