"""HTTP API (FastAPI): one router per resource, each in its module: health, readiness, metrics,
status and labels (``api_service``), a route per query type and the batch of them (``api_queries``),
the streams with reset and snapshot (``api_streams``), a stream's zones (``api_zones``), the alerts (``api_alerts``), the catalog
(``api_catalog``), the dashboard (``api_page``), what happened (``api_happened``) and questions in
words (``api_ask``). ``create_app`` puts the hub and the limits on ``app.state``, where the routers'
dependencies (``api_deps``) read them.

One app serves every stream of a ``Streams`` hub. A route that reads a stream takes an optional
``stream`` (a query parameter; a field of a query body, per request in a batch); without it the
default stream answers, so a single-stream client never names one. An unknown stream is a 404.

Binds 127.0.0.1 by default. Bound anywhere else it needs a token (``--token`` / LVM_EDGE_TOKEN),
sent as ``Authorization: Bearer <token>`` or ``X-LVM-Token``; /healthz and /readyz stay open for
orchestrators. Bodies are capped (``max_body_bytes``) before they are parsed, and object images
are checked to be PNG or JPEG of at most ``max_image_pixels`` from their headers before decoding.

Every bad request gets a 4xx with ``{"error": "<one line>"}``; a 5xx means a bug here.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import Depends
from fastapi_offline import FastAPIOffline

from edge_runtime import __version__
from edge_runtime.serve import api_alerts, api_ask, api_catalog, api_evidence, api_happened, api_page, api_queries, \
    api_service, api_streams, api_till, api_zones
from edge_runtime.serve.api_deps import ApiSettings
from edge_runtime.serve.api_errors import ERROR_RESPONSES, error_handlers, known_query, with_bearer_auth
from edge_runtime.serve.api_streams import DEFAULT_MAX_STREAMS
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.serve.streams import Streams

DEFAULT_MAX_BODY = 8 << 20          # 8 MiB
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
# in this order in the schema
ROUTERS = (api_service.router, api_queries.router, api_streams.router, api_zones.router, api_alerts.router,
           api_till.router, api_evidence.router, api_catalog.router, api_page.router, api_happened.router, api_ask.router)


# -- body size cap (outermost, before anything parses the body) --------------------------------
class BodyLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                if int(cl) > self.max_bytes:
                    return await _reject(send, 413, f"request body over {self.max_bytes} bytes")
            except ValueError:
                return await _reject(send, 400, "bad Content-Length")
        # Read the body here (bounded), then replay it: a chunked body cannot outgrow the cap.
        body, more = b"", True
        messages = []
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                messages.append(msg)
                break
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reject(send, 413, f"request body over {self.max_bytes} bytes")
        replay = [{"type": "http.request", "body": body, "more_body": False}] + messages

        async def receive_again():
            if replay:
                return replay.pop(0)
            return await receive()

        return await self.app(scope, receive_again, send)


async def _reject(send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


# -- app -----------------------------------------------------------------------------------------
def create_app(target: Streams | Runtime, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_streams: int = DEFAULT_MAX_STREAMS):
    """The ASGI app (FastAPI inside a body-size cap) serving a ``Streams`` hub, or one ``Runtime``
    (served as a hub of that one stream). ``state.streams`` holds the hub, ``state.runtime`` the
    stream that was the default when the app was made, ``state.settings`` the token and limits."""
    hub = target if isinstance(target, Streams) else Streams.wrap(target)
    # FastAPIOffline: FastAPI whose /docs and /redoc load their scripts from this app, not a CDN (kiosks
    # are often offline); its files are served open under /static-offline-docs, as /docs is
    api = FastAPIOffline(title="lvm-edge", version=__version__, dependencies=[Depends(known_query)],
                         responses=ERROR_RESPONSES, exception_handlers=error_handlers(),
                         description="Answers activity / object / time questions about each stream from its memory.")
    api.state.streams = hub
    api.state.runtime = hub.get() if len(hub) else None
    api.state.settings = ApiSettings(token=token, max_image_pixels=max_image_pixels, max_streams=max_streams)
    for router in ROUTERS:
        api.include_router(router)
    if token:
        plain_openapi = api.openapi

        def openapi() -> dict[str, Any]:  # say in the schema that the routes need the token
            if api.openapi_schema is None:
                api.openapi_schema = with_bearer_auth(plain_openapi(), ("/healthz", "/readyz"))
            return api.openapi_schema

        api.openapi = openapi
    return BodyLimit(api, max_body_bytes)
