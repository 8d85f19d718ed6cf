"""Item tracks from per-frame detections: norfair-enough's tracker (box IoU, Kalman) matches detections
frame to frame; this module keeps each track's own record (id, class votes, held, box history), which
is what the labeler reads and what a snapshot restores.

norfair-enough was chosen by measurement against ByteTrack / OC-SORT / SORT (docs/items.md,
tools/accuracy/item_trackers.py): as few ID switches as ByteTrack on noisy oracle detections, and it
pulls in only scipy and rich (``trackers`` needs opencv-python, which clashes with the headless build).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from norfair import Detection, Tracker
from norfair.distances import Distance, iou

from .detections import Detections

# norfair's IoU logs a warning for every Kalman-predicted box that flips its corners during a fast
# move (the match is still made by the other boxes): on a 5 fps stream that is a line per frame
logging.getLogger("norfair.distances").setLevel(logging.ERROR)

IOU_DISTANCE = 0.99      # 1 - IoU: match a detection that overlaps its track's predicted box at all
COAST_FRAMES = 10        # frames a track lives on without a detection (2 s at 5 fps): misses, occlusions
HISTORY = 150            # box history entries kept per track (30 s at 5 fps)
MAX_TRACKS = 32          # live tracks per stream; a basket holds at most 8 items
HELD = 0.5               # held probability above which an item counts as in a hand
MAX_VOTES = 8            # class votes kept per track (the strongest)
# An item in a hand carried over one resting in the basket or on the counter: with any overlap a match,
# the moving item's detection could take the resting item's track (its own Kalman prediction lags a
# fast move), and the resting item's scan or bag was then read on the wrong track. A held detection
# matched to a track resting for its last REST_FRAMES detections pays HELD_ONTO_REST on top of 1 - IoU:
# a lift still matches its own track when the boxes overlap by IoU > 0.31. Chosen on held-out seed 1
# with head_replay (docs/lab/alerts.md); a stricter 0.6 lost an unscanned bag, a penalty for any held
# change, for a class change, or strict per-class tracks (norfair labels) did no better or worse.
HELD_ONTO_REST = 0.3
REST_FRAMES = 3
# A fast carry outruns the Kalman prediction (a held detection lands 0.75-0.88 from its own track's
# predicted box in 1 - IoU, often with no overlap at all): the track broke off mid-carry, and the new
# one lost the scan read on the old one. A held detection of a track's product (its vote) whose centre
# lies within CARRY_GATE x the predicted box's diagonal of the predicted centre matches at CARRY_FLOOR
# to 0.99 (nearer, lower), after every overlap of IoU > 0.1. The product keeps a bagged item's coasting
# track from taking the next item lifted nearby. Chosen on held-out seed 1 with head_replay
# (docs/lab/alerts.md); without the product check, or only onto tracks seen in the last 1-3 frames, it
# did worse; a faster Kalman filter for held tracks, or predicting from the last box, did too.
CARRY_GATE = 1.0
CARRY_FLOOR = 0.9


@dataclass
class Track:
    """One item's track. ``history`` rows: t, x1, y1, x2, y2, held; ``marks`` rows: t, class id, score
    (detected frames only, the same frames); ``ident_sum`` the score-weighted sum of its detections'
    identities (a head with det_embed), else None."""

    track_id: int
    start: float
    last_t: float
    votes: dict[int, float] = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    marks: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    score_sum: float = 0.0
    hits: int = 0
    ident_sum: np.ndarray | None = None

    @property
    def identity(self) -> np.ndarray | None:
        """(E,) unit vector: the track's identity in the memory reader's space, what a catalog picture is
        matched against (edge_runtime/items/identity.py); None without identities."""
        return None if self.ident_sum is None else unit(self.ident_sum)

    @property
    def class_id(self) -> int:
        """Majority vote (score-weighted) over the track's detections."""
        return _winner(self.votes)

    def class_between(self, t0: float, t1: float) -> int:
        """The product of the track's detections from ``t0`` to ``t1`` (score-weighted vote), else the
        whole track's. An event is named by its own frames: a track that wandered onto another item in
        the basket, or whose first frames were misread, still names the item that was handled."""
        votes: dict[int, float] = {}
        for t, c, s in self.marks:
            if t0 - 1e-6 <= t <= t1 + 1e-6:
                votes[int(c)] = votes.get(int(c), 0.0) + s
        return _winner(votes) if votes else self.class_id

    @property
    def box(self) -> np.ndarray:
        return np.asarray(self.history[-1][1:5], np.float32)

    @property
    def center(self) -> tuple[float, float]:
        _, x1, y1, x2, y2, _ = self.history[-1]
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def held(self) -> bool:
        return self.history[-1][5] >= HELD

    def box_at(self, t: float) -> np.ndarray:
        """The detected box nearest in time to ``t``."""
        i = int(np.argmin([abs(r[0] - t) for r in self.history]))
        return np.asarray(self.history[i][1:5], np.float32)

    def add(self, t: float, box: np.ndarray, score: float, class_id: int, held: float,
            embed: np.ndarray | None = None) -> None:
        self.history.append((float(t), *map(float, box), float(held)))
        self.marks.append((float(t), int(class_id), float(score)))
        self.votes[int(class_id)] = self.votes.get(int(class_id), 0.0) + float(score)
        if len(self.votes) > MAX_VOTES:
            del self.votes[min(self.votes, key=self.votes.get)]
        self.score_sum += float(score)
        self.hits += 1
        if embed is not None:
            w = float(score) * np.asarray(embed, np.float32)
            self.ident_sum = w if self.ident_sum is None else self.ident_sum + w
        self.last_t = float(t)


@dataclass
class TrackStep:
    """What one frame did to the tracks: ``seen`` were detected in it (track id -> detection index),
    ``ended`` left (their last detection is ``last_t``), ``live`` every live track."""

    t: float
    live: list[Track]
    seen: dict[int, int]
    ended: list[Track]


class ItemTracker:
    """Item tracks of one stream: ``update(dets)`` per frame, in time order."""

    def __init__(self, *, fps: float = 5.0, max_tracks: int = MAX_TRACKS, coast_frames: int = COAST_FRAMES) -> None:
        self.fps = float(fps)
        self.max_tracks = int(max_tracks)
        self.coast_frames = int(coast_frames)
        self._tracker = Tracker(distance_function="iou", distance_threshold=IOU_DISTANCE,
                                hit_counter_max=self.coast_frames, initialization_delay=0)
        # norfair takes a callable only as a slow per-pair distance; its public attribute takes ours whole
        self._tracker.distance_function = _HeldOntoRest(self)
        self._ours: dict[int, Track] = {}      # norfair object id -> our track
        self._orphans: list[Track] = []        # restored from a snapshot, waiting to be matched again
        self._frame = 0
        self.next_id = 0
        self.last_seen: dict[int, int] = {}    # the last frame's track id -> detection index

    @property
    def tracks(self) -> list[Track]:
        return list(self._ours.values()) + list(self._orphans)

    def update(self, dets: Detections) -> TrackStep:
        self._frame += 1
        order = np.argsort(-dets.scores, kind="stable")[: self.max_tracks]  # the bound holds whatever comes in
        nf = [Detection(points=dets.boxes[i].reshape(2, 2).astype(np.float64), scores=np.full(2, dets.scores[i]),
                        data=(self._frame, int(i), bool(dets.held[i] >= HELD), int(dets.classes[i]))) for i in order]
        active = self._tracker.update(nf)
        if len(self._tracker.tracked_objects) > self.max_tracks:  # coasting ones beyond the bound go first
            keep = sorted(self._tracker.tracked_objects, key=lambda o: -o.hit_counter)[: self.max_tracks]
            self._tracker.tracked_objects = keep
            active = [o for o in active if o in keep]
        seen = {}
        for obj in active:
            frame, i = obj.last_detection.data[:2]
            track = self._ours.get(obj.id)
            if track is None:
                if frame != self._frame:
                    continue
                track = self._adopt(dets.boxes[i], dets.t) or Track(self._new_id(), dets.t, dets.t)
                self._ours[obj.id] = track
            if frame == self._frame:
                track.add(dets.t, dets.boxes[i], dets.scores[i], dets.classes[i], dets.held[i],
                          None if dets.embed is None else dets.embed[i])
                seen[track.track_id] = i
        alive = {o.id for o in self._tracker.tracked_objects}
        ended = [self._ours.pop(k) for k in list(self._ours) if k not in alive]
        # a restored track not matched again within the coast time has left
        horizon = dets.t - self.coast_frames / self.fps
        ended += [o for o in self._orphans if o.last_t < horizon]
        self._orphans = [o for o in self._orphans if o.last_t >= horizon]
        self.last_seen = seen
        return TrackStep(dets.t, self.tracks, seen, ended)

    def flush(self) -> list[Track]:
        """End every live track (the stream ends)."""
        out = self.tracks
        self._ours, self._orphans = {}, []
        self._tracker.tracked_objects = []
        return out

    def restore(self, tracks: list[Track], next_id: int) -> None:
        """Live tracks from a snapshot: each takes back the first new detection that overlaps its last
        box (its id and history continue); new tracks get ids from ``next_id`` on."""
        self.flush()
        self._orphans = list(tracks)
        self.next_id = max([int(next_id)] + [t.track_id + 1 for t in tracks])

    def resting(self, object_id: int) -> bool:
        """Whether norfair's object ``object_id`` is our track whose last REST_FRAMES detections were not held."""
        track = self._ours.get(object_id)
        if track is None or len(track.history) < REST_FRAMES:
            return False
        return all(track.history[-k][5] < HELD for k in range(1, REST_FRAMES + 1))

    def product(self, object_id: int) -> int:
        """The product (class vote) of norfair's object ``object_id``'s track; -1 if it has none yet."""
        track = self._ours.get(object_id)
        return track.class_id if track is not None else -1

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _adopt(self, box: np.ndarray, t: float) -> Track | None:
        if not self._orphans:
            return None
        ious = [_iou(box, o.box) for o in self._orphans]
        k = int(np.argmax(ious))
        if ious[k] <= 1.0 - IOU_DISTANCE:
            return None
        return self._orphans.pop(k)


class _HeldOntoRest(Distance):
    """1 - IoU of each detection and each track's predicted box (or, for a held detection of the track's
    product near its predicted centre, the carry's distance when lower), plus HELD_ONTO_REST where a
    held detection meets a resting track."""

    def __init__(self, owner: ItemTracker) -> None:
        self.owner = owner

    def get_distances(self, objects, candidates) -> np.ndarray:
        n, m = len(candidates or ()), len(objects)
        if not n or not m:
            return np.full((n, m), np.inf)
        boxes = np.stack([c.points.ravel() for c in candidates])
        pred = np.stack([o.estimate.ravel() for o in objects])
        d = iou(boxes, pred)
        held = np.array([c.data[2] for c in candidates])
        if CARRY_GATE > 0 and held.any():
            same = np.array([c.data[3] for c in candidates])[:, None] == np.array(
                [self.owner.product(o.id) for o in objects])[None, :]
            d = np.minimum(d, np.where(held[:, None] & same, _carry(boxes, pred), np.inf))
        rest = np.array([self.owner.resting(o.id) for o in objects])
        return d + HELD_ONTO_REST * (held[:, None] & rest[None, :])


def _carry(boxes: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(n, m): from CARRY_FLOOR up to IOU_DISTANCE as the centre distance grows to CARRY_GATE x the
    predicted box's diagonal, inf beyond. A prediction's corners may be flipped: centres and diagonals
    do not mind."""
    gap = np.linalg.norm((boxes[:, None, :2] + boxes[:, None, 2:]) / 2 - (pred[None, :, :2] + pred[None, :, 2:]) / 2,
                         axis=2)
    reach = CARRY_GATE * np.hypot(pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1])
    r = gap / np.maximum(reach, 1e-9)[None, :]
    return np.where(r < 1.0, CARRY_FLOOR + (IOU_DISTANCE - CARRY_FLOOR) * r, np.inf)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (float32); zeros stay zeros."""
    v = np.asarray(v, np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _winner(votes: dict[int, float]) -> int:
    """The class with the most weight (the lowest id of a tie); -1 with no votes."""
    return max(votes.items(), key=lambda kv: (kv[1], -kv[0]))[0] if votes else -1


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
