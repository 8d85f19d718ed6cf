"""edge_runtime's stages import downward only, in the order docs/architecture.md states, and never
export/ or torch.

Every module under edge_runtime/ is parsed (imports inside functions included: a lazy import is still
a dependency). A module may import its own stage and any stage listed before it in ``ORDER``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_runtime"

# lowest first. "shared": the top-level modules (config.py, atomic_write.py, file_hash.py, the
# package's __init__); "query table": the query-type table, numpy only, which the checkout generator
# reads below the rest of query/
ORDER = ("shared", "query table", "checkout", "sources", "backends", "memory", "items", "query", "engine",
         "alerts", "serve", "cli")
QUERY_TABLE = {"edge_runtime.query.types", "edge_runtime.query.slots"}
NEVER = ("export", "torch")  # the runtime runs without PyTorch and reaches export/ only as a process


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, package: Path) -> bool:
    """Whether ``name`` (edge_runtime.x.y) is a module or package under ``package``."""
    rel = Path(*name.split(".")[1:])
    return (package / rel).with_suffix(".py").exists() or (package / rel / "__init__.py").exists()


def stage(name: str, package: Path) -> str:
    """The stage of module ``name``: its sub-package, "shared" for top-level modules."""
    if name in QUERY_TABLE:
        return "query table"
    parts = name.split(".")
    if len(parts) == 1 or not (package / parts[1]).is_dir():
        return "shared"
    return parts[1]


def imported(tree: ast.AST, name: str, is_pkg: bool, package: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``tree``, relative ones resolved; ``from a import b`` imports
    a.b where b is a module of ours, else a."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = [f"{base}.{a.name}" for a in node.names]
            mods = [m for m in subs if m.startswith("edge_runtime.") and is_module(m, package)]
            out += [(node.lineno, m) for m in mods] or [(node.lineno, base)]
    return out


def violations(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        own = stage(name, package)
        where = path.relative_to(package.parent)
        if own not in ORDER:
            found.append(f"{where}: stage {own!r} is not in ORDER (place it there and in docs/architecture.md)")
            continue
        for line, target in imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py",
                                     package):
            top = target.split(".")[0]
            if top in NEVER:
                found.append(f"{where}:{line} imports {target} (edge_runtime never imports {top})")
            elif top == "edge_runtime" and (theirs := stage(target, package)) in ORDER and \
                    ORDER.index(theirs) > ORDER.index(own):  # a stage not in ORDER is reported at its files
                found.append(f"{where}:{line} ({own}) imports {target} ({theirs}), a stage above it")
    return found


def test_edge_runtime_imports_downward_only():
    assert violations(PACKAGE) == []


def test_the_architecture_page_states_this_order():
    text = " ".join((ROOT / "docs" / "architecture.md").read_text().split())
    assert " → ".join(ORDER[2:]) in text


def test_an_upward_import_is_caught_wherever_it_is(tmp_path):
    """The check itself: an upward import inside a function, a relative one, torch and export/ are
    each reported; downward imports are not."""
    pkg = tmp_path / "edge_runtime"
    for d in ("sources", "query", "engine"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("")
    (pkg / "query" / "types.py").write_text("")
    downward = "from edge_runtime.config import x\nfrom edge_runtime.query import types\n"
    (pkg / "engine" / "state.py").write_text(downward)
    (pkg / "sources" / "lazy.py").write_text("def f():\n    from edge_runtime.engine.state import y\n")
    (pkg / "query" / "rel.py").write_text("from ..engine import state\nfrom . import types\n")
    (pkg / "query" / "types2.py").write_text("import torch\nfrom export.model import lvmnet\n")
    found = violations(pkg)
    assert len(found) == 4, found
    assert any("sources/lazy.py:2" in f for f in found) and any("query/rel.py:1" in f for f in found)
    assert sum("never imports" in f for f in found) == 2
