"""HTTP routes of the streams one runtime serves (``edge_runtime.serve.streams.Streams``):

    POST   /v1/session/reset    a new session on one stream: its memory emptied, its clock goes on
    POST   /v1/snapshot         write one stream's snapshot now
    GET    /v1/streams          every stream: name, source, state, coverage, frames, fps, error
    POST   /v1/streams          {"name": ..., "source": URI, "realtime": false, "duration": null, "zones": null}:
                                add and start (zones: as PUT /v1/streams/{name}/zones, api_zones.py)
    GET    /v1/streams/{name}   that stream's status (what /v1/status?stream=NAME returns)
    DELETE /v1/streams/{name}   stop it (final snapshot), forget it; its snapshot stays on disk

Every other data route takes an optional ``stream`` (a query parameter, or a field of a query
body); without it, the default stream answers. Errors are the API's one-line bodies: 404 an
unknown stream, 409 a duplicate name (or too many streams), 422 a name that is not a safe file
name or a source that cannot be opened.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.serve.api_deps import GUARDED, Hub, Settings
from edge_runtime.serve.api_errors import ApiError
from edge_runtime.serve.api_zones import ZONES_HELP, zones_from_body
from edge_runtime.serve.streams import StreamError, check_name

# Each stream holds its own memory, intake thread and source; a cap keeps a client (or a fuzzer)
# from starting streams until the box runs out of memory or threads.
DEFAULT_MAX_STREAMS = 64
STREAM_HELP = "the stream to ask (GET /v1/streams); default: the default stream"
# the ``stream`` query parameter of the GET routes and of reset / snapshot
StreamParam = Annotated[Union[str, None], Query(description=STREAM_HELP)]


class StreamBody(BaseModel):
    """The optional JSON body of reset / snapshot: the stream, as the query routes name it."""
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    stream: str | None = Field(None, description=STREAM_HELP)


def chosen_stream(query: str | None, body: StreamBody | None) -> str | None:
    """The stream a reset / snapshot names, as ``?stream=`` or in its body (StreamError 422 when they differ)."""
    named = body.stream if body is not None else None
    if query is not None and named is not None and query != named:
        raise StreamError(f"the query names stream {query!r} and the body {named!r}: name one", 422)
    return query if query is not None else named


class AddStream(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    name: str = Field(description="stream name: 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit "
                                  "(it names the stream's state folder)")
    source: str = Field(description="source URI: camera index, /dev/videoN, csi://N, rtsp://..., a file, "
                                    "demo://checkout?seed=N")
    realtime: bool = Field(False, description="pace files / demo at their own speed")
    duration: float | None = Field(None, gt=0, allow_inf_nan=False,
                                   description="stop after this many seconds of stream time (live sources: wall time)")
    zones: dict[str, Any] | None = Field(None, description=ZONES_HELP + "; they win over those kept in its state "
                                         "dir; null: kept ones, else proposed from the event head")


router = APIRouter(dependencies=GUARDED)


@router.post("/v1/session/reset", tags=["stream"])
def session_reset(hub: Hub, stream: StreamParam = None, body: StreamBody | None = None) -> dict[str, Any]:
    """A new session on one stream (``?stream=`` or a body's ``stream``; default: the default
    stream): its memory and SVD emptied, its clock goes on."""
    return hub.get(chosen_stream(stream, body)).reset()


@router.post("/v1/snapshot", tags=["stream"])
def take_snapshot(hub: Hub, stream: StreamParam = None, body: StreamBody | None = None) -> dict[str, Any]:
    """Write one stream's snapshot now (``?stream=`` or a body's ``stream``)."""
    rt = hub.get(chosen_stream(stream, body))
    if rt.state_dir is None:
        raise ApiError(409, "no state directory configured (start with --state-dir)")
    return rt.snapshot()


@router.get("/v1/streams", tags=["streams"])
def list_streams(hub: Hub, settings: Settings) -> dict[str, Any]:
    """Every stream, the default one marked."""
    return {"streams": hub.summary(), "max_streams": settings.max_streams}


@router.post("/v1/streams", tags=["streams"], status_code=201)
def add_stream(body: AddStream, hub: Hub, settings: Settings) -> dict[str, Any]:
    """Add a stream and start it; answers its status (state 'connecting' until the first frame)."""
    check_name(body.name)
    if body.name not in hub.names() and len(hub) >= settings.max_streams:
        raise StreamError(f"at most {settings.max_streams} streams run at once; remove one first", 409)
    zones = zones_from_body(body.zones)
    rt = hub.add(body.name, body.source, realtime=body.realtime, duration=body.duration, zones=zones)
    return {**rt.status(), "streams": hub.names()}


@router.get("/v1/streams/{name}", tags=["streams"])
def get_stream(name: str, hub: Hub) -> dict[str, Any]:
    return {**hub.get(name).status(), "streams": hub.names()}


@router.delete("/v1/streams/{name}", tags=["streams"])
def remove_stream(name: str, hub: Hub) -> dict[str, Any]:
    """Stop the stream (drain, final snapshot) and forget it. Adding it again with the same
    source goes on from its snapshot."""
    return hub.remove(name)
