"""The rules of one lane: which rules run, with what thresholds, and what they remember.

    engine = RuleEngine({"bagged_without_scan": {}, "pass_around": {"min_confidence": 0.8}}, bundle_activities)
    drafts = engine.evaluate(events, now)   # at every commit: the events of a window reaching ``now``

A draft is ``{rule, product, start, end, box, confidence, evidence: [event.to_dict(), ...]}``;
``edge_runtime.alerts.record.from_draft`` makes it an Alert. An early nudge's draft says ``early: True``
and is never stored: it goes to the kiosk's screen only (edge_runtime/alerts/nudge.py). Each rule takes
the events it reads into its own ``Ledger``: the same event handed over again (evaluation windows overlap, and a re-read event
may come back with slightly moved edges) is the record it already has, so it raises nothing new. The
engine ignores events that ended more than ``KEEP_S`` before ``now`` and has every ledger forget them,
so memory stays bounded on a lane that runs for weeks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from edge_runtime.alerts.rules.registry import RULES, Rule
from edge_runtime.query.events import Event

KEEP_S = 900.0   # how far back the engine remembers: well past any look-back window and evaluation overlap
SCAN_SOURCES = ("vision", "pos")


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


class RuleEngine:
    """The rules of one lane. ``rules``: name -> thresholds (None or {} for the defaults; RULES names
    them); ``activities``: the bundle's activity labels (a rule that needs one it lacks is refused);
    ``scans``: where the scans come from, ``vision`` (the model's scan events) or ``pos`` (the till's,
    given to ``evaluate`` as ``pos_scans``)."""

    def __init__(self, rules: Mapping[str, Any], activities: list[str], scans: str = "vision") -> None:
        if not isinstance(rules, Mapping):
            raise ValueError(f"rules must be a mapping of rule name -> thresholds, got {type(rules).__name__}")
        if scans not in SCAN_SOURCES:
            raise ValueError(f"scans must be one of {', '.join(SCAN_SOURCES)}, got {scans!r}")
        self.scans = scans
        acts = set(activities)
        self.rules: dict[str, dict[str, float]] = {}
        self._running: list[Rule] = []
        for name, given in rules.items():
            if name not in RULES:
                raise ValueError(f"unknown rule {name!r} (rules: {', '.join(RULES)})")
            rule = RULES[name]
            missing = [a for a in rule.needs_for(scans) if a not in acts]
            if missing:
                with_pos = (" (with the till's scans, alerts.scans: pos, it reads the model's scan events "
                            "instead)") if scans != "pos" and rule.needs_with_pos is not None else ""
                raise ValueError(f"rule {name} needs the activit{'ies' if len(missing) > 1 else 'y'} "
                                 f"{', '.join(missing)}, which the bundle's labels ({', '.join(activities)}) do not "
                                 f"have{with_pos}")
            self.rules[name] = rule.check_thresholds(given)
            self._running.append(rule(self.rules[name], scans == "pos", Ledger()))

    def evaluate(self, events: list[Event], now: float, pos_scans: list[Event] = (),
                 entering: list[Event] = ()) -> list[dict]:
        """The new alert drafts given the events of a window ending at ``now`` (stream seconds) and, with
        ``scans`` "pos", the till's scans (any that are already known may be given again); then the
        early nudge drafts (``early`` True) the rules make of the bags under way (``entering``)."""
        now = float(now)
        horizon = now - KEEP_S
        fresh = sorted((e for e in events if e.end >= horizon), key=lambda e: (e.start, e.end))
        till = [s for s in pos_scans if s.end >= horizon] if self.scans == "pos" else []
        out: list[dict] = []
        for rule in self._running:
            out += rule.evaluate(fresh, now, till)
            rule.seen.forget(horizon)
            out += rule.nudges(list(entering), now)
        return sorted(out, key=lambda d: (d["start"], d["rule"]))

    def next_due(self) -> float | None:
        """The stream time at which the earliest waiting decision falls due (a bag's ``settle_s``, a
        handling over the scanner's ``match_s``, then its ``read_after_s``), or None when nothing waits.
        Such a decision needs no new event, only the time and the till's scans: ``evaluate([], t,
        pos_scans)`` at ``t`` >= this makes it, so an alert need not wait for the next commit."""
        due = [d for d in (rule.next_due() for rule in self._running) if d is not None]
        return min(due) if due else None

    def state_size(self) -> int:
        """Events remembered (for tests and metrics: bounded by what happens within KEEP_S)."""
        return sum(rule.seen.size() for rule in self._running)
