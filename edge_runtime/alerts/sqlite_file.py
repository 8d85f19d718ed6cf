"""Opening one of the alert service's SQLite files (the outbox, the till's scans) the same way.

WAL mode with ``synchronous=FULL``: a row is on disk when its transaction returns, so a SIGKILL or a
power cut right after it loses nothing. A file SQLite cannot read (damaged, or not a database) is
renamed aside (``<name>.corrupt-<time>``, with its -wal and -shm) with one warning, and a new one
started: a damaged file never stops a lane.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from edge_runtime.atomic_write import set_aside


def _connect(path: Path, schema: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    ok = db.execute("PRAGMA quick_check").fetchone()[0]
    if ok != "ok":
        db.close()
        raise sqlite3.DatabaseError(f"integrity check: {ok}")
    db.executescript(schema)
    return db


def open_db(path: Path, schema: str, warn: Callable[[str], None], what: str) -> sqlite3.Connection:
    """``path`` opened (its folder made) with ``schema`` applied; ``what`` names what starts afresh
    when the file was unreadable ("alerts", "till scans")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path, schema)
    except sqlite3.DatabaseError as err:  # damaged or not a database: keep it for a look, start afresh
        aside = set_aside(path, "corrupt")
        for tail in ("-wal", "-shm"):
            extra = path.with_name(path.name + tail)
            if extra.exists():
                extra.replace(aside.with_name(aside.name + tail))
        warn(f"{path}: unreadable ({' '.join(str(err).split())}); set aside as {aside.name}, {what} start afresh")
        return _connect(path, schema)
