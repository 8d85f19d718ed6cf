"""The till's scans of each stream, as the store's point-of-sale system sends them.

    till = PosScans(state_dir)
    till.add("lane1", [("milk_carton", 812.4), ("soda_can", 815.0)], now=816.0)   # (product, stream seconds)
    till.recent("lane1", since=now - KEEP_S)   # -> [Event]: activity "scan", confidence 1, tracks ("pos",)

With ``alerts.scans: pos`` the rules judge the model's bags (and handlings over the scanner) against
these instead of the model's own scan events: the till knows exactly what it read and when.

``<state dir>/pos_scans.db`` (edge_runtime/alerts/sqlite_file.py): a scan the API accepted is on disk,
so a runtime restarted on its state dir still knows what was paid for before (its first evaluation
reads the last 15 minutes of the memory again). Bounded: at each add, a stream's scans older than
``KEEP_S`` before the stream's time (``now``: its newest frame) go, and at most ``MAX_PER_STREAM``
stay. The horizon follows the stream, not the newest read, so a read from a till with a wrong clock
cannot push the real reads out.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from edge_runtime.alerts.rules import KEEP_S
from edge_runtime.alerts.sqlite_file import open_db
from edge_runtime.query.events import Event

DB_NAME = "pos_scans.db"
MAX_PER_STREAM = 20_000   # far more than a lane scans in KEEP_S; only a runaway sender reaches it
SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    stream TEXT NOT NULL,
    t REAL NOT NULL,
    product TEXT NOT NULL,
    PRIMARY KEY (stream, t, product)
);
"""


class PosScanError(Exception):
    """The store could not be written (one line)."""


class PosScans:
    def __init__(self, state_dir: str | Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(state_dir) / DB_NAME
        self._lock = threading.Lock()
        self._db = open_db(self.path, SCHEMA, warn or (lambda msg: None), "till scans")
        self.received = 0
        self.last_received_at: float | None = None  # unix time of the last add that brought a new scan

    def add(self, stream: str, scans: Iterable[tuple[str, float]], now: float) -> int:
        """Store a stream's scans, ``now`` being the stream's time (its newest frame, stream seconds);
        -> how many were new and kept (a scan sent again, same product and time, is kept once; one
        more than ``KEEP_S`` before ``now`` is not kept: no rule reads it). PosScanError if the file
        cannot be written (nothing of this call is stored)."""
        horizon = float(now) - KEEP_S
        rows = [(stream, float(t), str(p)) for p, t in scans if float(t) >= horizon]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    before = self._db.total_changes
                    self._db.executemany("INSERT OR IGNORE INTO scans (stream, t, product) VALUES (?, ?, ?)", rows)
                    new = self._db.total_changes - before
                    self._db.execute("DELETE FROM scans WHERE stream = ? AND t < ?", (stream, horizon))
                    self._db.execute("DELETE FROM scans WHERE stream = ? AND t < (SELECT t FROM scans WHERE stream = ? "
                                     "ORDER BY t DESC LIMIT 1 OFFSET ?)", (stream, stream, MAX_PER_STREAM - 1))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                raise PosScanError(f"{self.path.name}: {' '.join(str(err).split())}") from None
        self.received += new
        if new:
            self.last_received_at = time.time()
        return new

    def recent(self, stream: str, since: float) -> list[Event]:
        """A stream's scans at or after ``since`` (stream seconds), oldest first, as the rules take them."""
        with self._lock:
            rows = self._db.execute("SELECT t, product FROM scans WHERE stream = ? AND t >= ? ORDER BY t",
                                    (stream, float(since))).fetchall()
        return [Event("scan", -1, p, t, t, 1.0, None, ("pos",)) for t, p in rows]

    def count(self, stream: str | None = None) -> int:
        with self._lock:
            if stream is None:
                return self._db.execute("SELECT COUNT(*) FROM scans").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM scans WHERE stream = ?", (stream,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
