"""The dashboard: ``/`` and ``/static/*`` (the page, served open) and ``/v1/timeline`` (guarded JSON).

The page and its scripts hold no data, so they are served without the token: a browser cannot
attach a header to the request that loads a page. Everything the page shows comes from the guarded
JSON endpoints, which it calls with ``Authorization: Bearer <token>`` once the user has typed the
token into it; without the token an off-loopback visitor gets the empty page and 401s, nothing more.
A Content-Security-Policy keeps the page to this origin: no CDN, no third-party request, no
inline script, so nothing the API returns can run as code in it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from edge_runtime.query.coverage import covered_spans
from edge_runtime.serve.api_deps import GUARDED, Hub
from edge_runtime.serve.api_streams import StreamParam
from edge_runtime.serve.pipeline import Runtime

STATIC_DIR = Path(__file__).resolve().parent / "static"
# the only files served: a fixed list, so no request path ever reaches the filesystem
STATIC_FILES = {
    "alerts.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "draw.js": "text/javascript; charset=utf-8",
    "streams.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "zones.js": "text/javascript; charset=utf-8",
}
PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                                "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                                "frame-ancestors 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static(name: str, media_type: str) -> Response:
    path = STATIC_DIR / name
    try:
        body = path.read_bytes()
    except OSError:
        return JSONResponse({"error": f"dashboard file {name} is missing from the installed package"},
                            status_code=404)
    return Response(body, media_type=media_type, headers=PAGE_HEADERS)


def timeline(runtime: Runtime) -> dict[str, Any]:
    """The stream's time axis as the memory sees it, from one committed state.

    covered: spans queries are answered from; gaps: times the source delivered nothing; pending:
    frames received but not yet committed (answerable once their clip closes); outage: a live
    source that is out right now, from its last frame on."""
    stream = runtime.stream
    c = stream.committed
    last = stream.last_time
    covered = covered_spans(c, c.start, c.end) if c.start is not None and c.end is not None else []
    pending = None
    if last is not None and stream.pending_frames:
        # nothing committed yet: the pending clip began (frames - 1) periods before the last frame
        lo = c.end if c.end is not None else last - (stream.pending_frames - 1) / stream.fps
        pending = [lo, last] if last > lo else None
    return {
        "stream_time": last,
        "coverage": {"start": c.start, "end": c.end},
        "covered": [[a, b] for a, b in covered],
        "gaps": [[a, b] for a, b in stream.gaps],
        "pending": pending,
        "pending_frames": stream.pending_frames,
        "outage_since": runtime.outage_since,
        "wall_origin": runtime.wall_origin,
        "fps": stream.fps,
    }


router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> Response:
    return _static("index.html", "text/html; charset=utf-8")


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return JSONResponse({"error": f"no dashboard file named {name[:64]!r}"}, status_code=404)
    return _static(name, media_type)


@router.get("/v1/timeline", tags=["stream"], dependencies=GUARDED)
def get_timeline(hub: Hub, stream: StreamParam = None) -> dict[str, Any]:
    """Covered spans, gaps, the pending clip and any outage over the whole stream (the dashboard's axis)."""
    return timeline(hub.get(stream))
