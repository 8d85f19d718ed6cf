"""Item alerts cleared by what the item did next: scanned, or put back.

A nudge on the kiosk's screen asks the customer to scan the item they bagged; one who does takes it out
of the bag and scans it. An item held over the bag and not let go (read as a bag) goes on to the
scanner, or back to the basket. Either way the alert no longer needs anyone to walk over. Each alert
raised on an item track (``bagged_without_scan``, ``pass_around``), and each early nudge (a bag under way,
not stored: its withdrawal is a nudge again, with ``cleared``), is watched for ``clear_within_s``
(stream time) after it was raised; the stream's item state says whether its item (its track, or the
item taken back out of the bag) was scanned or put back from ``RESPONSE_S`` after it on
(``ItemState.fixed_after``). Measured on the generator's ordinary traffic (no customer there
reacts to a nudge), the holds it clears are most of one tuning seed's false alerts, and one right alert of
more than 800 was cleared (two items of one product taken for one): docs/alerts.md.

The watch is the alert thread's, in memory. After a restart whose stream restored its item state from a
snapshot, the stream's stored alerts not yet cleared are watched again (``ClearWatch.resume``): those on a
track the snapshot holds (a newer id may be given again to another item) and raised less than
``clear_within_s`` before. Early nudges are never stored, so one sent before a restart is not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

RULES = ("bagged_without_scan", "pass_around")   # rules whose alert names an item that went into the bag
MAX_WATCHED = 64     # per stream: far more alerts than a lane raises in a minute
# the least time anyone takes to answer a nudge (see it, take the item out, scan it or put it back): a read
# matched to the item sooner is most likely another item's, scanned as this one went past the glass
RESPONSE_S = 2.0


@dataclass(frozen=True)
class Watched:
    track: int       # the alerted item's track
    start: float     # the bag's (or pass-around's) start, stream seconds
    raised: float    # stream time the alert (or early nudge) was raised
    nudge: Any = None  # an early nudge's own record (never stored), None for a stored alert


def alerted_item(rule: str, evidence: list) -> tuple[int, float] | None:
    """(track, start) of the item an alert of ``rule`` names, from its evidence (dicts, as stored); None
    for a rule not watched or an alert read from the memory (no item)."""
    if rule not in RULES:
        return None
    for e in evidence:
        if isinstance(e, dict) and e.get("item") is not None:
            return int(e["item"]), float(e["start"])
    return None


class ClearWatch:
    """One stream's alerts waiting to be cleared: ``watch`` each item alert as it is raised, ``check``
    after each evaluation -> the alerts cleared since."""

    def __init__(self, within_s: float) -> None:
        self.within_s = float(within_s)
        self._alerts: dict[str, Watched] = {}

    def __len__(self) -> int:
        return len(self._alerts)

    def watch(self, alert_id: str, rule: str, evidence: list, raised: float, nudge: Any = None) -> None:
        """Watch an alert (``nudge`` None), or an early nudge (``nudge``: what was sent), which its alert,
        when it comes with the same id, takes over from; an early nudge never takes over from an alert."""
        got = alerted_item(rule, evidence) if self.within_s > 0 else None
        if got is None or (nudge is not None and alert_id in self._alerts):
            return
        self._alerts[alert_id] = Watched(got[0], got[1], float(raised), nudge)
        while len(self._alerts) > MAX_WATCHED:
            del self._alerts[next(iter(self._alerts))]

    def resume(self, alerts: Iterable, restored_ids: int, now: float) -> int:
        """After a restart: watch again the stored ``alerts`` (Alert records of this stream) not cleared, raised
        at most ``within_s`` before ``now`` (stream seconds), on a track whose id is below ``restored_ids``
        (the item state's snapshot gave those; ids from there on may name another item now) -> how many."""
        if self.within_s <= 0:
            return 0
        n = 0
        for a in sorted(alerts, key=lambda a: a.stream_time or 0.0):   # oldest first: the first let go
            got = alerted_item(a.rule, a.evidence)
            if (got is not None and got[0] < restored_ids and a.cleared is None and a.id not in self._alerts
                    and a.stream_time is not None and now - self.within_s <= a.stream_time <= now):
                self.watch(a.id, a.rule, a.evidence, a.stream_time)
                n += 1
        return n

    def check(self, items, now: float) -> list[tuple[str, dict, Any]]:
        """-> (alert id, {why, t, after_s, item}, the early nudge or None) of each one watched whose item
        ``items`` (the stream's ItemState) saw scanned or put back; those watched longer than ``within_s``
        are let go."""
        out = []
        for alert_id, w in list(self._alerts.items()):
            got = items.fixed_after(w.track, w.start, w.raised + RESPONSE_S) if items is not None else None
            if got is not None and got[0] - w.raised <= self.within_s:
                t, why, track = got
                out.append((alert_id, {"why": why, "t": round(t, 2), "after_s": round(t - w.raised, 2), "item": track},
                            w.nudge))
                del self._alerts[alert_id]
            elif now - w.raised > self.within_s:
                del self._alerts[alert_id]
        return out
