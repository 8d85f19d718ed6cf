"""Item events for the queries from the track labeler's model: each track's frames labelled whole.

The geometric labeler (item_events.py) decides each event as it happens, which the alert rules need;
looking back, what happened and where read events labelled over the track's whole path, before and
after each frame (``sequence_model.py``). A track is labelled when it ends (or ``flush``); a live
one is labelled when asked (``live_events``, not kept). A track longer than ``MAX_ROWS`` frames (an
item resting for minutes) is labelled as its rows fill: the events ending before its last
``KEEP_ROWS`` frames are kept then, and those frames stay as the context of the next labelling.

An event is a run of at least ``MIN_FRAMES`` frames whose likeliest class is one activity: from half a
frame before its first to half a frame after its last, named by the score-weighted class vote of its
detected frames (else the track's), its confidence the run's mean p(activity) times the share of its
frames the item was detected in.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from .item_events import ACTIVITY_IDS, ItemEvent
from .sequence_model import SequenceModel
from .track_rows import ROW_COLS, features, row
from .tracker import MAX_TRACKS, Track, TrackStep
from .zones import Zones

MAX_ROWS = 750       # frames kept per live track (150 s at 5 fps), 33 KB
KEEP_ROWS = 250      # a full track's last frames, kept as context when its earlier ones are labelled
MIN_FRAMES = 2       # the shortest run that is an event (a scanner's flash is 2 frames)
TRACK_COLS = ("track_id", "start", "decided")


class TrackLabels:
    """The live tracks' rows and the events labelled from them."""

    def __init__(self, model: SequenceModel, zones: Zones, *, fps: float = 5.0, max_tracks: int = MAX_TRACKS) -> None:
        self.model, self.zones, self.fps, self.max_tracks = model, zones, float(fps), int(max_tracks)
        self.rows: dict[int, deque] = {}
        self.start: dict[int, float] = {}
        self.decided: dict[int, float] = {}   # events ending up to here are kept already
        self.frames = 0                          # frames taken in: what the live tracks' labels were read at
        self._live: tuple[int, tuple] = (-1, ())  # (frames, events) of the last live labelling

    @property
    def activities(self) -> tuple[str, ...]:
        return self.model.activities

    def update(self, step: TrackStep, light: str | None, dets, scanned: dict[int, float]) -> list[ItemEvent]:
        """One frame's tracker step -> the events of the tracks that ended (and of full tracks)."""
        self.frames += 1
        out = []
        for tr in step.ended:
            out += self._end(tr.track_id, tr.last_t, scanned)
        for tr in step.live[: self.max_tracks]:
            tid = tr.track_id
            if tid not in self.rows:
                if tid not in step.seen:
                    continue  # a restored track not seen again yet
                self.rows[tid], self.start[tid] = deque(maxlen=MAX_ROWS), step.t
                self.decided.setdefault(tid, -np.inf)
            rows, i = self.rows[tid], step.seen.get(tid)
            if i is not None:
                rows.append(row(step.t - self.start[tid], dets.boxes[i], dets.scores[i], dets.held[i],
                                int(dets.classes[i]), light))
            elif rows:  # undetected: its last box again
                rows.append(row(step.t - self.start[tid], rows[-1][4:8], None, None, None, light))
            if len(self.rows[tid]) == MAX_ROWS:
                out += self._label_full(tid, scanned)
        return out

    def flush(self, scanned: dict[int, float]) -> list[ItemEvent]:
        out = []
        for tid in list(self.rows):
            out += self._end(tid, None, scanned)
        return out

    def live_events(self, scanned: dict[int, float]) -> list[ItemEvent]:
        """The live tracks labelled as they stand (their last frames lack what comes after them); labelled
        once per frame taken in, however many queries ask (one labelling of 32 tracks of 750 frames is a
        large fraction of a second)."""
        frames, cached = self._live
        if frames == self.frames:
            return list(cached)
        frames = self.frames
        # the intake thread may end a track meanwhile: each read is one C-level copy or lookup
        live = [(tid, self.start.get(tid), np.array(tuple(rows), np.float32)) for tid, rows in list(self.rows.items())]
        out = self._label([(tid, t0, r, self.decided.get(tid, -np.inf), np.inf) for tid, t0, r in live
                           if t0 is not None and len(r)], scanned)
        self._live = (frames, tuple(out))
        return out

    def look(self, tids: list[int], scanned: dict[int, float]) -> list[ItemEvent]:
        """The events of the live tracks ``tids`` labelled as if they had ended at their last detection,
        from their last ``KEEP_ROWS`` frames at most (a 750-frame track takes ~6x as long; not cached,
        not kept)."""
        live = [(tid, self.start[tid], _to_last_seen(np.array(tuple(self.rows[tid]), np.float32))[-KEEP_ROWS:])
                for tid in tids if self.rows.get(tid)]
        return self._label([(tid, t0, r, self.decided.get(tid, -np.inf), np.inf) for tid, t0, r in live], scanned)

    def _end(self, tid: int, last_t: float | None, scanned: dict[int, float]) -> list[ItemEvent]:
        rows = self.rows.pop(tid, None)
        start, decided = self.start.pop(tid, 0.0), self.decided.pop(tid, -np.inf)
        if not rows:
            return []
        r = np.array(tuple(rows), np.float32)
        if last_t is not None:  # the frames it coasted through after its last detection are not its path
            r = r[r[:, 0] <= last_t - start + 1e-3]
        r = _to_last_seen(r)
        return self._label([(tid, start, r, decided, np.inf)], scanned) if len(r) else []

    def _label_full(self, tid: int, scanned: dict[int, float]) -> list[ItemEvent]:
        r = np.array(tuple(self.rows[tid]), np.float32)
        cut = self.start[tid] + float(r[-KEEP_ROWS, 0])
        out = self._label([(tid, self.start[tid], r, self.decided[tid], cut)], scanned)
        self.decided[tid] = cut
        rows = self.rows[tid]
        for _ in range(MAX_ROWS - KEEP_ROWS):
            rows.popleft()
        return out

    def _label(self, tracks: list[tuple[int, float, np.ndarray, float, float]],
               scanned: dict[int, float]) -> list[ItemEvent]:
        """(track id, its start, rows, decided, until) -> the events ending after ``decided`` and by ``until``."""
        tracks = [x for x in tracks if len(x[2])]
        probs = self.model.probs([features(r, self.zones) for _, _, r, _, _ in tracks])
        out = []
        for (tid, t0, r, decided, until), p in zip(tracks, probs):
            for ev in self._events(tid, t0, r, p, scanned):
                if decided < ev.end <= until:
                    out.append(ev)
        return sorted(out, key=lambda e: e.end)

    def _on_counter(self, r: np.ndarray) -> np.ndarray:
        """Per row: the track detected with its box centre at or below the zones' top (on the counter,
        not on the store floor across it); every detected row when the stream has no zones."""
        top = self.zones.top if self.zones is not None else None
        seen = r[:, ROW_COLS.index("seen")] > 0
        if top is None:
            return seen
        return seen & ((r[:, ROW_COLS.index("y1")] + r[:, ROW_COLS.index("y2")]) / 2 >= top)

    def _events(self, tid: int, t0: float, r: np.ndarray, p: np.ndarray, scanned: dict[int, float]) -> list[ItemEvent]:
        label = p.argmax(-1)
        on_counter = self._on_counter(r)
        half = 0.5 / self.fps
        classes = r[:, ROW_COLS.index("class_id")].astype(np.int64)
        scores = r[:, ROW_COLS.index("score")]
        out, j, n = [], 0, len(label)
        while j < n:
            k = j
            while k + 1 < n and label[k + 1] == label[j]:
                k += 1
            if label[j] > 0 and k - j + 1 >= MIN_FRAMES:
                act = self.model.classes[int(label[j])]
                if act == "bag" and not on_counter[j:].any():
                    # seen only on the store floor across the counter from the run on (someone walking
                    # by with it): not bagged here (docs/lab/alerts.md)
                    j = k + 1
                    continue
                run = slice(j, k + 1)
                seen = classes[run] >= 0
                pool = (classes[run][seen], scores[run][seen]) if seen.any() else (classes[classes >= 0],
                                                                                   scores[classes >= 0])
                class_id = int(np.bincount(pool[0], weights=pool[1]).argmax()) if len(pool[0]) else -1
                conf = float(p[run, label[j]].mean()) * float(seen.mean())
                start, end = t0 + float(r[j, 0]) - half, t0 + float(r[k, 0]) + half
                paid = scanned.get(tid)
                box = tuple(float(v) for v in r[(j + k) // 2, 4:8])
                out.append(ItemEvent(act, ACTIVITY_IDS[act], class_id, int(tid), start, end, round(conf, 4), box,
                                     paid if paid is not None and paid <= end else None))
            j = k + 1
        return out

    # -- snapshots
    def state_dict(self) -> dict[str, np.ndarray]:
        tids = list(self.rows)
        return {"label_tracks": np.array([[t, self.start[t], self.decided.get(t, -np.inf)] for t in tids],
                                         np.float64).reshape(-1, len(TRACK_COLS)),
                "label_rows": np.array([[t, *rw] for t in tids for rw in self.rows[t]],
                                       np.float32).reshape(-1, 1 + len(ROW_COLS))}

    def load_state_dict(self, sd: dict[str, np.ndarray], live: list[Track]) -> None:
        """Rows of the snapshot's live tracks (a snapshot without them: the tracks start their rows again)."""
        self.rows, self.start, self.decided = {}, {}, {}
        ids = {tr.track_id for tr in live}
        for tid, start, decided in np.asarray(sd.get("label_tracks", np.zeros((0, 3))), np.float64).reshape(-1, 3):
            if int(tid) in ids:
                self.rows[int(tid)], self.start[int(tid)] = deque(maxlen=MAX_ROWS), float(start)
                self.decided[int(tid)] = float(decided)
        for rw in np.asarray(sd.get("label_rows", np.zeros((0, 1 + len(ROW_COLS)))), np.float32).reshape(
                -1, 1 + len(ROW_COLS)):
            tid = int(rw[0])
            if tid in self.rows:
                self.rows[tid].append(tuple(float(v) for v in rw[1:]))

    @staticmethod
    def max_nbytes(max_tracks: int) -> int:
        return max_tracks * (8 * len(TRACK_COLS) + MAX_ROWS * 4 * (1 + len(ROW_COLS)))


def _to_last_seen(r: np.ndarray) -> np.ndarray:
    """A track's rows up to its last detected frame (none when it has none)."""
    seen = np.flatnonzero(r[:, 1] > 0)
    return r[: seen[-1] + 1] if len(seen) else r[:0]
