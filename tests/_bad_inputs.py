"""The bad-input cases of tests/test_bad_inputs.py and how one is run.

A :class:`Script` case runs a console script in this process (its ``main()`` with ``sys.argv`` set) inside a fresh
folder ``tmp`` that is also the working folder; a :class:`Call` case calls the Python API. Each must end as the README
promises: a console script prints exactly one line, ``<prog>: error: ...`` holding ``expect``, exits with code 2 and
leaves ``tmp`` exactly as ``prepare`` left it (no new, changed or removed file, no empty run folder); an API call
raises :class:`stpred.UserError` whose one-line message holds ``expect``. Neither may emit a warning first.

Placeholders in ``argv``: ``{tmp}`` (the case's folder) and ``{data}`` (``STPRED_DATA``). Case lists live in
``_bad_inputs_*.py`` modules, each exporting ``CASES``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Call",
    "Outcome",
    "Script",
    "SCRIPT_MODULES",
    "cut_checkpoint",
    "damaged_checkpoint",
    "documented_message",
    "read_table",
    "run_case",
    "snapshot",
    "write_table",
]

#: Console script -> module whose ``main()`` it runs (pyproject.toml [project.scripts]).
SCRIPT_MODULES = {
    "stpred-train": "stpred.apps.train",
    "stpred-eval": "stpred.apps.evaluate",
    "stpred-bench": "stpred.apps.bench",
    "stpred-demo": "stpred.apps.demo",
    "stpred-forecast": "stpred.apps.forecast",
    "stpred-import": "stpred.apps.import_weights",
    "stpred-zoo": "stpred.apps.zoo",
}


@dataclass(frozen=True)
class Script:
    """A console-script run that must fail in one line with exit code 2.

    Attributes:
        id: the test id (unique over all case lists).
        argv: the script's name, then its arguments, with ``{tmp}``/``{data}`` placeholders.
        expect: a substring of the error line (after ``<prog>: error: ``).
        prepare: writes the inputs the case needs under ``tmp`` (called before the snapshot).
        env: environment variables set for the run (placeholders allowed).
    """

    id: str
    argv: tuple[str, ...]
    expect: str
    prepare: Callable[[Path], None] | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Call:
    """An API call that must raise :class:`stpred.UserError` with a one-line message holding ``expect``.

    Attributes:
        id: the test id.
        call: called with ``tmp``.
        expect: a substring of the message.
        prepare: as for :class:`Script`.
    """

    id: str
    call: Callable[[Path], object]
    expect: str
    prepare: Callable[[Path], None] | None = None


@dataclass
class Outcome:
    """What a case did: exit code (``None`` for an API call that returned), stderr lines, the error message, the
    warnings raised."""

    code: int | None
    stderr: list[str]
    message: str
    warnings: list[str]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: relative path -> (size, mtime in ns); folders have size -1."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat(follow_symlinks=False)
        out[str(path.relative_to(root))] = (-1 if path.is_dir() else stat.st_size, stat.st_mtime_ns)
    return out


def _record_shown_warnings() -> None:
    """Record every warning a user would see; ResourceWarning is hidden by default (and the garbage collector may
    raise one for another test's object in the middle of a case)."""
    warnings.simplefilter("always")
    warnings.simplefilter("ignore", ResourceWarning)


def _fill(text: str, tmp: Path) -> str:
    return text.format(tmp=tmp, data=os.environ.get("STPRED_DATA", ""))


def _run_script(case: Script, tmp: Path) -> Outcome:
    module = importlib.import_module(SCRIPT_MODULES[case.argv[0]])
    argv = [case.argv[0], *(_fill(a, tmp) for a in case.argv[1:])]
    env = {k: _fill(v, tmp) for k, v in case.env}
    saved_env = {k: os.environ.get(k) for k in env}
    stderr = io.StringIO()
    code: int | None = 0
    old_argv, old_cwd = sys.argv, os.getcwd()
    try:
        os.environ.update(env)
        sys.argv = argv
        os.chdir(tmp)
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
            _record_shown_warnings()
            try:
                module.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    return Outcome(code, lines, lines[-1] if lines else "", [str(w.message) for w in caught])


def _run_call(case: Call, tmp: Path) -> Outcome:
    from stpred.errors import UserError

    with warnings.catch_warnings(record=True) as caught:
        _record_shown_warnings()
        try:
            case.call(tmp)
        except UserError as exc:
            return Outcome(None, [], str(exc), [str(w.message) for w in caught])
    return Outcome(None, [], "", [str(w.message) for w in caught])


def run_case(case: Script | Call, tmp: Path) -> Outcome:
    """Prepare ``tmp`` and run ``case`` in it."""
    if case.prepare is not None:
        case.prepare(tmp)
    return _run_script(case, tmp) if isinstance(case, Script) else _run_call(case, tmp)


def damaged_checkpoint(tmp: Path, zoo_name: str = "ns-fno2d", name: str = "damaged.ckpt") -> Path:
    """A shipped checkpoint copied to ``tmp/name`` with 4 KB zeroed inside its tensor data, as a bad sector would."""
    from stpred.zoo import resolve

    data = bytearray(resolve(f"zoo:{zoo_name}").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    (tmp / name).write_bytes(bytes(data))
    return tmp / name


def cut_checkpoint(tmp: Path, zoo_name: str = "ns-fno2d", name: str = "cut.ckpt") -> Path:
    """A shipped checkpoint copied to ``tmp/name`` cut to two thirds of its bytes, as an interrupted copy leaves it."""
    from stpred.zoo import resolve

    data = resolve(f"zoo:{zoo_name}").read_bytes()
    (tmp / name).write_bytes(data[: 2 * len(data) // 3])
    return tmp / name


def documented_message(message: str, tmp: Path) -> str:
    """``message`` as docs/errors.md shows it: the case's folder as ``{tmp}``, the shared data as ``{data}``."""
    data = os.environ.get("STPRED_DATA", "")
    message = message.replace(str(tmp), "{tmp}")
    return message.replace(data, "{data}") if data else message


def command_text(case: Script | Call) -> str:
    """The case's command as docs/errors.md shows it (an API case by its id)."""
    if isinstance(case, Call):
        return f"(Python API) {case.id}"
    return " ".join([*(f"{k}={v}" for k, v in case.env), *case.argv])


def _cell(text: str) -> str:
    # Double backticks: a message may hold single ones; pipes would end the table cell.
    return "`` " + text.replace("|", "\\|") + " ``"


def _uncell(cell: str) -> str:
    return cell.strip().removeprefix("`` ").removesuffix(" ``").replace("\\|", "|")


def read_table(path: Path) -> dict[str, str]:
    """docs/errors.md's rows: case id -> documented message (none while the file is missing)."""
    rows: dict[str, str] = {}
    for line in (path.read_text() if path.is_file() else "").splitlines():
        cells = line.strip().strip("|").split(" | ") if line.startswith("| ``") else []
        if len(cells) == 3:
            rows[_uncell(cells[0])] = _uncell(cells[2])
    return rows


def write_table(cases: list[Script | Call], path: Path) -> None:
    """Run every case in a fresh folder and write docs/errors.md (``python tests/_bad_inputs.py``)."""
    import tempfile

    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder).resolve()
            message = documented_message(run_case(case, tmp).message, tmp)
        rows.append(f"| {_cell(case.id)} | {_cell(command_text(case))} | {_cell(message)} |")
        print(case.id, flush=True)
    header = (
        "# Every bad input the suite tries\n\n"
        "Each row is a case of `tests/test_bad_inputs.py`: the command (run in a fresh folder `{tmp}`, with the\n"
        "shared data at `{data}`) and the one line it ends with. Console scripts print it on stderr and exit with\n"
        "code 2, leaving the folder as it was; the Python API raises `stpred.UserError` with the message. The test\n"
        "checks that each message is the one written here; after changing a message, rewrite this file with\n"
        "`STPRED_DATA=../shared/data .venv/bin/python tests/_bad_inputs.py`.\n\n"
        f"{len(rows)} cases.\n\n"
        "| case | command | message |\n|---|---|---|\n"
    )
    path.write_text(header + "\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import conftest  # noqa: F401  (STPRED_DATA and TRITON_INTERPRET as in the suite)
    from _bad_inputs import write_table as write  # the module the cases were built with, not __main__
    from test_bad_inputs import CASES

    write(CASES, Path(__file__).resolve().parents[1] / "docs" / "errors.md")
