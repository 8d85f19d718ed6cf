"""What every router takes from the app it is part of: the ``Streams`` hub and the API's limits
(``request.app.state``, put there by ``create_app``), and the token check. One app per hub: the
routers hold no state of their own.

The dependencies are coroutines: FastAPI runs a plain function dependency in a worker thread, a hop
per request that the query routes, awaiting their batch on the event loop, would pay for nothing.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from edge_runtime.serve.api_errors import ApiError
from edge_runtime.serve.streams import Streams


@dataclass(frozen=True)
class ApiSettings:
    """What ``create_app`` was given besides the hub."""
    token: str | None
    max_image_pixels: int
    max_streams: int


async def _hub(request: Request) -> Streams:
    return request.app.state.streams


async def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


Hub = Annotated[Streams, Depends(_hub)]
Settings = Annotated[ApiSettings, Depends(_settings)]


async def _auth(request: Request, settings: Settings) -> None:
    token = settings.token
    if not token:
        return
    got = request.headers.get("x-lvm-token")
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        got = bearer[7:].strip()
    if not got or not hmac.compare_digest(got.encode(), token.encode()):
        raise ApiError(401, "missing or wrong token (Authorization: Bearer <token>)")


# the dependencies of every route but /healthz, /readyz and the dashboard's page and files
GUARDED = [Depends(_auth)]
