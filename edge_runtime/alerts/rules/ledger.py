"""What one rule of one lane remembers: the events it took in (``Seen``, in a ``Ledger``'s named stores
and queues), and the alert drafts it makes of them (``draft``).

The same event handed over again (evaluation windows overlap, and a re-read event may come back with
slightly moved edges) is the record a store already has, so a rule raises nothing new for it. The
engine (engine.py) has every ledger forget what ended more than ``KEEP_S`` before now, so memory stays
bounded on a lane that runs for weeks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_runtime.query.events import Event

KEEP_S = 900.0   # how far back the engine remembers: well past any look-back window and evaluation overlap


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Two readings of one event: their intervals overlap (one hand does one thing at a time, so two
    distinct events of one activity and product do not)."""
    return (a[0] < b[1] and b[0] < a[1]) or a[0] == b[0]


@dataclass
class Seen:
    """An event already taken in: its interval (widened by later readings), and what a rule made of it."""
    event: Event
    start: float
    end: float
    used: bool = False      # a scan that has paid for an item
    alerts: bool = True     # an item leaving the counter that alerts when unpaid (a bag, not a hand-over)
    outcome: str | None = None  # a rule's judgement of it, e.g. "paid" / "unpaid"


class Ledger:
    """What one rule of one lane has taken in: named stores of records by product, and named queues of
    records waiting for a decision. ``forget`` drops both's records that ended before a horizon."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[str, list[Seen]]] = {}
        self.queues: dict[str, list[Seen]] = {}

    def store(self, name: str) -> dict[str, list[Seen]]:
        """product -> records of the store ``name`` (created empty)."""
        return self.stores.setdefault(name, {})

    def queue(self, name: str) -> list[Seen]:
        return self.queues.setdefault(name, [])

    def take(self, name: str, e: Event) -> tuple[Seen, bool]:
        """(the record of ``e`` in store ``name``, whether it is new); a re-reading widens the old record."""
        rows = self.store(name).setdefault(e.product, [])
        for s in rows:
            if _same((s.start, s.end), (e.start, e.end)):
                s.start, s.end = min(s.start, e.start), max(s.end, e.end)
                return s, False
        s = Seen(e, e.start, e.end)
        rows.append(s)
        return s, True

    def forget(self, horizon: float) -> None:
        for store in self.stores.values():
            for product in list(store):
                store[product] = [s for s in store[product] if s.end >= horizon]
                if not store[product]:
                    del store[product]
        for name, rows in self.queues.items():
            self.queues[name] = [s for s in rows if s.end >= horizon]

    def size(self) -> int:
        return sum(len(v) for store in self.stores.values() for v in store.values())


def draft(rule: str, e: Event, evidence: list[Event], *, early: bool = False) -> dict[str, Any]:
    """An alert's draft; ``early``: an early nudge's (sent to the kiosk's screen, never stored)."""
    d = {"rule": rule, "product": e.product, "start": float(e.start), "end": float(e.end),
         "box": list(e.box) if e.box is not None else None, "confidence": float(e.confidence),
         "evidence": [x.to_dict() for x in evidence]}
    return {**d, "early": True} if early else d
