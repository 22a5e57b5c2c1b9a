"""Package metadata tells the truth: the minimum Python in setup.py parses every file, benchmarks and test helpers
do not ship in the package, and tools import the installed package (no sys.path edits)."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "mrfa").rglob("*.py")) + sorted((REPO / "tools").glob("*.py"))


def _min_python() -> tuple[int, int]:
    found = re.search(r'python_requires=">=(\d+)\.(\d+)"', (REPO / "setup.py").read_text())
    assert found, "setup.py states no python_requires"
    return int(found[1]), int(found[2])


def test_sources_parse_with_the_minimum_python_grammar() -> None:
    version = _min_python()
    for path in SOURCES:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=version)


def _interpreter(major: int, minor: int) -> str | None:
    """A working python{major}.{minor} (PATH, or a pyenv installation), else None."""
    candidates = [shutil.which(f"python{major}.{minor}")]
    candidates += [str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{major}.{minor}.*/bin/python{major}.{minor}"))]
    for exe in filter(None, candidates):
        if subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0:
            return exe
    return None


def test_minimum_python_interpreter_compiles_the_package() -> None:
    major, minor = _min_python()
    exe = _interpreter(major, minor)
    if exe is None:
        pytest.skip(f"no python{major}.{minor} on PATH (the grammar check above still ran)")
    code = ("import sys\nfor p in sys.argv[1:]:\n    compile(open(p, encoding='utf-8').read(), p, 'exec')\n"
            "print(sys.version_info[:2])")
    proc = subprocess.run([exe, "-c", code, *map(str, SOURCES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"({major}, {minor})"


def test_no_newer_stdlib_than_the_minimum() -> None:
    newer = {(3, 11): ("tomllib", "typing.Self", "ExceptionGroup", "asyncio.TaskGroup", "enum.StrEnum")}
    for version, names in newer.items():
        if version <= _min_python():
            continue
        for path in SOURCES:
            text = path.read_text(encoding="utf-8")
            for name in names:
                assert not re.search(rf"\b{re.escape(name)}\b", text), f"{path} uses {name} (Python {version})"


def test_benchmarks_and_test_helpers_are_not_in_the_package() -> None:
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "mrfa").rglob("*.py")}
    assert not [p for p in shipped if re.search(r"(^|/)(bench\w*|parity)\.py$", p)], shipped


def test_tools_do_not_edit_sys_path() -> None:
    for path in (REPO / "tools").glob("*.py"):
        assert "sys.path.insert" not in path.read_text() and "sys.path.append" not in path.read_text(), path


def test_import_is_light_and_the_cli_sets_the_openmp_policy_first() -> None:
    """``import mrfa`` loads no torch, so the commands can set GOMP_SPINCOUNT before libgomp starts."""
    import os
    import sys

    code = ("import sys, os, mrfa, mrfa.cli\nassert 'torch' not in sys.modules, 'torch loaded by import mrfa'\n"
            "mrfa.cli.set_openmp_policy()\nimport torch\nprint(os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert proc.stdout.strip() == "10000"
    env["GOMP_SPINCOUNT"] = "123"  # the user's choice wins
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.strip() == "123"
