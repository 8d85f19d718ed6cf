"""POST /v1/happened: what happened in a window of one stream, as events (edge_runtime/query/happened.py).

    {"last": 300, "stream": "cam2"}                        # the last 5 minutes
    {"start": 0, "end": 600, "activity": "scan"}           # a window, one activity
    -> {"stream", "window": [start, end], "products": {"asked": 14, "from": "bundle classes"},
        "events": [{"activity", "activity_id", "product", "start", "end", "confidence", "box", "tracks",
                    "item", "paid"}], "read_from": ["items", "memory", "timeline"], ...}

A window is ``start`` and ``end`` (stream seconds) or ``last`` (seconds back from now: a live
source's now is the wall clock's, so a camera outage shows as a part of the window the memory does
not cover; a file's is the memory's end), not both; with neither, the last ``DEFAULT_LAST_S``. Bad
input is a 4xx with one line.
"""
from __future__ import annotations

from typing import Any, Union

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.query.ask.times import EMPTY_MEMORY, stream_time_now
from edge_runtime.query.class_pictures import class_pictures
from edge_runtime.query.coverage import window_coverage
from edge_runtime.query.happened import MIN_CONFIDENCE, HappenedError, floors_help
from edge_runtime.query.happened import happened as events_read
from edge_runtime.serve.api_deps import GUARDED, Hub
from edge_runtime.serve.api_streams import STREAM_HELP

DEFAULT_LAST_S = 300.0


class HappenedBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    start: float | None = Field(None, description="window start, stream seconds (with end)")
    end: float | None = Field(None, description="window end, stream seconds (with start)")
    last: float | None = Field(None, gt=0, description=f"instead of start/end: the last N seconds up to now (a live "
                                                       f"source: the wall clock's now; neither: the last "
                                                       f"{DEFAULT_LAST_S:g})")
    activity: Union[int, str, None] = Field(None, description="only events of this activity (name or id)")
    min_confidence: float | None = Field(None, ge=0.0, le=1.0,
                                         description=f"the least calibrated probability of an event kept (by "
                                                     f"default {MIN_CONFIDENCE:g}; {floors_help('listed')})")
    stream: str | None = Field(None, description=STREAM_HELP)


class EventModel(BaseModel):
    activity: str = Field(description="the bundle's activity label")
    activity_id: int
    product: str = Field(description="catalog product, else the bundle's product class")
    start: float = Field(description="stream seconds")
    end: float
    confidence: float = Field(ge=0.0, le=1.0, description="calibrated probability that the event is right")
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2] in [0, 1] at the middle of the event")
    tracks: list[str] = Field(description="what it was read from: memory, timeline, and items when an item event "
                                          "of the stream's item tracks agrees with it")
    item: int | None = Field(None, description="the item's track id, when an item event agrees with it")
    paid: bool | None = Field(None, description="with item: whether a scan (or a till read) was matched to the item")


class HappenedAnswer(BaseModel):
    stream: str
    window: list[float] = Field(description="[start, end] answered, stream seconds")
    products: dict[str, Any] = Field(description="{asked: how many products were asked about, from: catalog or "
                                                 "bundle classes}")
    events: list[EventModel] = Field(description="sorted by start, then confidence")
    read_from: list[str] = Field(description="what the events were read from: items (the stream's item events, when "
                                             "they cover the window), memory, timeline")
    status: str = Field(description="answered; partial (the memory covers part of the window: its events are "
                                    "from that part); no_memory (it covers none of it: no events, nothing known)")
    coverage: dict[str, Any] = Field(description="{start, end, covered_fraction} of the window the memory covers")
    message: str | None = Field(None, description="no_memory: what the memory does hold")
    gaps: list[list[float]] = Field(description="the source's gaps inside the window")
    ood: dict[str, Any] | None = Field(None, description="how unlike the training footage the recent frames are "
                                                         "(flag: the events may be wrong), as every answer says it")


def window_of(runtime, start: float | None, end: float | None, last: float | None) -> tuple[float, float]:
    """The asked window (HappenedError, one line, for a half-given or doubly-given one)."""
    if last is not None and (start is not None or end is not None):
        raise HappenedError("give start and end, or last, not both")
    if (start is None) != (end is None):
        raise HappenedError(f"missing field '{'end' if end is None else 'start'}' (or give last instead)")
    if start is not None:
        return float(start), float(end)
    cov = runtime.stream.coverage or {}
    if cov.get("end") is None:
        raise HappenedError(EMPTY_MEMORY, 409)
    # up to now (a live source's now is the wall clock's, as ask reads "the last 5 minutes"), and not
    # before the memory starts: "the last 5 minutes" of a 1-minute memory is that minute
    now = stream_time_now(float(cov["end"]), getattr(runtime, "wall_origin", None))
    return max(float(cov["start"]), now - float(last or DEFAULT_LAST_S)), now


def happened_answer(runtime, q: HappenedBody) -> dict[str, Any]:
    window = window_of(runtime, q.start, q.end, q.last)
    acts = None if q.activity is None else [q.activity]
    got = events_read(runtime, None, window, activities=acts, min_confidence=q.min_confidence)
    catalog = getattr(runtime, "catalog", None)
    if catalog is not None and len(catalog):
        asked = {"asked": len(catalog), "from": "catalog"}
    else:  # the pictures are cached: counting them draws nothing again
        asked = {"asked": len(class_pictures(runtime.engine.products, runtime.engine.frame_size)), "from": "bundle classes"}
    # as the query routes say it: "0 events" for a window the memory does not cover would read as
    # "nothing happened"
    cov = window_coverage(runtime.stream.committed, window[0], window[1])
    frac = cov["coverage"]["covered_fraction"]
    status = "no_memory" if frac == 0 else "partial" if frac < 1 else "answered"
    held = runtime.stream.coverage or {}
    said = {"message": f"the memory holds {held['start']:.1f}-{held['end']:.1f} s, none of this window"
            if status == "no_memory" and held.get("start") is not None else None}  # as the route's model writes it
    return {"stream": runtime.name, "window": [window[0], window[1]], "products": asked,
            "events": [e.to_dict() for e in got.events], "read_from": got.read_from, "status": status, **cov, **said,
            "ood": dict(runtime.stream.ood.status())}


router = APIRouter(tags=["queries"], dependencies=GUARDED)


@router.post("/v1/happened", response_model=HappenedAnswer)
def happened(q: HappenedBody, hub: Hub) -> dict[str, Any]:
    """What happened in the window: each product's activities the memory has evidence of, as timed events."""
    return happened_answer(hub.get(q.stream), q)
