"""HTTP routes of a stream's checkout zones (basket, scanner, counter, bag: polygons in image
coordinates from 0 to 1), which its item events are decided in, and the scanner's light (a small patch
whose pixels tell the light's colour):

    GET /v1/streams/{name}/zones   {"zones": {zone: [[x, y], ...]} | null, "origin": "configured" |
                                   "proposed" | null, "status": the item path's zones line, "light":
                                   where the scanner light's colour is read,
                                   "saved": the file they are kept in | null}
    PUT /v1/streams/{name}/zones   {"zones": {zone: [[x, y], ...]}} sets them; {"zones": null} goes back
                                   to proposing them from the event head. Kept in the stream's state dir
                                   (zones.json) for the next start, where the config's zones win.

404 an unknown stream, 409 a stream without an event path (its bundle has no event head), 422 a
polygon that is not one (fewer than 3 points, a point outside the frame, an unknown zone name).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.items.zones import ALL_ZONES, Zones
from edge_runtime.serve.api_deps import GUARDED, Hub
from edge_runtime.serve.api_errors import ApiError
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.serve.zones_file import ZONES_FILE

ZONES_HELP = (f"{{zone: [[x, y], ...]}} with zone one of {', '.join(ALL_ZONES)}, each a polygon of 3 or more "
              "points in image coordinates from 0 to 1 (x right, y down)")


class ZonesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zones: dict[str, Any] | None = Field(description=ZONES_HELP + "; null: propose them again from the event head")


class ZonesReply(BaseModel):
    zones: dict[str, list[list[float]]] | None = Field(description="the zones the stream's item events are decided "
                                                                    "in; null while they are being proposed")
    origin: str | None = Field(description="configured (the config's, or set here) | proposed (from the event "
                                           "head's zone map) | null (being proposed)")
    status: str = Field(description="the item path's zones line, as the stream's status shows it")
    light: str = Field(description="where the scanner light's colour is read: the event head's read alone while "
                                   "the light zone is proposed, or the light zone's pixels (configured | proposed)")
    saved: str | None = Field(description="the file they are kept in for the next start (zones.json in the "
                                          "stream's state dir); null: none kept, they are proposed at the next start "
                                          "unless the config gives them")


def zones_from_body(data: dict[str, Any] | None) -> Zones | None:
    """A request's zones checked (ApiError 422, one line naming the zone); None stays None."""
    if data is None:
        return None
    try:
        return Zones.from_dict(data)
    except ValueError as err:
        raise ApiError(422, f"zones: {err}") from None


def _reply(rt: Runtime) -> dict[str, Any]:
    items = rt.event_items()
    zones = items.zones  # read once: the intake thread may propose them meanwhile
    kept = rt.state_dir / ZONES_FILE if rt.state_dir is not None else None
    status = items.status()
    return {"zones": zones.to_dict() if zones is not None else None, "origin": items.zones_origin,
            "status": status["zones"], "light": status["light"],
            "saved": str(kept) if kept is not None and kept.is_file() else None}


router = APIRouter(dependencies=GUARDED, tags=["streams"])


@router.get("/v1/streams/{name}/zones", response_model=ZonesReply)
def get_zones(name: str, hub: Hub) -> dict[str, Any]:
    """The stream's zones and where they come from."""
    return _reply(hub.get(name))


@router.put("/v1/streams/{name}/zones", response_model=ZonesReply)
def put_zones(name: str, body: ZonesBody, hub: Hub) -> dict[str, Any]:
    """Set the stream's zones (null: propose them again); its item tracks start over on them, the item
    events decided so far stay."""
    rt = hub.get(name)
    rt.event_items()  # a stream without an event path is refused before its body is judged
    rt.set_zones(zones_from_body(body.zones))
    return _reply(rt)
