"""The import contract of the package, checked on the source (AST, no import needed).

Layers, bottom to top; a module may import its own sub-package and anything in a LOWER layer, nothing beside or
above it:

    0  version, types, utils                  (no mrfa imports but these)
    1  ops | media                            (the tensor ops and the file / pixel layer, beside each other)
    2  config
    3  official | nn | losses                (official: the official format: key map, config importer)
    4  builders
    5  checkpoint
    6  data | metrics
    7  training | inference                  (libraries: no argument parsing)
    8  app                                    (the web page, a library over inference)
    9  commands                               (the command-line wing: one module per mrfa command)
   10  cli                                    (the console front end, mounts the commands)
   11  __main__                               (python -m mrfa)

Also: no module imports the package ``__init__`` (``import mrfa`` / ``from mrfa import X`` / ``from . import X``
at the top), no string in the code names an mrfa module path (lazy imports are written as imports), and the
module-level import graph has no cycle.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mrfa"
LAYERS: dict[str, int] = {
    "version": 0, "types": 0, "utils": 0,
    "ops": 1, "media": 1,
    "config": 2,
    "official": 3, "nn": 3, "losses": 3,
    "builders": 4,
    "checkpoint": 5,
    "data": 6, "metrics": 6,
    "training": 7, "inference": 7,
    "app": 8, "commands": 9, "cli": 10, "__main__": 11,
}
MODULE_STRING = re.compile(r"^mrfa(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_]\w*)?$")


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement."""
    top_level = {id(n) for n in getattr(tree, "body", [])}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or target == "mrfa":  # `from . import x` / `from mrfa import x`
                for alias in node.names:
                    yield f"{target}.{alias.name}" if target else alias.name, node.lineno, id(node) in top_level
            else:
                yield target, node.lineno, id(node) in top_level


def check_package(root: Path) -> list[str]:
    """All contract violations of the package at ``root`` (one line each)."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    for module, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parts = module.split(".")
        own = parts[1] if len(parts) > 1 else None
        for target, line, top in _imports(tree, module, path.name == "__init__.py"):
            if not target.startswith("mrfa"):
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            tparts = target.split(".")
            if module == "mrfa":  # the package facade may import anything
                continue
            if target == "mrfa" or (len(tparts) == 2 and tparts[1] not in LAYERS and f"mrfa.{tparts[1]}" not in modules):
                problems.append(f"{where}: {module} imports the package __init__ ({target})")
                continue
            sub = tparts[1]
            if own is None or sub == own:
                pass
            elif own not in LAYERS or sub not in LAYERS:
                problems.append(f"{where}: {module} -> {target}: module not placed in a layer of the contract")
            elif LAYERS[sub] >= LAYERS[own]:
                problems.append(f"{where}: {module} (layer {LAYERS[own]}, {own}) must not import {target} "
                                f"(layer {LAYERS[sub]}, {sub})")
            if top:
                resolved = target if target in modules else ".".join(tparts[:-1])
                if resolved in modules and resolved != module:
                    graph.setdefault(module, set()).add(resolved)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
                problems.append(f"{path.relative_to(root.parent)}:{node.lineno}: module path in a string "
                                f"{node.value!r} (write the import)")
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_package_keeps_its_import_contract() -> None:
    problems = check_package(PACKAGE)
    assert not problems, "import contract broken:\n" + "\n".join(problems)


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names <= set(LAYERS), f"place these in the contract's LAYERS: {sorted(names - set(LAYERS))}"


@pytest.mark.parametrize("source, expected", [
    ("from mrfa.inference.animate import Animator\n", "must not import mrfa.inference.animate"),  # upward
    ("from mrfa.nn import mrfa as m\n", "must not import mrfa.nn"),  # media beside ops, below nn
    ("from mrfa import __version__\n", "imports the package __init__"),
    ("X = 'mrfa.inference.reconstruct:reconstruct'\n", "module path in a string"),
])
def test_contract_catches_a_forbidden_import(tmp_path: Path, source: str, expected: str) -> None:
    """The checker fails on each kind of violation (a copy of a small package with one bad line)."""
    root = tmp_path / "mrfa"
    for sub in ("media", "nn", "inference"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("from .version import __version__\n")
    (root / "version.py").write_text("__version__ = '0'\n")
    (root / "inference" / "animate.py").write_text("from mrfa.media import draw\n")
    (root / "nn" / "mrfa.py").write_text("")
    (root / "media" / "draw.py").write_text(source)
    assert check_package(root) and any(expected in p for p in check_package(root)), check_package(root)


def test_contract_catches_a_cycle(tmp_path: Path) -> None:
    root = tmp_path / "mrfa"
    (root / "media").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "media" / "__init__.py").write_text("")
    (root / "media" / "a.py").write_text("from .b import x\n")
    (root / "media" / "b.py").write_text("from .a import y\n")
    assert any("import cycle" in p for p in check_package(root))


def test_only_the_command_wing_parses_arguments() -> None:
    """inference/, training/ and the rest are libraries: argparse appears only in commands/ and cli.py."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("commands",) or rel.name in ("cli.py", "__main__.py"):
            continue
        if re.search(r"^\s*(import argparse|from argparse import)", path.read_text(), flags=re.M):
            found.append(str(rel))
    assert not found, found
