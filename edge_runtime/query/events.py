"""What happened: one event the memory (and the timeline, when the bundle has one) shows.

The one record that "what happened" answers (API, CLI, ask, the dashboard's strip) and the standing
alert rules read. Products are named from the catalog, else by the bundle's class name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in [0, 1] of the frame


@dataclass(frozen=True)
class Event:
    activity: str                 # the bundle's activity label
    activity_id: int
    product: str                  # catalog name, else the bundle's class name
    start: float                  # stream seconds
    end: float
    confidence: float             # calibrated p(right), 0..1
    box: Box | None = None        # where it was, at the middle of the interval
    tracks: tuple[str, ...] = ()  # what it was read from: "memory", "timeline", "items"
    item: int | None = None       # the item's track id, for an event read from the item tracks
    paid: bool | None = None      # an item event's item: whether a scan (or a till read) was matched to it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = list(self.box) if self.box is not None else None
        d["tracks"] = list(self.tracks)
        for key in ("item", "paid"):  # only an item event has them
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        """The inverse of ``to_dict`` (also after a JSON round trip): ``Event.from_dict(e.to_dict()) == e``."""
        box = d.get("box")
        return cls(str(d["activity"]), int(d["activity_id"]), str(d["product"]), float(d["start"]), float(d["end"]),
                   float(d["confidence"]), tuple(float(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
                   tuple(str(t) for t in d.get("tracks", ())),
                   int(d["item"]) if d.get("item") is not None else None,
                   bool(d["paid"]) if d.get("paid") is not None else None)
