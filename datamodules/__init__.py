"""One LightningDataModule per dataset, selected in configs by ``_target_``; plus the Navier-Stokes solver."""

from stpred.datamodules.base import METADATA_KEYS, ForecastDataModule

__all__ = ["ForecastDataModule", "METADATA_KEYS"]
