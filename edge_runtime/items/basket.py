"""What rests in the basket: per item track, its stay in the basket zone while it was never taken out.

An item left in the basket is never picked up, so it leaves no item event (item_events.py names
handlings); what the ``left_in_basket`` rule reads instead is each track's stay: from its first
detection, at rest in the basket zone, to its last there. A track first seen elsewhere, or held, or
seen outside the basket on ``LEAVE_FRAMES`` of its detections, was handled: it has no stay. A stay
whose track ended in the basket went out of view with the basket (the customer left with it).

    watch = BasketWatch(zones)
    watch.update(step, t)            # per frame, after the tracker
    watch.stays((t0, t1))            # [Stay]: the live ones and the recently ended ones overlapping it
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .tracker import HELD, Track, TrackStep
from .zones import Zones

ACTIVITIES = ("in_basket", "carried_out")  # what a stay is, as an event: still seen there / gone with the basket
LEAVE_FRAMES = 2          # detections held or outside the basket that take an item out (one is box jitter)
MAX_ENDED = 128           # ended stays kept: a few baskets' worth, far more than a transaction's look back needs
STAY_COLS = ("track_id", "class_id", "start", "last", "score", "out", "x1", "y1", "x2", "y2", "ended")


@dataclass
class Stay:
    track_id: int
    class_id: int
    start: float           # first detection, at rest in the basket
    last: float            # last detection at rest in the basket
    score: float           # the track's mean detection score
    out: int = 0           # detections held or outside the basket so far
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # its last box in the basket
    ended: bool = False    # its track ended in the basket: carried out with it

    @property
    def activity(self) -> str:
        return ACTIVITIES[1] if self.ended else ACTIVITIES[0]

    def row(self) -> list[float]:
        return [self.track_id, self.class_id, self.start, self.last, self.score, self.out, *self.box, float(self.ended)]


class BasketWatch:
    def __init__(self, zones: Zones) -> None:
        self.zones = zones
        self.live: dict[int, Stay] = {}
        self.handled: set[int] = set()   # live tracks taken out (or first seen elsewhere): never a stay again
        self.ended: deque[Stay] = deque(maxlen=MAX_ENDED)

    def update(self, step: TrackStep, t: float) -> None:
        for tr in step.live:
            if tr.track_id not in step.seen or tr.track_id in self.handled:
                continue
            _, x1, y1, x2, y2, held = tr.history[-1]
            inside = held < HELD and self.zones.zone_of((x1 + x2) / 2, (y1 + y2) / 2) == "basket"
            stay = self.live.get(tr.track_id)
            if stay is None:
                if inside and len(tr.history) == 1:
                    self.live[tr.track_id] = Stay(tr.track_id, tr.class_id, t, t, _score(tr), box=(x1, y1, x2, y2))
                else:
                    self.handled.add(tr.track_id)
                continue
            if not inside:
                stay.out += 1
                if stay.out >= LEAVE_FRAMES:
                    del self.live[tr.track_id]
                    self.handled.add(tr.track_id)
                continue
            stay.last, stay.class_id, stay.score, stay.box = t, tr.class_id, _score(tr), (x1, y1, x2, y2)
        for tr in step.ended:
            self.handled.discard(tr.track_id)
            stay = self.live.pop(tr.track_id, None)
            if stay is not None:
                stay.ended = True
                self.ended.append(stay)

    def flush(self) -> None:
        """The stream ends: its live stays end with it (not carried out: the video stopped)."""
        self.live.clear()
        self.handled.clear()

    def stays(self, window: tuple[float, float]) -> list[Stay]:
        a, b = window
        return [s for s in (*self.ended, *self.live.values()) if s.start <= b and s.last >= a]

    # -- snapshots: one row per stay (STAY_COLS), handled tracks by id
    def state_dict(self) -> dict[str, np.ndarray]:
        rows = [s.row() for s in (*self.ended, *self.live.values())]
        return {"basket": np.asarray(rows, np.float64).reshape(-1, len(STAY_COLS)),
                "basket_handled": np.asarray(sorted(self.handled), np.float64)}

    def load_state_dict(self, sd: dict[str, np.ndarray], tracks: list[Track]) -> None:
        """Stays of tracks no longer live (a restart loses them) end as they were: not carried out."""
        live = {tr.track_id for tr in tracks}
        self.live, self.ended = {}, deque(maxlen=MAX_ENDED)
        for r in np.asarray(sd.get("basket", np.zeros((0, len(STAY_COLS)))), np.float64).reshape(-1, len(STAY_COLS)).tolist():
            stay = Stay(int(r[0]), int(r[1]), r[2], r[3], r[4], int(r[5]), (r[6], r[7], r[8], r[9]), bool(r[10]))
            if stay.ended:
                self.ended.append(stay)
            elif stay.track_id in live:
                self.live[stay.track_id] = stay
        self.handled = {int(x) for x in np.asarray(sd.get("basket_handled", np.zeros(0))).reshape(-1).tolist()} & live

    @staticmethod
    def max_nbytes(max_tracks: int) -> int:
        """The most bytes its snapshot arrays take: every stay, ended or live, and every live track handled."""
        return 8 * (len(STAY_COLS) * (MAX_ENDED + max_tracks) + max_tracks)


def _score(tr: Track) -> float:
    return tr.score_sum / max(1, tr.hits)
