"""Every ``<name>.md`` a repository file cites exists in the repository, and every cited section is a heading there.

A reference is a token ending in ``.md`` (``metrics.md``, ``docs/models.md``, ``kernels/spectral_conv/README.md``),
optionally followed by sections: ``§7.4``, ``§1.2-1.3``, ``§2.2, §2.4``, ``section 4.3`` or a quoted heading name
(``architecture.md, "DataModule"``). A bare name resolves against ``docs/``, the repository root and the referring
file's folder; a path with folders against the root and the referring file's folder. A cited ``§N.M`` must be a
heading of the doc that starts with ``N.M`` (``## 7.4 Spectral-Refiner ...``). URLs are not references, and
neither are the names of files a program writes: a name with a ``.csv`` twin on the same line (``folder for
kernels.md and kernels.csv``) or a string literal joined to a path (``out_dir / "summary.md"``, ``open("x.md")``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".cfg")
NAMES = ("Makefile",)
SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".ruff_cache", ".pytest_cache", "runs", "bench"}
MD = "." + "md"  # spelled apart so this file's own source holds no reference

#: A path token ending in .md; the look-behind keeps URL tails and the middle of longer names out.
_TOKEN = re.compile(r"(?<![\w/.:\\-])((?:[\w.-]+/)*[\w-][\w.-]*" + re.escape(MD) + r")(?![\w-])")
_NUM = r"\d+(?:\.\d+)*"
#: ``§N``, ``§ N``, ``section N``, or a dotted number right after the file name (``models.md 2.4``).
_SECTION = re.compile(rf"(?:§\s*|\bsections?\s+)({_NUM})(?:\s*[-–]\s*({_NUM}))?", re.IGNORECASE)
_BARE_DOTTED = re.compile(r"^\s+(\d+\.\d+)(?![\w.]*\w)")
_QUOTED = re.compile(r'^,?\s*"([A-Za-z][\w ./-]*)"')


@dataclass(frozen=True)
class Reference:
    """One cited doc at ``path:line``; ``sections`` are ``"7.4"``-style numbers, ``names`` quoted headings."""

    path: str
    line: int
    target: str
    sections: tuple[str, ...]
    names: tuple[str, ...]


def _range_ends(first: str, last: str | None) -> list[str]:
    if last is None:
        return [first]
    # "§1.2-1.3" and "§6-7" name both ends; "§2.1-5" abbreviates "2.1-2.5".
    if "." in first and "." not in last:
        last = first.rsplit(".", 1)[0] + "." + last
    return [first, last]


def parse_references(text: str, path: str = "<text>") -> list[Reference]:
    """All doc references in ``text``, each with the sections cited right after it on the same line."""
    refs: list[Reference] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        matches = list(_TOKEN.finditer(line))
        for i, m in enumerate(matches):
            stem = m.group(1)[: -len(MD)]
            if re.search(rf"(?<![\w/.-]){re.escape(stem)}\.csv\b", line):
                continue  # an output file written as a .md/.csv pair, not a doc
            if re.search(r"(?:/|\b(?:Path|open))\s*\(?\s*[\"']$", line[: m.start()]):
                continue  # a path the code builds, not a doc
            stop = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            tail = line[m.end() : stop]
            # Sections belong to this reference up to the end of its clause.
            clause = re.split(r"[)\];]|\.\s|\.$", tail, maxsplit=1)[0]
            sections: list[str] = []
            for s in _SECTION.finditer(clause):
                sections += _range_ends(s.group(1), s.group(2))
            if not sections:
                bare = _BARE_DOTTED.match(clause)
                if bare:
                    sections.append(bare.group(1))
            quoted = _QUOTED.match(tail)
            names = (quoted.group(1),) if quoted else ()
            refs.append(Reference(path, lineno, m.group(1), tuple(dict.fromkeys(sections)), names))
    return refs


def headings(doc: Path) -> list[str]:
    """Heading texts of a markdown file, without the leading ``#`` and spaces (fenced code is skipped)."""
    out, fenced = [], False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6}\s", line):
            out.append(line.lstrip("#").strip())
    return out


def has_section(heads: list[str], number: str) -> bool:
    pattern = re.compile(rf"^§?\s*{re.escape(number)}\.?(?:\s|$)")
    return any(pattern.match(h) for h in heads)


def has_named_section(heads: list[str], name: str) -> bool:
    return any(name.lower() in h.lower() for h in heads)


def candidates(root: Path, referrer: str, target: str) -> list[Path]:
    folder = (root / referrer).parent
    if "/" in target.rstrip("/"):
        return [root / target, folder / target]
    return [root / "docs" / target, root / target, folder / target]


def repository_files(root: Path) -> list[str]:
    """Tracked text files to scan (git's list; a walk of the tree where there is no git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=60
        ).stdout.decode()
        names = [n for n in listed.split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = [
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(root).parts)
        ]
    return sorted(n for n in names if n.endswith(SUFFIXES) or Path(n).name in NAMES)


def read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:  # listed by git but deleted in the working tree
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def check_reference(root: Path, ref: Reference) -> str | None:
    """``None`` when the reference resolves, else a ``file:line: ...`` message."""
    where = f"{ref.path}:{ref.line}"
    found = [p for p in candidates(root, ref.path, ref.target) if p.is_file()]
    if not found:
        tried = ", ".join(
            sorted(
                {
                    p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
                    for p in candidates(root, ref.path, ref.target)
                }
            )
        )
        return f"{where}: '{ref.target}' is not in the repository (tried {tried})"
    heads = [h for p in found for h in headings(p)]
    missing = [f"§{s}" for s in ref.sections if not has_section(heads, s)]
    missing += [f'"{n}"' for n in ref.names if not has_named_section(heads, n)]
    if missing:
        doc = found[0].relative_to(root).as_posix()
        return f"{where}: {doc} has no heading for {', '.join(missing)}"
    return None


def scan(root: Path, only: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """(number of references, failure messages) over the repository's files, or those under ``only``."""
    count, failures = 0, []
    for name in repository_files(root):
        if only and not name.startswith(only):
            continue
        text = read_text(root / name)
        if text is None:
            continue
        for ref in parse_references(text, name):
            count += 1
            problem = check_reference(root, ref)
            if problem:
                failures.append(problem)
    return count, failures


# --- the parser on synthetic text ----------------------------------------------------------------------------------


def test_parser_reads_sections_ranges_and_lists() -> None:
    text = (
        f"see models{MD} §7.4 and data{MD} section 4.3\n"
        f"(models{MD} §1.2-1.3), kernels{MD} §2.2, §2.4, §3 (x)\n"
        f'docs/metrics{MD}; architecture{MD}, "DataModule"\n'
        f"kernels{MD} §2.1–5 then models{MD} 2.4: spans\n"
    )
    refs = parse_references(text, "a/b.py")
    got = [(r.line, r.target, r.sections, r.names) for r in refs]
    assert got == [
        (1, f"models{MD}", ("7.4",), ()),
        (1, f"data{MD}", ("4.3",), ()),
        (2, f"models{MD}", ("1.2", "1.3"), ()),
        (2, f"kernels{MD}", ("2.2", "2.4", "3"), ()),
        (3, f"docs/metrics{MD}", (), ()),
        (3, f"architecture{MD}", (), ("DataModule",)),
        (4, f"kernels{MD}", ("2.1", "2.5"), ()),
        (4, f"models{MD}", ("2.4",), ()),
    ]


def test_parser_ignores_urls_longer_words_and_outputs() -> None:
    text = (
        f"https://example.org/x/models{MD} and my_models{MD}x and foo.mdx; out/sum{MD} and out/sum.csv\n"
        f'(run / "summary{MD}").write_text(t); open("notes{MD}"); Path( "a/b{MD}")\n'
    )
    assert parse_references(text) == []


def test_checker_reports_missing_files_and_sections(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / f"guide{MD}").write_text("# Guide\n## 1. One\n### 1.2 Sub\n```\n## 9 in code\n```\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / f"README{MD}").write_text("# Pkg\n")
    ok = [
        Reference("pkg/m.py", 1, f"guide{MD}", ("1", "1.2"), ("sub",)),
        Reference("pkg/m.py", 2, f"README{MD}", (), ()),
    ]
    assert [check_reference(tmp_path, r) for r in ok] == [None, None]
    bad_section = check_reference(tmp_path, Reference("pkg/m.py", 3, f"guide{MD}", ("1.3", "9"), ()))
    assert bad_section == f"pkg/m.py:3: docs/guide{MD} has no heading for §1.3, §9"
    bad_file = check_reference(tmp_path, Reference("x.py", 4, f"other{MD}", (), ()))
    assert bad_file is not None and bad_file.startswith("x.py:4: 'other") and f"docs/other{MD}" in bad_file
    # "1" must not be satisfied by a "1.2" heading alone.
    assert not has_section(["1.2 Sub"], "1")


# --- the repository ------------------------------------------------------------------------------------------------


def test_docs_exist() -> None:
    for name in ("architecture", "models", "data", "metrics", "kernels", "conventions"):
        assert (ROOT / "docs" / f"{name}{MD}").is_file(), name


def test_references_in_docs_resolve() -> None:
    count, failures = scan(ROOT, only=("docs/",))
    assert count > 0
    assert not failures, "\n".join(failures)


def test_references_in_repository_resolve() -> None:
    if not (ROOT / "docs").is_dir():
        pytest.fail("docs/ is missing")
    count, failures = scan(ROOT)
    assert count > 0
    assert not failures, f"{len(failures)} of {count} doc references do not resolve:\n" + "\n".join(failures)
