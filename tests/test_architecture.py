"""The layer contracts, read from the source (tests/support/imports.py parses every import with
``ast``, function-level imports included): the core never imports Qt, the engine's child process
never loads parent-side code, there are no import cycles, and lower layers never import higher
ones. Every child process starts through the one launcher (app.core.proc.launch)."""

from __future__ import annotations

import ast

import pytest

from tests.support import imports as graph

# highest first; modules of one layer may import each other's packages only where listed lower
LAYERS: list[tuple[str, ...]] = [
    ("app.__main__", "app.cli"),
    ("app.ui",),
    ("app.core.quant", "app.core.chat", "app.core.server"),
    ("app.core.hub", "app.core.engine"),
    # RPC workers: the engine and the planner use their client side
    ("app.core.library", "app.core.planner", "app.core.rpc"),
    # which CPU build of llama.cpp to load: below the runner, whose environment names it
    ("app.core.gguf", "app.core.proc", "app.core.engine.cpu_variants", "app.core.engine.cpu_policy"),
    ("app.core.errors", "app.core.jobs", "app.core.paths", "app.core.settings", "app.core.hardware",
     "app.core.redact", "app.core.starter", "app.core.db"),
]
BASE_MODULES = 8  # app/core's top level: cross-cutting modules only (STYLE.md)
CHILDREN = ["app.core.engine.host", "app.core.planner.dry_run", "app.core.quant.children.convert",
            "app.core.quant.children.quantize", "app.core.quant.children.imatrix", "app.core.quant.children.evaluate",
            "app.core.rpc.serve"]
PARENT_SIDE = ("app.cli", "app.ui", "app.core.engine.client", "app.core.planner.auto", "app.core.planner.memory",
               "app.core.hub", "app.core.library", "app.core.chat", "app.core.quant.pipeline", "app.core.server")


def _layer(module: str) -> int | None:
    """The layer of the longest listed name that ``module`` is or lies under."""
    found = [(len(n), i) for i, names in enumerate(LAYERS) for n in names if module == n or module.startswith(n + ".")]
    return max(found)[1] if found else None


def test_the_core_never_imports_qt() -> None:
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in graph.imports()
           if i.source.startswith("app.core") and i.target.split(".")[0] in ("PySide6", "PyQt5", "PyQt6", "shiboken6")]
    assert bad == []


def test_there_are_no_import_cycles() -> None:
    assert graph.cycles(graph.graph()) == []


def test_lower_layers_never_import_higher_ones() -> None:
    bad = []
    for i in graph.imports():
        if i.implicit:  # a package's __init__ (kept light: the closure test below watches what it loads)
            continue
        src, dst = _layer(i.source), _layer(i.target)
        if src is not None and dst is not None and dst < src:
            bad.append(f"{i.source}:{i.line} imports {i.target}")
    assert bad == []


def test_every_app_module_has_a_layer() -> None:
    assert [m for m in graph.modules() if m not in ("app", "app.core") and _layer(m) is None] == []


@pytest.mark.parametrize("child", CHILDREN)
def test_child_processes_never_load_parent_side_modules(child: str) -> None:
    """The engine host and the tool children load only what they run: never the client that
    starts them, the GUI, the planner's policy or the settings."""
    loaded = graph.closure(graph.graph(), child)
    assert sorted(m for m in loaded if m.startswith(PARENT_SIDE)) == []


def test_app_core_has_at_most_eight_top_level_modules() -> None:
    top = [m for m, p in graph.modules().items() if m.startswith("app.core.") and m.count(".") == 2 and p.name != "__init__.py"]
    assert len(top) <= BASE_MODULES, top


def test_children_start_only_through_the_one_launcher() -> None:
    """No ``sys.executable`` command lines outside app.core.proc.launch: in the bundle there is
    no Python to run (its children are the bundle itself, ``--run-module``)."""
    bad = []
    for name, path in graph.modules().items():
        if name == "app.core.proc.launch":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List) and any(isinstance(e, ast.Attribute) and e.attr == "executable"
                                                  and getattr(e.value, "id", "") == "sys" for e in node.elts):
                bad.append(f"{name}:{node.lineno}")
    assert bad == []
