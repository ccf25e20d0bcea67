"""Shared console-script plumbing: a user's mistake ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from stpred.errors import UserError

__all__ = ["run_cli", "guard", "one_line", "user_error_in_chain", "ArgumentParser", "CommandParser", "resolve_device"]

_HYDRA_TAIL = re.compile(r"(Config search path|Set the environment variable HYDRA_FULL_ERROR).*", re.S)


def one_line(message: str) -> str:
    """Collapse a multi-line library message into one line, without Hydra's search-path and hint tails."""
    message = _HYDRA_TAIL.sub("", message)
    parts = [p.strip() for p in message.splitlines() if p.strip()]
    return "; ".join(parts)


def user_error_in_chain(exc: BaseException) -> UserError | None:
    """The :class:`UserError` that caused ``exc`` (Hydra wraps errors raised while instantiating a target)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _user_error_types() -> tuple[type[BaseException], ...]:
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import OmegaConfBaseException

    return (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        OmegaConfBaseException,
        MisconfigurationException,
    )


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error form: one line (``prog: error: ...; see prog --help``) and exit code 2,
    instead of the usage block followed by the error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(self.prog, f"{message}; see {self.prog} --help")


class CommandParser(ArgumentParser):
    """The parser of a command (``stpred-zoo show``): its mistakes are reported under the script's name like every
    other one (``stpred-zoo: error: show: ...``). Pass it as ``add_subparsers(parser_class=CommandParser)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.split(" ", 1)[-1]
        raise UserError(f"{command}: {message}; see {self.prog} --help")


def resolve_device(name: str) -> str:
    """``--device`` as ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: ``"auto"`` picks cuda when a device is visible."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is visible; use --device cpu or auto")
    return name


def _fail(prog: str, message: str) -> None:
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    sys.exit(2)


def guard(prog: str, fn: Callable[[], object]) -> object:
    """Call ``fn``; a user's mistake becomes one line on stderr and ``SystemExit(2)``, a bug keeps its traceback.

    Used inside Hydra jobs too: Hydra reports an exception leaving a job with extra lines, but lets
    ``SystemExit`` through untouched.
    """
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        user = user_error_in_chain(exc)
        if user is not None:
            _fail(prog, str(user))
        if isinstance(exc, _user_error_types()):
            _fail(prog, _describe_config_error(exc))
        if _is_write_error(exc):
            _fail(prog, _describe_write_error(exc))
        raise


def run_cli(prog: str, entry: Callable[[], object]) -> None:
    """Run a console script's ``entry`` (a Hydra main or an argparse main) under :func:`guard`."""
    # Hydra otherwise prints its own multi-line report for composition errors and exits 1.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    guard(prog, entry)


def _is_write_error(exc: BaseException) -> bool:
    """An operating-system refusal to create or write a file the user named (a folder that is a file, no
    permission, a full or read-only disk): the user's to fix, not a bug."""
    import errno

    from stpred.apps._outputs import nearest_existing

    if not isinstance(exc, OSError) or exc.filename is None:
        return False
    refusals = (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError)
    if isinstance(exc, refusals) or exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return True
    # Creating a folder in a place that refuses new entries (/proc/sys) can end in ENOENT.
    blocker = nearest_existing(exc.filename)
    return isinstance(exc, FileNotFoundError) and blocker.is_dir() and not os.access(blocker, os.W_OK)


def _describe_write_error(exc: OSError) -> str:
    """Name what stands in the way: a file where a folder must be, or a folder without write permission."""
    from stpred.apps._outputs import nearest_existing

    path = Path(exc.filename)
    blocker = nearest_existing(exc.filename)
    if not blocker.is_dir():
        if blocker == path:
            return f"cannot create the folder {path}: a file of that name is in the way; choose another folder"
        return f"cannot create a folder under {blocker}: it is a file, not a folder; choose another folder"
    if not os.access(blocker, os.W_OK):
        return f"cannot write {path}: {blocker} is not writable; choose a folder you can write to"
    return f"cannot write {path}: {exc.strerror}; choose a folder you can write to"


def _describe_config_error(exc: BaseException) -> str:
    text = str(exc)
    missing = re.search(r"Could not find '([\w/]+)/(\w+)'", text)
    if missing:
        group, option = missing.groups()
        available = re.findall(r"^\t(\S+)$", text, re.M)
        listed = f"; available: {', '.join(available)}" if available else ""
        return f"unknown {group} '{option}' (config group '{group}'){listed}"
    if "Could not override" in text or "not in struct" in text:
        key = re.search(r"Could not override '([^']+)'", text)
        name = key.group(1) if key else "a key"
        return (
            f"unknown config key {name}: check its spelling (`--cfg job` prints the config); "
            f"use +{name}=... to add a new key"
        )
    missing_value = re.match(r"Missing mandatory value: ([\w.]+)", text)
    if missing_value:
        key = missing_value.group(1)
        return f"{key} must be given: add {key}=... to the command (see --help)"
    from hydra.errors import OverrideParseException

    if isinstance(exc, OverrideParseException):
        bad = _unparsable_override()
        return f"cannot read the override {bad!r}: {text}" if bad else text
    return text


def _unparsable_override() -> str | None:
    """The first command-line argument Hydra's override grammar rejects (its error does not name it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in sys.argv[1:]:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - any parse failure is the one to name
            return arg
    return None
