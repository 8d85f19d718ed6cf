"""The service's own routes: /healthz and /readyz (open, for orchestrators), /metrics (Prometheus),
/v1/status (one stream's state, with the alert outbox's) and /v1/labels (what the bundle answers about)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from edge_runtime.query.types import QUERY_TYPES
from edge_runtime.serve.api_alerts import alerts_status
from edge_runtime.serve.api_deps import GUARDED, Hub
from edge_runtime.serve.api_errors import one_line
from edge_runtime.serve.api_streams import StreamParam
from edge_runtime.serve.streams import StreamError

router = APIRouter()


# HEAD too: some load balancers and probes check with HEAD (left out of the schema: one operation each)
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", tags=["service"])
def healthz() -> dict[str, Any]:
    return {"ok": True}


@router.head("/readyz", include_in_schema=False)
@router.get("/readyz", tags=["service"])
def readyz(hub: Hub):
    """Ready when the default stream answers queries (503 while it connects, has failed, or there is none)."""
    try:
        rt = hub.get()
    except StreamError as err:
        return JSONResponse({"ready": False, "state": None, "error": one_line(str(err))}, status_code=503)
    ok = rt.ready
    return JSONResponse({"ready": ok, "state": rt.state, "error": rt.error, "stream": rt.name},
                        status_code=200 if ok else 503)


@router.get("/metrics", tags=["service"], dependencies=GUARDED)
def metrics(hub: Hub) -> Response:
    """Prometheus text of every stream (each series labelled ``stream``)."""
    for rt in hub:
        rt.update_gauges()
    return Response(hub.metrics.render(), media_type=hub.metrics.content_type)


@router.get("/v1/status", tags=["stream"], dependencies=GUARDED)
def status(hub: Hub, stream: StreamParam = None) -> dict[str, Any]:
    """One stream's state, coverage, rates, gaps and errors, and which answers it gives (``answers``:
    reader or heads); ``streams`` names all of them; ``alerts``: the alert outbox and its delivery."""
    rt = hub.get(stream)
    return {**rt.status(), "streams": hub.names(), "alerts": alerts_status(hub, rt.name)}


@router.get("/v1/labels", tags=["stream"], dependencies=GUARDED)
def labels(hub: Hub, stream: StreamParam = None) -> dict[str, Any]:
    """The bundle's activity labels and products, and the query types this runtime answers (the
    same for every stream: ``stream`` is only checked)."""
    if stream is not None:
        hub.get(stream)
    engine = hub.engine
    return {"activities": engine.labels, "products": engine.products,
            "query_types": [row.describe() for row in QUERY_TYPES]}
