"""The answer the query routes return, as a model: what every answer carries (type, window, stream,
status, which answers gave it, the reader's p_seen and confidence, coverage), and each type's content
(its row in edge_runtime/query/types.py; the reader's object answers add ``tracks``). Fields an
answer does not have are left out of its JSON (routes serve it with ``response_model_exclude_unset``),
so a heads answer carries no confidence at all rather than a null one."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.query.types import NAMES

STATUSES = ("answered", "partial", "not_seen", "no_memory")


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal[NAMES]  # type: ignore[valid-type]
    window: list[float] = Field(description="[start, end] asked, stream seconds")
    stream: str = Field(description="the stream that answered")
    status: Literal[STATUSES] = Field(  # type: ignore[valid-type]
        description="answered: the whole window is in memory; partial: part of it (answered_spans); not_seen: "
                    "the memory reader found no evidence of this in the window (its p_seen is below the bundle's "
                    "not_seen_below for its query type; the content is still its best guess); no_memory: nothing of the window is in memory")
    message: str | None = Field(None, description="for not_seen and no_memory: why, in words")
    answered_by: Literal["reader", "heads"] = Field(description="the memory reader or the query heads")
    confidence: float | None = Field(None, ge=0.0, le=1.0, description="reader answers: calibrated probability "
                                     "that the answer is right (null when nothing is in memory); heads answers have none")
    p_seen: float | None = Field(None, ge=0.0, le=1.0, description="reader answers: calibrated probability that "
                                 "what was asked about is in memory for the window")
    read_from: list[Literal["memory", "timeline", "items"]] | None = Field(
        None, description="reader answers: the tracks read: the m-token memory, and the timeline when the bundle "
                          "keeps one and it holds part of the window (a window beyond its horizon is the memory's alone); "
                          "items when the stream's item events judged whether it was seen (seen_by) or an object "
                          "answer took the boxes of the item event it agrees with")
    seen_by: str | None = Field(None, description="activity answers the reader alone called not seen, answered "
                                "because an item track of the named product was handled in the window")
    item: int | None = Field(None, description="object answers that read items: the item's track id")
    answered_spans: list[list[float]] | None = Field(None, description="partial answers: the covered spans answered from")
    activity: str | None = Field(None, description="object / time queries: the activity asked about")
    product: dict[str, Any] | None = Field(None, description="catalog product queries: name, crops, how their answers merge")
    coverage: dict[str, Any] = Field(description="{start, end, covered_fraction} of the window in memory")
    gaps: list[Any] = Field(description="[[start, end], ...] inside the window where no frame arrived")
    ood: dict[str, Any] | None = Field(None, description="how unlike the training footage the recent frames are")
    # each type's content (types.py); typed loosely: an object answer may hold 100,000 boxes
    scores: dict[str, float] | None = Field(None, description="activity: score per activity name")
    labels: list[str] | None = Field(None, description="activity: activity names, best first")
    ranked: list[int] | None = Field(None, description="activity: activity ids, best first")
    intervals: list[Any] | None = Field(None, description="time: [[start, end, p], ...] best first; seconds to the millisecond")
    extent: list[Any] | None = Field(None, description="object: [start, end, p] when the object was seen")
    times: list[Any] | None = Field(None, description="object: box times, stream seconds to the millisecond")
    boxes: list[Any] | None = Field(None, description="object: [[x1, y1, x2, y2], ...] in [0, 1] to 4 decimals, one per time")
    tracks: list[Any] | None = Field(None, description="reader object answers: the ranked answers, each "
                                     "{times, boxes, extent}; the first is the answer's own")


class BatchAnswers(BaseModel):
    answers: list[Answer]
