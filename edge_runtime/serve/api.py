"""HTTP API (FastAPI): health, readiness, metrics, status, labels, a route per query type (its row
in edge_runtime/query/types.py gives its body, ``api_query_bodies`` the model), the batch of them, reset, snapshot,
the streams (``api_streams``), the catalog, what happened (``api_happened``), questions in words and
the dashboard.

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

import errno
import hmac
import ipaddress
import json
import logging
from typing import Any

import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_runtime import __version__

from edge_runtime.query import by_product as product_query
from edge_runtime.serve.api_alerts import alerts_status, register_alert_routes
from edge_runtime.serve.api_answer import Answer, BatchAnswers
from edge_runtime.serve.api_ask import register_ask_routes
from edge_runtime.serve.api_catalog import register_catalog_routes
from edge_runtime.serve.api_errors import (ERROR_RESPONSES, ApiError, known_query, one_line, validation_message,
                                           with_bearer_auth)
from edge_runtime.serve.api_images import decode_image
from edge_runtime.serve.api_happened import register_happened_routes
from edge_runtime.serve.api_page import register_page_routes
from edge_runtime.serve.api_query_bodies import QUERY_BODIES, BatchQuery
from edge_runtime.serve.api_streams import (DEFAULT_MAX_STREAMS, StreamBody, StreamParam, chosen_stream,
                                            register_stream_routes)
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.query.catalog import shows_nothing
from edge_runtime.query.check import QueryError
from edge_runtime.query.types import BY_NAME, QUERY_TYPES, QueryType
from edge_runtime.serve.streams import StreamError, Streams

log = logging.getLogger("lvm_edge.api")
DEFAULT_MAX_BODY = 8 << 20          # 8 MiB
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# off loopback a token is the only lock on the store's network: one a person could guess is none
MIN_TOKEN_CHARS = 16


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve off-loopback without a token of MIN_TOKEN_CHARS or more (ValueError, one line)."""
    if is_loopback(host):
        return
    if not token:
        raise ValueError(f"refusing to listen on {host} without a token: pass --token or set LVM_EDGE_TOKEN "
                         f"(or bind 127.0.0.1)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"refusing to listen on {host} with a {len(token)}-character token: off loopback it needs "
                         f"{MIN_TOKEN_CHARS} or more (python3 -c 'import secrets; print(secrets.token_hex(16))')")


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
    stream that was the default when the app was made."""
    hub = target if isinstance(target, Streams) else Streams.wrap(target)
    engine = hub.engine  # the bundle's labels and products: the same for every stream
    # FastAPIOffline: FastAPI whose /docs and /redoc load their scripts from this app, not a CDN (kiosks
    # are often offline); its files are served open under /static-offline-docs, as /docs is
    api = FastAPIOffline(title="lvm-edge", version=__version__, dependencies=[Depends(known_query)],
                         responses=ERROR_RESPONSES,
                         description="Answers activity / object / time questions about each stream from its memory.")
    api.state.streams = hub
    api.state.runtime = hub.get() if len(hub) else None

    async def auth(request: Request) -> None:  # async: run on the event loop, not in a worker thread
        if not token:
            return
        got = request.headers.get("x-lvm-token")
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            got = bearer[7:].strip()
        if not got or not hmac.compare_digest(got.encode(), token.encode()):
            raise ApiError(401, "missing or wrong token (Authorization: Bearer <token>)")

    guarded = [Depends(auth)]

    @api.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse({"error": one_line(exc.message)}, status_code=exc.status)

    @api.exception_handler(StreamError)
    async def _stream_error(_, exc: StreamError):
        return JSONResponse({"error": one_line(str(exc))}, status_code=exc.status)

    @api.exception_handler(QueryError)
    async def _query_error(_, exc: QueryError):  # a well-formed body whose values cannot be answered: as
        return JSONResponse({"error": one_line(str(exc))}, status_code=422)  # a validation error, 422

    @api.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError):
        status, msg = validation_message(exc)
        return JSONResponse({"error": one_line(msg)}, status_code=status)

    @api.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        # FastAPI's words for a body it could not decode (not UTF-8, a charset it cannot read)
        msg = "request body is not valid JSON (UTF-8)" if exc.detail == "There was an error parsing the body" \
            else str(exc.detail)
        return JSONResponse({"error": one_line(msg)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))  # 405's Allow

    @api.exception_handler(OSError)
    async def _storage(_, exc: OSError):
        # a full or read-only state directory (a snapshot, the catalog): the request's write did not
        # happen; the files are replaced atomically, so what was stored before is as it was
        where = f" {exc.filename}" if exc.filename else " the state directory"
        msg = one_line(f"cannot write{where}: {exc.strerror or exc}")
        log.warning(msg)
        return JSONResponse({"error": msg}, status_code=507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 503)

    @api.exception_handler(Exception)
    async def _bug(_, exc: Exception):
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def img(data: str | None, field: str) -> np.ndarray | None:
        if data is None:
            return None
        picture = decode_image(data, field, max_image_pixels)
        problem = shows_nothing(picture, field)  # as the catalog refuses it: it would answer for anything
        if problem:
            raise ApiError(422, problem)
        return picture

    async def answered(rt, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        flat, finish = product_query.prepare(rt, reqs)
        return finish(await rt.query_async(flat))

    async def one(req: dict[str, Any], stream: str | None) -> dict[str, Any]:
        rt = hub.get(stream)
        return _present((await answered(rt, [req]))[0], req, engine.labels, rt.name)

    # HEAD too: some load balancers and probes check with HEAD (left out of the schema: one operation each)
    @api.head("/healthz", include_in_schema=False)
    @api.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @api.head("/readyz", include_in_schema=False)
    @api.get("/readyz", tags=["service"])
    def readyz():
        """Ready when the default stream answers queries (503 while it connects, has failed, or there is none)."""
        try:
            rt = hub.get()
        except StreamError as err:
            return JSONResponse({"ready": False, "state": None, "error": one_line(str(err))}, status_code=503)
        ok = rt.ready
        return JSONResponse({"ready": ok, "state": rt.state, "error": rt.error, "stream": rt.name},
                            status_code=200 if ok else 503)

    @api.get("/metrics", tags=["service"], dependencies=guarded)
    def metrics() -> Response:
        """Prometheus text of every stream (each series labelled ``stream``)."""
        for rt in hub:
            rt.update_gauges()
        return Response(hub.metrics.render(), media_type=hub.metrics.content_type)

    @api.get("/v1/status", tags=["stream"], dependencies=guarded)
    def status(stream: StreamParam = None) -> dict[str, Any]:
        """One stream's state, coverage, rates, gaps and errors, and which answers it gives (``answers``:
        reader or heads); ``streams`` names all of them; ``alerts``: the alert outbox and its delivery."""
        rt = hub.get(stream)
        return {**rt.status(), "streams": hub.names(), "alerts": alerts_status(hub, rt.name)}

    @api.get("/v1/labels", tags=["stream"], dependencies=guarded)
    def labels(stream: StreamParam = None) -> dict[str, Any]:
        """The bundle's activity labels and products, and the query types this runtime answers (the
        same for every stream: ``stream`` is only checked)."""
        if stream is not None:
            hub.get(stream)
        return {"activities": engine.labels, "products": engine.products,
                "query_types": [row.describe() for row in QUERY_TYPES]}

    # The query routes are coroutines: a query's work is checking it (here), then the batcher's thread
    # answers it with whatever else was asked meanwhile. Awaiting that on the event loop, rather than
    # blocking one of the server's worker threads per request, takes a fifth off the CPU a request
    # costs the server under 32 concurrent clients (docs/reliability/README.md).
    def query_route(row: QueryType):
        async def route(q) -> dict[str, Any]:
            req: dict[str, Any] = {"type": row.name, "start": q.start, "end": q.end}
            if row.takes_object:
                product_query.check_object(q.object_image, q.product)
            if row.takes_activity:
                req["activity"] = engine.activity_id(q.activity)
            if row.takes_object:
                req.update(product=q.product, object_image=img(q.object_image, "object_image"))
            req.update({opt: getattr(q, opt) for opt in row.options})
            return await one(req, q.stream)

        # FastAPI names the operation and reads the body model from these
        route.__name__ = f"query_{row.name}"
        route.__annotations__ = {"q": QUERY_BODIES[row.name], "return": dict[str, Any]}
        said = row.reads.format(activity="this activity", object="this object (a picture, or a catalog product)")
        route.__doc__ = f"{said[0].upper()}{said[1:]}, in the window?"
        return api.post(f"/v1/query/{row.name}", tags=["queries"], dependencies=guarded, response_model=Answer,
                        response_model_exclude_unset=True)(route)

    query_routes = {row.name: query_route(row) for row in QUERY_TYPES}

    @api.post("/v1/query/batch", tags=["queries"], dependencies=guarded, response_model=BatchAnswers,
              response_model_exclude_unset=True)
    async def query_batch(q: BatchQuery) -> dict[str, Any]:
        """Many queries of any types, of any streams: one heads call per stream named."""
        runtimes = []
        for i, it in enumerate(q.queries):  # every stream is checked before any image is decoded
            try:
                runtimes.append(hub.get(it.stream))
            except StreamError as err:
                raise StreamError(f"queries.{i}.stream: {err}", err.status) from None
        reqs = []
        for i, it in enumerate(q.queries):
            need_act, need_obj = BY_NAME[it.type].takes_activity, BY_NAME[it.type].takes_object
            if need_act and it.activity is None:
                raise ApiError(422, f"missing field 'queries.{i}.activity'")
            if need_obj:
                product_query.check_object(it.object_image, it.product, f"queries.{i}")
            reqs.append({"type": it.type, "start": it.start, "end": it.end,
                         "activity": engine.activity_id(it.activity) if need_act else None,
                         "object_image": img(it.object_image, f"queries.{i}.object_image") if need_obj else None,
                         "product": it.product if need_obj else None, "fps": it.fps, "k": it.k})
        groups: dict[str, list[int]] = {}
        for i, rt in enumerate(runtimes):
            groups.setdefault(rt.name, []).append(i)
        out: list[dict[str, Any]] = [{}] * len(reqs)
        for idx in groups.values():
            rt = runtimes[idx[0]]
            for i, a in zip(idx, await answered(rt, [reqs[i] for i in idx])):
                out[i] = _present(a, reqs[i], engine.labels, rt.name)
        return {"answers": out}

    @api.post("/v1/session/reset", tags=["stream"], dependencies=guarded)
    def session_reset(stream: StreamParam = None, body: StreamBody | None = None) -> dict[str, Any]:
        """A new session on one stream (``?stream=`` or a body's ``stream``; default: the default
        stream): its memory and SVD emptied, its clock goes on."""
        return hub.get(chosen_stream(stream, body)).reset()

    @api.post("/v1/snapshot", tags=["stream"], dependencies=guarded)
    def take_snapshot(stream: StreamParam = None, body: StreamBody | None = None) -> dict[str, Any]:
        """Write one stream's snapshot now (``?stream=`` or a body's ``stream``)."""
        rt = hub.get(chosen_stream(stream, body))
        if rt.state_dir is None:
            raise ApiError(409, "no state directory configured (start with --state-dir)")
        return rt.snapshot()

    register_stream_routes(api, hub, guarded, max_streams=max_streams)
    register_alert_routes(api, hub, guarded)
    register_catalog_routes(api, hub, guarded=guarded, decode_image=decode_image, max_image_pixels=max_image_pixels)
    register_page_routes(api, hub, guarded)
    happened_route = register_happened_routes(api, hub, guarded)
    register_ask_routes(api, hub, guarded, {**query_routes, "happened": happened_route})
    if token:
        plain_openapi = api.openapi

        def openapi() -> dict[str, Any]:  # say in the schema that the routes need the token
            if api.openapi_schema is None:
                api.openapi_schema = with_bearer_auth(plain_openapi(), ("/healthz", "/readyz"))
            return api.openapi_schema

        api.openapi = openapi
    return BodyLimit(api, max_body_bytes)


def _present(answer: dict[str, Any], req: dict[str, Any], labels: list[str], stream: str) -> dict[str, Any]:
    out = {"type": req["type"], "window": [req["start"], req["end"]], "stream": stream}
    if req.get("activity") is not None:
        out["activity"] = labels[req["activity"]]
    out.update(answer)
    row = BY_NAME[req["type"]]
    if row.labelled is not None:
        out.update(row.labelled(answer, labels))
    return out
