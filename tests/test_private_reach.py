"""No module reads another module's privates, and serve/ never probes a source for what it can do.

Every .py under edge_runtime/, export/ and tools/ is parsed (imports inside functions included).
Flagged:
- ``from m import _name``: a private name of another module (make it public where it is, or move it);
- ``mod._name`` where ``mod`` is one of this repository's modules, imported: the same reach by attribute;
- ``obj._field`` on anything but ``self``/``cls`` where the module itself defines no ``_field`` (no
  ``self._field = ...``, no ``def _field``): another class's private state, read from outside it;
- ``getattr(x, "_name")`` / ``hasattr(x, "_name")``: a private field read by its name, which is how a
  base class would read what only a subclass sets;
- in serve/, ``getattr(src, "...")`` / ``hasattr(src, "...")`` on a source: what a source can say
  about itself is declared on ``edge_runtime.sources.Source``, with defaults, and read directly.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("edge_runtime", "export", "tools")
SOURCE_NAME = re.compile(r"(^|[._])(src|source)$")  # src, source, self._source, lane.source
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}  # public despite the underscore


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_repo_module(name: str, root: Path) -> bool:
    rel = Path(*name.split("."))
    return name.split(".")[0] in TREES and ((root / rel).with_suffix(".py").exists()
                                            or (root / rel / "__init__.py").exists())


def imported_from(node: ast.ImportFrom, name: str, is_pkg: bool) -> str:
    """The module ``node`` imports from, relative imports resolved against module ``name``."""
    if not node.level:
        return node.module or ""
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    return ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))


def reaches(text: str, name: str, *, is_pkg: bool = False, in_serve: bool = False,
            root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, what) of each reach into another module's privates, or probe of a source, in the
    module ``name`` whose code is ``text``."""
    tree = ast.parse(text)
    found: list[tuple[int, str]] = []
    modules: set[str] = set()  # local names bound to this repository's modules
    others: set[str] = set()   # local names bound to other modules (os._exit is os's business)
    own: set[str] = set()      # the fields, methods and functions this module defines
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
              and node.value.id in ("self", "cls")):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)  # a class body's fields (and module globals)
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and is_repo_module(a.name, root):
                    modules.add(a.asname)
                else:
                    others.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = imported_from(node, name, is_pkg)
            for a in node.names:
                if private(a.name) and base != name:
                    found.append((node.lineno, f"from {base} import {a.name}"))
                elif is_repo_module(f"{base}.{a.name}", root):
                    modules.add(a.asname or a.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if base in modules or (base not in ("self", "cls") and base not in others
                                   and node.attr not in own and node.attr not in NAMEDTUPLE_API):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)):
            field = node.args[1].value
            if private(field) or (in_serve and SOURCE_NAME.search(ast.unparse(node.args[0]))):
                found.append((node.lineno, ast.unparse(node)))
    return found


def all_reaches(root: Path = ROOT) -> tuple[int, list[str]]:
    """(modules read, "path:line: what" of each reach) over the repository at ``root``."""
    n, out = 0, []
    for tree in TREES:
        for path in sorted((root / tree).rglob("*.py")):
            n += 1
            rel = path.relative_to(root)
            for line, what in reaches(path.read_text(encoding="utf-8"), module_name(path, root),
                                      is_pkg=path.name == "__init__.py",
                                      in_serve=rel.parts[:2] == ("edge_runtime", "serve"), root=root):
                out.append(f"{rel}:{line}: {what}")
    return n, out


def test_no_module_reaches_into_another_modules_privates():
    n, found = all_reaches()
    assert n > 200, f"only {n} modules found under {TREES}: the walk is not reading the repository"
    assert not found, "private reaches (make the name public, or read the declared attribute):\n" + "\n".join(found)


def test_the_check_catches_each_kind_of_reach():
    """The walk above passes only because the code is clean: each form it looks for is caught."""
    cases = {
        "from edge_runtime.cli.query import _http": "from edge_runtime.cli.query import _http",
        "from .render import _shape": "from edge_runtime.checkout.render import _shape",
        "from edge_runtime.cli import query as q\nq._http('GET', '', None, None)": "q._http",
        "import edge_runtime.cli.query as q\nq._http": "q._http",
        "def f(self):\n    return getattr(self, '_pacer', None)": "getattr(self, '_pacer', None)",
        "def f(m):\n    return hasattr(m, '_metrics')": "hasattr(m, '_metrics')",
        "def f(ctx):\n    return ctx._ckpts": "ctx._ckpts",
        "def f(rt):\n    return rt.engine._stream": "rt.engine._stream",
    }
    for code, what in cases.items():
        assert [w for _, w in reaches(code, "edge_runtime.checkout.scene")] == [what], code
    serve = {
        "def f(src):\n    return getattr(src, 'last_error', None)": "getattr(src, 'last_error', None)",
        "def f(self):\n    return getattr(self._source, 'outage_since', None)":
            "getattr(self._source, 'outage_since', None)",
        "def f(src):\n    return hasattr(src, 'now')": "hasattr(src, 'now')",
    }
    for code, what in serve.items():
        assert [w for _, w in reaches(code, "edge_runtime.serve.intake", in_serve=True)] == [what], code
        assert reaches(code, "edge_runtime.query.happened") == [], code  # a probe only counts in serve/


def test_what_the_check_lets_through():
    """Public names, an object's own fields, third-party modules and non-source probes are not reaches."""
    clean = ("from edge_runtime.cli.http_client import request_json\n"
             "import os\nos._exit\n"
             "class A:\n    def __init__(self):\n        self._x = 0\n"
             "    def same(self, other, hub, parts):\n        self._y = getattr(hub, 'catalog', None)\n"
             "        return other._x, src.last_error, parts._replace(path='')\n")
    assert reaches(clean, "edge_runtime.sources.base", in_serve=True) == []
