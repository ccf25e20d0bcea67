"""Import weights saved by reference implementations (OpenSTL SimVP, PredFormer, neuraloperator FNO, SqueezeTime's
mmaction2 recognizers) as stpred checkpoints that :func:`stpred.load_predictor` and the apps read like one written
by ``stpred-train``.

Files are read with ``torch.load(weights_only=True)``; neuraloperator's metadata pickle with a restricted unpickler.
Nothing from a file is ever executed.
"""

from stpred.importers.importer import (
    MODELS,
    ImportReport,
    default_metadata,
    import_weights,
    plan_import,
    read_reference,
)
from stpred.importers.plan import Entry, Plan, apply_plan

__all__ = [
    "MODELS",
    "Entry",
    "ImportReport",
    "Plan",
    "apply_plan",
    "default_metadata",
    "import_weights",
    "plan_import",
    "read_reference",
]
