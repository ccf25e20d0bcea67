"""Hyperparameter checks shared by every predictor: each returns the clean value or raises a one-line ConfigError.

Every message starts with the model's registry name (``"fno2d: width must be a positive int, got -1"``), so a bad
config entry is found without a traceback.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence
from typing import Any

from stpred.errors import check

__all__ = [
    "is_int",
    "is_number",
    "integer",
    "number",
    "rate",
    "flag",
    "one_of",
    "int_list",
    "int_tuple",
    "in_shape",
    "target",
]


def is_int(v: object) -> bool:
    """An integer size: numbers.Integral so that numpy ints from a datamodule pass; bool is never a size."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    """A finite real number (int, float or numpy scalar), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _int_words(minimum: int) -> str:
    return "a positive int" if minimum == 1 else f"an int >= {minimum}"


def integer(model: str, name: str, v: object, *, minimum: int = 1, why: str = "") -> int:
    """``v`` as an int ``>= minimum``; ``why`` (e.g. ``" (3 coordinate channels)"``) follows the rule."""
    check(is_int(v) and v >= minimum, f"{model}: {name} must be {_int_words(minimum)}{why}, got {v!r}")
    return int(v)


def number(model: str, name: str, v: object, *, positive: bool = False) -> float:
    """``v`` as a finite float (``> 0`` when ``positive``)."""
    ok = is_number(v) and (not positive or v > 0)
    check(ok, f"{model}: {name} must be a {'positive ' if positive else ''}number, got {v!r}")
    return float(v)


def rate(model: str, name: str, v: object) -> float:
    """A dropout-style probability in ``[0, 1)``."""
    check(is_number(v) and 0.0 <= v < 1.0, f"{model}: {name} must be in [0, 1), got {v!r}")
    return float(v)


def flag(model: str, name: str, v: object) -> bool:
    check(isinstance(v, bool), f"{model}: {name} must be true or false, got {v!r}")
    return bool(v)


def one_of(model: str, name: str, v: Any, choices: Collection[str]) -> Any:
    """``v`` if it is one of ``choices`` (listed as ``a|b|c`` in the message)."""
    check(isinstance(v, str) and v in choices, f"{model}: {name} must be one of {'|'.join(choices)}, got {v!r}")
    return v


def _is_seq(v: object) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str)


def int_list(model: str, name: str, v: object, *, length: int | None = None, minimum: int = 1) -> list[int]:
    """A non-empty list of ints ``>= minimum`` (of ``length`` entries when given)."""
    ok = _is_seq(v) and len(v) >= 1 and all(is_int(x) and x >= minimum for x in v)
    ok = ok and (length is None or len(v) == length)
    count = "a non-empty list" if length is None else f"a list of {length}"
    check(ok, f"{model}: {name} must be {count} of ints >= {minimum}, got {v!r}")
    return [int(x) for x in v]


def int_tuple(model: str, name: str, v: object, n: int, labels: str) -> tuple[int, ...]:
    """An int (repeated ``n`` times) or ``n`` ints, each positive; ``labels`` names them, e.g. ``"[m1, m2]"``."""
    words = {2: "a pair", 3: "a triple"}.get(n, f"{n}")
    if is_int(v):
        values = (int(v),) * n
    else:
        check(
            _is_seq(v) and len(v) == n and all(map(is_int, v)),
            f"{model}: {name} must be an int or {words} of ints {labels}, got {v!r}",
        )
        values = tuple(int(x) for x in v)
    check(min(values) > 0, f"{model}: {name} must be positive, got {v!r}")
    return values


def in_shape(model: str, v: object) -> tuple[int, int, int, int]:
    """``(T_in, C, H, W)`` as four positive ints."""
    check(
        _is_seq(v) and len(v) == 4 and all(is_int(x) and x > 0 for x in v),
        f"{model}: in_shape must be 4 positive ints (T_in, C, H, W), got {v!r}",
    )
    t, c, h, w = (int(x) for x in v)
    return t, c, h, w


def target(model: str, out_frames: object, num_classes: object, *, classify: bool) -> tuple[int | None, int | None]:
    """``(out_frames, num_classes)`` with exactly one set; ``classify`` says whether the model has a classifier."""
    if not classify:
        check(num_classes is None, f"{model}: forecasts only; drop num_classes={num_classes!r} and give out_frames")
        check(out_frames is not None, f"{model}: out_frames (the forecast length) is required")
    check(
        (out_frames is None) != (num_classes is None),
        f"{model}: give exactly one of out_frames (forecast) and num_classes (classify), "
        f"got out_frames={out_frames!r}, num_classes={num_classes!r}",
    )
    if num_classes is not None:
        return None, integer(model, "num_classes", num_classes, minimum=2)
    return integer(model, "out_frames", out_frames), None
