"""The package reads one way: file -> audio -> models -> catalog -> index -> ingest/search/train
-> cli/web/live, and only ``catalog/`` talks to the database.

These tests read the source (``ast``), so they see every import -- module level, inside
functions (the lazy imports that keep ``--help`` fast) and under ``TYPE_CHECKING`` --
and every string literal.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import soundalike

PKG_DIR = Path(soundalike.__file__).parent

#: Module prefix -> layer.  A module may import its own layer group and anything lower;
#: the longest matching prefix decides.  Same-layer modules of different groups stay
#: apart (ingest does not import search, web does not import live).
LAYERS: dict[str, int] = {
    "soundalike": 0,  # the package itself: __version__ (its lazy `similar` is allowed below)
    "soundalike.config": 0,
    "soundalike.errors": 0,
    "soundalike.paths": 0,
    "soundalike.audio": 1,
    "soundalike.models": 2,
    "soundalike.catalog": 3,
    "soundalike.search.index": 4,
    "soundalike.search.sync": 5,
    "soundalike.data": 6,  # datasets read folders, tables and catalogs for training
    "soundalike.ingest": 7,
    "soundalike.search": 7,
    "soundalike.train": 7,
    "soundalike.demo": 7,
    "soundalike.web": 8,
    "soundalike.live": 8,
    "soundalike.cli": 9,
    "soundalike.__main__": 10,  # python -m soundalike: runs the CLI
}
#: (importer, imported) edges that are allowed to run upward, each with its reason.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("soundalike", "soundalike.search.similar"): "soundalike.similar(): a lazy convenience re-export",
    ("soundalike", "soundalike.search.playlist"): "soundalike.playlist(): a lazy convenience re-export",
}
#: Modules that must not import a lower layer they could (purity, not order).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "soundalike.search.index": ("soundalike.catalog", "soundalike.audio", "soundalike.models"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG_DIR.rglob("*.py")):
        rel = p.relative_to(PKG_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """soundalike modules that ``name`` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            # `from pkg import mod` imports the module pkg.mod when it is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            if t == "soundalike" or t.startswith("soundalike."):
                while t not in MODULES and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t != name:
                    found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> tuple[int, str]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best], best


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)  # raises (max of nothing) if a new top-level module is not in the table
    assert {m.split(".")[1] for m in MODULES if m.count(".") >= 1} <= {p.split(".")[1] for p in LAYERS
                                                                     if p.count(".") >= 1}


def test_no_import_runs_up_the_layers():
    bad = []
    for src, targets in GRAPH.items():
        ls, gs = _layer(src)
        for dst in targets:
            ld, gd = _layer(dst)
            if (src, dst) in ALLOWED_UPWARD:
                continue
            if ld > ls or (ld == ls and gd != gs and ls > 0):
                bad.append(f"{src} (layer {ls}, {gs}) imports {dst} (layer {ld}, {gd})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_pure_modules_stay_pure():
    for src, banned in FORBIDDEN.items():
        hits = [d for d in GRAPH[src] if any(d == b or d.startswith(b + ".") for b in banned)]
        assert not hits, f"{src} must not import {hits}"


def test_no_import_cycles():
    graph = {s: {d for d in ds if (s, d) not in ALLOWED_UPWARD} for s, ds in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d):], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_layer_checks_can_fail():
    """The checks above must see a bad edge when there is one (guard against a vacuous walk)."""
    assert "soundalike.search.sync" in GRAPH["soundalike.search.similar"]
    assert "soundalike.catalog.store" in GRAPH["soundalike.ingest.pipeline"]
    assert _layer("soundalike.cli.core")[0] > _layer("soundalike.ingest.pipeline")[0]
    assert _layer("soundalike.search.index") == (4, "soundalike.search.index")


# --------------------------------------------------------------------------- one door

#: Statement shapes that are SQL, not prose: a verb and its clause keyword, upper case.
_SQL_RE = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                     r"CREATE\s+(TABLE|INDEX)|ALTER\s+TABLE|PRAGMA\s+\w+|BEGIN\s+IMMEDIATE)\b", re.S)
_DB_MODULES = {"sqlite3", "psycopg", "psycopg2", "sqlalchemy", "apsw"}
_CONN_ATTRS = {"conn", "_conn", "_db", "connection", "cursor", "execute", "executemany", "executescript"}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _db_leaks(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstring_nodes(tree)
    leaks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            leaks += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in _DB_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _DB_MODULES:
            leaks.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in _CONN_ATTRS:
            leaks.append(f"line {node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and _SQL_RE.search(node.value)):
            leaks.append(f"line {node.lineno}: SQL text {node.value[:60]!r}")
    return leaks


def test_sql_and_connections_live_only_in_catalog():
    leaks = {}
    for name, path in MODULES.items():
        if name == "soundalike.catalog" or name.startswith("soundalike.catalog."):
            continue
        found = _db_leaks(path)
        if found:
            leaks[name] = found
    assert not leaks, "SQL or a connection outside catalog/:\n" + "\n".join(
        f"{m}: {'; '.join(v)}" for m, v in leaks.items())


@pytest.mark.parametrize("snippet", [
    'rows = cat.conn.execute("SELECT id FROM tracks").fetchall()',
    'import sqlite3\n',
    'q = "SELECT track_id, tag FROM tags WHERE source = ?"\n',
    'q = f"UPDATE tracks SET status = {s}"\n',
])
def test_the_door_check_catches_leaks(tmp_path, snippet):
    p = tmp_path / "leaky.py"
    p.write_text(snippet)
    assert _db_leaks(p)


def test_the_door_check_allows_prose(tmp_path):
    p = tmp_path / "prose.py"
    p.write_text('"""Select the tracks from the catalog and update the index."""\n'
                 'msg = "select a model from the list"\n')
    assert not _db_leaks(p)
