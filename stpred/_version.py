"""The library version, in one place (pyproject reads it; checkpoints record it)."""

__version__ = "0.1.0"
