"""The rules of one lane: which rules run, with what thresholds, and what they remember.

    engine = RuleEngine({"bagged_without_scan": {}, "pass_around": {"min_confidence": 0.8}}, bundle_activities)
    drafts = engine.evaluate(events, now)   # at every commit: the events of a window reaching ``now``

A draft is ``{rule, product, start, end, box, confidence, evidence: [event.to_dict(), ...]}``;
``edge_runtime.alerts.record.from_draft`` makes it an Alert. An early nudge's draft says ``early: True``
and is never stored: it goes to the kiosk's screen only (edge_runtime/alerts/nudge.py). Each rule takes
the events it reads into its own ``Ledger`` (ledger.py). The engine ignores events that ended more
than ``KEEP_S`` before ``now`` and has every ledger forget them.
"""
from __future__ import annotations

from typing import Any, Mapping

from edge_runtime.alerts.rules.ledger import KEEP_S, Ledger
from edge_runtime.alerts.rules.registry import RULES, Rule
from edge_runtime.query.events import Event

SCAN_SOURCES = ("vision", "pos")


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
