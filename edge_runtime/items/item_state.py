"""One stream's item state: its tracker, its labeler and a ring of its recent item events, bounded,
snapshotted as arrays.

The labeler (item_events.py) decides each event as it happens: those go to the alert rules
(``rule_events``). With the bundle's track labeler model (``sequence``), the queries read the events
labelled over each track's whole path instead (``query_events``, track_labels.py), kept in a ring of
their own; without it, both read the labeler's. With it, the rules also read its bags and
pass-arounds of ended tracks (``second_look``); a bag the labeler decided after a handling longer than
``LONG_BAG_S`` is marked left to it (``left_to_labels``), and its bag of that track is read as the
track stands at each frame for ``EARLY_LOOK_S`` (``early``), then when the track ends.

Zones come from the stream's config; a stream without them proposes its own from the event head's
zone map (``zones.propose``) averaged over its first ``PROPOSE_FRAMES`` frames, and decides no item
event before that (``status()`` says which). The scanner light the item path reads is the head's, its
colour read from the frame's pixels in the ``light`` zone once the stream has one (configured, or
proposed from the frames: scanner_light.py).
"""
from __future__ import annotations

import json
from collections import deque

import numpy as np

from .basket import BasketWatch, Stay
from .detections import Detections
from .identity import TrackIdentities
from .item_events import HANDLING_COLS, TILL_TOLERANCE_S, ItemEvent, make_labeler
from .scanner_light import ScannerLight
from .sequence_model import SequenceModel
from .track_labels import TrackLabels
from .track_paths import TrackPaths
from .tracker import HISTORY, MAX_TRACKS, MAX_VOTES, ItemTracker, Track
from .zones import LIGHT, Zones, propose

MAX_ZONE_BYTES = 4096      # the zones' JSON in a snapshot: five polygons of a few points
MAX_LIGHT_BYTES = 256      # a light zone proposed beside configured zones: four points
PROPOSE_FRAMES = 50        # 10 s at 5 fps: the zone map averaged over these frames proposes a stream's zones

MAX_EVENTS = 512           # recent item events kept (a busy lane decides a few hundred an hour)
# a bag decided after a handling this long (s) is a hold over the bag as often as a bag (seed 1: 4 of its
# 9 false unpaid-bag alerts, 2 of its 92 right ones): with the track labeler, the rules leave it to its look
LONG_BAG_S = 6.0
EARLY_LOOK_S = 2.0   # how long after such a bag the labeler reads its live track each frame (then: at its end)
SECOND_LOOK = ("bag", "pass_around")  # the track labeler's events of ended tracks the alert rules read
MAX_SCANNED = 256          # tracks remembered as scanned (light or till read), for the labelled events' "paid"
TRACK_COLS = ("track_id", "start", "last_t", "score_sum", "hits")
EVENT_COLS = ("activity_id", "class_id", "track_id", "start", "end", "confidence", "x1", "y1", "x2", "y2", "scanned_at")
KEYS = ("bundle_id", "next_id", "tracks", "votes", "history", "events", "handling", "over_scanner")
PREFIX = "items."


class ItemState:
    """``update(dets)`` per frame (5 fps), in time order -> the item events decided at that frame."""

    def __init__(self, zones: Zones | None, *, bundle_id: str, labeler: str = "geometric", fps: float = 5.0,
                 max_tracks: int = MAX_TRACKS, max_events: int = MAX_EVENTS,
                 sequence: SequenceModel | None = None, embed_dim: int = 0, light_zone=None) -> None:
        """``zones`` None: proposed from the first ``PROPOSE_FRAMES`` frames' zone maps. ``sequence``: the
        bundle's track labeler model, whose events the queries read. ``embed_dim``: the width of the
        detections' identities (a head with det_embed), 0 without. ``light_zone``: the scanner light's
        polygon where the zones (proposed, or configured without one) have none: read from the start."""
        self.bundle_id, self.fps, self.labeler_name = str(bundle_id), float(fps), labeler
        self.light_zone = light_zone
        self.embed_dim = int(embed_dim)
        self.identities = TrackIdentities(max_events)  # ended tracks' identities, as many as the events kept
        self.sequence = sequence
        self.scanned: dict[int, float] = {}   # track id -> when it was scanned (the newest MAX_SCANNED)
        # the till's reads waiting for their frame (the till's feed adds from its thread), and those taken
        self._till_reads: deque[tuple[float, int | None]] = deque(maxlen=MAX_SCANNED)
        self._till_taken: dict[tuple[float, int | None], None] = {}
        self.configured = zones
        self.tracker = ItemTracker(fps=fps, max_tracks=max_tracks)
        # the track ids a restored snapshot gave (those below it; 0: not restored): an alert stored before a
        # restart names its item by one of them (alerts/cleared.py)
        self.restored_ids = 0
        self.recent: deque[ItemEvent] = deque(maxlen=int(max_events))       # what the queries read
        # what the rules read: the labeler's events, a ring of their own with the track labeler
        self.decided: deque[ItemEvent] = deque(maxlen=int(max_events)) if sequence is not None else self.recent
        self.reset()

    @property
    def labelled_by(self) -> str:
        """What labelled the item events the queries read: "track_labels" (the bundle's model) or the labeler's name."""
        return "track_labels" if self.sequence is not None else self.labeler_name

    @property
    def activities(self) -> tuple[str, ...]:
        """The activities the item events the queries read name (the track labeler's, else the labeler's)."""
        from .item_events import LABELERS

        return self.sequence.activities if self.sequence is not None else LABELERS[self.labeler_name].activities

    def reset(self) -> None:
        """No tracks, no events, no paths (a new session); proposed zones are proposed again. Track ids
        go on from where they were: an alert still watched (alerts/cleared.py) or a crop still kept never
        names a new track by an old one's id."""
        next_id = self.tracker.next_id
        self.tracker = ItemTracker(fps=self.fps, max_tracks=self.tracker.max_tracks)
        self.tracker.next_id = next_id
        self.recent.clear()
        self.decided.clear()
        self.identities.clear()
        self.scanned = {}
        self._doubted: dict[int, tuple[float, float]] = {}  # track id -> (start, end) of its long bag, left to the track labeler
        self.early: tuple[ItemEvent, ...] = ()  # the track labeler's bags of those tracks, read as they stand
        self.paths = TrackPaths()
        self._zone_sum: np.ndarray | None = None
        self._zone_frames = 0
        self._set_zones(self.configured, "configured" if self.configured is not None else None)

    def configure(self, zones: Zones | None) -> None:
        """The stream's own zones (its config, or set by staff on the dashboard); None: propose them
        again. The labeler starts over on them; the events decided so far and their paths stay (new
        tracks take new ids)."""
        self.configured = zones
        self._zone_sum, self._zone_frames = None, 0
        self.paths.flush()
        next_id = self.tracker.next_id
        self.tracker = ItemTracker(fps=self.fps, max_tracks=self.tracker.max_tracks)
        self.tracker.next_id = next_id
        self._set_zones(zones, "configured" if zones is not None else None)

    def _set_zones(self, zones: Zones | None, origin: str | None) -> None:
        self.zones, self.zones_origin = zones, origin
        self.labeler = make_labeler(self.labeler_name, zones) if zones is not None else None
        self.labels = (TrackLabels(self.sequence, zones, fps=self.fps, max_tracks=self.tracker.max_tracks)
                       if zones is not None and self.sequence is not None else None)
        self.basket = BasketWatch(zones) if zones is not None else None
        light = zones.polygons.get(LIGHT) if zones is not None else None
        if zones is not None and light is None and self.light_zone is not None:
            light, origin = self.light_zone, "configured"
        self.light = ScannerLight(light, origin)

    def _propose(self, dets: Detections) -> None:
        """Average the zone map until there are frames enough to propose the zones."""
        if dets.zone_p is None:
            return
        self._zone_sum = dets.zone_p.astype(np.float64) if self._zone_sum is None else self._zone_sum + dets.zone_p
        self._zone_frames += 1
        if self._zone_frames >= PROPOSE_FRAMES:
            cells = len(self._zone_sum)
            zones = propose(self._zone_sum / self._zone_frames, int(round(cells ** 0.5)))
            if zones.polygons:
                self._set_zones(zones, "proposed")

    def status(self) -> dict:
        """The item path as a stream's status shows it."""
        return {"zones": self.zones_origin or "missing: proposing from the event head's zone map "
                f"({self._zone_frames} of {PROPOSE_FRAMES} frames)",
                "zone_names": sorted(self.zones.polygons) if self.zones is not None else [],
                "light": self.light.status() if self.zones is not None else "the event head's read",
                "tracks": len(self.tracker.tracks), "events": len(self.recent), "labelled_by": self.labelled_by,
                "path_rows": len(self.paths.rows),
                "bytes": self.nbytes()}

    def update(self, dets: Detections, frame: np.ndarray | None = None) -> list[ItemEvent]:
        """One frame's detections (and the RGB frame itself, where the caller has it: the light zone's
        pixels are read from it) -> the item events decided at that frame."""
        self._take_till_reads(dets.t)
        if self.labeler is None:
            self._propose(dets)
            return []
        dets, changed = self.light.see(dets, frame)
        if changed:  # proposed, or a proposed one dropped
            self.zones = self.zones.with_light(self.light.polygon)
        step = self.tracker.update(dets)
        self.identities.record(step.ended)
        self.paths.update(step)
        out = self.labeler.update(step, dets.light, dets.t)
        self.basket.update(step, dets.t)
        self._remember(out)
        self._keep(out, self.labels.update(step, dets.light, dets, self.scanned) if self.labels is not None else None)
        if self._doubted:
            self._look_early(dets.t)
        return out

    def flush(self) -> list[ItemEvent]:
        """The stream ends: decide every live track as if it left now."""
        if self.labeler is None:
            return []
        out = self.labeler.flush()
        self.identities.record(self.tracker.flush())
        self.paths.flush()
        self.basket.flush()
        self._remember(out)
        self._keep(out, self.labels.flush(self.scanned) if self.labels is not None else None)
        self._doubted, self.early = {}, ()  # every track is labelled whole now
        return out

    def _keep(self, decided: list[ItemEvent], labelled: list[ItemEvent] | None) -> None:
        """The labeler's events into the rules' ring, as decided; the track labeler's into the queries'
        (and the tracks of the bags left to it, ``left_to_labels``, into ``_look_early``'s)."""
        self.decided.extend(decided)
        if labelled is None:
            return
        for e in decided:
            if self.left_to_labels(e):
                self._doubted[e.track_id] = (e.start, e.end)
        self._add(labelled)

    def left_to_labels(self, e: ItemEvent) -> bool:
        """Whether the alert rules leave a bag the labeler decided to the track labeler's look at its
        track: with the track labeler, a bag after a handling longer than ``LONG_BAG_S``."""
        return self.labels is not None and e.activity == "bag" and e.end - e.start > LONG_BAG_S

    def _look_early(self, t: float) -> None:
        """The track labeler's bags of the tracks whose long bag it decides, labelled as they stand at each
        frame for ``EARLY_LOOK_S`` after that bag (``early``): a bag the labeler reads there then need not
        wait for the track to end. An ended track's bags come with its labelling (``recent``)."""
        live = self.labels.rows
        self._doubted = {tid: span for tid, span in self._doubted.items()
                         if tid in live and t - span[1] <= EARLY_LOOK_S}
        got = self.labels.look(list(self._doubted), self.scanned)
        self.early = tuple(e for e in got if e.activity == "bag" and e.end > self._doubted[e.track_id][0])

    def _add(self, events: list[ItemEvent]) -> None:
        """Labelled events into the queries' ring in order of their ends, so the ring drops the
        earliest-ending first and its oldest end is where the kept events are complete from (a track's
        events come when it ends, after events of other tracks that ended later; the labeler's events
        come as they are decided, at their end or just after, and are kept in that order)."""
        ring = self.recent
        for e in events:
            if not ring or e.end >= ring[-1].end:
                ring.append(e)
                continue
            if len(ring) == ring.maxlen:
                if e.end <= ring[0].end:
                    continue  # it would be the first dropped: the ring is complete from its oldest end on
                ring.popleft()
            ends = [x.end for x in ring]
            ring.insert(int(np.searchsorted(ends, e.end, side="right")), e)

    def _remember(self, decided: list[ItemEvent]) -> None:
        """The labeler's scans, for the labelled events' ``scanned_at`` (paid)."""
        for e in decided:
            if e.scanned_at is not None:
                self._scanned(e.track_id, e.scanned_at)

    def _scanned(self, track_id: int, t: float) -> None:
        self.scanned.setdefault(int(track_id), float(t))
        while len(self.scanned) > MAX_SCANNED:
            del self.scanned[next(iter(self.scanned))]

    def rule_events(self) -> tuple[ItemEvent, ...]:
        """The labeler's events, decided as they happen (one C-level copy of the ring), oldest first."""
        return tuple(self.decided)

    def entering(self) -> tuple[ItemEvent, ...]:
        """The bags under way as of the last frame (items carried into the bag zone, not yet let go
        there): not events yet, an early nudge's cue (the rules' ``nudges``)."""
        return self.labeler.entering if self.labeler is not None else ()

    def second_look(self) -> tuple[ItemEvent, ...]:
        """With the track labeler, its bags and pass-arounds of tracks that have ended, in order of their
        ends, then its bags of live tracks whose long bag it decides (``early``); none without it: the
        rules' second look at a track, for what the events decided as they happened missed, doubted or
        left to it."""
        if self.labels is None:
            return ()
        return tuple(e for e in tuple(self.recent) if e.activity in SECOND_LOOK) + self.early

    def query_events(self) -> tuple[ItemEvent, ...]:
        """The item events the queries read: the ring (one C-level copy: the intake thread appends to it
        while a query reads), and with the track labeler, the live tracks labelled as they stand."""
        kept = tuple(self.recent)
        if self.labels is None:
            return kept
        return kept + tuple(self.labels.live_events(dict(self.scanned)))

    def add_till_reads(self, reads) -> None:
        """The till's good reads, (stream seconds, class id or None), from any thread (the till's feed):
        each is matched (``till_read``) at the first frame at or after its time, on the intake thread. A
        read given again is matched once."""
        self._till_reads.extend((float(t), None if c is None else int(c)) for t, c in reads)

    def _take_till_reads(self, now: float) -> None:
        if not self._till_reads:
            return
        waiting = []
        while self._till_reads:
            waiting.append(self._till_reads.popleft())
        for t, c in sorted(waiting, key=lambda r: r[0]):
            if t > now:  # stamped ahead of the frames: matched once they reach it
                self._till_reads.append((t, c))
            elif (t, c) not in self._till_taken:
                self._till_taken[(t, c)] = None
                while len(self._till_taken) > MAX_SCANNED:
                    del self._till_taken[next(iter(self._till_taken))]
                self.till_read(t, c)

    def till_read(self, t: float, class_id: int | None = None) -> int | None:
        """A till's good read at stream time ``t``: the id of the track it scanned, None when no track
        was over the scanner within the tolerance."""
        tid = self.labeler.match_till_read(float(t), class_id) if self.labeler is not None else None
        if tid is not None:
            self._scanned(tid, float(t))
        return tid

    def fixed_after(self, track_id: int, start: float, since: float) -> tuple[float, str, int] | None:
        """Whether the item of track ``track_id``, bagged from ``start`` and alerted at ``since`` (stream
        seconds), was afterwards paid or put back: (when, "scanned" | "put_back", the track that did it), else
        None. The item is that track, or a track of its product that began in the bag zone after ``start``
        (the item taken out of the bag: the tracker gives it a new track). Scanned: a till read or the
        scanner's light matched to it after ``since``; put back: its put-back event, begun after ``start``
        and ended after ``since``. Called from the alerts' thread: it reads copies of what the intake
        thread appends to."""
        scanned = dict(self.scanned)  # one C-level copy: till reads add to it meanwhile
        events = tuple(self.recent) + (tuple(self.decided) if self.decided is not self.recent else ())
        found = [(t, "scanned", tid) for tid, t in scanned.items() if t > since]
        found += [(e.end, "put_back", e.track_id) for e in events
                  if e.activity == "put_back" and e.start >= start and e.end > since]
        product = None
        for t, why, tid in sorted(found):
            if tid == track_id:
                return t, why, int(tid)
            product = self._class_of(track_id, events) if product is None else product
            if product is not None and self._class_of(tid, events) == product and self._began_in_bag(tid, start):
                return t, why, int(tid)
        return None

    def _began_in_bag(self, track_id: int, after: float) -> bool:
        """Whether track ``track_id``'s path begins in the bag zone, after stream time ``after``."""
        first = None
        for tr in self.tracker.tracks:  # a live track's own history, when it still holds its first box
            if tr.track_id == track_id and tr.history and tr.history[0][0] <= tr.start:
                first = tr.history[0][:5]
        if first is None:  # else its kept path (a copy of the paths' ring)
            path = self.paths.path(track_id)
            first = path[0] if len(path) else None
        if self.zones is None or first is None or first[0] < after:
            return False
        return self.zones.zone_of((first[1] + first[3]) / 2, (first[2] + first[4]) / 2) == "bag"

    def _class_of(self, track_id: int, events: tuple[ItemEvent, ...]) -> int | None:
        """The product class of a track: its live track's vote, else its newest event's; None when unknown."""
        for tr in self.tracker.tracks:
            if tr.track_id == track_id:
                return tr.class_id
        named = [e.class_id for e in events if e.track_id == track_id]
        return named[-1] if named else None

    def identity(self, track_id: int):
        """Track ``track_id``'s identity (identity.py), live or ended; None without one."""
        return self.identities.of(track_id, self.tracker.tracks)

    def events(self, window: tuple[float, float]) -> list[ItemEvent]:
        a, b = window
        return [e for e in self.recent if e.overlaps(a, b)]

    def basket_stays(self, window: tuple[float, float]) -> list[Stay]:
        """Items resting in the basket, never taken out, whose stay overlaps ``window`` (basket.py)."""
        return self.basket.stays(window) if self.basket is not None else []

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
            "marks": np.array([[tr.track_id, *r] for tr in tracks for r in tr.marks], np.float64).reshape(-1, 4),
            "events": _event_rows(self.recent),
            # proposed zones, as JSON bytes (configured ones come from the config or zones.json again;
            # empty while proposing)
            "zones": np.frombuffer(json.dumps(self.zones.to_dict() if self.zones_origin == "proposed" else {}).encode(),
                                   np.uint8).copy(),
            # a light zone proposed beside configured zones (proposed zones hold theirs)
            "light_zone": np.frombuffer(json.dumps(self.light.polygon if self.light.origin == "proposed" and
                                                   self.zones_origin == "configured" else None).encode(), np.uint8).copy(),
        }
        sd |= self.labeler.state_dict() if self.labeler is not None else {
            "handling": np.zeros((0, len(HANDLING_COLS))), "over_scanner": np.zeros((0, 2))}
        if self.basket is not None:
            sd |= self.basket.state_dict()
        sd |= self.paths.state_dict()
        if self.embed_dim:
            sd |= self.identities.state_dict(tracks, self.embed_dim)
        if self.sequence is not None:
            sd |= self.labels.state_dict() if self.labels is not None else {}
            sd["scanned"] = np.array(list(self.scanned.items()), np.float64).reshape(-1, 2)
            sd["decided"] = _event_rows(self.decided)
        return {PREFIX + k: v for k, v in sd.items()}

    def load_state_dict(self, sd: dict[str, np.ndarray], bundle_id: str) -> None:
        """ValueError (one line) for a snapshot of another bundle or one that lacks arrays."""
        missing = [k for k in KEYS if PREFIX + k not in sd]
        if missing:
            raise ValueError(f"the item-state snapshot lacks {', '.join(missing)}")
        theirs = bytes(np.asarray(sd[PREFIX + "bundle_id"], np.uint8)).decode(errors="replace")
        if theirs != str(bundle_id) or theirs != self.bundle_id:
            raise ValueError(f"the item-state snapshot is of bundle {theirs!r}, this stream runs {self.bundle_id!r}")
        get = {k: np.asarray(sd[PREFIX + k], np.float64) for k in KEYS[2:]}
        self._doubted, self.early = {}, ()  # a long bag left to the track labeler: read when its track ends
        tracks = {}
        for tid, start, last_t, score_sum, hits in get["tracks"].reshape(-1, len(TRACK_COLS)).tolist():
            tracks[int(tid)] = Track(int(tid), start, last_t, score_sum=score_sum, hits=int(hits))
        for tid, c, w in get["votes"].reshape(-1, 3).tolist():
            if int(tid) in tracks:
                tracks[int(tid)].votes[int(c)] = w
        for row in get["history"].reshape(-1, 7).tolist():
            if int(row[0]) in tracks:
                tracks[int(row[0])].history.append(tuple(row[1:]))
        if PREFIX + "marks" in sd:  # a snapshot from before the marks has none: events take the track's vote
            for row in np.asarray(sd[PREFIX + "marks"], np.float64).reshape(-1, 4).tolist():
                if int(row[0]) in tracks:
                    tracks[int(row[0])].marks.append((row[1], int(row[2]), row[3]))
        live = [tr for tr in tracks.values() if tr.history]
        self.reset()
        if self.configured is None and PREFIX + "zones" in sd:  # zones proposed before the snapshot
            saved = json.loads(bytes(np.asarray(sd[PREFIX + "zones"], np.uint8)).decode() or "{}")
            if saved:
                self._set_zones(Zones.from_dict(saved), "proposed")
        if self.zones is not None and LIGHT not in self.zones.polygons and PREFIX + "light_zone" in sd:
            saved = json.loads(bytes(np.asarray(sd[PREFIX + "light_zone"], np.uint8)).decode() or "null")
            if saved is not None:  # proposed beside configured zones before the snapshot
                self.zones = self.zones.with_light(saved)
                self.light = ScannerLight(self.zones.polygons[LIGHT], "proposed")
        self.tracker.restore(live, int(np.asarray(sd[PREFIX + "next_id"]).reshape(-1)[0]))
        self.restored_ids = self.tracker.next_id
        if self.embed_dim:  # a snapshot without identities (taken before them) restores none
            saved = {k: np.asarray(sd[PREFIX + k]) for k in ("identities", "ident_live") if PREFIX + k in sd}
            bad = [k for k, v in saved.items() if v.size and (v.ndim != 2 or v.shape[1] != 1 + self.embed_dim)]
            if bad:
                raise ValueError(f"the item-state snapshot's track identities are not {self.embed_dim} wide")
            self.identities.load_state_dict(saved, live)
        if self.labeler is not None:
            self.labeler.load_state_dict({"handling": get["handling"], "over_scanner": get["over_scanner"]}, live)
        if self.basket is not None:  # a snapshot from before the basket watch has none: it starts empty
            self.basket.load_state_dict({k: np.asarray(sd[PREFIX + k]) for k in ("basket", "basket_handled")
                                         if PREFIX + k in sd}, live)
        self.paths.load_state_dict({k: np.asarray(sd[PREFIX + k]) for k in ("paths",) if PREFIX + k in sd}, live)
        if self.labels is not None:  # a snapshot without the track labeler's rows: live tracks start them again
            self.labels.load_state_dict({k: np.asarray(sd[PREFIX + k]) for k in ("label_tracks", "label_rows")
                                         if PREFIX + k in sd}, live)
            for tid, t in np.asarray(sd.get(PREFIX + "scanned", np.zeros((0, 2))), np.float64).reshape(-1, 2):
                self._scanned(int(tid), float(t))
        self.recent.clear()
        self.recent.extend(_events_of(get["events"]))
        if self.decided is not self.recent:  # a snapshot of a bundle without the track labeler: its ring was these
            self.decided.clear()
            self.decided.extend(_events_of(np.asarray(sd.get(PREFIX + "decided", get["events"]), np.float64)))

    def nbytes(self) -> int:
        """Bytes of the snapshot's arrays now."""
        return int(sum(a.nbytes for a in self.state_dict().values()))

    def max_nbytes(self) -> int:
        """The most ``nbytes()`` can be: every array is bounded by the live tracks, their history and
        votes, the scanner times a till read looks back over (and each handling's first), the event ring
        and the paths' ring."""
        over = int(np.ceil(4 * TILL_TOLERANCE_S * self.fps)) + 2
        per_track = 8 * (len(TRACK_COLS) + HISTORY * (7 + 4) + MAX_VOTES * 3 + len(HANDLING_COLS) + over * 2)
        labels = (TrackLabels.max_nbytes(self.tracker.max_tracks) + MAX_SCANNED * 16
                  + self.decided.maxlen * 8 * len(EVENT_COLS)) if self.sequence is not None else 0
        return (len(self.bundle_id.encode()) + 8 + MAX_ZONE_BYTES + MAX_LIGHT_BYTES + self.tracker.max_tracks * per_track
                + self.recent.maxlen * 8 * len(EVENT_COLS) + BasketWatch.max_nbytes(self.tracker.max_tracks)
                + TrackPaths.max_nbytes(self.paths.rows.maxlen) + labels
                + TrackIdentities.max_nbytes(self.embed_dim, self.tracker.max_tracks, self.identities.maxlen))


def _event_rows(events) -> np.ndarray:
    return np.array([[e.activity_id, e.class_id, e.track_id, e.start, e.end, e.confidence, *e.box,
                      np.nan if e.scanned_at is None else e.scanned_at] for e in events],
                    np.float64).reshape(-1, len(EVENT_COLS))


def _events_of(rows: np.ndarray) -> list[ItemEvent]:
    from edge_runtime.checkout.catalog import ACTIVITIES

    return [ItemEvent(ACTIVITIES[int(r[0])], int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5], (r[6], r[7], r[8], r[9]),
                      None if np.isnan(r[10]) else r[10]) for r in rows.reshape(-1, len(EVENT_COLS)).tolist()]
