"""The till's feed of a runtime with ``alerts.scans: pos``: its scans (edge_runtime/alerts/pos_scans.py)
and its transaction starts and ends (edge_runtime/alerts/till_transactions.py), as the store's
point-of-sale system sends them (the API) or a demo:// stream brings its checkout's, and what a
stream's evaluation reads of them: the scans of the last ``KEEP_S`` and the transactions that ended in
them, as events.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from edge_runtime.alerts.metrics import AlertMetrics
from edge_runtime.alerts.pos_scans import PosScans
from edge_runtime.alerts.rules import KEEP_S
from edge_runtime.alerts.till_transactions import TillTransactions


class TillFeed:
    def __init__(self, state_dir: str | Path, metrics: AlertMetrics, warn: Callable[[str], None]) -> None:
        self.scans = PosScans(state_dir, warn=warn)
        self.transactions = TillTransactions(state_dir, warn=warn)
        self.metrics = metrics
        self._demo_fed: dict[str, float] = {}   # stream -> its demo till's newest read given to its item state

    def add_scans(self, stream: str, scans: list[tuple[str, float]], now: float, runtime=None) -> int:
        """The till's scans of ``stream`` (product, stream seconds), ``now`` the stream's time; -> how many
        were new and kept (PosScans.add; PosScanError when the file cannot be written). With ``runtime``
        (the stream's) and an event path, its item state takes them too: each read is matched to the
        track over the scanner at its time, which the item was scanned by (its bag is paid)."""
        new = self.scans.add(stream, scans, now)
        self.metrics.pos_scans.labels(stream=stream).inc(new)
        items = getattr(getattr(runtime, "stream", None), "items", None)
        if items is not None and scans:
            products = list(runtime.engine.products)
            items.add_till_reads([(t, products.index(p) if p in products else None) for p, t in scans])
        return new

    def add_transactions(self, stream: str, marks: list[tuple[str, float]], now: float) -> dict[str, int]:
        """The till's transaction starts and ends of ``stream``: TillTransactions.add."""
        return self.transactions.add(stream, marks, now)

    def scans_for(self, runtime, until: float) -> list:
        """The till's scans of ``runtime``'s stream known by ``until`` (the last KEEP_S); a demo:// stream
        brings its checkout's."""
        since = until - KEEP_S
        demo_till = [r for r in getattr(runtime, "till_reads", lambda until: [])(until) if r[1] >= since]
        if demo_till:
            # each read once (the demo gives all of them each time): those after the newest already given
            last = self._demo_fed.get(runtime.name, -math.inf)
            fresh = [r for r in demo_till if r[1] > last]
            if fresh:
                self.add_scans(runtime.name, fresh, until, runtime)
                self._demo_fed[runtime.name] = max(t for _, t in fresh)
        return self.scans.recent(runtime.name, since)

    def transactions_for(self, runtime, until: float) -> list:
        """The till's transactions of ``runtime``'s stream that ended in the last KEEP_S by ``until``, as
        events; a demo:// stream brings its checkout's."""
        since = until - KEEP_S
        # all of them: an end's start may lie before ``since`` (the store drops the old ones again)
        demo = getattr(runtime, "till_transactions", lambda until: [])(until)
        if demo:
            self.add_transactions(runtime.name, demo, until)
        return [e for e in self.transactions.recent(runtime.name, since) if e.end <= until]

    def close(self) -> None:
        self.scans.close()
        self.transactions.close()
