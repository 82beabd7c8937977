"""The app's import graph, read from the source with ``ast`` (nothing is imported): for the layer
contracts in tests/test_architecture.py."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a module of ours resolved to the module, else as written)
    line: int
    lazy: bool  # inside a function
    implicit: bool = False  # a package whose __init__ runs because a module inside it is imported


@functools.cache
def modules(package: str = "app") -> dict[str, Path]:
    out = {}
    for p in sorted((ROOT / package).rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


@functools.cache
def imports(package: str = "app") -> list[Import]:
    mods = modules(package)
    found: list[Import] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name if is_pkg else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            lazy = id(node) in in_functions
            for t in dict.fromkeys(targets):
                found.append(Import(name, t, node.lineno, lazy))
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parent = t.rpartition(".")[0]
                while parent and parent in mods and parent != name and parent != "app":
                    found.append(Import(name, parent, node.lineno, lazy, implicit=True))
                    parent = parent.rpartition(".")[0]
    return found


def graph(package: str = "app", *, lazy: bool = True) -> dict[str, set[str]]:
    mods = modules(package)
    g: dict[str, set[str]] = {m: set() for m in mods}
    for imp in imports(package):
        if imp.target in mods and imp.target != imp.source and (lazy or not imp.lazy):
            g[imp.source].add(imp.target)
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def closure(g: dict[str, set[str]], start: str) -> set[str]:
    """Every module of ours that running ``start`` loads (its packages' ``__init__`` included)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(g[m])
            parent = m.rpartition(".")[0]
            if parent in g:
                todo.append(parent)
    return seen
