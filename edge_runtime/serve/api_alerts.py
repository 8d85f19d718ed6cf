"""HTTP routes of the checkout alerts (edge_runtime/alerts/):

    GET  /v1/alerts                 newest first; filters stream, status (open|acked), since (unix s);
                                    at most ``limit`` (default 100, at most 500); ``before`` pages on
    POST /v1/alerts/{id}/ack        acknowledge one (again: unchanged, 200); 404 an unknown id

A runtime without alerts configured answers an empty list with ``enabled: false`` and the note
that says why. ``alerts_status`` is the ``alerts`` section of /v1/status.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from edge_runtime.alerts.outbox import OutboxError
from edge_runtime.alerts.record import Alert
from edge_runtime.alerts.service import NO_RULES, no_alerts_status

MAX_PAGE = 500


class AlertList(BaseModel):
    alerts: list[Alert] = Field(description="newest first")
    enabled: bool = Field(description="whether this runtime evaluates alert rules")
    note: str | None = Field(None, description="why there are no alerts to expect, when there are none")
    next_before: int | None = Field(None, description="pass as `before` for the next page; null: this was the last")


def alerts_status(hub) -> dict[str, Any]:
    service = getattr(hub, "alerts", None)
    return service.status() if service is not None else no_alerts_status()


def register_alert_routes(api: FastAPI, hub, guarded: list) -> None:
    """Add the /v1/alerts routes to ``api``: ``hub.alerts`` (None: alerts are not configured)."""

    @api.exception_handler(OutboxError)
    async def _outbox_error(_, exc: OutboxError):  # the store cannot be written (disk full): try later
        return JSONResponse({"error": " ".join(str(exc).split()) or "alert store unavailable"}, status_code=503)

    @api.get("/v1/alerts", tags=["alerts"], dependencies=guarded, response_model=AlertList)
    def list_alerts(
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
        return {"alerts": [a for _, a in rows], "enabled": service.settings.enabled, "note": service.note,
                "next_before": rows[-1][0] if len(rows) == limit else None}

    @api.post("/v1/alerts/{alert_id}/ack", tags=["alerts"], dependencies=guarded, response_model=Alert,
              responses={404: {"description": "no alert with this id"}})
    def ack_alert(alert_id: Annotated[str, Path(max_length=128, description="the alert's id")]):
        """Acknowledge an alert (staff saw it). Acknowledging it again changes nothing."""
        service = getattr(hub, "alerts", None)
        alert = service.ack(alert_id) if service is not None else None
        if alert is None:
            shown = " ".join(alert_id.split())[:64]
            return JSONResponse({"error": f"no alert with id {shown!r}"}, status_code=404)
        return alert
