"""The reader's answers with the item events beside them (edge_runtime/query/item_events.py): whether
something was seen, and where.

The reader decides when (its extent and intervals); the item events, where they cover the window and
their labeler names the asked activity, also judge whether:

- **Not seen.** An object answer (an activity) with no item event of that activity in the window, or
  a time answer about a named product class with no item event of that activity and product there,
  says "not seen" when its p_seen is also under ``NOT_SEEN_WITHOUT_ITEMS`` of its type (above the
  reader's own cut: a p_seen that high on its own keeps the answer). The reader alone calls too many
  absent hand-overs, holds and put-backs seen; an item track that never did it is the evidence it lacks.
- **Seen.** An activity answer about a named product class that the reader called "not seen" is
  answered when an item event of that product lies in the window and its p_seen is at least
  ``SEEN_WITH_ITEMS`` (a product the tracks handled there was there).

Both were chosen on held-out seed 1 and are reported on seed 2 (``tools.accuracy.happened_eval
--queries``, docs/items.md). A product asked by a picture, or by a catalog name that is not one of the
bundle's classes, has no class to match: only the object rule applies to it.

Where: an item event of the asked activity that overlaps the reader's extent names the item, and
where the stream still keeps that track's path (edge_runtime/items/track_paths.py) the answer's boxes
inside the extent are the track's, the query's ``fps`` a second, instead of the reader's (but for
``BOXES_FROM_READER``, also chosen on seed 1). Each answer an item event changed says ``item`` (the track id, for where) and ``read_from``
gains "items". Everything else (a window older than the item events' horizon, the reader's
intervals and scores) stays the reader's answer as it was.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.query.coverage import NOT_SEEN
from edge_runtime.query.item_events import READ_FROM, activity_ids, covers, item_events, item_path
from edge_runtime.query.types import box_track

# p_seen under which a reader answer with no item event of what was asked in the window says "not seen"
NOT_SEEN_WITHOUT_ITEMS = {"object": 0.9, "time": 0.8}
# least p_seen at which an activity answer the reader called "not seen" is answered, its product handled there
SEEN_WITH_ITEMS = {"activity": 0.3}
# activities whose object answers keep the reader's boxes: the tracks' fit the truth worse on seed 1
BOXES_FROM_READER = ("inspect",)
ITEMS_NONE = "no item track did it there either"
ITEMS_SEEN = "an item track of the product was handled in the window"


def from_items(engine: Any, state: Any, req: dict[str, Any], answer: dict[str, Any],
               product_class: str | None = None) -> dict[str, Any]:
    """``answer`` (the reader's, to ``req``; ``product_class``: the bundle class ``req`` names, if any)
    judged with the item events and, for an object answer, with the boxes of the item event it agrees
    with, when the item events cover its window; else ``answer`` itself."""
    if answer.get("answered_by") != "reader" or not covers(engine, state, (req["start"], req["end"])):
        return answer
    answer = judge(engine, state, req, answer, product_class)
    extent = answer.get("extent")
    if req.get("type") != "object" or not extent or answer.get("status") not in ("answered", "partial"):
        return answer
    lo, hi = float(extent[0]), float(extent[1])
    # a scanner flash no track explains (item -1) names no item
    agree = [e for e in item_events(engine, state, (lo, hi), clip=True)
             if e.activity_id == req.get("activity") and e.item is not None and e.item >= 0]
    if not agree:
        return answer
    best = max(agree, key=lambda e: (min(e.end, hi) - max(e.start, lo), e.confidence))
    out = _read_items(dict(answer, item=best.item))
    boxes = None if engine.labels[int(req["activity"])] in BOXES_FROM_READER else track_boxes(
        item_path(engine, state), best.item, (lo, hi), float(req.get("fps") or engine.cfg.stream.object_fps),
        answer.get("times"))
    if boxes is not None:
        out.update(boxes)
        if out.get("tracks"):  # the ranked answers' first is the answer's own
            out["tracks"] = [{**out["tracks"][0], **boxes}, *out["tracks"][1:]]
    return out


def judge(engine: Any, state: Any, req: dict[str, Any], answer: dict[str, Any], product_class: str | None,
          not_seen_without: dict[str, float] = NOT_SEEN_WITHOUT_ITEMS,
          seen_with: dict[str, float] = SEEN_WITH_ITEMS) -> dict[str, Any]:
    """``answer`` with the item events' say on whether (the module docstring; the cuts by type may be
    given, for choosing them): a new dict when it changed, else ``answer`` itself. Call it only where
    the item events cover the window."""
    qtype, p = req.get("type"), answer.get("p_seen")
    if p is None:
        return answer
    window = (float(req["start"]), float(req["end"]))
    events = item_events(engine, state, window)
    status = answer.get("status")
    if qtype == "activity" and status == "not_seen" and product_class is not None and p >= seen_with.get(qtype, 2.0):
        if any(e.product == product_class for e in events):
            out = {k: v for k, v in answer.items() if k != "message"}
            out["status"] = "partial" if answer.get("answered_spans") else "answered"
            out["seen_by"] = ITEMS_SEEN
            return _read_items(out)
        return answer
    if status not in ("answered", "partial") or p >= not_seen_without.get(qtype, -1.0):
        return answer
    act = req.get("activity")
    if act not in activity_ids(engine, state) or (qtype == "time" and product_class is None):
        return answer  # the labeler never names it (browse), or no class to match
    if any(e.activity_id == act and (qtype == "object" or e.product == product_class) for e in events):
        return answer
    out = dict(answer, status="not_seen",
               message=f"{NOT_SEEN} (p seen {p:.2f}) and {ITEMS_NONE} (under {not_seen_without[qtype]:.2f} that says not seen)")
    return _read_items(out)


def _read_items(answer: dict[str, Any]) -> dict[str, Any]:
    answer["read_from"] = list(dict.fromkeys(list(answer.get("read_from") or []) + [READ_FROM]))
    return answer


def track_boxes(items: Any, track_id: int, span: tuple[float, float], fps: float,
                times: list[float] | None = None) -> dict[str, list] | None:
    """{times, boxes} of track ``track_id`` from its kept path (edge_runtime/items/track_paths.py) at
    ``times`` (the reader's frames), else ``fps`` a second from ``span``'s start, where the path has
    them; None when it has no row there."""
    at = np.asarray(times, np.float64) if times else np.arange(span[0], span[1] + 1e-6, 1.0 / fps if fps > 0 else 1.0)
    got = items.paths.boxes(track_id, at[(at >= span[0] - 1e-6) & (at <= span[1] + 1e-6)])
    return box_track(*got) if got is not None else None
