"""Physics of the PDE datasets, free of models and datamodules: the Navier-Stokes solver and its residual.

The datamodules generate trajectories with :mod:`stpred.physics.navier_stokes`; the Spectral-Refiner fine-tuning
(:mod:`stpred.tasks.refine`) minimises :func:`stpred.physics.residual.ns_residual`.
"""

from stpred.physics.navier_stokes import (
    NavierStokes2D,
    default_dt,
    enstrophy,
    fno_forcing,
    grf_sqrt_eig,
    kinetic_energy,
    sample_grf,
    spectral_resize,
    wavenumbers,
)
from stpred.physics.residual import finite_difference_matrix, ns_residual, time_derivative

__all__ = [
    "NavierStokes2D",
    "default_dt",
    "enstrophy",
    "fno_forcing",
    "grf_sqrt_eig",
    "kinetic_energy",
    "sample_grf",
    "spectral_resize",
    "wavenumbers",
    "finite_difference_matrix",
    "ns_residual",
    "time_derivative",
]
