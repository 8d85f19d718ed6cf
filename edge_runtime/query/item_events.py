"""A stream's item events (edge_runtime/items/) as the events the alert rules read.

With an event head the stream follows each item at ``event_fps`` and labels its track's segments
(pick-up, scan, bag, pass-around, ...): events from every frame instead of one a second, each of one
item (``Event.item``, its track id; ``Event.paid``, whether a scan or a till read was matched to it).
Each says what it was read from: ``tracks == ("items",)``. Products are the bundle's class names.
"""
from __future__ import annotations

from typing import Any

from edge_runtime.query.events import Event

READ_FROM = "items"


def item_events(engine: Any, state: Any, window: tuple[float, float], min_confidence: float = 0.0) -> list[Event]:
    """The item events of ``state`` that overlap ``window``, named by the bundle's product classes."""
    items = getattr(state, "items", None)
    if items is None:
        return []
    names = list(engine.products)
    out = []
    for e in items.events(window):
        if e.confidence < min_confidence:
            continue
        product = names[e.class_id] if 0 <= e.class_id < len(names) else f"class {e.class_id}"
        out.append(Event(e.activity, e.activity_id, product, round(float(e.start), 3), round(float(e.end), 3),
                         round(float(e.confidence), 4), tuple(float(v) for v in e.box) if e.box is not None else None,
                         (READ_FROM,), item=int(e.track_id), paid=e.scanned_at is not None))
    return out
