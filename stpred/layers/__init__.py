"""Shared building blocks used by the predictors."""

from stpred.layers.spectral_conv import SpectralConv2d, SpectralConv3d

__all__ = ["SpectralConv2d", "SpectralConv3d"]
