"""HTTP routes of the checkout alerts (edge_runtime/alerts/):

    GET  /v1/alerts                 newest first; filters stream, status (open|acked), since (unix s);
                                    at most ``limit`` (default 100, at most 500); ``before`` pages on
    POST /v1/alerts/{id}/ack        acknowledge one; optional body {"outcome": "confirmed" | "false_alert" |
                                    "customer_fixed", "note"?: ≤ 200 chars, "by"?}: staff's verdict (a later
                                    one replaces it as the one that counts; each is kept with its time).
                                    Without a body (or {}): acknowledged, no outcome recorded (again:
                                    unchanged). 404 an unknown id, 422 an unknown outcome; a refused
                                    request changes nothing
    GET  /v1/alerts/verifier        what staff's verdicts taught: per stream and rule, fitted or what it lacks
    POST /v1/alerts/verifier        fit it again on the verdicts stored, save it, and use it for the alerts
                                    raised from now on (409 where alerts are not configured)
    GET  /v1/streams/{stream}/scans the till's scans the runtime holds for a lane (the last 15 minutes),
                                    oldest first: what an integrator checks its bridge against
    POST /v1/streams/{stream}/scans the till's scans of a lane, from the point-of-sale system
                                    (``alerts.scans: pos``): {"scans": [{"product", "time" | "stream_time"}]};
                                    202 with how many were new and the products nothing here names;
                                    404 an unknown stream, 409 a runtime that does not take them, 422 a
                                    wall time on a stream without a wall clock (a file, demo://)

A runtime without alerts configured answers an empty list with ``enabled: false`` and the note
that says why. ``alerts_status`` is the ``alerts`` section of /v1/status.
"""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_runtime.alerts.pos_scans import PosScanError
from edge_runtime.alerts.rules import KEEP_S
from edge_runtime.alerts.record import MAX_BY, MAX_NOTE, OUTCOMES, Alert, Outcome, Verdict
from edge_runtime.alerts.service import NO_RULES, no_alerts_status
from edge_runtime.query.catalog import name_key
from edge_runtime.serve.api_deps import GUARDED, Hub
from edge_runtime.serve.run_state import StreamError

MAX_PAGE = 500
MAX_AHEAD_S = 3600.0   # how far past the stream's newest frame a till's read may be


class AlertList(BaseModel):
    alerts: list[Alert] = Field(description="newest first")
    enabled: bool = Field(description="whether this runtime evaluates alert rules")
    note: str | None = Field(None, description="why there are no alerts to expect, when there are none")
    next_before: int | None = Field(None, description="pass as `before` for the next page; null: this was the last")


class PosScan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    product: str = Field(min_length=1, max_length=128,
                         description="the product as the catalog names it (else the bundle's class name)")
    # strict: a time given as "1" or true is a till integration bug, not a time
    time: float | None = Field(None, allow_inf_nan=False, gt=0, strict=True,
                               description="when the till read it, unix seconds (streams from a live camera)")
    stream_time: float | None = Field(None, allow_inf_nan=False, ge=0, strict=True,
                                      description="when the till read it, in the stream's seconds")

    @field_validator("product")
    @classmethod
    def _printable(cls, v: str) -> str:
        text = " ".join(v.split())
        if not text:
            raise ValueError("the product name is blank")
        if any(not c.isprintable() for c in text):
            raise ValueError("the product name has control characters")
        return text

    @model_validator(mode="after")
    def _one_time(self) -> "PosScan":
        if (self.time is None) == (self.stream_time is None):
            raise ValueError("give exactly one of time (unix seconds) and stream_time")
        return self


class PosScans(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    scans: list[PosScan] = Field(min_length=1, max_length=1000, description="in any order")


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Union[Outcome, None] = Field(None, description="confirmed, false_alert or customer_fixed (the alert "
                                                            "was real and the customer paid once told); none: "
                                                            "acknowledged without an outcome")
    note: Union[str, None] = Field(None, max_length=MAX_NOTE, description="what staff want to say about it")
    by: Union[str, None] = Field(None, min_length=1, max_length=MAX_BY, description="who gives the verdict")

    @field_validator("outcome", mode="before")
    @classmethod
    def _outcome(cls, v: Any) -> Any:
        if v is not None and v not in OUTCOMES:
            shown = " ".join(str(v).split())[:40] if isinstance(v, str) else type(v).__name__
            raise ValueError(f"{shown!r} is not an outcome: give confirmed, false_alert or customer_fixed")
        return v

    @model_validator(mode="after")
    def _with_outcome(self) -> "AckBody":
        if self.outcome is None and (self.note is not None or self.by is not None):
            raise ValueError("note and by go with an outcome (confirmed, false_alert or customer_fixed)")
        return self


def _live(rt) -> bool:
    """Whether the stream's source is a live one (a camera, RTSP, HTTP), whose wall clock its frames give."""
    from edge_runtime.sources import SourceError, parse_source_uri

    try:
        return bool(rt.source_uri) and parse_source_uri(rt.source_uri).live
    except SourceError:
        return False


def alerts_status(hub, stream: str | None = None) -> dict[str, Any]:
    service = getattr(hub, "alerts", None)
    return service.status(stream) if service is not None else no_alerts_status()


# the alert service is ``hub.alerts`` (None: alerts are not configured)
router = APIRouter(tags=["alerts"], dependencies=GUARDED)


@router.get("/v1/alerts", response_model=AlertList)
def list_alerts(
    hub: Hub,
    stream: Annotated[Union[str, None], Query(max_length=64, description="only this stream's alerts")] = None,
    status: Annotated[Union[Literal["open", "acked"], None], Query(description="open or acked")] = None,
    since: Annotated[Union[float, None], Query(allow_inf_nan=False, description="raised at or after "
                                                                                   "(unix seconds)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="at most this many")] = 100,
    before: Annotated[Union[int, None], Query(ge=1, le=2**62, description="the previous page's next_before")] = None,
) -> dict[str, Any]:
    """The alerts this runtime raised, newest first."""
    service = getattr(hub, "alerts", None)
    if service is None:
        return {"alerts": [], "enabled": False, "note": NO_RULES, "next_before": None}
    rows = service.list(stream=stream, status=status, since=since, limit=limit, before_seq=before)
    if stream is not None and not rows and stream not in hub.names() \
            and not service.list(stream=stream, limit=1):  # a removed lane's alerts stay listable
        hub.get(stream)  # a mistyped name: 404 naming the streams, not "no alerts"
    return {"alerts": [a for _, a in rows], "enabled": service.settings.enabled, "note": service.note,
            "next_before": rows[-1][0] if len(rows) == limit else None}


@router.post("/v1/alerts/{alert_id}/ack", response_model=Alert,
             responses={404: {"description": "no alert with this id"},
                        422: {"description": "an outcome that is not confirmed, false_alert or customer_fixed"}})
def ack_alert(alert_id: Annotated[str, Path(max_length=128, description="the alert's id")], hub: Hub,
              body: Annotated[Union[AckBody, None], Body()] = None):
    """Acknowledge an alert (staff saw it), with their verdict on it or none. Without an outcome,
    acknowledging it again changes nothing; each outcome given is kept with its time, the last counts."""
    service = getattr(hub, "alerts", None)
    verdict = None
    if body is not None and body.outcome is not None:
        verdict = Verdict(outcome=body.outcome, at=time.time(), note=body.note, by=body.by)
    alert = service.ack(alert_id, verdict) if service is not None else None
    if alert is None:
        shown = " ".join(alert_id.split())[:64]
        return JSONResponse({"error": f"no alert with id {shown!r}"}, status_code=404)
    return alert


class VerifierState(BaseModel):
    hold_below: float = Field(description="alerts given a lower p_right are held (stored, not sent or nudged); "
                                          "0: none")
    min_verdicts: int = Field(description="verdicts a stream's rule needs before it is fitted")
    fitted_at: float | None = Field(None, description="when it was fitted, unix seconds; null: never")
    features: list[str] = Field(default_factory=list, description="what each alert is judged by")
    pairs: dict[str, dict[str, dict[str, Any]]] = Field(
        description="stream -> rule -> {fitted, right, false} or {fitted: false, note: what it lacks}")
    note: str | None = None


def _alert_service(hub):
    service = getattr(hub, "alerts", None)
    if service is None:
        raise StreamError("this runtime raises no alerts (give its config alert rules): there are no "
                          "verdicts to learn from", 409)
    return service


@router.get("/v1/alerts/verifier", response_model=VerifierState, responses={409: {"description": "no alerts here"}})
def get_verifier(hub: Hub) -> dict[str, Any]:
    """What staff's verdicts taught each stream's rules (`lvm-edge alerts learn` fits it)."""
    return _alert_service(hub).verifier_status()


@router.post("/v1/alerts/verifier", response_model=VerifierState, responses={409: {"description": "no alerts here"}})
def learn_verifier(hub: Hub) -> dict[str, Any]:
    """Fit the verifier on the verdicts stored, save it and use it from now on: each new alert carries its
    p_right, and with alerts.verifier.hold_below set, one below it is held (stored, not sent or nudged)."""
    return _alert_service(hub).learn()


def lane_till(hub, stream: str):
    """(the stream's runtime, the alert service) where this runtime takes the till's scans; a one-line
    404 for an unknown stream, 409 where it does not take them."""
    rt = hub.get(stream)
    service = getattr(hub, "alerts", None)
    if service is None or service.pos is None:
        raise StreamError("this runtime does not take the till's scans (set alerts.scans: pos and a rule "
                          "in its config)", 409)
    return rt, service


_LANE_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"description": "no such stream"},
                                                    409: {"description": "this runtime does not take the till's scans"}}


@router.get("/v1/streams/{stream}/scans", responses=_LANE_RESPONSES)
def list_pos_scans(stream: Annotated[str, Path(max_length=64, description="the lane's stream name")],
                   hub: Hub) -> dict[str, Any]:
    """The till's scans this runtime holds for a lane (the last 15 minutes), oldest first, in stream seconds."""
    rt, service = lane_till(hub, stream)
    origin = getattr(rt, "wall_origin", None)
    return {"stream": stream, "scans": [{"product": e.product, "stream_time": e.start,
                                         "time": None if origin is None else origin + e.start}
                                        for e in service.pos.recent(stream, float("-inf"))]}


@router.post("/v1/streams/{stream}/scans", status_code=202, responses=_LANE_RESPONSES)
def add_pos_scans(stream: Annotated[str, Path(max_length=64, description="the lane's stream name")],
                  body: PosScans, hub: Hub) -> dict[str, Any]:
    """The till's scans of a lane, as its point-of-sale system reads them: what the rules judge bags
    and handlings over the scanner against, with ``alerts.scans: pos``. A scan sent again (same
    product and time) is kept once."""
    rt, service = lane_till(hub, stream)
    return take_scans(hub, stream, rt, service, body.scans)


def stream_now(rt) -> float:
    """The stream's time: its newest frame (or, restored and not yet fed, the end of its memory)."""
    return max(getattr(rt, "stream_now", None) or 0.0, rt.stream.coverage.get("end") or 0.0)


def till_time(rt, stream: str, where: str, wall: float | None, stream_time: float | None, now: float):
    """A till's time of ``where`` (e.g. "scans[2]") in the stream's seconds, or the one-line 409 / 422
    that refuses it: a wall time on a stream without a wall clock, or one far ahead of the stream."""
    origin = getattr(rt, "wall_origin", None)
    if stream_time is None and origin is None:
        if _live(rt):  # its wall clock starts with its first frame: a till's time cannot be placed yet
            return JSONResponse({"error": f"{where}: stream {stream!r} is a live camera that has not "
                                          f"delivered a frame yet, so a wall time cannot be placed in it; "
                                          f"send it again once it streams"}, status_code=409)
        return JSONResponse({"error": f"{where}: stream {stream!r} has no wall clock (not a live "
                                      f"camera); give stream_time instead of time"}, status_code=422)
    t = stream_time if stream_time is not None else wall - origin
    if t > now + MAX_AHEAD_S:  # a read far ahead of the stream is a wrong clock
        hint = " (milliseconds? time is unix seconds)" if wall is not None and wall > 1e11 else ""
        return JSONResponse({"error": f"{where}: at stream time {t:.6g} s, more than {MAX_AHEAD_S:g} s "
                                      f"ahead of the stream (at {now:.6g} s): check the till's clock{hint}"},
                            status_code=422)
    return t


def take_scans(hub, stream: str, rt, service, scans: list[PosScan]):
    """Store the till's reads of a lane: the 202 answer, or the one-line 4xx / 503 that refuses them all."""
    # the till's spelling of a product -> the name events carry (the catalog's, else the bundle's
    # class): case, spacing and "_" aside, so the rules can match its scans to its bags
    catalog = getattr(hub, "catalog", None)
    known = list(rt.engine.products) + list(catalog.names() if catalog is not None else ())
    names = {name_key(n.replace("_", " ")): n for n in known}
    now = stream_now(rt)
    rows = []
    for i, s in enumerate(scans):
        t = till_time(rt, stream, f"scans[{i}]", s.time, s.stream_time, now)
        if isinstance(t, JSONResponse):
            return t
        rows.append((names.get(name_key(s.product.replace("_", " ")), s.product), t))
    try:
        new = service.add_pos_scans(stream, rows, now, runtime=rt)
    except PosScanError as err:
        return JSONResponse({"error": f"the till's scans could not be stored: {err}"}, status_code=503)
    unknown = sorted({p for p, _ in rows if p not in set(known)})
    # a backlog sent late (a till that was offline) is taken in part: what the rules still read
    old = sum(t < now - KEEP_S for _, t in rows)
    notes = ([f"{', '.join(unknown[:5])}: named neither in the catalog nor among the bundle's classes; "
              f"such a scan pays only for a bag of another product"] if unknown else []) + \
            ([f"{old} scan(s) more than {KEEP_S:g} s before the stream's time ({now:.6g} s) not kept: the "
              f"rules no longer read that far back"] if old else [])
    return {"stream": stream, "received": len(rows), "new": new, "too_old": old, "unknown_products": unknown,
            **({"note": "; ".join(notes)} if notes else {})}
