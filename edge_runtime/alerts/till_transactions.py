"""The till's transactions of each stream: when each customer's transaction started and ended.

    tx = TillTransactions(state_dir)
    tx.add("lane1", [("start", 700.0), ("end", 812.4)], now=816.0)   # (kind, stream seconds), in time order
    tx.recent("lane1", since=now - KEEP_S)   # -> [Event]: activity "transaction", start to end, tracks ("pos",)

The ``left_in_basket`` rule judges what is still in the basket at each end. ``<state dir>/till.db``
(edge_runtime/alerts/sqlite_file.py): an accepted start or end is on disk before the answer. A
start while one is open replaces it (its end was lost: it judges nothing); an end with no
transaction open is refused (``TillError``), unless it is an end already recorded (a retry), and a
refused call stores nothing. Bounded as the till's scans are: a stream's transactions that ended (or
started, still open) more than ``KEEP_S`` before the stream's time go at each add.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterable

from edge_runtime.alerts.rules import KEEP_S
from edge_runtime.alerts.sqlite_file import open_db
from edge_runtime.query.events import Event

DB_NAME = "till.db"
KINDS = ("start", "end")
SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    stream TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL,
    PRIMARY KEY (stream, start)
);
"""


class TillError(Exception):
    """A till's message that cannot be taken (one line)."""


class TillStoreError(Exception):
    """The store could not be written (one line)."""


class TillTransactions:
    def __init__(self, state_dir: str | Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(state_dir) / DB_NAME
        self._lock = threading.Lock()
        self._db = open_db(self.path, SCHEMA, warn or (lambda msg: None), "till transactions")

    def add(self, stream: str, marks: Iterable[tuple[str, float]], now: float) -> dict[str, int]:
        """A stream's transaction starts and ends (kind, stream seconds), taken in time order; ``now`` the
        stream's time. -> counts: ``started``, ``ended`` (new), ``replaced`` (open ones a start replaced).
        TillError (nothing stored) for an end with no transaction open; TillStoreError if the file
        cannot be written (nothing stored)."""
        marks = sorted(((str(k), float(t)) for k, t in marks), key=lambda m: (m[1], KINDS.index(m[0])))
        counts = {"started": 0, "ended": 0, "replaced": 0}
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for kind, t in marks:
                        self._mark(stream, kind, t, counts)
                    horizon = float(now) - KEEP_S
                    self._db.execute("DELETE FROM transactions WHERE stream = ? AND COALESCE(end, start) < ?",
                                     (stream, horizon))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                raise TillStoreError(f"{self.path.name}: {' '.join(str(err).split())}") from None
        return counts

    def _mark(self, stream: str, kind: str, t: float, counts: dict[str, int]) -> None:
        db = self._db
        if kind == "start":
            if db.execute("SELECT 1 FROM transactions WHERE stream = ? AND start = ?", (stream, t)).fetchone():
                return  # sent again
            counts["replaced"] += db.execute("DELETE FROM transactions WHERE stream = ? AND end IS NULL AND start < ?",
                                             (stream, t)).rowcount
            db.execute("INSERT INTO transactions (stream, start, end) VALUES (?, ?, NULL)", (stream, t))
            counts["started"] += 1
        elif kind == "end":
            if db.execute("SELECT 1 FROM transactions WHERE stream = ? AND end = ?", (stream, t)).fetchone():
                return  # sent again
            row = db.execute("SELECT start FROM transactions WHERE stream = ? AND end IS NULL AND start <= ? "
                             "ORDER BY start DESC LIMIT 1", (stream, t)).fetchone()
            if row is None:
                raise TillError(f"a transaction end at stream time {t:.6g} s with no transaction started before it "
                                f"on stream {stream!r}: send its start first")
            db.execute("UPDATE transactions SET end = ? WHERE stream = ? AND start = ?", (t, stream, row[0]))
            counts["ended"] += 1
        else:
            raise TillError(f"unknown transaction mark {kind!r} (give {' or '.join(KINDS)})")

    def recent(self, stream: str, since: float) -> list[Event]:
        """A stream's ended transactions that ended at or after ``since``, oldest first, as the rules take them."""
        with self._lock:
            rows = self._db.execute("SELECT start, end FROM transactions WHERE stream = ? AND end IS NOT NULL "
                                    "AND end >= ? ORDER BY start", (stream, float(since))).fetchall()
        return [transaction_event(a, b) for a, b in rows]

    def listing(self, stream: str) -> list[tuple[float, float | None]]:
        """(start, end or None while open) of a stream's transactions held, oldest first."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT start, end FROM transactions WHERE stream = ? ORDER BY start", (stream,)).fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def transaction_event(start: float, end: float) -> Event:
    """One ended transaction as the rules read it among the events (``left_in_basket``)."""
    return Event("transaction", -1, "till", float(start), float(end), 1.0, None, ("pos",))
