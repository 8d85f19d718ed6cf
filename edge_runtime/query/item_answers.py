"""Where, from the item events: an object answer of the memory reader takes the track's boxes of the item
event it agrees with (edge_runtime/query/item_events.py).

The reader decides whether and when (its extent, its p_seen and "not seen"); an item event of the
asked activity that overlaps the reader's extent names the item, and while its track is live (the
tracker keeps a live track's last 30 s of boxes) the answer's boxes inside the extent are the track's
detected boxes, at most the query's ``fps`` a second, instead of the reader's. The answer then says
``item`` (the track id) and ``read_from`` gains "items". Why the reader still decides: on held-out
videos the shipped event head's item events find about a fifth of the annotated events at about a
quarter precision, far under the memory's (docs/accuracy.md, what happened); a "not seen" or a when
taken from them would be wrong more often than the reader's.

Everything else (time and activity answers, a window older than the item events' horizon, an answer
with no item event of its activity in its extent) stays the reader's answer as it was.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.query.item_events import READ_FROM, covers, item_events, item_path
from edge_runtime.query.types import box_track


def from_items(engine: Any, state: Any, req: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` (the reader's, to ``req``) with the boxes of the item event it agrees with, when the
    item events cover its window; else ``answer`` itself."""
    extent = answer.get("extent")
    if (req.get("type") != "object" or answer.get("answered_by") != "reader" or not extent
            or answer.get("status") not in ("answered", "partial")
            or not covers(engine, state, (req["start"], req["end"]))):
        return answer
    lo, hi = float(extent[0]), float(extent[1])
    # a scanner flash no track explains (item -1) names no item
    agree = [e for e in item_events(engine, state, (lo, hi), clip=True)
             if e.activity_id == req.get("activity") and e.item is not None and e.item >= 0]
    if not agree:
        return answer
    best = max(agree, key=lambda e: (min(e.end, hi) - max(e.start, lo), e.confidence))
    out = dict(answer, item=best.item, read_from=list(dict.fromkeys(list(answer.get("read_from") or []) + [READ_FROM])))
    boxes = track_boxes(item_path(engine, state), best.item, (lo, hi), float(req.get("fps") or engine.cfg.stream.object_fps))
    if boxes is not None:
        out.update(boxes)
    return out


def track_boxes(items: Any, track_id: int, span: tuple[float, float], fps: float) -> dict[str, list] | None:
    """{times, boxes} of live track ``track_id``'s detected boxes inside ``span``, at most ``fps`` a
    second; None when the track is gone or has none there."""
    track = next((tr for tr in list(items.tracker.tracks) if tr.track_id == track_id), None)
    rows = [r for r in tuple(track.history) if span[0] - 1e-6 <= r[0] <= span[1] + 1e-6] if track else []
    if not rows:
        return None
    rows = rows[:: max(1, int(round(float(items.fps) / fps))) if fps > 0 else 1]
    return box_track(np.array([r[0] for r in rows]), np.array([r[1:5] for r in rows]))
