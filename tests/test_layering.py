"""Import layering of the package, read from the sources with ``ast`` (nothing is imported or executed).

Layers, low to high; a module may import its own layer and the layers below it:

1. ``base``: ``stpred.errors``, ``stpred.atomic``, ``stpred.configs``, ``stpred._version`` (exceptions, atomic
   writes, config files, the version).
2. ``numerics``: ``stpred.losses``, ``stpred.masking``, ``stpred.metrics``, ``stpred.physics``,
   ``stpred.plotting``: array functions on ``base`` only. They sit below the models because a model may re-export
   its loss (``stpred.models.convs5.convs5_loss``); the physics (Navier-Stokes solver and residual) knows no model,
   datamodule or kernel, and the field drawing knows no datamodule, task or app (they hand it arrays and metadata).
3. ``kernels``: ``stpred.kernels`` (custom ops, references, dispatch).
4. ``layers``: ``stpred.layers``.
5. ``models``: ``stpred.models`` and ``stpred.registry``, one layer: every model registers itself with
   ``register_model`` and the registry loads the built-in families on first use.
6. ``api``: ``stpred.checkpoint`` (``load_predictor``) and ``stpred.importers`` (reference weights -> checkpoints).
7. ``datamodules``: ``stpred.datamodules``. Besides the order, they import only ``base`` and ``numerics`` (no
   kernels, layers, models, registry or checkpoint): datamodules know no model.
8. ``tasks``: ``stpred.tasks``, ``stpred.callbacks``.
9. ``apps``: ``stpred.apps``.
10. ``package``: the ``stpred`` package itself, the facade that re-exports the public names of every layer
    (``create_model``, ``load_predictor``, ``train``), lazily where they are heavy.

Two more rules: an app imports no other app, only the shared helper modules (``stpred.apps._cli`` and the other
underscore modules); and outside ``kernels/`` nothing imports a private kernel module: one whose name (after
``stpred.kernels``) has a part starting with ``_`` (``_dispatch``, ``_bench``) or is an implementation module
(``triton``, ``matmul``); the public surface is ``stpred.kernels``, ``stpred.kernels.<op>`` and its ``reference``
and ``benchmark`` modules.

Files map to modules through ``[tool.setuptools] package-dir`` of ``pyproject.toml``; every ``stpred`` module must
belong to a layer. Imports anywhere in a file count (also inside functions and ``TYPE_CHECKING`` blocks).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("stpred.errors", "stpred.atomic", "stpred.archive", "stpred.configs", "stpred._version")),
    ("numerics", ("stpred.losses", "stpred.masking", "stpred.metrics", "stpred.physics", "stpred.plotting")),
    ("kernels", ("stpred.kernels",)),
    ("layers", ("stpred.layers",)),
    ("models", ("stpred.models", "stpred.registry")),
    ("api", ("stpred.checkpoint", "stpred.importers", "stpred.zoo")),
    ("datamodules", ("stpred.datamodules",)),
    ("tasks", ("stpred.tasks", "stpred.callbacks", "stpred.resume", "stpred.faults")),
    ("apps", ("stpred.apps",)),
    ("package", ("stpred",)),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
#: Layers a datamodule may import, besides its own.
DATAMODULE_MAY_IMPORT = {"base", "numerics", "datamodules"}
PRIVATE_KERNEL_PARTS = {"triton", "matmul"}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.detail}"


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, Path]:
    """``{"stpred.datamodules": ROOT / "datamodules", ...}`` from ``package-dir`` (a one-line inline table)."""
    line = next(ln for ln in pyproject.read_text().splitlines() if ln.strip().startswith("package-dir"))
    pairs = re.findall(r'"([\w.]+)"\s*=\s*"([\w./-]+)"', line)
    assert pairs, f"no package-dir mapping in {pyproject}"
    return {pkg: ROOT / folder for pkg, folder in pairs}


def module_files(dirs: dict[str, Path]) -> dict[str, Path]:
    """Every module name of the distribution and its file (a package is its ``__init__.py``)."""
    out: dict[str, Path] = {}
    for pkg, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            parts = pkg.split(".") + list(rel)
            # A folder of the "stpred" tree that is mapped elsewhere (none today) belongs to its own mapping.
            name = ".".join(parts)
            out.setdefault(name, path)
    return out


def layer_of(module: str) -> str | None:
    """The layer of a ``stpred`` module (longest matching prefix), ``None`` when it has none."""
    best, best_len = None, -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            exact_only = prefix == "stpred"
            if module == prefix or (not exact_only and module.startswith(prefix + ".")):
                if len(prefix) > best_len:
                    best, best_len = layer, len(prefix)
    return best


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(source: str, module: str, is_package: bool, known: Iterable[str]) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import of a ``stpred`` module in ``source``.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    known = set(known)
    tree = ast.parse(source)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((node.lineno, sub if sub in known else base))
    return sorted((line, name) for line, name in out if name == "stpred" or name.startswith("stpred."))


def _is_private_kernel(module: str) -> bool:
    if not module.startswith("stpred.kernels."):
        return False
    parts = module.split(".")[2:]
    return any(p.startswith("_") or p in PRIVATE_KERNEL_PARTS for p in parts)


def check_import(src: str, dst: str, file: str, line: int) -> list[Violation]:
    """The rules broken by module ``src`` (in ``file``) importing module ``dst``."""
    found: list[Violation] = []
    src_layer, dst_layer = layer_of(src), layer_of(dst)
    if dst_layer is None:
        return [Violation(file, line, "no-layer", f"{dst} belongs to no layer of tests/test_layering.py")]
    if src_layer is None:
        return found
    if RANK[dst_layer] > RANK[src_layer]:
        found.append(Violation(file, line, "layer-order", f"{src} ({src_layer}) imports {dst} ({dst_layer})"))
    elif src_layer == "datamodules" and dst_layer not in DATAMODULE_MAY_IMPORT:
        found.append(
            Violation(
                file,
                line,
                "datamodules-know-no-model",
                f"{src} imports {dst} ({dst_layer}); datamodules import only {sorted(DATAMODULE_MAY_IMPORT)}",
            )
        )
    if src_layer == "apps" and dst_layer == "apps" and dst != "stpred.apps":
        if not dst.split(".")[-1].startswith("_"):
            found.append(Violation(file, line, "app-imports-app", f"{src} imports the app {dst}; share a _helper"))
    if src_layer != "kernels" and _is_private_kernel(dst):
        found.append(Violation(file, line, "private-kernel", f"{src} imports the private kernel module {dst}"))
    return found


def check_tree(files: dict[str, Path]) -> list[Violation]:
    """Every violation in the modules ``files`` (module name -> path)."""
    found: list[Violation] = []
    for module, path in sorted(files.items()):
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        if layer_of(module) is None:
            found.append(Violation(rel, 1, "no-layer", f"module {module} belongs to no layer"))
            continue
        for line, dst in imports_of(path.read_text(), module, _is_package(path), files):
            found += check_import(module, dst, rel, line)
    return found


FILES = module_files(package_dirs())
VIOLATIONS = check_tree(FILES)
RULES = ("no-layer", "layer-order", "datamodules-know-no-model", "app-imports-app", "private-kernel")


# --- the checker itself ---


def test_the_package_map_follows_pyproject() -> None:
    assert FILES["stpred.tasks.forecast"] == ROOT / "stpred" / "tasks" / "forecast.py"
    assert FILES["stpred.datamodules.navier_stokes"] == ROOT / "datamodules" / "navier_stokes.py"
    assert FILES["stpred.kernels"] == ROOT / "kernels" / "__init__.py"
    assert FILES["stpred.apps.train"] == ROOT / "apps" / "train.py"
    assert FILES["stpred.physics.residual"] == ROOT / "stpred" / "physics" / "residual.py"
    assert not any(name.startswith(("stpred.tests", "tests")) for name in FILES)


def test_layers_by_longest_prefix() -> None:
    assert layer_of("stpred") == "package" and layer_of("stpred.checkpoint") == "api"
    assert layer_of("stpred._version") == "base"
    assert layer_of("stpred.errors") == "base" and layer_of("stpred.physics.navier_stokes") == "numerics"
    assert layer_of("stpred.registry") == "models" and layer_of("stpred.kernels.spectral_conv.triton") == "kernels"
    assert layer_of("stpred.unknown") is None and layer_of("stpredx") is None


def test_imports_resolve_from_relative_and_submodule_forms() -> None:
    known = {
        "stpred.kernels.conv_ssm_scan",
        "stpred.kernels.conv_ssm_scan.benchmark",
        "stpred.apps._cli",
        "stpred.errors",
    }
    src = (
        "import torch\nfrom stpred.kernels.conv_ssm_scan import benchmark as b\nfrom . import _cli\n"
        "def f():\n    from .. import errors\n    import stpred.models.sfno\n"
    )
    got = imports_of(src, "stpred.apps.bench", False, known)
    assert got == [
        (2, "stpred.kernels.conv_ssm_scan.benchmark"),
        (3, "stpred.apps._cli"),
        (5, "stpred.errors"),
        (6, "stpred.models.sfno"),
    ]


@pytest.mark.parametrize(
    "src, dst, rule",
    [
        ("stpred.physics.residual", "stpred.models.sfno", "layer-order"),
        ("stpred.models.sfno", "stpred.datamodules.navier_stokes", "layer-order"),
        ("stpred.models.simvp", "stpred.tasks.forecast", "layer-order"),
        ("stpred.layers.heads", "stpred.registry", "layer-order"),
        ("stpred.tasks.refine", "stpred.apps.train", "layer-order"),
        ("stpred.datamodules.kinetics", "stpred.models.lrcn", "datamodules-know-no-model"),
        ("stpred.datamodules.base", "stpred.kernels", "datamodules-know-no-model"),
        ("stpred.datamodules.base", "stpred.checkpoint", "datamodules-know-no-model"),
        ("stpred.apps.evaluate", "stpred.apps.train", "app-imports-app"),
        ("stpred.layers.spectral_conv", "stpred.kernels.spectral_conv.triton", "private-kernel"),
        ("stpred.apps.bench", "stpred.kernels._bench", "private-kernel"),
        ("stpred.layers.conv_ssm", "stpred.unknown", "no-layer"),
        ("stpred.checkpoint", "stpred", "layer-order"),
    ],
)
def test_each_rule_catches_its_violation(src: str, dst: str, rule: str) -> None:
    found = check_import(src, dst, "x.py", 7)
    assert [v.rule for v in found] == [rule]
    assert str(found[0]).startswith(f"x.py:7: [{rule}]")


@pytest.mark.parametrize(
    "src, dst",
    [
        ("stpred.models.convs5", "stpred.losses"),
        ("stpred.models.sfno", "stpred.registry"),
        ("stpred.registry", "stpred.models"),
        ("stpred.datamodules.navier_stokes", "stpred.physics.navier_stokes"),
        ("stpred.tasks.refine", "stpred.models.sfno"),
        ("stpred.apps.demo", "stpred.apps._cli"),
        ("stpred.layers.spectral_conv", "stpred.kernels.spectral_conv.reference"),
        ("stpred.kernels.spectral_conv", "stpred.kernels._dispatch"),
        ("stpred.checkpoint", "stpred._version"),
        ("stpred", "stpred.apps.api"),
    ],
)
def test_allowed_imports_pass(src: str, dst: str) -> None:
    assert check_import(src, dst, "x.py", 1) == []


def test_a_violation_in_a_file_names_file_line_and_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""doc"""\n\nfrom stpred.tasks import ForecastTask\n')
    found = check_tree({"stpred.physics.bad": bad})
    assert [str(v) for v in found] == [
        f"{bad}:3: [layer-order] stpred.physics.bad (numerics) imports stpred.tasks (tasks)"
    ]


# --- the package ---


@pytest.mark.parametrize("rule", RULES)
def test_the_package_keeps_its_layers(rule: str) -> None:
    broken = [str(v) for v in VIOLATIONS if v.rule == rule]
    assert not broken, f"{len(broken)} import(s) break '{rule}':\n" + "\n".join(broken)
