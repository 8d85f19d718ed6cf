"""What the API answers a bad request with: ``ApiError`` (a status and one line), the line for a
request FastAPI's validation refused, the check that refuses query parameters a route does not read,
and ``error_handlers``: each error the routes raise, as its status and one line."""
from __future__ import annotations


import errno
import logging
import math
import re
from typing import Any, Callable, get_args

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_runtime.alerts.outbox import OutboxError
from edge_runtime.config import error_message
from edge_runtime.query.catalog import CatalogError
from edge_runtime.query.check import QueryError
from edge_runtime.query.happened import HappenedError
from edge_runtime.serve.run_state import StreamError

log = logging.getLogger("lvm_edge.api")


_TYPE_TAG = re.compile(r"^(int|float|str|bool|none|list\[.*\]|dict\[.*\]|function-\w+\[.*\]|constrained-.*|"
                       r"json-or-python\[.*\]|lax-or-strict\[.*\]|tagged-union\[.*\]|union\[.*\])$")


class ErrorBody(BaseModel):
    """Every refusal's body: one line saying what is wrong."""

    error: str


# what every route may answer besides its own reply (declared for the schema: generated clients read
# {"error"} bodies, not FastAPI's default 422 shape, which this API never sends)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "refused: 400 malformed, 401 token, 404 unknown, 409 state, "
                                               "413 too large, 415 not a PNG/JPEG, 422 a value not accepted"},
    "5XX": {"model": ErrorBody, "description": "503 or 507: the state directory cannot be written (full, read-only)"},
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def one_line(message: str) -> str:
    """An error message as one line: messages quote the request's own values, which may hold newlines."""
    return " ".join(message.split()) or "bad request"


def with_bearer_auth(schema: dict[str, Any], open_paths: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI schema of a runtime started with a token: every operation needs it, but ``open_paths``."""
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "the runtime's token (LVM_EDGE_TOKEN)"}}
    schema["security"] = [{"bearer": []}]
    for path in open_paths:
        for op in schema.get("paths", {}).get(path, {}).values():
            op["security"] = []
    return schema


def validation_message(err: RequestValidationError) -> tuple[int, str]:
    errors = err.errors()
    if not errors:
        return 422, "invalid request"
    e = errors[0]
    if e.get("type") == "json_invalid":
        return 400, "request body is not valid JSON"
    # the field as the client wrote it: not where FastAPI found it (body, query, path), nor the member of
    # a union that pydantic tried last ("activity.int")
    loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path") and not _TYPE_TAG.match(str(p))) or "body"
    value = e.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return 422, f"{loc}: must be a finite number, got {value}"
    if e.get("type") == "missing":
        return 422, "the request needs a JSON body" if loc == "body" else f"missing field '{loc}'"
    if e.get("type") == "extra_forbidden":
        return 422, f"unknown field '{loc}'"
    if loc == "body" and e.get("type") in ("model_attributes_type", "dict_type"):
        return 422, "request body must be a JSON object"
    return 422, f"{loc}: {error_message(e)}"


async def known_query(request: Request) -> None:
    """Refuse a body that is not sent as JSON (415), and query parameters the route does not read:
    ``?stream=`` on a route that takes the stream in its JSON body would otherwise be dropped, and the
    default stream answer in its place."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    ctype = request.headers.get("content-type", "")
    if (getattr(dependant, "body_params", None) and request.headers.get("content-length", "0") != "0"
            and ctype and "json" not in ctype.split(";")[0].lower()):  # a form or text body is no JSON object
        raise ApiError(415, f"content-type {ctype.split(';')[0][:60]!r}: send the body as application/json")
    # the page and its files are left alone: a browser or a cache may add a query string of its own
    if dependant is None or not request.query_params or not getattr(route, "include_in_schema", True):
        return
    known, todo = set(), [dependant]
    while todo:  # the route's own query parameters and its dependencies'
        d = todo.pop()
        known.update(p.alias for p in d.query_params)
        todo.extend(d.dependencies)
    for key in request.query_params:
        if key not in known:
            hint = " (this route takes the stream in its JSON body)" if key == "stream" and _body_has(dependant, "stream") else ""
            raise ApiError(422, f"unknown query parameter '{key[:40]}'{hint}")


def _body_has(dependant, field: str) -> bool:
    """Whether a route's JSON body has the field ``field`` (an ack's verdict body has no stream)."""
    for p in getattr(dependant, "body_params", None) or ():
        ann = p.field_info.annotation
        models = [t for t in (ann, *get_args(ann)) if hasattr(t, "model_fields")]  # Optional[Model] too
        if not models or any(field in m.model_fields for m in models):  # fields unknown: hint, as before
            return True
    return False


def _refusal(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _http(_, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI's words for a body it could not decode (not UTF-8, a charset it cannot read)
    msg = "request body is not valid JSON (UTF-8)" if exc.detail == "There was an error parsing the body" \
        else str(exc.detail)
    return _refusal(exc.status_code, msg, getattr(exc, "headers", None))  # 405's Allow


def _storage(_, exc: OSError) -> JSONResponse:
    # a full or read-only state directory (a snapshot, the catalog): the request's write did not
    # happen; the files are replaced atomically, so what was stored before is as it was
    where = f" {exc.filename}" if exc.filename else " the state directory"
    msg = one_line(f"cannot write{where}: {exc.strerror or exc}")
    log.warning(msg)
    return _refusal(507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 503, msg)


def error_handlers() -> dict[Any, Callable[[Request, Any], JSONResponse]]:
    """The app's exception handlers, by the exception each answers (FastAPI's ``exception_handlers``)."""
    plain: dict[Any, Callable[[Request, Any], JSONResponse]] = {
        ApiError: lambda _, exc: _refusal(exc.status, exc.message),
        StreamError: lambda _, exc: _refusal(exc.status, str(exc)),
        # a well-formed body whose values cannot be answered: as a validation error, 422
        QueryError: lambda _, exc: _refusal(422, str(exc)),
        CatalogError: lambda _, exc: _refusal(exc.status, str(exc)),
        HappenedError: lambda _, exc: _refusal(exc.status, str(exc)),
        # the alert store cannot be written (disk full): try later
        OutboxError: lambda _, exc: _refusal(503, " ".join(str(exc).split()) or "alert store unavailable"),
        RequestValidationError: lambda _, exc: _refusal(*validation_message(exc)),
        StarletteHTTPException: _http,
        OSError: _storage,
        Exception: lambda _, exc: JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500),
    }
    return {kind: _coroutine(handler) for kind, handler in plain.items()}


def _coroutine(handler: Callable[[Request, Any], JSONResponse]):
    """``handler`` as a coroutine: Starlette runs a plain exception handler in a worker thread."""
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return handler(request, exc)
    return handle
