"""Every bad input ends as the README promises: one line, exit code 2 (a ``UserError`` from the API), nothing left.

The cases are in ``_bad_inputs_*.py`` (docs/errors.md lists each with its message); ``_bad_inputs.py`` runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _bad_inputs import Script, documented_message, read_table, run_case, snapshot
from _bad_inputs_data import CASES as DATA_CASES
from _bad_inputs_io import CASES as IO_CASES
from _bad_inputs_train import CASES as TRAIN_CASES

pytestmark = pytest.mark.usefixtures("one_thread")

DOCUMENTED = read_table(Path(__file__).resolve().parents[1] / "docs" / "errors.md")

CASES = [*TRAIN_CASES, *DATA_CASES, *IO_CASES]


def test_case_ids_are_unique_and_many():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert len(CASES) >= 90


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_line(case, tmp_path):
    if case.prepare is not None:
        case.prepare(tmp_path)
    before = snapshot(tmp_path)
    outcome = run_case(type(case)(**{**case.__dict__, "prepare": None}), tmp_path)
    assert outcome.warnings == [], outcome.warnings
    if isinstance(case, Script):
        prog = case.argv[0]
        assert outcome.code == 2, (outcome.code, outcome.stderr)
        assert len(outcome.stderr) == 1, outcome.stderr
        assert outcome.message.startswith(f"{prog}: error: "), outcome.message
        assert "Traceback" not in outcome.message
    assert case.expect in outcome.message, outcome.message
    assert "\n" not in outcome.message
    for advice in ("weights_only=False", "allow_pickle", "HYDRA_FULL_ERROR"):
        assert advice not in outcome.message
    assert snapshot(tmp_path) == before
    # docs/errors.md shows this very message (rewrite it with `python tests/_bad_inputs.py` after a change)
    assert DOCUMENTED.get(case.id) == documented_message(outcome.message, tmp_path), case.id
