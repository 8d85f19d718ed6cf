"""An alert's evidence: a few small JPEGs of its item, before, at and after its event, kept with it
in the outbox (edge_runtime/alerts/outbox.py) and served by ``GET /v1/alerts/{id}/evidence``.

Each stream with an event path keeps the recent crops of its item tracks in a ring bounded in bytes
(``StreamState.evidence``, edge_runtime/items/evidence_ring.py); when a rule raises an alert about an
item (its events carry the track id, ``item``), up to three of that track's crops are copied out of the
ring into the outbox, in the alert's own transaction. Nothing else of the video is kept.

    alerts:
      evidence:
        keep: item              # item: the item's region (default); frame: the whole frame; off: none
        streams: {lane2: off}   # per-stream changes
        ring_bytes: 2000000     # each stream's ring of recent crops, at most this many bytes
        url_base: http://lane3.store.lan:8321   # makes the URLs in delivered alerts absolute
        webhook_inline: false   # true: webhooks get the JPEGs in the alert's JSON, base64
"""
from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

Keep = Literal["item", "frame", "off"]
MAX_IMAGES = 3


def _off(v: Any) -> Any:
    """YAML reads a bare ``off`` as false."""
    return "off" if v is False else v


class EvidenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: Keep = Field("item", description="what is kept with each alert: item (the item's region), frame "
                                           "(the whole frame) or off")
    streams: dict[str, Keep] = Field(default_factory=dict, description="stream name -> item | frame | off")
    ring_bytes: int = Field(2_000_000, ge=50_000, le=500_000_000,
                            description="each stream's ring of recent crops holds at most this many bytes")
    url_base: str | None = Field(None, description="http(s)://host[:port] of this runtime's API as a consumer "
                                                   "reaches it: the evidence URLs in delivered alerts are absolute")
    webhook_inline: bool = Field(False, description="webhooks get each alert's JPEGs inline (base64)")

    _keep = field_validator("keep", mode="before")(_off)

    @field_validator("streams", mode="before")
    @classmethod
    def _streams(cls, v: Any) -> Any:
        return {k: _off(x) for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("url_base")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = urlsplit(v)
        if p.scheme not in ("http", "https") or not p.hostname or p.query or p.fragment:
            raise ValueError(f"url_base {v!r}: expected http(s)://host[:port]")
        return v.rstrip("/")

    def keep_for(self, stream: str) -> str:
        return self.streams.get(stream, self.keep)


def image_url(alert_id: str, k: int, base: str | None = None) -> str:
    return f"{base or ''}/v1/alerts/{alert_id}/evidence/{k}.jpg"


def item_of(alert) -> tuple[int, float, float] | None:
    """(track id, start, end) of the item an alert is about: the evidence event with a track id that
    matches the alert's interval best (the first such one); None for an alert of no tracked item."""
    events = [e for e in alert.evidence if e.get("item") is not None]
    if not events:
        return None
    e = min(events, key=lambda e: abs(float(e.get("start", 0)) - alert.start) + abs(float(e.get("end", 0)) - alert.end))
    return int(e["item"]), float(e.get("start", alert.start)), float(e.get("end", alert.end))


def pick(alert, ring) -> list[tuple[str, Any]]:
    """(label, Crop) of ``alert``'s item from a stream's ring (edge_runtime/items/evidence_ring.py):
    before, at and after its event; [] when the alert names no item or the ring holds none of it."""
    item = item_of(alert)
    if ring is None or item is None:
        return []
    return ring.pick(*item)[:MAX_IMAGES]


def images(alert_id: str, crops: list[tuple[str, Any]], wall_origin: float | None, base: str | None) -> list:
    """The alert's ``images`` field: what each JPEG is, and where the API serves it."""
    from edge_runtime.alerts.record import EvidenceImage

    return [EvidenceImage(label=label, t=round(c.t, 3), wall=None if wall_origin is None else round(wall_origin + c.t, 3),
                          bytes=len(c.jpeg), url=image_url(alert_id, k, base)) for k, (label, c) in enumerate(crops)]
