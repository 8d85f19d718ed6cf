"""Item events from item tracks: what was done to each tracked item, decided as soon as its evidence is
complete. A labeler is one unit behind a small contract (``ItemLabeler``) found by name in
``LABELERS``, so a trained temporal model can take the geometric one's place.

The geometric labeler reads each track as rests and handlings (held episodes): a handling is one
event, named by where it started and ended relative to the zones, how the item moved, and the
scanner light while the item was over the scanner:

- ended by the track's end: in the bag zone -> ``bag`` (not again for a handling begun in the bag zone of an
  item already gone into the bag: ``_gone_into_bag_before``); above every zone (out through the top edge)
  -> ``hand_over``; elsewhere (the shopper leaves with the basket) -> nothing;
- settled in the bag zone within ``SETTLE_DWELL_S`` of reaching it (still read as held, shrunk and put:
  ``_settled``) -> ``bag`` then, not when the item goes unseen;
- come to rest on the counter from the basket, still read as held (the hand near): ``pick_up`` then,
  once (the handling goes on, as the alert rules read it, and its set-down names nothing more);
- set down: back in the basket -> ``put_back``; out of the basket -> ``pick_up``; a green light (or a
  till read, ``match_till_read``) while over the scanner -> ``scan``; set down on the scanner, brought
  there from elsewhere, without a read -> ``pass_around`` (however long it was held or how close it
  came: an item held over the glass with no read is what the alert wants); grown toward the camera ->
  ``inspect``; held ``HOLD_MIN_S`` or longer -> ``hold``.

A bag is timed from the item leaving where it last lay still in its handling (``_left_rest``): one
handling often runs from the basket over the counter and the scanner to the bag.

``browse`` (a hand hovering over an untouched item) leaves no trace in an item track: this labeler
never names it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edge_runtime.checkout.catalog import ACTIVITY_IDS

from .head_decode import box_iou
from .tracker import HELD, Track, TrackStep
from .zones import ZONE_NAMES, Zones

HOLD_MIN_S = 5.0          # a hold lasts 6 s or more; a carry, a scan's wave or a bag at most ~4.5 s
INSPECT_GROWTH = 1.35     # box area over its area at rest: inspecting brings the item ~1.3-1.6x closer
LIFT_GROWTH = 1.18 ** 2   # any lifted item looks this much bigger (closer to the camera)
AREA_SMOOTHING = 0.3      # weight of a frame's box area in the running area
BAG_NAME_S = 0.4          # a bag is named by its frames from BAG_CARRY_S before the item reached the bag zone
BAG_CARRY_S = 1.0         # (the carry) to BAG_NAME_S after (chosen on held-out seed 1: docs/lab/alerts.md)
BAG_GONE_S = 0.4          # a held item unseen this long (2 frames) since it was last seen in the bag zone is bagged
                          # (seed 1, 103 unpaid bags: 0.6 s found 85 with 4 false alerts, 0.4 s 89 with 5)
ENTERING_GROWTH = 1.3     # a bag under way (an early nudge's cue) looks at most this much larger than at rest
                          # (seed 1: false early nudges at the default rates 11 -> 4, none found later: docs/lab/alerts.md)
TILL_TOLERANCE_S = 2.0    # a till read matches a track over the scanner this close in time
SETTLE_S = 0.4            # a held item in the bag zone whose box stays put (IoU SETTLE_IOU with its box this
SETTLE_IOU = 0.85         # long before) two frames running has been let go there: bagged then,
SETTLE_GROWTH = 1.0       # if it looks no larger than at rest before (held up close: a hold over the bag)
SETTLE_SHRINK = 0.75      # and has shrunk from its largest in the hand in the last SHRINK_WITHIN_S (gone down
SHRINK_WITHIN_S = 1.8     # into the bag just now; an item carried in and held there at one size has not)
                          # (seed 1 replayed: unpaid bags' alert p95 3.8 -> 1.8 s, found 89 -> 90 of 103, false
                          # 5 -> 6, and 2 -> 3 at the default rates; its largest in the last 1.8 s, not in the
                          # whole handling: seed 4's false alerts 3 -> 2, seed 1's 6 -> 5, its p95 1.5 -> 1.3 s:
                          # docs/lab/alerts.md)
SETTLE_DWELL_S = 4.0      # ... within this long of reaching the bag zone: a bag goes down into it in a few seconds; an
                          # item held over the bag longer (a hold) is bagged only once it goes unseen there


@dataclass(frozen=True)
class ItemEvent:
    activity: str
    activity_id: int
    class_id: int
    track_id: int
    start: float
    end: float
    confidence: float
    box: tuple[float, float, float, float]   # the track's box at the event's middle
    scanned_at: float | None                 # the green light or till read that scanned the item, if any

    def overlaps(self, a: float, b: float) -> bool:
        return self.start <= b and self.end >= a


class ItemLabeler(Protocol):
    """Per frame, the tracker's step and the scanner light -> the events decided at that frame."""

    def update(self, step: TrackStep, light: str | None, t: float) -> list[ItemEvent]: ...

    def flush(self) -> list[ItemEvent]: ...

    def match_till_read(self, t: float, class_id: int | None) -> int | None: ...

    entering: tuple[ItemEvent, ...]   # the bags under way as of the last frame (an early nudge's cue), else ()

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, sd: dict[str, np.ndarray], tracks: list[Track]) -> None: ...


@dataclass
class Handling:
    """One track's labeler state: its open handling (a held episode), its scan, its times over the
    scanner (for till reads)."""

    start: float | None = None        # the handling's first held frame; None while at rest
    start_zone: str | None = None
    rest_area: float = 0.0            # box area at rest before it
    max_area: float = 0.0
    flash_t: float | None = None      # a green light while over the scanner during it
    frames: int = 0                   # frames of the handling, detected or not
    detected: int = 0
    last_zone: str | None = None      # zone of the last detection
    last_rest_area: float = 0.0
    area: float = 0.0                 # running (smoothed) box area
    scanned_at: float | None = None   # the track's scan (light or till read), kept for later events
    bagged: bool = False              # bagged by settling in the bag zone, and not taken out since
    picked: bool = False              # this handling's pick-up named as the item came to rest on the counter
    red_t: float | None = None        # a red light while over the scanner during it: a read tried (no pass-around)
    # detection times over the scanner: the last 8 s of them, and the handling's first
    over_scanner: list[float] = field(default_factory=list)

    def lit(self, light: str | None, t: float) -> None:
        """The scanner light at ``t`` while the open handling's item is over the scanner."""
        if light == "green":
            self.flash_t = t
        elif light == "red":
            self.red_t = t

    def over_since_start(self) -> list[float]:
        """The open handling's detection times over the scanner."""
        return [s for s in self.over_scanner if s >= self.start]


class GeometricLabeler:
    """Events from each track's path relative to ``zones``, its held state and the scanner light."""

    activities = ("pick_up", "scan", "bag", "put_back", "hold", "inspect", "hand_over", "pass_around")

    def __init__(self, zones: Zones) -> None:
        self.zones = zones
        self.top = zones.top if zones.top is not None else 0.0   # above this the item is off the counter
        self.state: dict[int, Handling] = {}
        self._live: dict[int, Track] = {}
        self._green = False   # the last frame's light (a flash is read once, when it comes on)
        # the bags under way as of the last frame (``_entering``): replaced whole each frame, so another
        # thread reads one consistent tuple
        self.entering: tuple[ItemEvent, ...] = ()

    def update(self, step: TrackStep, light: str | None, t: float) -> list[ItemEvent]:
        out = []
        self._live = {tr.track_id: tr for tr in step.live}
        flash = light == "green" and not self._green
        self._green = light == "green"
        for tr in step.live:
            h = self.state.setdefault(tr.track_id, Handling())
            if h.start is not None:
                h.frames += 1
            if tr.track_id not in step.seen:
                if h.start is not None and h.last_zone == "bag" and t - tr.last_t >= BAG_GONE_S:
                    out += self._ended(tr)  # gone into the bag: decided now, not when the tracker lets it go
                continue
            _, x1, y1, x2, y2, held = tr.history[-1]
            zone = self.zones.zone_of((x1 + x2) / 2, (y1 + y2) / 2)
            raw = (x2 - x1) * (y2 - y1)
            # box areas smoothed over a few frames: one jittered box must not read as an inspect
            area = raw if h.area <= 0 else (1 - AREA_SMOOTHING) * h.area + AREA_SMOOTHING * raw
            h.area = area
            if zone == "scanner":
                recent = [s for s in h.over_scanner if s >= t - TILL_TOLERANCE_S * 4]
                # the handling's first time over the glass is kept however long ago: an item carried over
                # it and held on before the bag was passed around from then, not from 8 s before the bag
                first = [s for s in h.over_scanner[:1]
                         if h.start is not None and h.start <= s < t - TILL_TOLERANCE_S * 4]
                h.over_scanner = first + recent + [t]
                if h.start is not None:
                    h.lit(light, t)
            if h.bagged:
                if zone == "bag":       # let go in the bag: what the head still sees there is not a handling
                    h.last_zone = zone
                    continue
                h.bagged = False        # taken out of the bag again
            if (held >= HELD and h.start is not None and zone == "bag" and h.start_zone != "bag"
                    and 0 < raw <= min(h.rest_area * SETTLE_GROWTH, _recent_max_area(tr, t) * SETTLE_SHRINK)
                    and _settled(tr) and t - self._reached_bag(tr, h.start) <= SETTLE_DWELL_S):
                out += self._bagged(tr, h, tr.history[-2][0])
                h.start, h.bagged, h.last_zone = None, True, zone
                continue
            if (held >= HELD and h.start is not None and not h.picked and h.start_zone == "basket"
                    and zone == "counter" and _settled(tr)):
                # come to rest on the counter from the basket, the hand still near: picked up then (the
                # handling goes on, as the alert rules read it, and names no second pick-up)
                out.append(self._event("pick_up", tr, h, h.start, tr.history[-2][0]))
                h.picked = True
            if held >= HELD:
                if h.start is None:
                    h.start, h.start_zone, h.rest_area = t, h.last_zone or zone, h.last_rest_area or area
                    h.max_area, h.flash_t, h.red_t, h.frames, h.detected, h.picked = area, None, None, 1, 0, False
                    if zone == "scanner":
                        h.lit(light, t)
                h.detected += 1
                h.max_area = max(h.max_area, area)
            else:
                if h.start is not None:
                    ev = self._set_down(tr, h, zone, t)
                    if ev is not None:
                        out.append(ev)
                    h.start = None
                h.last_rest_area = area
            h.last_zone = zone
        if flash:
            out += self._flash(t)
        for tr in step.ended:
            out += self._ended(tr)
        self.entering = self._entering()
        return out

    def _entering(self) -> tuple[ItemEvent, ...]:
        """The bags under way: each held item whose handling began outside the bag zone and whose last
        detection lies in it, not yet let go there. Each as the bag it would be, from leaving where it
        last lay still to its first detection in the bag zone, named by its carry there as a bag is."""
        out = []
        for tid, h in self.state.items():
            tr = self._live.get(tid)
            if tr is None or h.start is None or h.bagged or h.start_zone == "bag" or h.last_zone != "bag":
                continue
            _, x1, y1, x2, y2, _ = tr.history[-1]
            if h.rest_area > 0 and (x2 - x1) * (y2 - y1) > h.rest_area * ENTERING_GROWTH:
                continue   # held up toward the camera (a hold or an inspect over the bag), not going in
            reached = self._reached_bag(tr, h.start)
            named = (max(h.start, reached - BAG_CARRY_S), reached + BAG_NAME_S)
            out.append(self._event("bag", tr, h, self._left_rest(tr, h.start, reached), reached, named=named))
        return tuple(out)

    def _flash(self, t: float) -> list[ItemEvent]:
        """The scanner's green light came on: it scans the track seen over the scanner nearest in time
        (within ``TILL_TOLERANCE_S``), as a till read does; the head often loses an item in the hand
        that holds it to the glass. That track's scan is decided at the read, from its first time over
        the glass in this handling: a track lost in the hand before it is set down decides nothing more,
        and the rules and the track labeler's events (``paid``) must know of the read before then. The
        handling's own scan, named when it is set down, is the same read. With no such track the read
        is still a scan, of an item no track names (track and class -1): it pays for the next bag as a
        till read no track matched does."""
        tid = self.match_till_read(t, None)
        if tid is not None:
            tr, h = self._live[tid], self.state[tid]
            start = t if h.start is None else min([t] + h.over_since_start())
            return [self._event("scan", tr, h, start, t)]
        return [ItemEvent("scan", ACTIVITY_IDS["scan"], -1, -1, float(t), float(t), 1.0, (0.0, 0.0, 0.0, 0.0), float(t))]

    def flush(self) -> list[ItemEvent]:
        out = [ev for tr in self._live.values() for ev in self._ended(tr)]
        self._live, self.entering = {}, ()
        return out

    def match_till_read(self, t: float, class_id: int | None) -> int | None:
        """The live track over the scanner nearest in time to a till read at ``t`` (within
        ``TILL_TOLERANCE_S``; tracks of ``class_id`` first when any qualifies): it counts as scanned."""
        best = []
        for tid, h in self.state.items():
            tr = self._live.get(tid)
            if tr is None or not h.over_scanner:
                continue
            gap = min(abs(s - t) for s in h.over_scanner)
            if gap <= TILL_TOLERANCE_S:
                best.append((class_id is not None and tr.class_id != class_id, gap, tid))
        if not best:
            return None
        tid = min(best)[2]
        self.state[tid].scanned_at = float(t)
        return tid

    def state_dict(self) -> dict[str, np.ndarray]:
        """``handling``: one row per track (``HANDLING_COLS``); ``over_scanner``: (track id, t) rows."""
        rows, over = [], []
        for tid, h in self.state.items():
            rows.append([tid, _f(h.start), _zone_index(h.start_zone), h.rest_area, h.max_area, _f(h.flash_t),
                         h.frames, h.detected, _zone_index(h.last_zone), h.last_rest_area, h.area, _f(h.scanned_at),
                         float(h.bagged), float(h.picked), _f(h.red_t)])
            over += [[tid, s] for s in h.over_scanner]
        return {"handling": np.asarray(rows, np.float64).reshape(-1, len(HANDLING_COLS)),
                "over_scanner": np.asarray(over, np.float64).reshape(-1, 2)}

    def load_state_dict(self, sd: dict[str, np.ndarray], tracks: list[Track]) -> None:
        self._live = {tr.track_id: tr for tr in tracks}
        self.state, self.entering = {}, ()
        rows = np.asarray(sd["handling"], np.float64)
        if rows.ndim == 2 and len(HANDLING_COLS) - 3 <= rows.shape[1] < len(HANDLING_COLS):
            # a snapshot from before "bagged", "picked" or "red_t": none was
            rows = np.hstack([rows, np.asarray([HANDLING_DEFAULTS[rows.shape[1]:]] * len(rows), np.float64)])
        for r in rows.reshape(-1, len(HANDLING_COLS)).tolist():
            self.state[int(r[0])] = Handling(_opt(r[1]), _zone_name(r[2]), r[3], r[4], _opt(r[5]), int(r[6]),
                                             int(r[7]), _zone_name(r[8]), r[9], r[10], _opt(r[11]), bagged=bool(r[12]),
                                             picked=bool(r[13]), red_t=_opt(r[14]))
        for tid, s in np.asarray(sd["over_scanner"], np.float64).reshape(-1, 2).tolist():
            if int(tid) in self.state:
                self.state[int(tid)].over_scanner.append(s)

    # -- decisions
    def _set_down(self, tr: Track, h: Handling, zone: str | None, t: float) -> ItemEvent | None:
        if h.flash_t is not None:
            h.scanned_at = h.flash_t
        read = h.scanned_at is not None and h.scanned_at >= h.start - TILL_TOLERANCE_S
        if zone == "basket" and h.start_zone != "basket":
            act = "put_back"
        elif h.start_zone == "basket" and zone != "basket":
            if h.picked:
                return None
            act = "pick_up"
        elif read and zone == "scanner":
            act = "scan"
        elif zone == "scanner" and h.start_zone != "scanner":
            # a red light over the glass in this handling: the scanner was shown the item and did not read it
            # (or the head read its green flash red): a scan tried, unpaid; a pass-around sets off no light
            act = "pass_around" if h.red_t is None else "scan"
        elif h.max_area >= h.rest_area * LIFT_GROWTH * INSPECT_GROWTH:
            act = "inspect"
        elif t - h.start >= HOLD_MIN_S:
            act = "hold"
        else:
            return None
        return self._event(act, tr, h, h.start, t)

    def _ended(self, tr: Track) -> list[ItemEvent]:
        h = self.state.pop(tr.track_id, None)
        if h is None or h.start is None or not tr.history:
            return []
        if h.last_zone == "bag":
            if h.start_zone == "bag" and self._gone_into_bag_before(tr, h.start):
                return []   # lifted again where it went into the bag, and lost there again: the same bag
            return self._bagged(tr, h, tr.last_t)
        if tr.center[1] < self.top:
            return [self._event("hand_over", tr, h, h.start, tr.last_t)]
        return []

    def _bagged(self, tr: Track, h: Handling, end: float) -> list[ItemEvent]:
        """The handling ends in the bag at ``end``: a bag, after a pass-around when it was carried over the
        scanner on its way with no read."""
        # named by the carry into the bag: once there the item is half hidden, and the head reads the
        # bag's contents or the hand lingering over it as some other product
        reached = self._reached_bag(tr, h.start)
        named = (max(h.start, reached - BAG_CARRY_S), reached + BAG_NAME_S)
        out = [self._event("bag", tr, h, self._left_rest(tr, h.start, reached), end, named=named)]
        over = h.over_since_start()
        if over and h.scanned_at is None and h.start_zone != "scanner":
            # carried over the scanner and on into the bag with no read in one handling: an item never set
            # down on the glass is passed around all the same (the head often still sees it held there),
            # or, lit red there, a scan tried (as a set-down on the glass is); one item: named as its bag is,
            # by the carry into the bag
            act = "pass_around" if h.red_t is None else "scan"
            out.insert(0, self._event(act, tr, h, min(over), max(over), named=named))
        return out

    def _gone_into_bag_before(self, tr: Track, start: float) -> bool:
        """Whether ``tr`` went unseen in the bag zone, held, before ``start`` (its detections more than
        ``BAG_GONE_S`` apart, the earlier held there): a bag the gone path decided then. The head loses an
        item inspected or held over the bag zone again and again; each time it is seen lifted there again is
        the same item, not another bag."""
        rows = [r for r in tr.history if r[0] <= start]
        return any(b[0] - a[0] > BAG_GONE_S + 1e-6 and a[5] >= HELD   # a gap of BAG_GONE_S is no loss yet
                   and self._zone_at(a) == "bag" for a, b in zip(rows, rows[1:]))

    def _reached_bag(self, tr: Track, start: float) -> float:
        """The first detection of ``tr`` in the bag zone from ``start`` on (its last one if none is)."""
        for r in tr.history:
            if r[0] >= start and self._zone_at(r) == "bag":
                return float(r[0])
        return float(tr.last_t)

    def _zone_at(self, row: tuple) -> str | None:
        """The zone of a history row's box centre."""
        _, x1, y1, x2, y2, _ = row
        return self.zones.zone_of((x1 + x2) / 2, (y1 + y2) / 2)

    @staticmethod
    def _left_rest(tr: Track, start: float, reached: float) -> float:
        """When the item last lay still (its box put, as ``_settled`` reads it) between ``start`` and
        reaching the bag: the bag began there. The head reads an item set down on the scanner or the
        counter, the hand still near, as held, so one handling often runs from the basket to the bag."""
        rows = [r for r in tr.history if start - SETTLE_S - 0.1 <= r[0] <= reached]
        for j in range(len(rows) - 1, -1, -1):
            if _put(rows, j):
                return max(float(start), float(rows[j][0]))
        return float(start)

    def _event(self, act: str, tr: Track, h: Handling, start: float, end: float, *,
               named: tuple[float, float] | None = None) -> ItemEvent:
        # read from the event's own frames (a bag's: its carry), else the whole track's: the product they
        # show, and their mean detection score times the share of the handling's frames the item was seen in
        lo, hi = named or (start, end)
        product = tr.class_between(lo, hi)
        own = [sc for t, _, sc in tr.marks if lo - 1e-6 <= t <= hi + 1e-6]
        conf = (sum(own) / len(own) if own else tr.score_sum / max(1, tr.hits)) * (h.detected / max(1, h.frames))
        box = tuple(float(v) for v in tr.box_at((start + end) / 2))
        return ItemEvent(act, ACTIVITY_IDS[act], product, tr.track_id, float(start), float(end),
                         float(min(1.0, conf)), box, h.scanned_at)  # type: ignore[arg-type]


def _settled(tr: Track) -> bool:
    """Whether the track's last two detections each lie where it was ``SETTLE_S`` before (box IoU at
    least ``SETTLE_IOU`` with a detection then, within 0.1 s): the head reads an item let go in the bag as
    still held, its box put, until the hand leaves."""
    rows = [tr.history[i] for i in range(-min(len(tr.history), 12), 0)]   # a deque: no slices
    return len(rows) >= 3 and _put(rows, len(rows) - 1) and _put(rows, len(rows) - 2)


def _recent_max_area(tr: Track, t: float) -> float:
    """The largest box area of ``tr``'s detections in the ``SHRINK_WITHIN_S`` up to ``t``."""
    largest = 0.0
    for r in reversed(tr.history):
        if r[0] < t - SHRINK_WITHIN_S - 0.05:
            break
        largest = max(largest, (r[3] - r[1]) * (r[4] - r[2]))
    return largest


def _put(rows: list, j: int) -> bool:
    """Whether detection ``rows[j]`` lies where the item was ``SETTLE_S`` before (box IoU at least
    ``SETTLE_IOU`` with a detection of ``rows`` then, within 0.1 s)."""
    then = [r for r in rows[:j] if abs(rows[j][0] - SETTLE_S - r[0]) <= 0.1]
    return bool(then) and float(box_iou(np.asarray([rows[j][1:5]], np.float32),
                                        np.asarray([then[-1][1:5]], np.float32))[0, 0]) >= SETTLE_IOU


HANDLING_COLS = ("track_id", "start", "start_zone", "rest_area", "max_area", "flash_t", "frames", "detected",
                 "last_zone", "last_rest_area", "area", "scanned_at", "bagged", "picked", "red_t")
# what a column missing from an older snapshot holds (the last three: no bag, no pick-up, no red light)
HANDLING_DEFAULTS = (0.0,) * 14 + (np.nan,)


def _f(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _opt(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _zone_index(z: str | None) -> int:
    return -1 if z is None else ZONE_NAMES.index(z)


def _zone_name(i: float) -> str | None:
    return None if i < 0 else ZONE_NAMES[int(i)]


LABELERS: dict[str, type] = {"geometric": GeometricLabeler}


def make_labeler(name: str, zones: Zones) -> ItemLabeler:
    if name not in LABELERS:
        raise ValueError(f"unknown item labeler {name!r}; known: {', '.join(LABELERS)}")
    return LABELERS[name](zones)
