"""Predictor families; importing this package registers every built-in model."""

from stpred.models import fno, simvp  # noqa: F401
