"""``pass_around``: a product moved over the scanner without the scanner reading it.

With the model's scans (``vision``) it is the model's ``pass_around`` event. With the till's scans
(``pos``) it is an item the model saw handled over the scanner (a ``scan`` event, or ``pass_around``
where the bundle has it) that no till read matches within ``match_s`` (of any product: the model may
name the product wrongly), that is not an item of its product read by the till up to ``paid_s``
before and not yet seen leaving the counter, and whose product the till does not read in the
``read_after_s`` after it before an item of it is seen leaving the counter (then it was held over the
glass before its scan). So a bundle without the ``pass_around`` label can run it with the till's scans.

An item event (from the stream's item tracks: ``Event.item`` set) is already judged: its track was set
down over the scanner with no green light and no till read matched to it, so it alerts (at
``item_min_confidence``), unless it lasted under ``item_min_s``: a carry over the glass takes 1.5 s
or more, while a track that only touches the scanner's area for an instant (a glitch of the tracker,
an item passing the scanner's edge) gives a "pass-around" of 0-0.4 s. With the till it alerts
``item_read_s`` after its end, when no till read came since it started (the read of an item let go on
the glass can come just after the hand leaves it, when the labeler has already named the set-down) and
no hand-over of its product began within ``HANDED_S`` of its end (an item handed across the counter to
someone on the other side passes over the glass, and the head can read it let go there on its way
up). Without the till it waits the same way for the scanner light's read of its track or product,
with the same hand-over check. An item the scanner lit red over is a scan tried to the labeler (an
unpaid item ``scan``): with the till it is judged as an item pass-around; without it, not (a
pass-around sets off no light; its bag is ``bagged_without_scan``'s to judge).

With the bundle's track labeler, each track that has ended is looked at again: the labeler's
pass-around of it (``Event.tracks`` names ``track_labels``) at ``late_min_confidence`` or more, of a
track not scanned (no green light or till read matched to it), lasting ``item_min_s`` or more, is
judged as an item pass-around when the rule took none of that track as it happened (the labeler
decided none, or one below ``item_min_confidence`` or too short). It comes when the track ends.
"""
from __future__ import annotations

import math
from collections import deque

from edge_runtime.alerts.rules.ledger import Seen, draft
from edge_runtime.alerts.rules.registry import Rule, register_rule
from edge_runtime.query.events import Event
from edge_runtime.query.item_events import LABELLED

HANDED_S = 1.0     # a hand-over of the product starting this close to an item pass-around's end is that item
PASSED_KEPT = 256  # tracks remembered as passed around as it happened: far more than a window holds


@register_rule
class PassAround(Rule):
    name = "pass_around"
    description = ("a product moved over the scanner without the scanner reading it (activity pass_around; "
                   "with the till's scans: handled over the scanner with no till scan)")
    needs = ("pass_around",)
    needs_with_pos = ("scan",)
    # defaults chosen on held-out generator videos (docs/lab/alerts.md); match_s, paid_s, read_after_s and
    # left_min_confidence act with the till's scans only
    # item_min_s: the middle of seed 1's gap between its longest false item pass-around (0.4 s) and its
    # shortest right one (2.0 s); item_read_s: long enough for the read of an item held over the glass
    # and for a hand-over across it to be decided (2 s -> 4 s with HANDED_S: seed 1's false ones at raised
    # rates 1 -> 0, seed 4's at the default rates 4 -> 2; without the till, waiting for the light's read:
    # seed 4's 9 -> 5, seed 1's 3 -> 2, 67 -> 66 of 75 found)
    thresholds = {"min_confidence": 0.735, "match_s": 8.0, "paid_s": 30.0, "read_after_s": 15.0,
                  "left_min_confidence": 0.65, "item_min_confidence": 0.3, "item_min_s": 1.2, "item_read_s": 4.0,
                  "late_min_confidence": 0.8}
    ranges = {"min_confidence": (0.0, 1.0), "match_s": (0.0, 60.0), "paid_s": (0.0, 120.0),
              "read_after_s": (0.0, 120.0), "left_min_confidence": (0.0, 1.0), "item_min_confidence": (0.0, 1.0),
              "item_min_s": (0.0, 10.0), "item_read_s": (0.0, 10.0), "late_min_confidence": (0.0, 1.0)}

    def __init__(self, th, pos, seen) -> None:
        super().__init__(th, pos, seen)
        # items whose track was passed around as it happened (the newest PASSED_KEPT): the track
        # labeler's second look at their track raises nothing
        self._passed: deque[int] = deque(maxlen=PASSED_KEPT)

    def evaluate(self, events: list[Event], now: float, pos_scans: list[Event]) -> list[dict]:
        th, seen, out = self.th, self.seen, []
        for s in pos_scans:
            seen.take("scans", s)
        late = [e for e in events if LABELLED in e.tracks and e.activity == "pass_around"]
        for e in events:
            if e.item is not None:
                if LABELLED in e.tracks:
                    continue
                if e.activity == "hand_over":   # at any confidence: an item in the air is seen faintly
                    seen.take("item_handed", e)
                if not self.pos and e.activity == "scan" and e.paid:   # the scanner light's read of a track
                    seen.take("scans", e)
                # an item the scanner lit red over and did not read (a scan tried, unpaid): with the till it
                # is judged as a pass-around (the till says whether it was read); without it the red light
                # says the customer showed it to the scanner, and the labeler's second look at its track
                # raises nothing either
                tried = e.activity == "scan" and not e.paid
                if (e.activity == "pass_around" or tried) and e.confidence >= th["item_min_confidence"] \
                        and e.end - e.start >= th["item_min_s"]:
                    if e.item not in self._passed:
                        self._passed.append(e.item)
                    if e.activity == "pass_around" or self.pos:
                        out += self._item(e)
                continue
            if self.pos and e.activity in ("bag", "hand_over"):
                seen.take("left", e)
            if self.pos and e.activity in ("scan", "pass_around") and e.confidence >= th["min_confidence"]:
                record, new = seen.take("passes", e)
                if new:
                    seen.queue("at_scanner").append(record)
            elif not self.pos and e.activity == "pass_around" and e.confidence >= th["min_confidence"]:
                record, new = seen.take("passes", e)
                if new:
                    out.append(draft(self.name, record.event, [record.event]))
        for e in late:  # after the events decided as they happened: those of the same track come first
            if (e.confidence >= th["late_min_confidence"] and not e.paid and e.item not in self._passed
                    and e.end - e.start >= th["item_min_s"]):
                self._passed.append(e.item)
                out += self._item(e)
        out += self._judge_items(now)
        if self.pos:
            out += self._judge(now)
        return out

    def _item(self, e: Event) -> list[dict]:
        """An item pass-around waits ``item_read_s`` for a read (the till's, else the scanner light's);
        with ``item_read_s`` 0 it alerts at once."""
        record, new = self.seen.take("item_passes", e)
        if new and self.th["item_read_s"] > 0:
            self.seen.queue("item_waiting").append(record)
        elif new:
            return [draft(self.name, e, [e])]
        return []

    def next_due(self) -> float | None:
        # a handling past match_s waits only for a later read of its product
        th = self.th
        due = [p.end + (th["read_after_s"] if p.outcome else th["match_s"]) for p in self.seen.queue("at_scanner")]
        due += [p.end + th["item_read_s"] for p in self.seen.queue("item_waiting")]
        return min(due) if due else None

    def _judge_items(self, now: float) -> list[dict]:
        """Item pass-arounds with the till: set down on the glass with no read, each alerts once
        ``item_read_s`` has passed with no till read since it started (the read of an item left on the
        glass can come just after the hand lets go)."""
        queue = self.seen.queue("item_waiting")
        if not queue:
            return []
        grace, out, waiting = self.th["item_read_s"], [], []
        scans = [s for rows in self.seen.store("scans").values() for s in rows]
        handed = self.seen.store("item_handed")
        for p in queue:
            # a till read of any product (the model may name the item wrongly); the light's read (its scan
            # event ends at the flash) of this track or product
            if any(p.start <= s.end <= p.end + grace for s in scans
                   if self.pos or s.event.item == p.event.item or s.event.product == p.event.product):
                continue
            if any(p.end - HANDED_S <= h.start <= p.end + HANDED_S for h in handed.get(p.event.product, ())):
                continue  # handed across the counter over the glass, to someone on the other side
            if now < p.end + grace:
                waiting.append(p)
            else:
                out.append(draft(self.name, p.event, [p.event]))
        self.seen.queues["item_waiting"] = waiting
        return out

    def _judge(self, now: float) -> list[dict]:
        """Each handling over the scanner that no till scan matches within ``match_s`` is a pass-around,
        once ``_read_later`` says no later read of its product shows it was held before its scan."""
        th, out, waiting = self.th, [], []
        scans = self.seen.store("scans")
        for p in self.seen.queue("at_scanner"):
            if now < p.end + th["match_s"]:  # a till scan at the end of it may not be known yet
                waiting.append(p)
                continue
            lo, hi = p.start - th["match_s"], p.end + th["match_s"]
            if any(lo <= s.start <= hi for rows in scans.values() for s in rows) or self._in_hand(p):
                continue
            p.outcome = "unmatched"
            wait = self._read_later(p, now)
            if wait is None:
                waiting.append(p)
            elif wait:
                out.append(draft(self.name, p.event, [p.event]))
        self.seen.queues["at_scanner"] = waiting
        return out

    def _read_later(self, p: Seen, now: float) -> bool | None:
        """Whether an unmatched handling over the scanner is a pass-around, given what came after it:
        False when the till read its product within ``read_after_s`` after it and before an item of
        that product was seen leaving the counter at ``left_min_confidence`` (the item was held over the
        glass, then scanned; the model reads some of those holds as bags, less surely); True once such
        an item left first, or ``read_after_s`` passed without the read; None while neither is known yet."""
        th = self.th
        read_after_s = th["read_after_s"]
        if read_after_s <= 0:
            return True
        product = p.event.product
        left = min((b.start for b in self.seen.store("left").get(product, ())
                    if b.start > p.start and b.event.confidence >= th["left_min_confidence"]), default=math.inf)
        until = min(left, p.end + read_after_s)
        if any(p.end < s.start <= until for s in self.seen.store("scans").get(product, ())):
            return False
        return True if left < math.inf or now >= p.end + read_after_s else None

    def _in_hand(self, p: Seen) -> bool:
        """A till read of ``p``'s product up to ``paid_s`` before it, and no item of that product seen
        leaving the counter (a bag or hand-over) between the two: ``p`` is that paid item still in hand,
        held over the glass or carried across it to the bag. A second item of the product passed around
        after the first was bagged is not covered by the first one's read."""
        product, paid_s = p.event.product, self.th["paid_s"]
        left = self.seen.store("left").get(product, ())
        for s in self.seen.store("scans").get(product, ()):
            if p.start - paid_s <= s.start < p.start and \
                    not any(s.start < b.start and b.end <= p.start for b in left):
                return True
        return False
