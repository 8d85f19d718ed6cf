"""The alert store and outbox: ``<state dir>/alerts.db``, SQLite in WAL mode.

    alerts   one row per alert id (the record as JSON, its status, its rule and the outcome of its
             last verdict); insert is idempotent by id
    outbox   one row per (sink, alert) still to be delivered; a delivery deletes it; an alert cleared
             after it was raised is queued again (``clear``)
    evidence the alert's JPEGs (edge_runtime/alerts/evidence.py), deleted with their alert

A file written before verdicts were kept (no ``rule``, ``outcome``, ``verdict_at`` columns), or before
evidence was (no ``evidence`` column or table), gains them when opened, every stored alert kept
(``_migrate``); its alerts' ``evidence`` stays null (none was kept).

``synchronous=FULL``: an alert is on disk when ``add`` returns, so a SIGKILL (or a power cut) right
after an alert is raised loses nothing, and after a restart the dispatcher delivers what each sink
had not acknowledged: at-least-once per sink. A sink added to the config later gets the alerts raised
from then on; rows of a sink no longer configured are dropped at start (``open``'s ``sinks``).

Bounded: at most ``max_alerts`` alerts are kept. Beyond that the oldest delivered ones go, acked
ones first; only when every alert is still waiting for a sink (a broker away for that many alerts)
do the oldest undelivered ones go, counted in ``dropped``. About 1-2 KB an alert, and its evidence
(a few KB of JPEGs with ``keep: item``, edge_runtime/alerts/evidence.py), which goes with it.

A file SQLite cannot read (damaged, or not a database) is renamed aside with one warning and a new
store started; an error while running (disk full) is counted and reported, never raised into the stream.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from edge_runtime.alerts.record import Alert, Cleared, Verdict
from edge_runtime.alerts.sqlite_file import open_db

DB_NAME = "alerts.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    status TEXT NOT NULL,
    raised_at REAL NOT NULL,
    acked_at REAL,
    body TEXT NOT NULL,
    rule TEXT,
    outcome TEXT,
    verdict_at REAL,
    evidence TEXT
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (raised_at);
CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL REFERENCES alerts (seq) ON DELETE CASCADE,
    PRIMARY KEY (sink, seq)
);
CREATE TABLE IF NOT EXISTS evidence (
    seq INTEGER NOT NULL REFERENCES alerts (seq) ON DELETE CASCADE,
    k INTEGER NOT NULL,
    jpeg BLOB NOT NULL,
    PRIMARY KEY (seq, k)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# columns a file written before verdicts lacks: (name, type); added by _migrate
VERDICT_COLUMNS = (("rule", "TEXT"), ("outcome", "TEXT"), ("verdict_at", "REAL"))
# what was kept of the alert's evidence: item | frame | off (the alert's stream kept none); null: stored
# before evidence was kept
EVIDENCE_COLUMNS = (("evidence", "TEXT"),)


class OutboxError(Exception):
    """The store could not be written (one line)."""


class Outbox:
    def __init__(self, state_dir: str | Path, *, sinks: Iterable[str] = (), max_alerts: int = 10_000,
                 warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.max_alerts = int(max_alerts)
        self.sinks = list(sinks)
        self._warn = warn or (lambda msg: None)
        self._lock = threading.Lock()
        self.errors = 0
        self.last_error: str | None = None
        self._db = self._open()
        self._forget_sinks_not_in(self.sinks)

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        db = open_db(self.path, SCHEMA, self._warn, "alerts")
        _migrate(db)
        return db

    def _forget_sinks_not_in(self, sinks: list[str]) -> None:
        with self._lock:
            gone = self._db.execute(
                f"SELECT sink, COUNT(*) FROM outbox WHERE sink NOT IN ({','.join('?' * len(sinks))}) GROUP BY sink",
                sinks).fetchall()
            for sink, n in gone:
                self._db.execute("DELETE FROM outbox WHERE sink = ?", (sink,))
                self._warn(f"alerts: {n} alerts waited for {sink_label(sink)}, which is no longer configured; "
                           f"they stay in the store, undelivered there")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """One transaction; OutboxError (one line) if SQLite cannot write it."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as err:
                self.errors += 1
                self.last_error = f"{self.path.name}: {' '.join(str(err).split())}"
                raise OutboxError(self.last_error) from None

    def add(self, alert: Alert, *, evidence: str | None = None, jpegs: Iterable[bytes] = (), send: bool = True) -> bool:
        """Store an alert and queue it for every sink (``send`` False: for none, a held alert); False if its id
        is already stored (nothing changes). ``evidence``: what its stream keeps (item | frame | off), ``jpegs``
        the images of its ``images``, stored in the same transaction."""
        def tx(db: sqlite3.Connection) -> bool:
            cur = db.execute("INSERT OR IGNORE INTO alerts (id, stream, status, raised_at, acked_at, body, rule, "
                             "outcome, verdict_at, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (alert.id, alert.stream, alert.status, alert.raised_at, alert.acked_at,
                              alert.model_dump_json(), alert.rule, alert.outcome,
                              alert.verdicts[-1].at if alert.verdicts else None, evidence))
            if cur.rowcount == 0:
                return False
            db.executemany("INSERT INTO evidence (seq, k, jpeg) VALUES (?, ?, ?)",
                           [(cur.lastrowid, k, sqlite3.Binary(j)) for k, j in enumerate(jpegs)])
            db.executemany("INSERT INTO outbox (sink, seq) VALUES (?, ?)",
                           [(s, cur.lastrowid) for s in self.sinks if send])
            self._prune(db)
            return True
        return self._write(tx)

    def _prune(self, db: sqlite3.Connection) -> None:
        over = db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] - self.max_alerts
        if over <= 0:
            return
        delivered = ("SELECT seq FROM alerts WHERE seq NOT IN (SELECT seq FROM outbox) "
                     "ORDER BY status = 'acked' DESC, seq LIMIT ?")
        gone = db.execute(f"DELETE FROM alerts WHERE seq IN ({delivered})", (over,)).rowcount
        if over - gone > 0:  # nothing delivered left to drop: the oldest undelivered go, and are counted
            n = db.execute("DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts ORDER BY seq LIMIT ?)",
                           (over - gone,)).rowcount
            db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (n,))

    def delivered(self, sink: str, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if seqs:
            self._write(lambda db: db.executemany("DELETE FROM outbox WHERE sink = ? AND seq = ?",
                                                  [(sink, s) for s in seqs]))

    def ack(self, alert_id: str, verdict: Verdict | None = None, now: float | None = None) -> Alert | None:
        """Mark an alert acknowledged (its first ``acked_at`` kept) and, with ``verdict``, add that verdict
        (the last one counts; the earlier ones stay, with their times). Without a verdict an alert
        acknowledged before is kept as it is. None for an unknown id (nothing changes)."""
        def tx(db: sqlite3.Connection) -> Alert | None:
            row = db.execute("SELECT body, status FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                return None
            alert = Alert.model_validate_json(row[0])
            if row[1] == "acked" and verdict is None:
                return alert
            update: dict[str, Any] = {"status": "acked"}
            if row[1] != "acked":
                update["acked_at"] = time.time() if now is None else now
            if verdict is not None:
                update["verdicts"] = [*alert.verdicts, verdict]
            alert = alert.model_copy(update=update)
            db.execute("UPDATE alerts SET status = 'acked', acked_at = ?, outcome = ?, verdict_at = ?, body = ? "
                       "WHERE id = ?", (alert.acked_at, alert.outcome, alert.verdicts[-1].at if alert.verdicts
                                        else None, alert.model_dump_json(), alert_id))
            return alert
        return self._write(tx)

    def clear(self, alert_id: str, cleared: Cleared) -> Alert | None:
        """Mark an alert cleared (edge_runtime/alerts/cleared.py) and queue it again for every sink, with
        ``cleared`` set (a held alert stays unsent; a copy still waiting is sent once, as it is now). An
        alert cleared before, or an unknown id: None, nothing changes."""
        def tx(db: sqlite3.Connection) -> Alert | None:
            row = db.execute("SELECT seq, body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                return None
            alert = Alert.model_validate_json(row[1])
            if alert.cleared is not None:
                return None
            alert = alert.model_copy(update={"cleared": cleared})
            db.execute("UPDATE alerts SET body = ? WHERE seq = ?", (alert.model_dump_json(), row[0]))
            if not alert.held:
                db.executemany("INSERT OR IGNORE INTO outbox (sink, seq) VALUES (?, ?)", [(s, row[0]) for s in self.sinks])
            return alert
        return self._write(tx)

    # -- reading ---------------------------------------------------------------------------------
    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows; OutboxError (one line) if SQLite cannot read them (the file damaged while running)."""
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as err:
                self.errors += 1
                self.last_error = f"{self.path.name}: {' '.join(str(err).split())}"
                raise OutboxError(self.last_error) from None

    def due(self, sink: str, limit: int = 100) -> list[tuple[int, Alert]]:
        """The oldest alerts ``sink`` has not acknowledged, in the order they were raised, each as it was
        raised: staff acknowledging one while a copy waits does not change the body of later copies."""
        rows = self._read("SELECT a.seq, a.body FROM outbox o JOIN alerts a ON a.seq = o.seq WHERE o.sink = ? "
                          "ORDER BY o.seq LIMIT ?", (sink, limit))
        return [(seq, Alert.model_validate_json(body).model_copy(update={"status": "open", "acked_at": None,
                                                                          "verdicts": []}))
                for seq, body in rows]

    def pending(self) -> dict[str, int]:
        """Alerts each sink still has to receive (every configured sink, 0 included)."""
        counts = dict(self._read("SELECT sink, COUNT(*) FROM outbox GROUP BY sink"))
        return {s: int(counts.get(s, 0)) for s in self.sinks}

    def get(self, alert_id: str) -> Alert | None:
        rows = self._read("SELECT body FROM alerts WHERE id = ?", (alert_id,))
        return Alert.model_validate_json(rows[0][0]) if rows else None

    def list(self, *, stream: str | None = None, status: str | None = None, since: float | None = None,
             limit: int = 100, before_seq: int | None = None) -> list[tuple[int, Alert]]:
        """Alerts newest first (by when they were raised), filtered; (seq, alert) pairs, seq for paging."""
        where, args = [], []
        for cond, value in (("stream = ?", stream), ("status = ?", status), ("raised_at >= ?", since),
                            ("seq < ?", before_seq)):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = "SELECT seq, body FROM alerts" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self._read(sql + " ORDER BY seq DESC LIMIT ?", (*args, int(limit)))
        return [(seq, Alert.model_validate_json(body)) for seq, body in rows]

    def evidence(self, alert_id: str) -> tuple[str | None, int] | None:
        """(what the alert's stream kept: item | frame | off, or None before evidence was kept; how many
        JPEGs are stored) of an alert; None for an unknown id."""
        rows = self._read("SELECT a.evidence, COUNT(e.k) FROM alerts a LEFT JOIN evidence e ON e.seq = a.seq "
                          "WHERE a.id = ? GROUP BY a.seq", (alert_id,))
        return (rows[0][0], int(rows[0][1])) if rows else None

    def evidence_image(self, alert_id: str, k: int) -> bytes | None:
        """The alert's ``k``-th JPEG; None when there is none."""
        rows = self._read("SELECT e.jpeg FROM evidence e JOIN alerts a ON a.seq = e.seq WHERE a.id = ? AND e.k = ?",
                          (alert_id, int(k)))
        return bytes(rows[0][0]) if rows else None

    def evidence_bytes(self) -> tuple[int, int]:
        """(alerts with an image, bytes of their images) stored now."""
        n, total = self._read("SELECT COUNT(DISTINCT seq), COALESCE(SUM(LENGTH(jpeg)), 0) FROM evidence")[0]
        return int(n), int(total)

    def counts(self) -> dict[str, int]:
        total, open_ = self._read("SELECT COUNT(*), COALESCE(SUM(status = 'open'), 0) FROM alerts")[0]
        dropped = self._read("SELECT value FROM counters WHERE name = 'dropped'")
        return {"stored": int(total), "open": int(open_), "dropped": int(dropped[0][0]) if dropped else 0}

    def rule_verdicts(self, last: int) -> dict[tuple[str, str], dict[str, int]]:
        """(stream, rule) -> {outcome: count} over that pair's ``last`` alerts with a verdict, newest
        verdict first (an alert's last verdict counts); a pair with no verdict is absent."""
        rows = self._read("SELECT stream, rule, outcome, COUNT(*) FROM (SELECT stream, rule, outcome, ROW_NUMBER() "
                          "OVER (PARTITION BY stream, rule ORDER BY verdict_at DESC, seq DESC) AS k FROM alerts "
                          "WHERE outcome IS NOT NULL) WHERE k <= ? GROUP BY stream, rule, outcome", (int(last),))
        out: dict[tuple[str, str], dict[str, int]] = {}
        for stream, rule, outcome, n in rows:
            out.setdefault((stream, rule), {})[outcome] = int(n)
        return out

    def judged(self, last: int) -> list[tuple[Alert, str]]:
        """(alert, the outcome that counts) of each (stream, rule)'s ``last`` alerts with a verdict, newest first."""
        rows = self._read("SELECT body, outcome FROM (SELECT body, outcome, ROW_NUMBER() OVER (PARTITION BY stream, "
                          "rule ORDER BY verdict_at DESC, seq DESC) AS k FROM alerts WHERE outcome IS NOT NULL) "
                          "WHERE k <= ?", (int(last),))
        return [(Alert.model_validate_json(body), outcome) for body, outcome in rows]

    def stream_rules_stored(self) -> list[tuple[str, str]]:
        """Every (stream, rule) with an alert stored."""
        return [(a, b) for a, b in self._read("SELECT DISTINCT stream, rule FROM alerts")]


def _migrate(db: sqlite3.Connection) -> None:
    """A file written before verdicts were kept: add the verdict columns and fill ``rule`` from each
    stored body (every alert kept); then the index the precision reads."""
    have = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
    missing = [(name, kind) for name, kind in VERDICT_COLUMNS + EVIDENCE_COLUMNS if name not in have]
    if missing:
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in missing:
                db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {kind}")
            rows = db.execute("SELECT seq, body FROM alerts WHERE rule IS NULL").fetchall()
            for seq, body in rows:
                alert = Alert.model_validate_json(body)
                db.execute("UPDATE alerts SET rule = ?, outcome = ?, verdict_at = ? WHERE seq = ?",
                           (alert.rule, alert.outcome, alert.verdicts[-1].at if alert.verdicts else None, seq))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    db.execute("CREATE INDEX IF NOT EXISTS alerts_by_verdict ON alerts (stream, rule, verdict_at) "
               "WHERE outcome IS NOT NULL")


def sink_label(sink: str) -> str:
    """A sink's name for people and metrics: a webhook by its host and path (its query may carry a secret)."""
    if sink.startswith("webhook:"):
        from urllib.parse import urlsplit

        p = urlsplit(sink[len("webhook:"):])
        # two webhooks apart only by their query (a token each) keep two names: a short hash of it
        query = f"?{hashlib.sha256(p.query.encode()).hexdigest()[:6]}" if p.query else ""
        return f"webhook:{p.scheme}://{p.hostname}{f':{p.port}' if p.port else ''}{p.path}{query}"
    return sink
