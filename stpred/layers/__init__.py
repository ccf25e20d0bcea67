"""Shared building blocks used by the predictors."""

from stpred.layers.conv_ssm import ConvSSM
from stpred.layers.drop import DropPath
from stpred.layers.heads import ClassifierHead
from stpred.layers.spectral_conv import SpectralConv2d, SpectralConv3d

__all__ = ["ClassifierHead", "ConvSSM", "DropPath", "SpectralConv2d", "SpectralConv3d"]
