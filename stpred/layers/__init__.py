"""Shared building blocks used by the predictors."""

from stpred.layers.conv_ssm import ConvSSM
from stpred.layers.spectral_conv import SpectralConv2d, SpectralConv3d

__all__ = ["ConvSSM", "SpectralConv2d", "SpectralConv3d"]
