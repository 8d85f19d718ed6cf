"""The repository's root, and paths as results files record them: relative to the root when inside
it, so a committed result names no machine's folders."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(p: str | Path | None) -> str | None:
    if p is None:
        return None
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)
