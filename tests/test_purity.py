"""The pure packages clock/ and protocol/ import no I/O, clock or randomness modules.

Time, randomness and bytes come in as arguments (STYLE.md, "Where I/O lives"); this
reads every module's source with ``ast`` and checks each Import and ImportFrom,
wherever it stands (top level, inside a function, under ``if TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE_PACKAGES = ("clock", "protocol")
FORBIDDEN = frozenset({"asyncio", "aiohttp", "socket", "websockets", "time", "datetime", "random", "os"})
PURE_MODULES = sorted(path for package in PURE_PACKAGES for path in (ROOT / package).rglob("*.py"))


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module an absolute import in ``source`` brings in."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module.split(".")[0])
    return names


def test_checker_sees_every_form_of_import() -> None:
    """The checker finds plain, dotted, aliased, from- and nested imports."""
    source = "import os.path as p\nfrom time import monotonic_ns\ndef f():\n    import asyncio\nfrom . import sibling\n"
    assert imported_modules(source) == {"os", "time", "asyncio"}


def test_both_pure_packages_are_checked() -> None:
    """Every pure package contributes modules to the check."""
    assert {path.relative_to(ROOT).parts[0] for path in PURE_MODULES} == set(PURE_PACKAGES)
    assert ROOT / "clock" / "estimator.py" in PURE_MODULES


@pytest.mark.parametrize("path", PURE_MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: Path) -> None:
    """A module of clock/ or protocol/ imports none of asyncio, aiohttp, socket, websockets, time, datetime, random, os."""
    assert imported_modules(path.read_text(encoding="utf-8")) & FORBIDDEN == set()
