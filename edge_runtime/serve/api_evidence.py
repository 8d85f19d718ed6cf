"""HTTP routes of an alert's evidence (edge_runtime/alerts/evidence.py): the JPEGs of its item kept with
it in the outbox.

    GET /v1/alerts/{id}/evidence          what is kept: {"alert", "stream", "keep", "images": [{label, t,
                                          wall, bytes, url}], "bytes"}; 404 (one line) an unknown id, or
                                          an alert whose stream keeps no evidence (``alerts.evidence``: off),
                                          or one stored before evidence was kept
    GET /v1/alerts/{id}/evidence/{k}.jpg  one of them, image/jpeg; 404 one that is not there
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from edge_runtime.alerts.record import EvidenceImage
from edge_runtime.serve.api_deps import GUARDED, Hub

router = APIRouter(tags=["alerts"], dependencies=GUARDED)
AlertId = Annotated[str, Path(max_length=128, description="the alert's id")]


class Evidence(BaseModel):
    alert: str = Field(description="the alert's id")
    stream: str
    keep: str = Field(description="what its stream kept: item (the item's region) or frame (the whole frame)")
    images: list[EvidenceImage] = Field(description="in time order: before, at and after its event")
    bytes: int = Field(description="the images' bytes together")
    note: str | None = Field(None, description="why there are none, when there are none")


def _missing(alert_id: str) -> JSONResponse:
    shown = " ".join(alert_id.split())[:64]
    return JSONResponse({"error": f"no alert with id {shown!r}"}, status_code=404)


@router.get("/v1/alerts/{alert_id}/evidence", response_model=Evidence,
            responses={404: {"description": "no such alert, or no evidence kept for it (said which)"}})
def alert_evidence(alert_id: AlertId, hub: Hub) -> Any:
    """The JPEGs of the alert's item kept with it, with when each was taken and where to get it."""
    service = getattr(hub, "alerts", None)
    alert = service.outbox.get(alert_id) if service is not None else None
    if alert is None:
        return _missing(alert_id)
    keep, _ = service.outbox.evidence(alert_id)
    if keep == "off":
        return JSONResponse({"error": f"no evidence for alert {alert.id}: evidence was turned off for stream "
                                      f"{alert.stream!r} (alerts.evidence) when it was raised"}, status_code=404)
    if keep is None:
        return JSONResponse({"error": f"no evidence for alert {alert.id}: it was stored before this runtime kept "
                                      f"evidence"}, status_code=404)
    note = None if alert.images else ("none of its item's crops were in the stream's ring (an alert of no tracked "
                                      "item, or of one seen before the ring's oldest crop)")
    return {"alert": alert.id, "stream": alert.stream, "keep": keep, "images": alert.images,
            "bytes": sum(i.bytes for i in alert.images), "note": note}


@router.get("/v1/alerts/{alert_id}/evidence/{k}.jpg", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such image"}})
def alert_evidence_image(alert_id: AlertId, k: Annotated[int, Path(ge=0, le=64)], hub: Hub) -> Response:
    """One JPEG of the alert's evidence."""
    service = getattr(hub, "alerts", None)
    jpeg = service.outbox.evidence_image(alert_id, k) if service is not None else None
    if jpeg is None:
        if service is None or service.outbox.get(alert_id) is None:
            return _missing(alert_id)
        return JSONResponse({"error": f"alert {alert_id} has no image {k} (GET /v1/alerts/{alert_id}/evidence "
                                      f"lists its images)"}, status_code=404)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})
