"""``bagged_without_scan``: a product bagged with no scan left to pay for it.

Events carry no customer session, so "the same transaction" is a look-back window before the bag
(``lookback_s``). A scan pays for one item of its product that leaves the counter: a bag, or a
hand-over to someone across it (which raises nothing). A "bag" followed within ``settle_s`` by a scan
of its product was the item in hand before its scan (a pick-up or hold read as a bag): it raises
nothing and uses up nothing, the real bag after the scan does. When no scan of the bag's product is
left in the look-back, an unused scan of another product pays (``other_product_scans`` 1): the model's
timing is better than its product identity, so a scan read as the wrong product is still the scan of
that item. With the till's scans (``pos``) the model's bags are judged against the till's reads.

Item events (from the stream's item tracks: ``Event.item`` set) are judged as they come, with no
settle time: a bag of a track that was scanned itself (``Event.paid``: the scanner's green light while
it was over the glass, or a till read matched to it) uses up that scan; any other bag uses up the
latest unused scan of the look-back (an item scan, or a till read with ``pos``), of its product, else
of any product (``other_product_scans``): a track can break off between the scan and the bag, and
the scan then stays with the earlier piece. A bag left with no scan alerts at once. Item events below
``item_min_confidence`` (the mean detection score of the event's own frames, a bag's carry into the
bag, times the share of its handling's frames the item was seen in) are not read. A bag with no scan
left is paid all the same by a till read of its product whose track was seen scanned and then lost
before it left the counter (the item followed on as another track).

With the bundle's track labeler, each track that has ended is looked at again: the labeler's bag of it
(``Event.tracks`` names ``track_labels``) at ``late_min_confidence`` or more is judged as an item bag
when the rule took no bag or hand-over of that track from the events decided as they happened (they
missed it, or read it below ``item_min_confidence``). It comes when the track ends, a second or two
after the item went into the bag. A bag decided after a long handling (``Event.tracks`` names
``long_bag``: edge_runtime/items/item_state.py ``LONG_BAG_S``) is an item held over the bag as often:
with the second look on (``late_min_confidence`` under 1) it is left to the labeler's bag of that
track, which the item state reads as the track stands for a while after, then when it ends.

Early nudges (``early_nudge`` 1): a bag under way (an item carried into the bag zone, not let go yet)
for ``nudge_after_s`` or longer, of a track not scanned itself, that no scan left in the look-back
would pay for, as its bag would be judged now, nudges the kiosk's screen once a track, before the bag
is decided (its alert, if any, follows when it is). An item in the bag zone longer than
``nudge_within_s`` without being let go is held there (a hold over the bag), not bagged: no early nudge
(on seed 1 every early nudge of an unpaid bag came within 1.6 s). Nothing is used up or remembered but
the nudge.
"""
from __future__ import annotations

from collections import deque

from edge_runtime.alerts.rules.ledger import Seen, draft
from edge_runtime.alerts.rules.registry import Rule, register_rule
from edge_runtime.query.events import Event
from edge_runtime.query.item_events import LABELLED, LONG_BAG

# what an item does before it is bagged and not after: one of these between two bags of a product makes them two items
NEW_ITEM = ("pick_up", "scan", "pass_around")
LEAVING = ("bag", "hand_over")   # an item leaving the counter: each uses up a scan
RESERVED_KEPT = 256  # items remembered as paid by a reserved till read: far more than a look-back holds
TILL_MATCH_S = 2.0  # a scanned track's till read lies this close to its handling (items.item_events.TILL_TOLERANCE_S)


@register_rule
class BaggedWithoutScan(Rule):
    name = "bagged_without_scan"
    description = "a product bagged with no scan left to pay for it in the look-back window before the bag"
    needs = ("bag", "scan")
    needs_with_pos = ("bag",)
    # defaults chosen on held-out generator videos (docs/lab/alerts.md)
    thresholds = {"lookback_s": 120.0, "min_confidence": 0.71, "scan_min_confidence": 0.2, "settle_s": 6.0,
                  "other_product_scans": 1.0, "same_bag_s": 1.0, "reread_s": 30.0, "item_min_confidence": 0.4,
                  "late_min_confidence": 0.8, "early_nudge": 1.0, "nudge_after_s": 0.4, "nudge_within_s": 2.0}
    ranges = {"min_confidence": (0.0, 1.0), "scan_min_confidence": (0.0, 1.0), "other_product_scans": (0.0, 1.0),
              "same_bag_s": (0.0, 30.0), "reread_s": (0.0, 120.0), "item_min_confidence": (0.0, 1.0),
              "late_min_confidence": (0.0, 1.0), "early_nudge": (0.0, 1.0), "nudge_after_s": (0.0, 10.0),
              "nudge_within_s": (0.0, 60.0)}

    @classmethod
    def check_thresholds(cls, given):
        out = super().check_thresholds(given)
        if out["nudge_after_s"] > out["nudge_within_s"]:
            raise ValueError(f"rule {cls.name}: threshold nudge_after_s ({out['nudge_after_s']:g}) must not exceed "
                             f"nudge_within_s ({out['nudge_within_s']:g}): no early nudge could ever go")
        return out

    def __init__(self, th, pos, seen) -> None:
        super().__init__(th, pos, seen)
        # items whose till read was used up when their track was seen scanned (the newest RESERVED_KEPT),
        # with that read; an item whose track has left the counter (bag, hand-over) drops out of ``_open``
        self._reserved: deque[int] = deque(maxlen=RESERVED_KEPT)
        self._open: dict[int, Seen] = {}
        # items whose track was read leaving the counter as it happened (the newest RESERVED_KEPT): the
        # track labeler's second look at their track raises nothing
        self._gone: deque[int] = deque(maxlen=RESERVED_KEPT)
        self._nudged: deque[int] = deque(maxlen=RESERVED_KEPT)   # tracks nudged early: once a track

    def evaluate(self, events: list[Event], now: float, pos_scans: list[Event]) -> list[dict]:
        th, seen = self.th, self.seen
        tracked: list[dict] = []
        for s in pos_scans:
            seen.take("scans", s)
        # an item's pick-up or pass-around decided with its bag (one track's handling, listed by start)
        # is known before the bag is judged: it tells a new item from the last one read leaving again
        for e in events:
            if e.item is not None and not e.paid and e.activity in NEW_ITEM and e.confidence >= th["item_min_confidence"]:
                seen.take("new_items", e)
        late = [e for e in events if LABELLED in e.tracks and e.activity == "bag"]
        for e in events:
            if LABELLED in e.tracks:
                continue
            if e.item is not None:
                if LONG_BAG in e.tracks and th["late_min_confidence"] < 1:
                    continue  # as often an item held over the bag: the track labeler's bag of its track decides
                if e.confidence >= th["item_min_confidence"]:
                    if e.activity in LEAVING and e.item not in self._gone:
                        self._gone.append(e.item)
                    tracked += self._item(e)
                continue
            if e.activity in NEW_ITEM:
                seen.take("new_items", e)
            if not self.pos and e.activity == "scan" and e.confidence >= th["scan_min_confidence"]:
                seen.take("scans", e)
            elif e.activity in LEAVING and e.confidence >= th["min_confidence"]:
                # a scanned item handed to someone else uses up its scan as a bagged one does, so that
                # scan does not pay for a later unscanned bag of the same product
                record, new = seen.take(e.activity, e)
                if new:
                    record.alerts = e.activity == "bag"
                    seen.queue("pending").append(record)
        for e in late:  # after the events decided as they happened: those of the same track come first
            if e.confidence >= th["late_min_confidence"] and e.item not in self._gone:
                self._gone.append(e.item)
                tracked += self._item(e)
        return tracked + self._judge(now)

    def nudges(self, entering: list[Event], now: float) -> list[dict]:
        """An early nudge for each bag under way ``nudge_after_s`` or longer that would be judged unpaid
        now (see the module docstring); nothing in the ledger changes."""
        th, out = self.th, []
        if th["early_nudge"] < 0.5:
            return out
        for e in entering:
            if (e.item is None or e.paid or e.item in self._nudged or e.item in self._gone
                    or e.confidence < th["item_min_confidence"]
                    or not th["nudge_after_s"] <= now - e.end <= th["nudge_within_s"]):
                continue
            record = Seen(e, e.start, e.end)
            if self._item_reread(record) or self._pay([record], use=False) or self._pay_broken(record, use=False):
                continue
            self._nudged.append(e.item)
            out.append(draft(self.name, e, [e], early=True))
        return out

    def _item(self, e: Event) -> list[dict]:
        """One item event: a scanned one's scan into the ledger; a bag judged against the scans."""
        seen = self.seen
        if e.paid and e.activity != "bag":
            if not self.pos:
                seen.take("scans", e)
            else:  # with the till its reads are the scans: the read matched to this track is its own
                self._reserve(e)
            return []
        if e.activity in NEW_ITEM:
            seen.take("new_items", e)
        if e.activity not in LEAVING:
            return []
        record, new = seen.take("item_left", e)
        self._open.pop(e.item, None)
        if not new or self._item_reread(record):
            return []
        if e.paid:  # its own track was scanned: that scan (or the till's read of it) is used up
            own = [s for rows in seen.store("scans").values() for s in rows if s.event.item == e.item and not s.used]
            if own:
                own[-1].used = True
            elif e.item not in self._reserved:
                self._pay([record])
            return []
        if self._pay([record]) or self._pay_broken(record) or e.activity != "bag":
            return []
        return [draft(self.name, e, [e])]

    def _pay_broken(self, record: Seen, use: bool = True) -> bool:
        """A bag with no scan left to pay for it, of the product of a till read whose track was seen
        scanned and has not left the counter: the tracker lost that item on its way to the bag and
        followed it on as another track (the till names products right, the head's naming of the bag is
        what is compared). That read pays for it, the newest first, within the look-back."""
        lo = record.start - self.th["lookback_s"]
        mine = [(item, s) for item, s in self._open.items()
                if s.event.product == record.event.product and lo <= s.start <= record.end]
        if not mine:
            return False
        if use:
            self._open.pop(max(mine, key=lambda x: x[1].start)[0])
        return True

    def _reserve(self, e: Event) -> None:
        """A scanned track's till read (the unused read nearest its handling, within ``TILL_MATCH_S``) is
        used up by that item now, before another item's bag could take it."""
        if e.item in self._reserved:
            return
        near = [s for rows in self.seen.store("scans").values() for s in rows
                if not s.used and e.start - TILL_MATCH_S <= s.start <= e.end + TILL_MATCH_S]
        if near:
            read = min(near, key=lambda s: abs(s.start - (e.start + e.end) / 2))
            read.used = True
            self._reserved.append(e.item)
            self._open[e.item] = read
            for gone in [k for k in self._open if k not in self._reserved]:  # bounded as _reserved is
                del self._open[gone]

    def _item_reread(self, record: Seen) -> bool:
        """An item bag of a product that left up to ``reread_s`` before, with no item of it picked up,
        scanned or passed over the glass in between: the same item seen leaving again (a track that
        broke off in the bag zone, or the bag's contents moving); it is judged once."""
        product, start, end = record.event.product, record.start, record.end
        new_items = self.seen.store("new_items").get(product, ())
        # a new item's pick-up, scan or pass-around may lie inside the bag's own handling (an item carried
        # past the scanner into the bag in one move is a pass-around and a bag of one track)
        return any(prev is not record and start - self.th["reread_s"] <= prev.end <= start
                   and not any(prev.end <= p.start <= end for p in new_items)
                   for prev in self.seen.store("item_left").get(product, ()))

    def next_due(self) -> float | None:
        due = [b.end + self.th["settle_s"] for b in self.seen.queue("pending")]
        return min(due) if due else None

    def _judge(self, now: float) -> list[dict]:
        """Each bag or hand-over whose settle_s has passed, with its twins: readings of the same item
        leaving the counter (one hand moves one item at a time, so bag and hand-over readings that
        overlap, or lie within ``same_bag_s`` of each other, are one item read as two products or
        split in two). A twin judged before decides it (paid, or alerted already); else one scan pays
        for the whole group, or the group raises one alert."""
        th, out, waiting, due = self.th, [], [], []
        for bag in sorted(self.seen.queue("pending"), key=lambda s: s.start):
            (waiting if now < bag.end + th["settle_s"] else due).append(bag)
        gap = th["same_bag_s"]
        for bag in due:
            if bag.outcome is not None:  # judged with a twin of it
                continue
            group = [bag] + [b for b in due if b is not bag and b.outcome is None and _twins(b, bag, gap)]
            before = [b.outcome for b in self._left() if b.outcome is not None and _twins(b, bag, gap)]
            if before:
                outcome = "paid" if "paid" in before else "unpaid"  # the item's alert, if any, is raised
            else:
                outcome = "paid" if self._pay(group) else "unpaid"
                alerting = [b for b in group if b.alerts]
                if outcome == "unpaid" and alerting:
                    best = max(alerting, key=lambda b: b.event.confidence)
                    out.append(draft(self.name, best.event, [b.event for b in group]))
            for b in group:
                b.outcome = outcome
        self.seen.queues["pending"] = waiting
        return out

    def _left(self, product: str | None = None) -> list[Seen]:
        """The bags and hand-overs taken in (of ``product``, or of every product)."""
        stores = [self.seen.store(a) for a in LEAVING]
        if product is not None:
            return [b for store in stores for b in store.get(product, ())]
        return [b for store in stores for rows in store.values() for b in rows]

    def _pay(self, group: list[Seen], use: bool = True) -> bool:
        """Use up the latest unused scan in the look-back of the group: of one of its products, else
        (``other_product_scans``) of any product; False if there is none. ``use`` False: only whether
        one would pay, nothing used up."""
        th, scans = self.th, self.seen.store("scans")
        lo, hi = min(b.start for b in group) - th["lookback_s"], max(b.end for b in group)
        # a scan of its product within settle_s after it: the "bag" was the item in hand before its scan
        # (a pick-up or hold read as a bag), not an item leaving; it uses up nothing, the real bag will
        if any(hi <= s.start <= hi + th["settle_s"] for b in group for s in scans.get(b.event.product, ())):
            return True
        if th["reread_s"] > 0 and self._reread(group):
            return True
        found = [s for b in group for s in _unpaid(scans.get(b.event.product, ()), lo, hi)]
        if not found and th["other_product_scans"] >= 0.5:
            found = _unpaid((s for rows in scans.values() for s in rows), lo, hi)
        if not found:
            return False
        if use:
            max(found, key=lambda s: s.start).used = True  # the latest scan before it pays for it
        return True

    def _reread(self, group: list[Seen]) -> bool:
        """The group is a paid item read leaving again: a bag or hand-over of its product judged paid
        ended up to ``reread_s`` before it, and no NEW_ITEM event of that product (another item of it
        picked up, scanned or passed over the glass) started in between. The model reads a hold after
        the scan as a bag, then the real bag; the first used up the scan."""
        start, reread_s = min(b.start for b in group), self.th["reread_s"]
        new_items = self.seen.store("new_items")
        for b in group:
            product = b.event.product
            for prev in self._left(product):
                if prev.outcome == "paid" and start - reread_s <= prev.end <= start and not any(
                        prev.end <= p.start <= start for p in new_items.get(product, ())):
                    return True
        return False


def _twins(a: Seen, b: Seen, gap: float) -> bool:
    """Two readings of items leaving the counter that are one item: they overlap, or lie within ``gap``."""
    return a.start <= b.end + gap and b.start <= a.end + gap


def _unpaid(scans, lo: float, hi: float) -> list[Seen]:
    """The scans starting in [lo, hi] that have paid for nothing yet."""
    return [s for s in scans if not s.used and lo <= s.start <= hi]
