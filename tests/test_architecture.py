"""The import contract (docs/architecture.md): no import circle inside ramtag, nothing below imports upward,
and ``import ramtag`` loads no training or benchmark code.

Read from the source with ``ast`` (no import-linter needed). Imports under ``if TYPE_CHECKING:`` never run,
so they are ignored everywhere. The circle check follows module-level imports (what runs at import time);
the layer contracts and a second circle check follow every import, also the ones inside functions (a
lazy import is still a dependency). ``from package import name`` depends on ``package.name`` where that is
a module, else on ``package``.

To change the rules, edit the tables below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

PACKAGE = "ramtag"


@dataclass(frozen=True)
class Contract:
    """Modules under ``importers`` (prefixes), apart from those under ``exempt``, import nothing under
    ``forbidden`` (prefixes: ramtag modules or third-party packages) except what is under ``allowed``."""

    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()


# The layers: cli -> api/library -> stages -> model; ramtag.cli (and ``python -m ramtag``) may import
# anything, nothing imports upward.
CONTRACTS: dict[str, Contract] = {
    "nothing imports the cli": Contract(
        importers=("ramtag",), exempt=("ramtag.cli", "ramtag.__main__"), forbidden=("ramtag.cli",)
    ),
    "model imports only model and errors": Contract(
        importers=("ramtag.model",), forbidden=("ramtag",), allowed=("ramtag.model", "ramtag.errors")
    ),
    "only the cli and api.benchmark import bench": Contract(
        importers=("ramtag",),
        exempt=("ramtag.cli", "ramtag.bench", "ramtag.api"),
        forbidden=("ramtag.bench",),
    ),
    "stages never import the wiring above them": Contract(
        importers=(
            "ramtag.formats",
            "ramtag.fsutil",
            "ramtag.discover",
            "ramtag.decode",
            "ramtag.gpu_decode",
            "ramtag.preprocess",
            "ramtag.batch",
            "ramtag.model",
            "ramtag.tags",
            "ramtag.text",
            "ramtag.writers",
            "ramtag.catalog",
            "ramtag.device",
            "ramtag.precision",
            "ramtag.runner",
            "ramtag.options",
            "ramtag.config",
            "ramtag.settings",
        ),
        forbidden=(
            "ramtag.api",
            "ramtag.library",
            "ramtag.tagger",
            "ramtag.cli",
            "ramtag.bench",
            "ramtag.training",
        ),
    ),
    "only the cli imports training": Contract(
        importers=("ramtag",), exempt=("ramtag.cli", "ramtag.training"), forbidden=("ramtag.training",)
    ),
    "the catalog answers and re-decides without torch": Contract(
        importers=("ramtag.catalog", "ramtag.source"), forbidden=("torch", "ramtag.runner", "ramtag.model")
    ),
    "rich and typer only in the cli": Contract(
        importers=("ramtag",), exempt=("ramtag.cli",), forbidden=("rich", "typer")
    ),
}

# `import ramtag` and its public API must stay cheap: none of these may load with them.
NOT_LOADED_BY_IMPORT_RAMTAG = ("ramtag.training", "ramtag.bench")

# Known breaks of the contracts, each with the reason it is tolerated (none today). Add an entry only
# with an issue that removes it.
KNOWN_BROKEN_CONTRACTS: dict[str, str] = {}


# ------------------------------------------------------------------ reading the import graph


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root`` (the package's folder): dotted name -> file."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imports(tree: ast.Module, top_level_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that can run: not under ``if TYPE_CHECKING``; with ``top_level_only`` not
    inside functions either (class bodies and module-level if/try blocks run at import time)."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                todo.extend(child.orelse)
            elif top_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            else:
                todo.append(child)


def imported_modules(name: str, path: Path, modules: Iterable[str], top_level_only: bool = False) -> set[str]:
    """What module ``name`` (file ``path``) imports: ramtag modules as known module names, other packages
    as written (``rich.console``)."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), top_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the current package, one level up per extra dot
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.add(sub if sub in known else base)
    return found


def import_graph(root: Path, package: str, top_level_only: bool) -> dict[str, set[str]]:
    """module -> the package's modules it imports (itself excluded)."""
    modules = module_names(root, package)
    graph = {}
    for name, path in modules.items():
        deps = imported_modules(name, path, modules, top_level_only)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles: each strongly connected component of more than one module, sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def violations(contract: Contract, imports: Mapping[str, Iterable[str]]) -> list[str]:
    """``importer -> imported`` for each import that breaks the contract."""
    bad = []
    for importer, deps in sorted(imports.items()):
        if not _under(importer, contract.importers) or _under(importer, contract.exempt):
            continue
        for dep in sorted(deps):
            if _under(dep, contract.forbidden) and not _under(dep, contract.allowed):
                bad.append(f"{importer} -> {dep}")
    return bad


def _all_imports(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


# ------------------------------------------------------------------ the contract on ramtag

SOURCE = REPO / PACKAGE


def _contract_params() -> list[Any]:
    params: list[Any] = []
    for name in CONTRACTS:
        marks = []
        if name in KNOWN_BROKEN_CONTRACTS:
            marks.append(pytest.mark.xfail(strict=False, reason=f"known: {KNOWN_BROKEN_CONTRACTS[name]}"))
        params.append(pytest.param(name, id=name.replace(" ", "-"), marks=marks))
    return params


def test_no_import_circle_at_import_time() -> None:
    found = cycles(import_graph(SOURCE, PACKAGE, top_level_only=True))
    assert not found, "import circles (module-level imports): " + "; ".join(" <-> ".join(c) for c in found)


def test_no_dependency_circle() -> None:
    """Lazy imports (inside functions) only hide a circle from the interpreter, not from the reader."""
    found = cycles(import_graph(SOURCE, PACKAGE, top_level_only=False))
    assert not found, "dependency circles (all imports): " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("name", _contract_params())
def test_layer_contract(name: str) -> None:
    bad = violations(CONTRACTS[name], _all_imports(SOURCE, PACKAGE))
    assert not bad, f"contract {name!r} broken by: " + ", ".join(bad)


def test_import_ramtag_loads_no_training_or_benchmark_code() -> None:
    code = (
        "import sys, ramtag\n"
        "ramtag.Tagger, ramtag.tag_library, ramtag.list_weights  # the lazy public API too\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({NOT_LOADED_BY_IMPORT_RAMTAG!r}))\n"
        "print(' '.join(bad))\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", f"`import ramtag` loaded: {res.stdout.strip()}"


def test_the_contract_tables_name_real_modules() -> None:
    """A renamed package must not silently turn a contract into one that can never fail."""
    modules = module_names(SOURCE, PACKAGE)
    prefixes = {p for c in CONTRACTS.values() for p in (*c.importers, *c.exempt, *c.allowed, *c.forbidden)}
    prefixes.update(NOT_LOADED_BY_IMPORT_RAMTAG)
    ours = {p for p in prefixes if _under(p, [PACKAGE])}
    assert ours <= set(modules), sorted(ours - set(modules))
    assert {"rich", "typer"} <= prefixes


# ------------------------------------------------------------------ the checker itself


def _write_package(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_checker_finds_a_circle_in_a_synthetic_package(tmp_path: Path) -> None:
    src = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "from pkg.c import thing\n",
            "c.py": "import pkg.a\nthing = 1\n",  # a -> b -> c -> a
            "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
            "e.py": "def f():\n    from pkg import d\n\nclass K:\n    from .sub import x\n",
            "sub/__init__.py": "from ..sub import x\n",
            "sub/x.py": "from .. import e\n",  # relative, two levels up: pkg.e
        },
    )
    graph = import_graph(src, "pkg", top_level_only=True)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set()  # TYPE_CHECKING only
    assert graph["pkg.e"] == {"pkg.sub.x"}  # the class body runs at import time, the function body does not
    assert graph["pkg.sub"] == {"pkg.sub.x"} and graph["pkg.sub.x"] == {"pkg.e"}
    # e -> sub.x -> e is a circle too (through the class body)
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.e", "pkg.sub.x"]]

    everything = _all_imports(src, "pkg")
    assert "pkg.d" in everything["pkg.e"]  # the lazy import counts for the layers
    assert cycles({"x": ["y"], "y": ["z"], "z": []}) == []


def test_checker_reports_contract_breaks() -> None:
    imports = {
        "ramtag.cli": {"ramtag.training", "rich.console", "ramtag.bench"},
        "ramtag.model.backbone": {"ramtag.errors", "ramtag.model.config", "ramtag.api", "torch"},
        "ramtag.hub": {"rich.progress", "ramtag.errors"},
        "ramtag.bench.core": {"ramtag.bench.timer"},
        "ramtag.library": {"ramtag.cli.app"},
        "ramtag.__main__": {"ramtag.cli"},
    }
    check = {name: violations(c, imports) for name, c in CONTRACTS.items()}
    assert check == {
        "nothing imports the cli": ["ramtag.library -> ramtag.cli.app"],
        "model imports only model and errors": ["ramtag.model.backbone -> ramtag.api"],
        "only the cli and api.benchmark import bench": [],
        "stages never import the wiring above them": ["ramtag.model.backbone -> ramtag.api"],
        "only the cli imports training": [],
        "the catalog answers and re-decides without torch": [],
        "rich and typer only in the cli": ["ramtag.hub -> rich.progress"],
    }
