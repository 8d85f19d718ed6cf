"""The reader's answers with the item events beside them (edge_runtime/query/item_events.py): where an
item was, and whether a product was seen.

The reader decides when (its extent and intervals) and, but for one case, whether. Where the item
events cover the window:

- **Where.** An item event of the asked activity that overlaps an object answer's extent names the
  item (``item``), and where the stream still keeps that track's path (edge_runtime/items/
  track_paths.py) the answer's boxes at the reader's frames inside the extent are the track's instead
  of the reader's (but for ``BOXES_FROM_READER``). The reader's boxes come from a few keyboxes a
  memory token holds, and miss an item carried into the bag; the track followed it there.
- **Seen.** An activity answer about a product named by its bundle class that the reader called "not
  seen" is answered (``seen_by``) when an item event of that product lies in the window and its
  p_seen is at least ``SEEN_WITH_ITEMS``: a product an item track handled there was there. A product
  asked by a picture, or by a catalog name that is not a bundle class, has no class to match: with a
  bundle whose event head carries the reader's identity, an item event counts when its track's
  identity matches the product's pictures at ``IDENTITY_MATCH`` or more (edge_runtime/items/identity.py).

Both were chosen on held-out seed 1 and are reported on seeds 2 and 3 (``tools.accuracy.happened_eval
--queries``, docs/items.md). An item event's absence, as evidence that an activity did not happen, was
measured too and is not used: it did not beat the reader's own cut placed higher (docs/items.md).
Each answer an item event changed says so in ``read_from`` ("items"). Everything else (a window older
than the item events' horizon, intervals, scores) stays the reader's answer as it was.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.query.item_events import READ_FROM, covers, item_events, item_path
from edge_runtime.query.types import box_track

# least p_seen at which an activity answer the reader called "not seen" is answered, its product handled there
SEEN_WITH_ITEMS = 0.3
# least cosine of an item track's identity with a pictured product's best picture for the track to be that
# product (a product without a bundle class)
IDENTITY_MATCH = 0.4
# activities whose object answers keep the reader's boxes: the tracks' fit the truth worse on seed 1
BOXES_FROM_READER = ("inspect",)
ITEMS_SEEN = "an item track of the product was handled in the window"


def from_items(engine: Any, state: Any, req: dict[str, Any], answer: dict[str, Any],
               product_class: str | None = None, pictures: list | None = None) -> dict[str, Any]:
    """``answer`` (the reader's, to ``req``; ``product_class``: the bundle class ``req`` names, if any;
    ``pictures``: else the pictures it asks with) judged with the item events and, for an object answer,
    with the boxes of the item event it agrees with, when the item events cover its window; else
    ``answer`` itself."""
    if answer.get("answered_by") != "reader" or not covers(engine, state, (req["start"], req["end"])):
        return answer
    answer = judge(engine, state, req, answer, product_class, pictures=pictures)
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
          seen_with: float = SEEN_WITH_ITEMS, pictures: list | None = None,
          identity_match: float = IDENTITY_MATCH) -> dict[str, Any]:
    """``answer`` with the item events' say on whether (the module docstring; ``seen_with`` and
    ``identity_match`` may be given, for choosing them): a new dict when it changed, else ``answer``
    itself. Call it only where the item events cover the window."""
    p = answer.get("p_seen")
    if (req.get("type") != "activity" or answer.get("status") != "not_seen" or p is None or p < seen_with
            or (product_class is None and not pictures)):
        return answer
    events = item_events(engine, state, (float(req["start"]), float(req["end"])))
    if product_class is not None:
        if not any(e.product == product_class for e in events):
            return answer
    elif not any(s >= identity_match for s in identity_matches(engine, state, events, pictures)):
        return answer
    out = {k: v for k, v in answer.items() if k != "message"}
    out["status"] = "partial" if answer.get("answered_spans") else "answered"
    out["seen_by"] = ITEMS_SEEN
    return _read_items(out)


def identity_matches(engine: Any, state: Any, events: list, pictures: list) -> list[float]:
    """Each event's track identity matched against ``pictures`` (one product's), the cosine of the best
    picture; none when the bundle has no identity or no event's track has one."""
    from edge_runtime.items.identity import match

    if not events or not hasattr(engine, "picture_identities"):
        return []
    pics = engine.picture_identities(list(pictures))
    if pics is None:
        return []
    idents = {e.item: state.items.identity(e.item) for e in events if e.item is not None and e.item >= 0}
    return [match(v, pics) for v in idents.values() if v is not None]


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
