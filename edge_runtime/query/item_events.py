"""A stream's item events (edge_runtime/items/) as the events the queries and the alert rules read.

With an event head the stream follows each item at ``event_fps`` and labels its track's segments
(pick-up, scan, bag, pass-around, ...): events from every frame instead of one a second, each of one
item (``Event.item``, its track id; ``Event.paid``, whether a scan or a till read was matched to it).
Each says what it was read from: ``tracks == ("items",)``. Products are the bundle's class names.

The item events are bounded (the stream's ``ItemState`` keeps its last ``MAX_EVENTS``): they cover a
window only from their ``horizon`` on, and only for the activities the stream's labeler names
(``browse`` leaves no trace in a track). What they do not cover is the memory's (what_happened,
edge_runtime/query/happened.py; the time and object answers, edge_runtime/query/item_answers.py).
"""
from __future__ import annotations

import math
from typing import Any

from edge_runtime.query.events import Event

READ_FROM = "items"
LABELLED = "track_labels"  # with READ_FROM in ``tracks``: the track labeler's event of a track, given to the rules
LONG_BAG = "long_bag"      # with READ_FROM: a bag decided after a long handling, left to the track labeler's second look
ENTERING = "entering"      # with READ_FROM: a bag under way (carried into the bag zone, not let go yet): a nudge's cue


def item_path(engine: Any, state: Any) -> Any:
    """The stream's ``ItemState`` when it decides item events (an event head, and zones set or
    proposed), else None."""
    items = getattr(state, "items", None)
    if getattr(engine, "events", None) is None or items is None or items.zones is None:
        return None
    return items


def recent(items: Any) -> tuple:
    """The item events the queries read, oldest decided first (``ItemState.query_events``: the ring,
    and with the track labeler the live tracks labelled as they stand)."""
    return items.query_events()


def horizon(items: Any) -> float:
    """Stream time from which the item events are complete: -inf until the ring has dropped an event;
    then the end of its oldest kept one: every event ending after it is kept (the labeler's events come
    as they are decided, at their end or later; the track labeler's are kept in order of their ends,
    ``ItemState._add``). One C-level copy of the ring: the stream's intake thread adds to it while a
    query reads."""
    kept = tuple(items.recent)
    if items.recent.maxlen is None or len(kept) < items.recent.maxlen:
        return -math.inf
    return float(kept[0].end)


def covers(engine: Any, state: Any, window: tuple[float, float]) -> bool:
    """Whether the stream's item events cover ``window`` (for the activities its labeler names)."""
    items = item_path(engine, state)
    return items is not None and float(window[0]) >= horizon(items)


def activity_ids(engine: Any, state: Any) -> set[int]:
    """The bundle's activity ids the stream's item events can name (none without an item path)."""
    items = item_path(engine, state)
    labels = list(engine.labels)
    return {labels.index(a) for a in items.activities if a in labels} if items is not None else set()


def entering(engine: Any, state: Any) -> list[Event]:
    """The stream's bags under way now (``ItemState.entering``; their ``tracks`` name ``ENTERING``): what
    the alert rules' early nudges read (never an alert, never listed); none without an item path."""
    items = getattr(state, "items", None)
    return [] if items is None else _as_events(engine, [(e, (READ_FROM, ENTERING)) for e in items.entering()])


def item_events(engine: Any, state: Any, window: tuple[float, float], min_confidence: float = 0.0,
                clip: bool = False, rules: bool = False) -> list[Event]:
    """The item events of ``state`` that overlap ``window``, named by the bundle's product classes;
    ``clip``: their times cut to the window (as a listing of the window shows them); ``rules``: the ones
    the alert rules read (decided as they happen, a long bag's ``tracks`` naming ``LONG_BAG``, then the
    track labeler's second look: its bags and pass-arounds, whose ``tracks`` name ``LABELLED``), not the
    queries' (``recent``)."""
    items = getattr(state, "items", None)
    if items is None:
        return []
    a, b = (float(x) for x in window)
    if rules:
        read = [(e, (READ_FROM, LONG_BAG) if items.left_to_labels(e) else (READ_FROM,)) for e in items.rule_events()]
        read += [(e, (READ_FROM, LABELLED)) for e in items.second_look()]
    else:
        read = [(e, (READ_FROM,)) for e in recent(items)]
    read = [(e, tracks) for e, tracks in read if e.overlaps(a, b) and e.confidence >= min_confidence]
    return _as_events(engine, read, (a, b) if clip else None)


def _as_events(engine: Any, read: list[tuple[Any, tuple[str, ...]]], clip: tuple[float, float] | None = None
               ) -> list[Event]:
    """Item events (with the ``tracks`` each names) as Events named by the bundle's product classes;
    ``clip``: their times cut to that window."""
    names = list(engine.products)
    out = []
    for e, tracks in read:
        product = names[e.class_id] if 0 <= e.class_id < len(names) else f"class {e.class_id}"
        start, end = (max(e.start, clip[0]), min(e.end, clip[1])) if clip is not None else (e.start, e.end)
        out.append(Event(e.activity, e.activity_id, product, round(float(start), 3), round(float(end), 3),
                         round(float(e.confidence), 4), tuple(float(v) for v in e.box) if e.box is not None else None,
                         tracks, item=int(e.track_id), paid=e.scanned_at is not None))
    return out
