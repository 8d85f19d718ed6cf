"""What rests in the basket: per item, its stay in the basket zone while it was never taken out.

An item left in the basket is never picked up, so it leaves no item event (item_events.py names
handlings); what the ``left_in_basket`` rule reads instead is each item's stay: from its first
detection, at rest in the basket zone, to its last there. A track first seen elsewhere, or lifted (read
as held with its box moved off where it lay), or seen outside the basket on ``LEAVE_FRAMES`` of its
detections, was handled: it has no stay. Read as held where it lies (a hand reaching past it for another
item), it stays.

The head misses an item at rest in the basket often enough (one frame in two or three) that its track
ends and a new one starts where it lay. So a stay whose track ended is ``lost``, not yet gone: a new
track first seen at rest where it lay (``REJOIN_IOU``) within ``REJOIN_S`` of its last detection goes on
with it (one item, one stay, one alert). A stay
lost for longer went out of view with the basket (``carried_out``: the customer left with it), unless
another item was seen at rest in the basket since (then it was taken out unseen).

    watch = BasketWatch(zones)
    watch.update(step, t)            # per frame, after the tracker
    watch.stays((t0, t1))            # [Stay]: the live, lost and recently carried out ones overlapping it
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .head_decode import box_iou
from .tracker import HELD, Track, TrackStep
from .zones import Zones

ACTIVITIES = ("in_basket", "carried_out")  # what a stay is, as an event: still seen there / gone with the basket
LEAVE_FRAMES = 2          # detections lifted or outside the basket that take an item out (one is box jitter)
MAX_ENDED = 128           # ended stays kept: a few baskets' worth, far more than a transaction's look back needs
REJOIN_S = 8.0            # a lost stay waits this long after its last detection for a new track where it lay
REJOIN_IOU = 0.3          # a new track's first box over a lost stay's last box: the same item
STILL_IOU = 0.5           # a box read as held over its box at rest by less than this: lifted (not a hand near it)
STAY_COLS = ("track_id", "class_id", "start", "last", "score", "out", "x1", "y1", "x2", "y2", "state", "item")
LIVE, CARRIED_OUT, LOST = 0, 1, 2   # the ``state`` column (a snapshot's ``ended`` flag before: 0 or 1)


@dataclass
class Stay:
    track_id: int
    class_id: int
    start: float           # first detection, at rest in the basket
    last: float            # last detection at rest in the basket
    score: float           # the track's mean detection score
    out: int = 0           # detections lifted or outside the basket so far
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # its last box in the basket
    ended: bool = False    # its track ended in the basket and no new one went on with it: carried out
    item: int = -1         # the item: its first track's id (a stay goes on over the tracks of one item)

    def __post_init__(self) -> None:
        if self.item < 0:
            self.item = self.track_id

    @property
    def activity(self) -> str:
        return ACTIVITIES[1] if self.ended else ACTIVITIES[0]

    def row(self, state: int) -> list[float]:
        return [self.track_id, self.class_id, self.start, self.last, self.score, self.out, *self.box, state, self.item]


class BasketWatch:
    def __init__(self, zones: Zones) -> None:
        self.zones = zones
        self.live: dict[int, Stay] = {}
        self.handled: set[int] = set()   # live tracks taken out (or first seen elsewhere): never a stay again
        self.ended: deque[Stay] = deque(maxlen=MAX_ENDED)
        self.lost: deque[Stay] = deque(maxlen=MAX_ENDED)   # tracks ended, waiting REJOIN_S for a new one

    def update(self, step: TrackStep, t: float) -> None:
        while self.lost and t - self.lost[0].last > REJOIN_S:   # kept in order of their last detection
            gone = self.lost.popleft()
            # the basket leaves with all its items: while another is still seen at rest there, this one
            # was taken out unseen (a hand hid the lift), not carried out
            if not any(s.last > gone.last for s in self.live.values()):
                gone.ended = True
                self.ended.append(gone)
        for tr in step.live:
            if tr.track_id not in step.seen or tr.track_id in self.handled:
                continue
            _, x1, y1, x2, y2, held = tr.history[-1]
            box = (x1, y1, x2, y2)
            in_basket = self.zones.zone_of((x1 + x2) / 2, (y1 + y2) / 2) == "basket"
            stay = self.live.get(tr.track_id)
            if stay is None and len(tr.history) == 1 and in_basket:
                stay = self._rejoin(box)   # the same item, seen again where it lay: its stay goes on
                if stay is not None:
                    stay.track_id, stay.out = tr.track_id, 0
                    self.live[tr.track_id] = stay
            if stay is None:
                # no stay yet: one begins at rest in the basket; out of it, or lifted, the item was handled
                if not in_basket or (held >= HELD and _iou(box, tr.history[0][1:5]) < STILL_IOU):
                    self.handled.add(tr.track_id)
                elif held < HELD:
                    self.live[tr.track_id] = Stay(tr.track_id, tr.class_id, tr.start, t, _score(tr), box=box)
                continue
            if not in_basket or (held >= HELD and _iou(box, stay.box) < STILL_IOU):
                stay.out += 1
                if stay.out >= LEAVE_FRAMES:
                    del self.live[tr.track_id]
                    self.handled.add(tr.track_id)
                continue
            # at rest there: seen again (read as held where it lies, a hand over the basket reaching for
            # another item, it is neither seen at rest nor taken out)
            if held < HELD:
                stay.last, stay.class_id, stay.score, stay.box = t, tr.class_id, _score(tr), box
        for tr in step.ended:
            self.handled.discard(tr.track_id)
            stay = self.live.pop(tr.track_id, None)
            if stay is not None:
                self.lost.append(stay)

    def _rejoin(self, box: tuple[float, float, float, float]) -> Stay | None:
        """The lost stay whose last box a new track's first box overlaps most (at ``REJOIN_IOU`` or more),
        taken off the lost ones; None if there is none."""
        if not self.lost:
            return None
        iou = box_iou(np.asarray([box], np.float32), np.asarray([s.box for s in self.lost], np.float32))[0]
        k = int(np.argmax(iou))
        if iou[k] < REJOIN_IOU:
            return None
        stay = self.lost[k]
        del self.lost[k]
        return stay

    def flush(self) -> None:
        """The stream ends: its live and lost stays end with it (not carried out: the video stopped)."""
        self.live.clear()
        self.lost.clear()
        self.handled.clear()

    def stays(self, window: tuple[float, float]) -> list[Stay]:
        a, b = window
        return [s for s in (*self.ended, *self.lost, *self.live.values()) if s.start <= b and s.last >= a]

    # -- snapshots: one row per stay (STAY_COLS), handled tracks by id
    def state_dict(self) -> dict[str, np.ndarray]:
        rows = [s.row(CARRIED_OUT) for s in self.ended] + [s.row(LOST) for s in self.lost] \
            + [s.row(LIVE) for s in self.live.values()]
        return {"basket": np.asarray(rows, np.float64).reshape(-1, len(STAY_COLS)),
                "basket_handled": np.asarray(sorted(self.handled), np.float64)}

    def load_state_dict(self, sd: dict[str, np.ndarray], tracks: list[Track]) -> None:
        """Live stays of tracks no longer live (a restart loses them) are lost: a new track where they
        lay goes on with them. A snapshot without the ``item`` column has one track an item."""
        live = {tr.track_id for tr in tracks}
        self.live, self.ended, self.lost = {}, deque(maxlen=MAX_ENDED), deque(maxlen=MAX_ENDED)
        rows = np.asarray(sd.get("basket", np.zeros((0, len(STAY_COLS)))), np.float64)
        width = rows.shape[-1] if rows.ndim == 2 and rows.size else len(STAY_COLS)
        for r in rows.reshape(-1, width).tolist():
            state = int(r[10])
            stay = Stay(int(r[0]), int(r[1]), r[2], r[3], r[4], int(r[5]), (r[6], r[7], r[8], r[9]),
                        state == CARRIED_OUT, int(r[11]) if width > 11 else -1)
            if state == CARRIED_OUT:
                self.ended.append(stay)
            elif state == LIVE and stay.track_id in live:
                self.live[stay.track_id] = stay
            else:
                self.lost.append(stay)
        self.lost = deque(sorted(self.lost, key=lambda s: s.last), maxlen=MAX_ENDED)
        self.handled = {int(x) for x in np.asarray(sd.get("basket_handled", np.zeros(0))).reshape(-1).tolist()} & live

    @staticmethod
    def max_nbytes(max_tracks: int) -> int:
        """The most bytes its snapshot arrays take: every stay, carried out, lost or live, and every live
        track handled."""
        return 8 * (len(STAY_COLS) * (2 * MAX_ENDED + max_tracks) + max_tracks)


def _iou(a, b) -> float:
    return float(box_iou(np.asarray([a], np.float32), np.asarray([b], np.float32))[0, 0])


def _score(tr: Track) -> float:
    return tr.score_sum / max(1, tr.hits)
