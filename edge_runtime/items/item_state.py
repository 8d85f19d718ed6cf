"""One stream's item state: its tracker, its labeler and a ring of its recent item events, bounded,
snapshotted as arrays."""
from __future__ import annotations

from collections import deque

import numpy as np

from .detections import Detections
from .item_events import HANDLING_COLS, TILL_TOLERANCE_S, ItemEvent, make_labeler
from .tracker import HISTORY, MAX_TRACKS, MAX_VOTES, ItemTracker, Track
from .zones import Zones

MAX_EVENTS = 512           # recent item events kept (a busy lane decides a few hundred an hour)
TRACK_COLS = ("track_id", "start", "last_t", "score_sum", "hits")
EVENT_COLS = ("activity_id", "class_id", "track_id", "start", "end", "confidence", "x1", "y1", "x2", "y2", "scanned_at")
KEYS = ("bundle_id", "next_id", "tracks", "votes", "history", "events", "handling", "over_scanner")
PREFIX = "items."


class ItemState:
    """``update(dets)`` per frame (5 fps), in time order -> the item events decided at that frame."""

    def __init__(self, zones: Zones, *, bundle_id: str, labeler: str = "geometric", fps: float = 5.0,
                 max_tracks: int = MAX_TRACKS, max_events: int = MAX_EVENTS) -> None:
        self.zones, self.bundle_id, self.fps = zones, str(bundle_id), float(fps)
        self.tracker = ItemTracker(fps=fps, max_tracks=max_tracks)
        self.labeler = make_labeler(labeler, zones)
        self.recent: deque[ItemEvent] = deque(maxlen=int(max_events))

    def update(self, dets: Detections) -> list[ItemEvent]:
        step = self.tracker.update(dets)
        out = self.labeler.update(step, dets.light, dets.t)
        self.recent.extend(out)
        return out

    def flush(self) -> list[ItemEvent]:
        """The stream ends: decide every live track as if it left now."""
        out = self.labeler.flush()
        self.tracker.flush()
        self.recent.extend(out)
        return out

    def till_read(self, t: float, class_id: int | None = None) -> int | None:
        """A till's good read at stream time ``t``: the id of the track it scanned, None when no track
        was over the scanner within the tolerance."""
        return self.labeler.match_till_read(float(t), class_id)

    def events(self, window: tuple[float, float]) -> list[ItemEvent]:
        a, b = window
        return [e for e in self.recent if e.overlaps(a, b)]

    # -- snapshots
    def state_dict(self) -> dict[str, np.ndarray]:
        tracks = self.tracker.tracks
        sd = {
            "bundle_id": np.frombuffer(self.bundle_id.encode(), np.uint8).copy(),
            "next_id": np.array([self.tracker.next_id], np.int64),
            "tracks": np.array([[tr.track_id, tr.start, tr.last_t, tr.score_sum, tr.hits] for tr in tracks],
                               np.float64).reshape(-1, len(TRACK_COLS)),
            "votes": np.array([[tr.track_id, c, w] for tr in tracks for c, w in tr.votes.items()],
                              np.float64).reshape(-1, 3),
            "history": np.array([[tr.track_id, *r] for tr in tracks for r in tr.history], np.float64).reshape(-1, 7),
            "events": np.array([[e.activity_id, e.class_id, e.track_id, e.start, e.end, e.confidence, *e.box,
                                 np.nan if e.scanned_at is None else e.scanned_at] for e in self.recent],
                               np.float64).reshape(-1, len(EVENT_COLS)),
        } | self.labeler.state_dict()
        return {PREFIX + k: v for k, v in sd.items()}

    def load_state_dict(self, sd: dict[str, np.ndarray], bundle_id: str) -> None:
        """ValueError (one line) for a snapshot of another bundle or one that lacks arrays."""
        missing = [k for k in KEYS if PREFIX + k not in sd]
        if missing:
            raise ValueError(f"the item-state snapshot lacks {', '.join(missing)}")
        theirs = bytes(np.asarray(sd[PREFIX + "bundle_id"], np.uint8)).decode(errors="replace")
        if theirs != str(bundle_id) or theirs != self.bundle_id:
            raise ValueError(f"the item-state snapshot is of bundle {theirs!r}, this stream runs {self.bundle_id!r}")
        from edge_runtime.checkout.catalog import ACTIVITIES

        get = {k: np.asarray(sd[PREFIX + k], np.float64) for k in KEYS[2:]}
        tracks = {}
        for tid, start, last_t, score_sum, hits in get["tracks"].reshape(-1, len(TRACK_COLS)).tolist():
            tracks[int(tid)] = Track(int(tid), start, last_t, score_sum=score_sum, hits=int(hits))
        for tid, c, w in get["votes"].reshape(-1, 3).tolist():
            if int(tid) in tracks:
                tracks[int(tid)].votes[int(c)] = w
        for row in get["history"].reshape(-1, 7).tolist():
            if int(row[0]) in tracks:
                tracks[int(row[0])].history.append(tuple(row[1:]))
        live = [tr for tr in tracks.values() if tr.history]
        self.tracker.restore(live, int(np.asarray(sd[PREFIX + "next_id"]).reshape(-1)[0]))
        self.labeler.load_state_dict({"handling": get["handling"], "over_scanner": get["over_scanner"]}, live)
        self.recent.clear()
        for r in get["events"].reshape(-1, len(EVENT_COLS)).tolist():
            self.recent.append(ItemEvent(ACTIVITIES[int(r[0])], int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5],
                                         (r[6], r[7], r[8], r[9]), None if np.isnan(r[10]) else r[10]))

    def nbytes(self) -> int:
        """Bytes of the snapshot's arrays now."""
        return int(sum(a.nbytes for a in self.state_dict().values()))

    def max_nbytes(self) -> int:
        """The most ``nbytes()`` can be: every array is bounded by the live tracks, their history and
        votes, the scanner times a till read looks back over, and the event ring."""
        over = int(np.ceil(4 * TILL_TOLERANCE_S * self.fps)) + 1
        per_track = 8 * (len(TRACK_COLS) + HISTORY * 7 + MAX_VOTES * 3 + len(HANDLING_COLS) + over * 2)
        return (len(self.bundle_id.encode()) + 8 + self.tracker.max_tracks * per_track
                + self.recent.maxlen * 8 * len(EVENT_COLS))
