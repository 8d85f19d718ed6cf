"""HTTP routes of a lane's till feed (``alerts.scans: pos``): its transactions beside its reads.

    POST /v1/streams/{stream}/till  {"transactions": [{"mark": "start" | "end", "time" | "stream_time"}],
                                     "scans": [{"product", "time" | "stream_time"}]} (either may be left
                                    out, not both): each customer's transaction start and end, which the
                                    ``left_in_basket`` rule judges the basket at, and the till's reads as
                                    POST /v1/streams/{stream}/scans takes them. 202 with what was new;
                                    404 an unknown stream, 409 a runtime that does not take the till's
                                    feed or an end with no transaction started before it, 422 a malformed
                                    body or a wall time on a stream without a wall clock. A refused
                                    request stores nothing; a mark sent again is kept once.
    GET  /v1/streams/{stream}/till  the transactions held (the last 15 minutes), oldest first
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.alerts.till_transactions import TillError, TillStoreError
from edge_runtime.serve.api_alerts import PosScan, lane_till, stream_now, take_scans, till_time
from edge_runtime.serve.api_deps import GUARDED, Hub

MAX_MARKS = 1000


class TillMark(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "1" is no time, true no number: refused
    mark: Literal["start", "end"] = Field(description="the transaction's start or its end (the customer paid)")
    time: float | None = Field(None, allow_inf_nan=False, gt=0, strict=True,
                               description="when, unix seconds (streams from a live camera)")
    stream_time: float | None = Field(None, allow_inf_nan=False, ge=0, strict=True,
                                      description="when, in the stream's seconds")

    @model_validator(mode="after")
    def _one_time(self) -> "TillMark":
        if (self.time is None) == (self.stream_time is None):
            raise ValueError("give exactly one of time (unix seconds) and stream_time")
        return self


class TillFeed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    transactions: list[TillMark] = Field(default_factory=list, max_length=MAX_MARKS, description="in any order")
    scans: list[PosScan] = Field(default_factory=list, max_length=MAX_MARKS, description="in any order")

    @model_validator(mode="after")
    def _something(self) -> "TillFeed":
        if not self.transactions and not self.scans:
            raise ValueError("give transactions or scans (or both)")
        return self


router = APIRouter(tags=["alerts"], dependencies=GUARDED)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such stream"},
    409: {"description": "this runtime does not take the till's feed, or an end with no transaction started"}}


@router.post("/v1/streams/{stream}/till", status_code=202, responses=_RESPONSES)
def add_till(stream: Annotated[str, Path(max_length=64, description="the lane's stream name")],
             body: TillFeed, hub: Hub) -> Any:
    """A lane's till feed: transaction starts and ends, and reads. Everything is checked before anything
    is stored: a request refused stores nothing."""
    rt, service = lane_till(hub, stream)
    now = stream_now(rt)
    marks = []
    for i, m in enumerate(body.transactions):
        t = till_time(rt, stream, f"transactions[{i}]", m.time, m.stream_time, now)
        if isinstance(t, JSONResponse):
            return t
        marks.append((m.mark, t))
    for i, s in enumerate(body.scans):  # the reads' times too, before the transactions are stored
        t = till_time(rt, stream, f"scans[{i}]", s.time, s.stream_time, now)
        if isinstance(t, JSONResponse):
            return t
    counts = None
    if marks:
        try:
            counts = service.add_till_transactions(stream, marks, now)
        except TillError as err:
            return JSONResponse({"error": str(err)}, status_code=409)
        except TillStoreError as err:
            return JSONResponse({"error": f"the till's transactions could not be stored: {err}"}, status_code=503)
    scans = take_scans(hub, stream, rt, service, body.scans) if body.scans else None
    if isinstance(scans, JSONResponse):
        return scans
    out: dict[str, Any] = {"stream": stream, "transactions": {"received": len(marks), **(counts or {})},
                           "scans": scans}
    if counts and counts["replaced"]:
        out["note"] = (f"{counts['replaced']} transaction(s) started and never ended were replaced by a later "
                       f"start: an end was lost, and their baskets are not judged")
    return out


@router.get("/v1/streams/{stream}/till", responses=_RESPONSES)
def list_till(stream: Annotated[str, Path(max_length=64, description="the lane's stream name")],
              hub: Hub) -> dict[str, Any]:
    """The till's transactions this runtime holds for a lane, oldest first, in stream seconds (end null: open)."""
    _, service = lane_till(hub, stream)
    return {"stream": stream, "transactions": [{"start": a, "end": b}
                                               for a, b in service.transactions.listing(stream)]}
