"""The events the standing rules (edge_runtime/alerts/rules/) read: what happened in a window of a lane,
as the alert service and tools/accuracy/alerts_eval.py both ask for it."""
from __future__ import annotations

from typing import Any

from edge_runtime.query.events import Event

# the least confidence of an event the rules are given (what_happened's floor): each rule's own
# thresholds choose above it; the rules' defaults were chosen on events read from this floor
EVENT_FLOOR = 0.5


def rule_events(target: Any, stream: str | None, window: tuple[float, float]) -> list[Event]:
    """The events the rules read in ``window``. A stream with an event path gives its item events
    (each of one tracked item, decided at the camera's pace: no memory query, cheap enough to run at
    every ingest batch); otherwise what_happened from EVENT_FLOOR, every activity's reading kept
    (one_activity=False): the listing's one activity per product at a time cut false bag alerts
    but found fewer pass-arounds (docs/lab/alerts.md)."""
    engine, state = _engine_and_state(target)
    if getattr(engine, "events", None) is not None and getattr(state, "items", None) is not None:
        from edge_runtime.query.item_events import item_events

        # each rule's item_min_confidence chooses; the events decided as they happen, not the track
        # labeler's (labelled when a track ends: too late for a nudge)
        return item_events(engine, state, window, rules=True) + basket_events(engine, state, window)
    from edge_runtime.query.happened import what_happened

    return what_happened(target, stream, window, min_confidence=EVENT_FLOOR, one_activity=False)


def entering_events(target: Any) -> list[Event]:
    """The stream's bags under way now (items carried into the bag zone, not let go yet), read by the
    rules' early nudges; none without an event path."""
    engine, state = _engine_and_state(target)
    if getattr(engine, "events", None) is None or getattr(state, "items", None) is None:
        return []
    from edge_runtime.query.item_events import entering

    return entering(engine, state)


def basket_events(engine: Any, state: Any, window: tuple[float, float]) -> list[Event]:
    """The stream's items resting in the basket, never taken out, whose stay overlaps ``window``
    (edge_runtime/items/basket.py), as item events: activity ``in_basket`` while still seen,
    ``carried_out`` once their track ended there; activity id -1 (no bundle label names them), the
    track's mean detection score as confidence. The ``left_in_basket`` rule reads them."""
    names = list(engine.products)
    out = []
    for s in state.items.basket_stays(window):
        product = names[s.class_id] if 0 <= s.class_id < len(names) else f"class {s.class_id}"
        out.append(Event(s.activity, -1, product, round(float(s.start), 3), round(float(s.last), 3),
                         round(float(s.score), 4), tuple(float(v) for v in s.box), ("items",),
                         item=int(s.item), paid=False))
    return out


def _engine_and_state(target: Any) -> tuple[Any, Any]:
    """(engine, stream state) of a Runtime or an (engine, stream state) pair; (None, None) otherwise."""
    if isinstance(target, tuple) and len(target) == 2:
        return target
    return getattr(target, "engine", None), getattr(target, "stream", None)
