"""The alert record: what the outbox stores, the API lists and the sinks deliver (as its JSON).

An alert's id is derived from what it is about (site, stream, rule, product and the start of its
interval, rounded down to ``bucket_s``), not drawn at random: a rule that raises the same alert
again (after a restart, or from an overlapping evaluation window) produces the same id, the outbox
keeps the first one, and a consumer that dedupes by id sees one alert however often it was sent.
Two alerts of one rule about one product on one lane that start within the same bucket are one
alert.

Staff acknowledge an alert with an outcome, its verdict: ``confirmed`` (the alert was right),
``false_alert``, or ``customer_fixed`` (it was right, and the customer paid once told: counted as
right). An alert keeps every verdict given, oldest first; the last one counts.

An alert whose item was paid or put back soon after it (the customer scanned it once nudged, or it was
held over the bag, not bagged) is ``cleared`` by the runtime (edge_runtime/alerts/cleared.py): it stays
stored and listed, and is sent again with ``cleared`` set. That is no verdict: staff still give theirs.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_BUCKET_S = 30.0
OUTCOMES = ("confirmed", "false_alert", "customer_fixed")
RIGHT_OUTCOMES = ("confirmed", "customer_fixed")  # the alert was real: what a rule's precision counts as right
Outcome = Literal["confirmed", "false_alert", "customer_fixed"]
MAX_NOTE = 200
MAX_BY = 64


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Outcome = Field(description="confirmed, false_alert or customer_fixed (real, and paid once told)")
    at: float = Field(description="when it was given, unix seconds")
    note: str | None = Field(None, max_length=MAX_NOTE, description="what staff wrote")
    by: str | None = Field(None, max_length=MAX_BY, description="who gave it")


class Cleared(BaseModel):
    model_config = ConfigDict(extra="forbid")

    why: Literal["scanned", "put_back"] = Field(description="scanned: a till read or the scanner's light on the "
                                                "item after the alert; put_back: the item went back to the basket")
    t: float = Field(description="when, stream seconds")
    after_s: float = Field(description="seconds after the alert was raised, stream time")
    item: int = Field(description="the item track that was scanned or put back (the alert's own, or the item "
                      "taken out of the bag again)")
    at: float = Field(description="when the runtime saw it, unix seconds")


class EvidenceImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="before, at or after the event")
    t: float = Field(description="when it was taken, stream seconds")
    wall: float | None = Field(None, description="when it was taken, unix seconds (live sources; else null)")
    bytes: int = Field(description="the JPEG's size")
    url: str = Field(description="where the API serves it (GET, image/jpeg)")


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="stable id: the same alert raised again has the same id (consumers dedupe by it)")
    rule: str = Field(description="the rule that raised it (e.g. bagged_without_scan)")
    site: str = Field(description="the store (alerts.site of the runtime config)")
    stream: str = Field(description="the lane's stream name")
    product: str = Field(description="the product it is about: catalog name, else the bundle's class name")
    start: float = Field(description="start of the interval, stream seconds")
    end: float = Field(description="end of the interval, stream seconds")
    box: list[float] | None = Field(None, description="where the product was: x1, y1, x2, y2 in [0, 1] of the frame")
    confidence: float = Field(description="how likely the alert is right, 0-1")
    evidence: list[dict[str, Any]] = Field(default_factory=list, description="the events the rule read")
    raised_at: float = Field(description="when it was raised, unix seconds (wall clock)")
    stream_time: float | None = Field(None, description="the stream time of the commit that raised it")
    wall_start: float | None = Field(None, description="start as unix seconds, for live sources (else null)")
    status: Literal["open", "acked"] = "open"
    acked_at: float | None = Field(None, description="when it was first acknowledged, unix seconds")
    verdicts: list[Verdict] = Field(default_factory=list, description="the outcomes staff gave it, oldest first; "
                                                                      "the last one counts")
    p_right: float | None = Field(None, description="how likely staff would call it right, by the lane's verifier "
                                  "fitted on their verdicts (`lvm-edge alerts learn`); null: none for its rule")
    held: bool = Field(False, description="held by the verifier (p_right below alerts.verifier.hold_below): "
                       "stored and listed, not sent to the sinks or nudged")
    images: list[EvidenceImage] = Field(default_factory=list, description="JPEGs of its item kept with it "
                                        "(GET /v1/alerts/{id}/evidence); none when evidence is off")
    cleared: Cleared | None = Field(None, description="its item was paid or put back after it (the runtime saw "
                                    "it; no verdict): null while not")

    @property
    def outcome(self) -> str | None:
        """The outcome that counts (the last verdict's); None before any."""
        return self.verdicts[-1].outcome if self.verdicts else None

    def payload(self) -> bytes:
        """The JSON the sinks deliver."""
        return self.model_dump_json().encode()


def alert_id(site: str, stream: str, rule: str, product: str, start: float, bucket_s: float = DEFAULT_BUCKET_S) -> str:
    bucket = math.floor(float(start) / bucket_s) if bucket_s > 0 else float(start)
    key = "\x1f".join((site, stream, rule, product, str(bucket)))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def another_item_id(taken: str, start: float) -> str:
    """The id of an alert whose ``alert_id`` is ``taken`` by another item (the same product, another
    interval in the same bucket): that id with the alert's own start, to the second."""
    return hashlib.sha256(f"{taken}\x1f{float(start):.0f}".encode()).hexdigest()[:24]


def from_draft(draft: dict[str, Any], *, site: str, stream: str, stream_time: float | None,
               wall_origin: float | None = None, bucket_s: float = DEFAULT_BUCKET_S,
               now: float | None = None) -> Alert:
    """A rule's draft ({rule, product, start, end, box, confidence, evidence}) as an Alert of this
    site and stream. ValueError (one line) for a draft missing a field."""
    try:
        rule, product = str(draft["rule"]), str(draft["product"])
        start, end = float(draft["start"]), float(draft["end"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"alert draft without a usable {err}: {sorted(draft)}") from None
    box = draft.get("box")
    evidence = [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in draft.get("evidence") or []]
    return Alert(id=alert_id(site, stream, rule, product, start, bucket_s), rule=rule, site=site, stream=stream,
                 product=product, start=start, end=end, box=list(box) if box is not None else None,
                 confidence=float(draft.get("confidence", 0.0)), evidence=evidence,
                 raised_at=time.time() if now is None else now, stream_time=stream_time,
                 wall_start=wall_origin + start if wall_origin is not None else None)
