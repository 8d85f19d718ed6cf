"""What happened in a window: every (product, activity) the memory has evidence of, as events.

The signature, kept stable (the alert hooks call it at each commit)::

    what_happened(target, stream, window, *, activities=None, min_confidence=None, catalog=None,
                  one_activity=True, top_activities=TOP_ACTIVITIES, one_product=EXCLUSIVE,
                  one_activity_tiou=ONE_ACTIVITY_TIOU) -> list[Event]

- ``target``: a ``Streams`` hub (``stream`` names the stream; None: the default one), a ``Runtime``
  (``stream`` None or its own name), or ``(engine, stream_state)`` (an Engine and the stream it
  answers from: ``stream`` is not read).
- ``window``: (start, end) in stream seconds, start < end.
- ``activities``: label names (or ids) to keep; None: all. Only these are asked, so their events are
  not weighed against the product's other activities (``one_activity``).
- ``min_confidence``: the least calibrated p(right) of an event kept (None: ``MIN_CONFIDENCE``, or
  where the stream's item events cover the window their ``ITEM_FLOORS`` entry's ``unconfirmed``);
  ``confirmed_floor``: the least of a memory interval an item event of its activity and product
  overlaps, where they cover it (the lower of the two floors counts; None: the entry's ``confirmed``
  with the default floor, else ``min_confidence``).
- ``catalog``: for an Engine, the catalog to read products from (a Runtime and a hub use their own).
- ``one_activity``: one activity per product at a time (``one_activity_each``: the list people read);
  False keeps every activity's reading, as the alert rules read them (edge_runtime/alerts/rule_events.py).
- ``top_activities``, ``one_product``, ``one_activity_tiou``: the setting (below; defaults: the shipped
  one), given by a tool that measures others (tools/accuracy/happened_eval.py).
Returns the events sorted by start, then confidence (best first). ``HappenedError`` (one line, an
HTTP ``status``) for a window, activity or target it cannot answer.

Built on the answer path the queries use, no graph of its own, in three batched calls (the engine
runs each in answer-graph calls of at most ``max_queries_per_call`` rows: about 5 for 14 products):
1. an activity query per picture of every product (catalog products, each picture; with an empty
   catalog the bundle's product classes, drawn by ``class_pictures``). A product the reader judges
   not seen in the window (``happened_at_all``) is dropped; of the rest, the ``TOP_ACTIVITIES`` best-scored activities are
   the candidates (the reader's activity ranking is only about 57 % right at rank 1 on 5-minute
   windows: with rank 1 alone, half the events found with the top 5 were missed on the tuning videos).
2. a time query per (product, candidate activity, picture): its calibrated p_seen decides whether the
   pair happened (below the bundle's one ``not_seen_below``, 0.5, it did not: ``happened_at_all``; a
   single answer says "not seen" under its query type's higher cut, while events are sifted by their
   confidence next), p(right) calibrated on its best
   interval's support is the event's confidence (``event_confidence``); its intervals become events,
   the second and third at the confidence scaled by their support relative to the first. Events below
   ``min_confidence`` are dropped.
3. an object query per event over its interval: the box nearest its middle (the object query takes
   an activity, not a product: with two products under the same activity at once, the box is of one).
Events of one product and activity that overlap (or touch, within ``MERGE_GAP_S``) are merged into one;
then, of events of one activity at nearly the same time but of different products, only the most
confident is kept (``one_product_each``), and of events of one product at overlapping times but of
different activities, too (``one_activity_each``).
``tracks``: the tracks an answer was read from, from the answer's ``read_from`` when it has one (the
timeline track's answers), else ("memory",).
With an event head, the stream's item events (edge_runtime/query/item_events.py) where they cover the
window (``items``; a window older than their horizon is the memory's alone): they confirm the memory's
intervals (step 2: with the floors of the item events' source, ``ITEM_FLOORS``: one an item event of
its activity and product overlaps is kept from its ``confirmed`` floor, any other from its
``unconfirmed`` one), a memory event an item event of its activity and product overlaps takes the
item's track id and box and adds "items" to its tracks (``with_items``), and an item event of the
source's ``listed`` activities no memory event agrees with is listed as it is (``unconfirmed``);
``happened`` also says what the window was read from (``read_from``).
How right the events are on held-out generator videos: tools/accuracy/happened_eval.py,
docs/accuracy/happened_losses.json (docs/accuracy.md, what happened).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_runtime.query.by_product import combine
from edge_runtime.query.catalog import CatalogError
from edge_runtime.query.check import QueryError, activity_id, window_problem
from edge_runtime.query.class_pictures import class_pictures
from edge_runtime.query.events import Event
from edge_runtime.query.item_events import READ_FROM as ITEMS_READ_FROM, covers, item_events
from edge_runtime.query.reader_answers import calibrated
from edge_runtime.query.types import tiou

# chosen on held-out videos of seed 1 (tools/accuracy/happened_eval.py --eval-seed 1 --sweep,
# docs/lab/accuracy/happened_tuning.json): the best event F1 with one product per interval (without it one
# event more was right); the floor again for the shipped reader on 4 such videos
# (docs/accuracy/happened_floor.json): 0.6 gave the best F1 (0.764; precision 81.7 %, recall 71.7 %;
# 0.55: 79.4 %, 73.0 %, F1 0.761). The reported numbers are on other videos (seed 0). The alert
# rules read events from their own floor (edge_runtime/alerts/rule_events.py)
TOP_ACTIVITIES = 5      # candidate activities per seen product (step 1)
MIN_CONFIDENCE = 0.6    # default least p(right) of an event
MERGE_GAP_S = 1.0       # events of one product and activity this close are one event
INTERVALS = 3           # intervals asked per time query
EXCLUSIVE = True        # one product per activity interval (one_product_each; measured both ways)
EXCLUSIVE_TIOU = 0.5    # events of one activity this alike in time are one item's: the likeliest product keeps it
# events of one product overlapping this much are one item's: the likeliest activity keeps it. Chosen
# with the floor on the tuning videos of seed 1 (docs/accuracy/happened_floor.json): tIoU 0.3 and
# floor 0.6 gave the best F1 (0.773, against 0.764 without it; 0.2: 0.771, 0.5: 0.772)
ONE_ACTIVITY_TIOU = 0.3


@dataclass(frozen=True)
class ItemFloors:
    """Where the stream's item events cover the window: the default least confidence of a memory
    interval no item event of its activity and product overlaps (``unconfirmed``) and of one such an
    item event confirms (``confirmed``); the item activities listed as they are where no memory event
    agrees (``listed``), from their own least confidence (``listed_floor``)."""

    unconfirmed: float
    confirmed: float
    listed: tuple[str, ...]
    listed_floor: float


# per source of the item events (ItemState.labelled_by). Each chosen on 4 held-out videos of seed 1
# (tools/accuracy/happened_eval.py --floors ... --confirmed-floors ...; seeds 2 and 3 report: docs/items.md).
# The geometric labeler's events were right under half the time: only bags are listed, from 0.4 (right
# 90 % of the time, 92 % of the bags found; F1 0.783 against 0.773 for the memory alone). The track
# labeler's were right 56-63 % of the time and found 76-84 % of the events: an interval they do not
# confirm needs 0.8, one they confirm 0.2, and each of its activities is listed from 0.8 (F1 0.851 against
# 0.812 with the geometric labeler's floors; docs/items.md#in-the-queries)
ITEM_FLOORS = {
    "geometric": ItemFloors(0.7, 0.3, ("bag",), 0.4),
    "track_labels": ItemFloors(0.8, 0.2, ("pick_up", "scan", "bag", "put_back", "hold", "inspect", "hand_over",
                                          "pass_around"), 0.8),
}


def floors_help(shown: str = "shown") -> str:
    """The default floors where item events cover the window, in words (the API's and the CLI's help)."""
    t, g = ITEM_FLOORS["track_labels"], ITEM_FLOORS["geometric"]
    return (f"where the stream's item events cover the window {t.unconfirmed:g}, {t.confirmed:g} for an event one "
            f"confirms, and {t.listed_floor:g} for an item event {shown} on its own; a bundle without the track "
            f"labeler: {g.unconfirmed:g}, {g.confirmed:g}, and bags from {g.listed_floor:g}")
MEMORY_TRACKS = ("memory",)


class HappenedError(ValueError):
    """A request what_happened cannot answer: one line, and the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _resolve(target: Any, stream: str | None, catalog: Any):
    """-> (engine, answer function, catalog, stream state) for the three kinds of target (an Engine
    comes with the stream it answers from: ``(engine, stream)``)."""
    if hasattr(target, "names") and hasattr(target, "get"):       # a Streams hub
        rt = target.get(stream)
        return rt.engine, rt.query, getattr(rt, "catalog", None) or getattr(target, "catalog", None), rt.stream
    if hasattr(target, "query") and hasattr(target, "engine"):     # a Runtime
        if stream is not None and stream != target.name:
            raise HappenedError(f"this runtime serves stream {target.name!r}, not {stream!r}", 404)
        return target.engine, target.query, getattr(target, "catalog", None), target.stream
    if isinstance(target, tuple) and len(target) == 2 and hasattr(target[0], "answers_kind"):  # (Engine, stream)
        engine, state = target
        return engine, lambda reqs: engine.answer(state, reqs), catalog, state
    raise HappenedError(f"what_happened needs a Streams hub, a Runtime or (an Engine, its stream), got "
                        f"{type(target).__name__}", 500)


def subjects(engine: Any, catalog: Any) -> dict[str, list[np.ndarray]]:
    """product name -> its pictures: the catalog's products, or with an empty catalog the bundle's
    product classes that can be drawn (``class_pictures``)."""
    if catalog is not None and len(catalog):
        out = {}
        for name in catalog.names():
            try:
                out[name] = catalog.crops(name)
            except CatalogError:
                if name in catalog:  # its pictures are damaged on disk: say so
                    raise
                # removed since the names were read: not asked about (no 404 for a product not asked for)
        if out:
            return out
    return class_pictures(list(engine.products), engine.frame_size)


def _window(window: Any) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in window)
    except (TypeError, ValueError):
        raise HappenedError("window must be (start, end) in stream seconds") from None
    problem = window_problem(start, end)
    if problem:
        raise HappenedError(f"window: {problem}")
    return start, end


def _asked(ask, flat: list[dict[str, Any]], groups: list[tuple[Any, int]], qtype: str) -> list[tuple[Any, dict]]:
    """One batched call for ``flat`` requests; per group (key, n pictures) the combined answer."""
    answers = ask(flat) if flat else []
    out, i = [], 0
    for key, n in groups:
        out.append((key, combine(answers[i:i + n], qtype, INTERVALS)))
        i += n
    return out


def _tracks(answer: dict[str, Any]) -> tuple[str, ...]:
    got = answer.get("read_from")
    return tuple(str(t) for t in got) if isinstance(got, (list, tuple)) and got else MEMORY_TRACKS


def _box_at(answer: dict[str, Any], t: float) -> tuple[float, float, float, float] | None:
    times, boxes = answer.get("times") or [], answer.get("boxes") or []
    if not times or not boxes or answer.get("status") == "no_memory":
        return None
    i = int(np.abs(np.asarray(times, np.float64) - t).argmin())
    return tuple(round(float(v), 4) for v in boxes[i])  # type: ignore[return-value]


def merge(events: list[Event]) -> list[Event]:
    """Overlapping (or within MERGE_GAP_S) events of one product and activity -> one, spanning both,
    at the higher confidence (its box, item and both tracks kept); sorted by start, then confidence."""
    by_pair: dict[tuple[str, int], list[Event]] = {}
    for e in sorted(events, key=lambda e: (e.start, -e.confidence)):
        run = by_pair.setdefault((e.product, e.activity_id), [])
        if run and e.start <= run[-1].end + MERGE_GAP_S:
            a = run[-1]
            best = a if a.confidence >= e.confidence else e
            run[-1] = replace(best, start=a.start, end=max(a.end, e.end), tracks=tuple(dict.fromkeys(a.tracks + e.tracks)))
        else:
            run.append(e)
    return sorted((e for run in by_pair.values() for e in run), key=lambda e: (e.start, -e.confidence, e.product))


def one_product_each(events: list[Event], at_least: float = EXCLUSIVE_TIOU) -> list[Event]:
    """Of events of one activity at (nearly) the same time but of different products, the most
    confident only: the reader's product identity is weaker than its timing (several products'
    time queries find the same scan), and one item is scanned or bagged at a time."""
    kept: list[Event] = []
    for e in sorted(events, key=lambda e: -e.confidence):
        if not any(k.activity_id == e.activity_id and tiou((k.start, k.end), (e.start, e.end)) >= at_least for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda e: (e.start, -e.confidence, e.product))


def one_activity_each(events: list[Event], at_least: float | None = None) -> list[Event]:
    """Of events of one product at overlapping times (tIoU at least ``at_least``) but of different
    activities, the most confident only: one item does one thing at a time, and the reader reads an
    item's frames as more than one activity (a scan's as a hold too). Two items of one product handled at
    once lose one of their events here. ``at_least`` None: ``ONE_ACTIVITY_TIOU``."""
    at_least = ONE_ACTIVITY_TIOU if at_least is None else at_least
    kept: list[Event] = []
    for e in sorted(events, key=lambda e: -e.confidence):
        if not any(k.product == e.product and k.activity_id != e.activity_id
                   and tiou((k.start, k.end), (e.start, e.end)) >= at_least for k in kept):
            kept.append(e)
    return sorted(kept, key=lambda e: (e.start, -e.confidence, e.product))


def happened_at_all(engine: Any, answer: dict[str, Any]) -> bool:
    """Whether an answer speaks of something in its window: memory there, and p(seen) at least the
    bundle's ``not_seen_below`` (0.5). Not the answer's own status: a single answer says "not seen" under
    its type's higher cut (few present answers wrongly), while an event list keeps the likelier pairs and
    lets each event's confidence decide (MIN_CONFIDENCE, chosen with this cut)."""
    if answer.get("status") == "no_memory":
        return False
    p = answer.get("p_seen")
    return p is None or p >= float(engine.reader_section["not_seen_below"])


def event_confidence(engine: Any, support: float) -> float:
    """An event's confidence: calibrated p(right) of its time answer's support (the curve fitted on the
    support alone; see RIGHT_FEATURES in backends/calibration_format.py for why not the answer's own confidence)."""
    return float(np.clip(calibrated([support], engine.reader_section["calibration"]["time"]["right"])[0], 0.0, 1.0))


@dataclass(frozen=True)
class Happened:
    """What ``happened`` gives: the events, and what they were read from ("items" when the item events
    cover the window, then the memory's tracks its answers read)."""
    events: list[Event]
    read_from: list[str]


def what_happened(target: Any, stream: str | None, window: Any, **kw: Any) -> list[Event]:
    """The events of ``window`` (see the module docstring; ``kw``: those of ``happened``)."""
    return happened(target, stream, window, **kw).events


def happened(target: Any, stream: str | None, window: Any, *, activities: list[Any] | None = None,
             min_confidence: float | None = None, catalog: Any = None, one_activity: bool = True,
             top_activities: int = TOP_ACTIVITIES, one_product: bool = EXCLUSIVE,
             one_activity_tiou: float = ONE_ACTIVITY_TIOU, items: bool = True, confirmed_floor: float | None = None,
             trace: dict | None = None) -> Happened:
    """The events of ``window`` and what they were read from (see the module docstring). ``items``
    False: the memory's alone, as without an event head. ``trace``: a dict to fill with what each
    memory step gave (for tools/accuracy/happened_eval.py --losses): "activity" (product -> its
    activity answer), "time" ((product, activity id) -> its time answer), "kept" ((product, activity
    id, start, end, confidence) of each interval at or above the floor), "floor" and "one_product"
    ((product, activity id, start, end) of each event left before ``one_activity_each``)."""
    start, end = _window(window)
    engine, ask, catalog, state = _resolve(target, stream, catalog)
    if getattr(engine, "answers_kind", None) != "reader":
        raise HappenedError("what happened needs the memory reader's calibrated answers; this runtime answers "
                            "with the query heads (answers: reader, with a bundle that carries the reader)", 409)
    labels = list(engine.labels)
    try:
        wanted = None if activities is None else {activity_id(labels, a) for a in activities}
    except QueryError as err:
        raise HappenedError(str(err)) from None
    for name, x in (("min_confidence", min_confidence), ("confirmed_floor", confirmed_floor)):
        if x is not None and not 0.0 <= float(x) <= 1.0:
            raise HappenedError(f"{name} must be in 0..1, got {float(x):g}")
    found = item_events(engine, state, (start, end), clip=True) if items and covers(engine, state, (start, end)) else None
    floors = ITEM_FLOORS[state.items.labelled_by] if found is not None else None
    # a floor asked for is every event's (no event under it is shown) unless a confirmed floor is asked for too
    floor = (float(min_confidence) if min_confidence is not None else MIN_CONFIDENCE if floors is None
             else floors.unconfirmed)
    confirmed = (float(confirmed_floor) if confirmed_floor is not None
                 else floor if min_confidence is not None or floors is None else floors.confirmed)
    steps: dict[str, Any] = {} if trace is None else trace
    steps.update(activity={}, time={}, kept=[], floor=floor, one_product=[])
    pictures = subjects(engine, catalog)
    events, read_from = _memory_events(engine, ask, pictures, (start, end), wanted,
                                       floor, top_activities, one_product, steps,
                                       confirm=(found, min(floor, confirmed)) if found is not None else None)
    if one_activity:
        events = one_activity_each(events, one_activity_tiou)
    if found is not None:
        events = with_items(events, found)
        least = max(floors.listed_floor, float(min_confidence or 0.0))
        # named by the bundle's classes: listed where those are the products asked about (no catalog)
        own = [i for i in found if i.product in pictures and i.activity in floors.listed]
        events = sorted(events + unconfirmed(own, events, wanted, least), key=lambda e: (e.start, -e.confidence, e.product))
        read_from = [ITEMS_READ_FROM] + read_from
    return Happened(events, read_from)


def agreeing(items: list[Event], activity_id: int, product: str, start: float, end: float) -> list[Event]:
    """The events of ``items`` of ``activity_id`` and ``product`` that overlap [start, end]."""
    return [i for i in items if i.activity_id == activity_id and i.product == product
            and i.start <= end and i.end >= start]


def unconfirmed(items: list[Event], events: list[Event], wanted: set[int] | None, least: float) -> list[Event]:
    """Item events (of the ``wanted`` activities) at confidence ``least`` or more that no memory event of
    their activity and product overlaps: listed as they are, one per overlapping run of one product
    (``merge``)."""
    own = [i for i in items if i.confidence >= least
           and (wanted is None or i.activity_id in wanted)
           and not agreeing(events, i.activity_id, i.product, i.start, i.end)]
    return merge(own)


def with_items(events: list[Event], items: list[Event]) -> list[Event]:
    """The memory's ``events`` with the item events of their window (``items``): a memory event that an
    item event of its activity and product overlaps is that item's: it takes the item's track id and
    the track's box at the item event's middle, and says it read "items" too (the one overlapping
    most, then the most confident). Its times and confidence stay the memory's (``ITEM_FLOORS`` says
    which item events no memory event agrees with are listed on their own: ``unconfirmed``)."""
    out = []
    for e in events:
        agree = agreeing(items, e.activity_id, e.product, e.start, e.end)
        if not agree:
            out.append(e)
            continue
        best = max(agree, key=lambda i: (min(i.end, e.end) - max(i.start, e.start), i.confidence))
        box = tuple(round(float(v), 4) for v in best.box) if best.box is not None else e.box
        out.append(replace(e, box=box, tracks=tuple(dict.fromkeys(e.tracks + best.tracks)), item=best.item,
                           paid=best.paid))
    return out


def _memory_events(engine: Any, ask, pictures: dict[str, list[np.ndarray]], window: tuple[float, float],
                   wanted: set[int] | None, floor: float, top_activities: int, one_product: bool, steps: dict[str, Any],
                   confirm: tuple[list[Event], float] | None = None) -> tuple[list[Event], list[str]]:
    """The memory's events of ``window`` (steps 1-3 of the module docstring, before ``one_activity_each``)
    of the ``wanted`` activities (None: all), and the tracks its answers read. ``confirm``: (the
    window's item events, a lower floor): an interval under ``floor`` but at least that is kept when an
    item event of its activity and product overlaps it."""
    labels = list(engine.labels)
    if not pictures:
        raise HappenedError("no products to ask about: the catalog is empty and this bundle's product classes "
                            "have no pictures (add products: lvm-edge catalog add)", 409)
    base = {"start": window[0], "end": window[1]}
    read: list[str] = []

    # 1. which products were seen, and their likeliest activities
    flat, groups = [], []
    for name, crops in pictures.items():
        flat += [{**base, "type": "activity", "object_image": c} for c in crops]
        groups.append((name, len(crops)))
    pairs: list[tuple[str, int]] = []
    for name, a in _asked(ask, flat, groups, "activity"):
        steps["activity"][name] = a
        read += [t for t in _tracks(a) if t not in read]
        if not happened_at_all(engine, a):
            continue
        ranked = [i for i in a["ranked"] if wanted is None or i in wanted]
        pairs += [(name, i) for i in ranked[:top_activities]]

    # 2. when each candidate pair happened, if it did
    flat, groups = [], []
    for name, act in pairs:
        flat += [{**base, "type": "time", "activity": act, "object_image": c, "k": INTERVALS} for c in pictures[name]]
        groups.append(((name, act), len(pictures[name])))
    found: list[tuple[str, int, float, float, float, tuple[str, ...]]] = []
    for (name, act), a in _asked(ask, flat, groups, "time"):
        steps["time"][(name, act)] = a
        if not happened_at_all(engine, a) or not a.get("intervals") or a.get("confidence") is None:
            continue
        top = max(float(a["intervals"][0][2]), 1e-9)
        first = event_confidence(engine, top)
        for s, e, p in a["intervals"]:
            conf = first * min(1.0, float(p) / top)
            if e > s and (conf >= floor or (confirm is not None and conf >= confirm[1]
                                             and agreeing(confirm[0], act, name, float(s), float(e)))):
                found.append((name, act, float(s), float(e), round(conf, 4), _tracks(a)))
    steps["kept"] = [f[:5] for f in found]

    # 3. where: one object query per event, over its interval
    fps = float(engine.cfg.stream.object_fps)
    reqs = [{"type": "object", "activity": act, "start": s, "end": max(e, s + 1.0 / fps), "fps": fps}
            for _, act, s, e, _, _ in found]
    where = ask(reqs) if reqs else []
    events = [Event(labels[act], act, name, round(s, 3), round(e, 3), conf, _box_at(o, (s + e) / 2), tracks)
              for (name, act, s, e, conf, tracks), o in zip(found, where)]
    events = merge(events)
    if one_product:
        events = one_product_each(events)
    steps["one_product"] = [(e.product, e.activity_id, e.start, e.end) for e in events]
    return events, read
