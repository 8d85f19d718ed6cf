"""Where each item went: the box paths of a stream's recent tracks, kept after the tracks end, bounded.

A live track keeps only its last 30 s of boxes (tracker.HISTORY), and an ended one nothing, so an
answer about a window a few minutes back had no item boxes to show. This keeps, per track, a box
each time it moved (IoU under ``KEEP_IOU`` with the last box kept) or ``KEEP_GAP_S`` after the last
kept, and its last box when it ends: an item at rest for minutes costs a row every few seconds, a
carried one a row per frame. A box at any time of the track's life is read back by linear
interpolation between the kept rows. The rows of all tracks share one ring of ``MAX_ROWS``, oldest
first out, so the paths reach back as far as a lane's traffic lets them (``horizon``).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from .head_decode import box_iou
from .tracker import Track, TrackStep

KEEP_IOU = 0.8         # a box kept when it overlaps the track's last kept box less than this
KEEP_GAP_S = 2.0       # ... or this long after the last kept one (at rest: the path still says it was there)
MAX_ROWS = 16384       # kept rows of every track together (16384 x 6 x 8 bytes = 786 KB in a snapshot)
COLS = ("track_id", "t", "x1", "y1", "x2", "y2")


class TrackPaths:
    """``update(step)`` per frame with the tracker's step; ``boxes(track_id, times)`` to read back."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.rows: deque[tuple[float, ...]] = deque(maxlen=int(max_rows))
        self._last: dict[int, tuple[float, ...]] = {}   # live track -> its last kept row
        self._seen: dict[int, tuple[float, ...]] = {}   # live track -> its latest row (kept at its end)

    def update(self, step: TrackStep) -> None:
        for tr in step.live:
            if tr.track_id not in step.seen:
                continue
            row = _latest(tr)
            self._seen[tr.track_id] = row
            last = self._last.get(tr.track_id)
            if (last is None or row[1] - last[1] >= KEEP_GAP_S
                    or box_iou(np.asarray([row[2:]]), np.asarray([last[2:]]))[0, 0] < KEEP_IOU):
                self._keep(row)
        for tr in step.ended:
            self.end(tr.track_id)

    def end(self, track_id: int) -> None:
        """Track ``track_id`` ended: its last box is kept if it was not."""
        row, last = self._seen.pop(track_id, None), self._last.pop(track_id, None)
        if row is not None and (last is None or row[1] != last[1]):
            self.rows.append(row)

    def flush(self) -> None:
        for tid in list(self._seen):
            self.end(tid)

    def _keep(self, row: tuple[float, ...]) -> None:
        self.rows.append(row)
        self._last[int(row[0])] = row

    def horizon(self) -> float:
        """Stream time from which every track's path is whole: -inf until the ring has dropped a row."""
        if len(self.rows) < (self.rows.maxlen or 0):
            return -np.inf
        return float(self.rows[0][1])

    def path(self, track_id: int) -> np.ndarray:
        """(n, 5) rows t, x1, y1, x2, y2 of track ``track_id`` kept (a live one's with its latest box), in
        time order (empty if none)."""
        a = np.array(tuple(self.rows), np.float64).reshape(-1, len(COLS))  # one copy: the ring grows meanwhile
        a = a[a[:, 0] == float(track_id), 1:]
        latest = self._seen.get(int(track_id))
        if latest is not None and (not len(a) or latest[1] > a[-1, 0]):
            a = np.vstack([a, np.asarray(latest[1:], np.float64)[None]])
        return a

    def boxes(self, track_id: int, times) -> tuple[np.ndarray, np.ndarray] | None:
        """The track's boxes at ``times`` inside its kept path (linear between kept rows): (times, boxes
        (n, 4)); None when it has no row there."""
        p = self.path(track_id)
        t = np.asarray(times, np.float64).reshape(-1)
        if not len(p) or not len(t):
            return None
        t = t[(t >= p[0, 0] - 1e-6) & (t <= p[-1, 0] + 1e-6)]
        if not len(t):
            return None
        return t, np.stack([np.interp(t, p[:, 0], p[:, k]) for k in range(1, 5)], axis=1)

    # -- snapshots
    def state_dict(self) -> dict[str, np.ndarray]:
        return {"paths": np.array(tuple(self.rows), np.float64).reshape(-1, len(COLS))}

    def load_state_dict(self, sd: dict[str, np.ndarray], live: list[Track]) -> None:
        """The kept rows, and for each of the snapshot's ``live`` tracks its last kept and latest rows. A
        snapshot without paths (from before them) starts with none; ValueError (one line) for paths
        that are not rows."""
        self.rows.clear()
        self._last.clear()
        self._seen.clear()
        rows = np.asarray(sd.get("paths", np.zeros((0, len(COLS)))), np.float64)
        if rows.size % len(COLS):
            raise ValueError(f"the item-state snapshot's paths hold {rows.size} numbers, not rows of {len(COLS)}")
        rows = rows.reshape(-1, len(COLS))
        for r in rows.tolist():
            self.rows.append(tuple(r))
        for tr in live:
            mine = rows[rows[:, 0] == tr.track_id]
            if len(mine):
                self._last[tr.track_id] = tuple(mine[-1].tolist())
            if tr.history:
                self._seen[tr.track_id] = _latest(tr)

    @staticmethod
    def max_nbytes(max_rows: int = MAX_ROWS) -> int:
        return 8 * len(COLS) * max_rows


def _latest(track: Track) -> tuple[float, ...]:
    """The track's latest box as a row of COLS."""
    t, x1, y1, x2, y2 = track.history[-1][:5]
    return (float(track.track_id), float(t), float(x1), float(y1), float(x2), float(y2))
