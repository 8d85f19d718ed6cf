"""``left_in_basket``: an item still in the basket, never taken out, when the customer is done.

An item left in the basket is never handled, so it leaves no handling event; the stream's item tracks
give each such item's stay in the basket zone instead (edge_runtime/items/basket.py): an item event
``in_basket`` from the track's first detection, at rest in the basket, to its last there, or
``carried_out`` once its track ended there (the basket went out of view with it). A track that was
held or left the basket has no stay: a put-back item is the customer's choice, not one left behind.

With the till's transactions (``POST /v1/streams/{name}/till``, events of activity ``transaction``,
start to end) an item is judged at each transaction's end: every stay begun before the end and seen
within ``seen_s`` of it alerts, once per item. A lane whose till has sent no transaction in the last
``KEEP_S`` judges an item when it is carried out instead (the customer leaves with the basket).
Stays shorter than ``min_stay_s`` (a track of a moment, box noise) or below ``item_min_confidence``
(the track's mean detection score) are not read.
"""
from __future__ import annotations

from edge_runtime.alerts.rules.ledger import Seen, draft
from edge_runtime.alerts.rules.registry import Rule, register_rule
from edge_runtime.query.events import Event

STAYS = ("in_basket", "carried_out")   # items/basket.py's ACTIVITIES (rules import nothing from items/)
TRANSACTION = "transaction"            # a till's transaction, start to end (edge_runtime/alerts/till_transactions.py)


@register_rule
class LeftInBasket(Rule):
    name = "left_in_basket"
    description = ("an item still in the basket, never taken out, at the till's transaction end "
                   "(without a till: when the basket leaves with it)")
    needs = ("in_basket",)
    # defaults chosen on held-out seed 1 (docs/lab/alerts.md)
    thresholds = {"seen_s": 3.0, "min_stay_s": 5.0, "item_min_confidence": 0.3}
    ranges = {"seen_s": (0.0, 60.0), "item_min_confidence": (0.0, 1.0)}

    def evaluate(self, events: list[Event], now: float, pos_scans: list[Event]) -> list[dict]:
        th, seen, out = self.th, self.seen, []
        stays = seen.store("stays")   # item id -> [its stay's latest reading]
        for e in events:
            if e.activity == TRANSACTION:
                record, new = seen.take("transactions", e)
                if new:
                    seen.queue("ends").append(record)
            elif e.item is not None and e.activity in STAYS and e.confidence >= th["item_min_confidence"] \
                    and e.end - e.start >= th["min_stay_s"]:
                key = str(e.item)
                if key in stays:
                    stays[key][0].event, stays[key][0].end = e, max(stays[key][0].end, e.end)
                else:
                    stays[key] = [Seen(e, e.start, e.end)]
        alerted = seen.store("alerted")
        waiting = []
        for tx in sorted(seen.queue("ends"), key=lambda s: s.end):
            if now < tx.end:  # a till ahead of the frames: its items' stays are not read up to its end yet
                waiting.append(tx)
                continue
            for key, (stay,) in stays.items():
                if key not in alerted and stay.start <= tx.end and stay.end >= tx.end - th["seen_s"]:
                    alerted[key] = [Seen(stay.event, stay.start, max(stay.end, tx.end))]
                    out.append(draft(self.name, stay.event, [stay.event, tx.event]))
        seen.queues["ends"] = waiting
        if not seen.store("transactions"):  # no till transactions: the customer leaving with it decides
            for key, (stay,) in stays.items():
                if key not in alerted and stay.event.activity == STAYS[1]:
                    alerted[key] = [Seen(stay.event, stay.start, stay.end)]
                    out.append(draft(self.name, stay.event, [stay.event]))
        return out
