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

        return item_events(engine, state, window)  # each rule's item_min_confidence chooses
    from edge_runtime.query.happened import what_happened

    return what_happened(target, stream, window, min_confidence=EVENT_FLOOR, one_activity=False)


def _engine_and_state(target: Any) -> tuple[Any, Any]:
    """(engine, stream state) of a Runtime or an (engine, stream state) pair; (None, None) otherwise."""
    if isinstance(target, tuple) and len(target) == 2:
        return target
    return getattr(target, "engine", None), getattr(target, "stream", None)
