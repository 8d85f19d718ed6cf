"""One stream's state: what the shared engine reads and writes for it, and nothing of the graphs.

It holds the pending clip (frames through the backbone, not yet a full clip), the memory's clock
(first committed frame, end of the last committed one, last frame added), the source's clock
(``clock``: source times to stream times, the wall time of stream time 0), the gaps, the device
memory (``TokenMemory``), the online SVD, the OOD monitor, and the committed reading queries use.
Its fields change only through its own methods, which the ingest path, the Engine and the intake
call; everyone else reads it through read-only properties and ``status()``.

Only full clips are committed; a partial clip stays pending (and is saved in snapshots) until more
frames arrive or ``pad`` makes it a clip at the end of the stream.

Queries read ``committed``, an immutable host copy taken at each commit (copy-on-commit): answering
never blocks intake and intake never changes what a running query sees. When the engine answers
with the memory reader, a commit also carries the reader's *facts* of that memory (per-token arrays
of constant size, ``FACT_NAMES``): the engine reads the new memory between ``fold`` and
``publish``, so a query never sees a memory without its facts. Facts are saved in snapshots under
``reader.<name>``; restoring a snapshot without them into a state that reads facts is a
``MissingFacts`` error (one line), never a silent recomputation of facts the snapshot did not keep. Whatever changes the state
(adding frames, committing, reset, restore) holds ``lock``; ``status`` and the read-only
properties do not take it, so a status poll never waits for a backbone call.

Coverage: a frame at t stands for [t, t + 1/fps). The memory covers [first committed frame,
last committed frame + 1/fps) minus the gaps: a gap is recorded wherever consecutive frames are
more than ``gap_factor`` frame periods apart (source stalls, reconnects, restarts).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from edge_runtime.memory.clip_step import clip_inputs, fold_clip
from edge_runtime.memory.committed import Committed
from edge_runtime.memory.ood import OODMonitor
from edge_runtime.memory.svd import OnlineSVD
from edge_runtime.memory.timeline import FACT_NAMES, NoTimeline, Timeline, TimelineSpec
from edge_runtime.memory.token_memory import TokenMemory
from edge_runtime.engine.frame_views import FrameViews
from edge_runtime.engine.source_clock import SourceClock
from edge_runtime.sources.base import TimestampSampler

MAX_GAPS = 256            # the gap list is bounded: constant memory over any run
STATE_VERSION = 1
FACT_KEY = "reader."     # snapshot keys of the facts: reader.ident, reader.act_logits, ...
ITEMS_KEY = "items."     # snapshot keys of the item tracks and events


class MissingFacts(ValueError):
    """A snapshot without the reader's facts, restored into a state that answers from them (one line)."""


class MissingTimeline(MissingFacts):
    """A snapshot without the timeline track, restored into a state that keeps one (one line)."""


class StreamState:
    def __init__(self, memory: TokenMemory, svd: OnlineSVD, ood: OODMonitor, *, clip_frames: int,
                 tokens_per_frame: int, token_dim: int, fps: float, gap_factor: float,
                 heads_dtypes: dict[str, Any], facts: dict[str, tuple[tuple[int, ...], Any]] | None = None,
                 timeline: TimelineSpec | None = None, items: Any = None) -> None:
        """``facts``: name -> (shape, dtype) of one memory's facts when the engine answers with the
        reader (the answer graph's inputs), None when it answers with the heads. ``timeline``: the
        bundle's timeline track, whose FIFO this state then owns (its rows follow the memory's in
        the facts the answer graph reads). ``items``: this stream's item tracks and events
        (edge_runtime/items/item_state.py) when the engine has an event path: frames then arrive
        faster than the memory's fps, and the memory takes those on its own 1/fps grid."""
        self.memory, self.svd, self.ood = memory, svd, ood
        self.items = items
        self.evidence = None  # the item tracks' recent crops (keep_evidence), for the alerts' evidence
        self._views = FrameViews()  # the camera's views of frames not yet cropped (offer_view)
        self.fact_specs = facts
        self.timeline: Timeline | None = None
        if timeline is not None and facts is not None:
            self.timeline = Timeline(timeline, {n: (shape[1:], dt) for n, (shape, dt) in facts.items()})
        self.clip_frames, self.fps, self.gap_factor = int(clip_frames), float(fps), float(gap_factor)
        self.heads_dtypes = heads_dtypes  # the committed SVD is cast once, to what the heads take
        self.pending_tokens = np.zeros((self.clip_frames, tokens_per_frame, token_dim), np.float32)
        self.pending_t = np.zeros((self.clip_frames,), np.float64)
        self.lock = threading.RLock()
        self._on_stage: Callable[[str, float], None] | None = None  # telemetry hook: (stage, seconds)
        self.reset()
        # after reset: emptying the memory (a new session) leaves the source's clock going on
        self.clock = SourceClock(self.fps, lambda: self.last_time)

    def observe_stages(self, hook: Callable[[str, float], None] | None) -> None:
        """Telemetry: ``hook(stage, seconds)`` hears every stage run for this stream (None: nobody)."""
        self._on_stage = hook

    def report(self, stage: str, seconds: float) -> None:
        hook = self._on_stage
        if hook is not None:
            hook(stage, seconds)

    # -- lifecycle of the memory ------------------------------------------------------------
    def reset(self) -> None:
        """Empty memory and SVD, a fresh clock: the next frame starts a new session."""
        with self.lock:
            self.memory.reset()
            self.svd.reset()
            self.ood.reset()
            if self.timeline is not None:
                self.timeline.reset()
            self.pending_frames = 0
            self.first_t: float | None = None
            self.end_t: float | None = None
            self.last_time: float | None = None   # the last frame added (committed or pending)
            self.last_input: float | None = None  # the last frame in, the event path's included
            self._memory_grid = TimestampSampler(self.fps) if self.items is not None else None
            if self.items is not None:
                self.items.reset()
            if self.evidence is not None:  # a new session's track ids start again: old crops would be misread
                self.evidence.clear()
            self._views.clear()
            self.frames_processed = 0
            self.clips = 0
            self._gaps: deque[tuple[float, float]] = deque(maxlen=MAX_GAPS)
            self._version = 0
            self._publish()

    def check_times(self, times: np.ndarray, after: float | None = None) -> None:
        """ValueError unless ``times`` are finite, strictly increasing and after ``after`` (the last
        frame added, by default)."""
        if not len(times):
            return
        if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise ValueError("frame times must be finite and strictly increasing")
        after = self.last_input if after is None else after
        if after is not None and times[0] <= after:
            raise ValueError(f"frame time {times[0]:.3f} s is not after the last one ({after:.3f} s)")

    def takes(self, t: float) -> bool:
        """Whether the memory takes the frame at ``t`` (every frame without an event path; with one,
        the frames on the memory's 1/fps grid). Call once per frame, in order."""
        self.last_input = t
        return self._memory_grid is None or self._memory_grid.keep(t)

    def set_zones(self, zones) -> None:
        """This stream's zones (``edge_runtime.items.zones.Zones``; None: proposed from the event head's
        zone map). ValueError when the stream has no event path."""
        if self.items is None:
            raise ValueError("this stream has no event path (its bundle has no event head): zones do not apply")
        with self.lock:
            self.items.configure(zones)

    def keep_evidence(self, mode: str, max_bytes: int) -> None:
        """Keep crops of the item tracks (``mode`` item: each item's region; frame: the whole frame) in a
        ring of at most ``max_bytes`` (edge_runtime/items/evidence_ring.py); ``off``: keep none. The
        same settings again keep the ring as it is. ValueError for a stream without an event path."""
        from edge_runtime.items.evidence_ring import EvidenceRing

        if mode == "off":
            self.evidence = None
            return
        if self.items is None:
            raise ValueError("this stream has no event path (its bundle has no event head): no item crops to keep")
        ring = self.evidence
        if ring is None or ring.mode != mode or ring.max_bytes != int(max_bytes):
            with self.lock:
                self.evidence = EvidenceRing(mode, max_bytes)

    def offer_view(self, t: float, view) -> None:
        """The camera's view of the frame at stream time ``t`` (``Frame.view``), handed in by the intake
        before the frame: its evidence crops are cut from the view (edge_runtime/engine/frame_views.py).
        Nothing is kept while the stream keeps no evidence."""
        if self.evidence is not None:
            self._views.offer(t, view)

    def observe(self, detections: list, frames: list | None = None) -> None:
        """Frames' item detections (in time order) into this stream's tracks and item events; with
        ``frames`` (each detection's RGB frame, or None) the scanner light's zone is read from them, and
        with an evidence ring the tracks' crops are kept too, from the camera's view of the frame where
        the intake offered one."""
        ring = self.evidence
        for i, d in enumerate(detections):
            frame = frames[i] if frames is not None else None
            self.items.update(d, frame)
            if ring is not None and frame is not None:
                view = self._views.take(d.t)
                ring.add(frame if view is None else view, d.t, self._seen_boxes(d))

    def _seen_boxes(self, dets) -> dict[int, np.ndarray]:
        """Track id -> its box, of the tracks detected in ``dets``, the frame the items were last given
        (none while the zones are being proposed: no track is followed yet)."""
        if self.items.labeler is None:
            return {}
        return {int(tid): dets.boxes[i] for tid, i in self.items.tracker.last_seen.items() if i < len(dets.boxes)}

    def add(self, tok: np.ndarray, t: float) -> bool:
        """Add one frame's tokens at stream time ``t``; True when the pending clip is full (the
        engine's ``step`` then commits it)."""
        period = 1.0 / self.fps
        if self.last_time is not None and t - self.last_time > self.gap_factor * period:
            self._gaps.append((self.last_time + period, t))
        self.pending_tokens[self.pending_frames] = tok
        self.ood.update(tok)
        self.pending_t[self.pending_frames] = t
        self.pending_frames += 1
        self.last_time = self.last_input = t
        self.frames_processed += 1
        return self.pending_frames == self.clip_frames

    def pad(self) -> bool:
        """Fill the rest of a partial clip with copies of its last frame, so that it can run as a
        clip at the end of a stream; False when nothing is pending. The copies are not frames:
        ``commit`` folds and counts only the real ones."""
        n = self.pending_frames
        if n == 0:
            return False
        self.pending_tokens[n:] = self.pending_tokens[n - 1]
        self.pending_t[n:] = self.pending_t[n - 1]
        return True

    def clip_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pending clip as the sampler's clip inputs."""
        return clip_inputs(self.pending_tokens, self.pending_t)

    def commit(self) -> None:
        """The host half of a commit, after the sampler wrote the new memory: SVD, clock, publish
        (facts, if this state reads them, stay empty: the engine's ``step`` computes them)."""
        self.publish(self.fold())

    def fold(self) -> Committed:
        """The pending clip into the SVD and the clock -> the new commit, not yet visible to
        queries (``publish`` makes it so, with its facts)."""
        n = self.pending_frames
        t0 = time.perf_counter()
        fold_clip(self.svd, self.pending_tokens, n)
        self.report("svd", time.perf_counter() - t0)
        if self.first_t is None:
            self.first_t = float(self.pending_t[0])
        self.end_t = float(self.pending_t[n - 1]) + 1.0 / self.fps
        self.pending_frames = 0
        self.clips += 1
        t0 = time.perf_counter()
        c = self._next_commit(None)
        self.report("commit", time.perf_counter() - t0)
        return c

    def publish(self, c: Committed, facts: dict[str, np.ndarray] | None = None,
                clip_tokens: dict[str, np.ndarray] | None = None) -> None:
        """Make a commit from ``fold`` what queries read, with the reader's facts of it (if any);
        ``clip_tokens``: the committed clip's timeline tokens (``timeline.select``), appended to the
        FIFO first, so that the commit carries the memory's facts and the timeline's side by side."""
        if self.timeline is not None and clip_tokens is not None:
            self.timeline.push(clip_tokens)
        if facts is not None:
            c = replace(c, facts=self._checked_facts(self._with_timeline(facts)))
        elif self.fact_specs is not None and c.facts is None:
            c = replace(c, facts=self.empty_facts())
        self._committed = self._timeline_times(self._without_tokens(c))

    def _without_tokens(self, c: Committed) -> Committed:
        """A reader state's commit keeps no copy of the memory's tokens: the reader read them once at
        this commit, and its answers read the facts (0.4 MB less per lvm-tiny stream). Heads re-read them."""
        if self.fact_specs is None or "mem" not in c.memory:
            return c
        return replace(c, memory={k: v for k, v in c.memory.items() if k != "mem"})

    def empty_facts(self) -> dict[str, np.ndarray] | None:
        """Facts of a memory with nothing in it: zeros (no query reaches them: nothing is covered)."""
        if self.fact_specs is None:
            return None
        return {n: np.zeros(shape, dt) for n, (shape, dt) in self.fact_specs.items()}

    def _with_timeline(self, facts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The memory's facts (m rows), followed by the timeline's when this state keeps one."""
        if self.timeline is None:
            return facts
        return {n: np.concatenate([np.asarray(facts[n]), self.timeline.facts[n]]) for n in FACT_NAMES}

    def _timeline_times(self, c: Committed) -> Committed:
        """The commit with the times and validity of all its fact rows (memory, then timeline)."""
        if self.timeline is None:
            return c
        tl = self.timeline
        return replace(c, fact_t=np.concatenate([c.memory["mem_t"][0].astype(np.float32), tl.t]),
                       fact_valid=np.concatenate([c.memory["mem_valid"][0].astype(np.float32), tl.valid]),
                       timeline_span=tl.span())

    def _checked_facts(self, facts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host copies of one memory's facts at their fixed shapes and dtypes (ValueError otherwise)."""
        if self.fact_specs is None:
            raise ValueError("this stream state does not answer with the reader: it keeps no facts")
        out = {}
        for n, (shape, dt) in self.fact_specs.items():
            if n not in facts:
                raise ValueError(f"reader facts lack '{n}'")
            arr = np.asarray(facts[n])
            if arr.shape != tuple(shape):
                raise ValueError(f"reader fact '{n}' has shape {arr.shape}, expected {tuple(shape)}")
            out[n] = np.array(arr, dtype=dt)  # a copy: what a commit publishes is never shared
        return out

    def _next_commit(self, facts: dict[str, np.ndarray] | None) -> Committed:
        st = self.svd.state_dict()
        dt = self.heads_dtypes
        c = Committed(
            memory=self.memory.read(),
            svd_basis=st["svd_basis"][None].astype(dt["svd_basis"]),
            svd_sv=st["svd_singular_values"][None].astype(dt["svd_sv"]),
            start=self.first_t, end=self.end_t,
            gaps=tuple(g for g in self._gaps if self.end_t is not None and g[0] < self.end_t),
            version=self._version, facts=facts)
        self._version += 1
        return c

    def _publish(self, facts: dict[str, np.ndarray] | None = None) -> None:
        """Publish the current state (reset, restore): ``facts`` are already the full rows (memory + timeline)."""
        self._committed = self._timeline_times(self._without_tokens(
            self._next_commit(facts if facts is not None else self.empty_facts())))

    # -- reading ----------------------------------------------------------------------------
    @property
    def committed(self) -> Committed:
        return self._committed

    @property
    def coverage(self) -> dict[str, float | None]:
        c = self._committed
        return {"start": c.start, "end": c.end}

    @property
    def gaps(self) -> list[tuple[float, float]]:
        return list(self._gaps)

    @property
    def memory_bytes(self) -> int:
        """Bytes of stream state: device buffers, the committed copy, SVD, pending clip. Constant."""
        c = self._committed
        svd = sum(v.nbytes for v in self.svd.state_dict().values())
        facts = sum(v.nbytes for v in c.facts.values()) if c.facts is not None else 0
        if self.timeline is not None:  # the FIFO itself, and the committed copy's times
            facts += self.timeline.nbytes + 2 * c.fact_t.nbytes
        return int(self.memory.nbytes + sum(v.nbytes for v in c.memory.values()) + c.svd_basis.nbytes
                   + c.svd_sv.nbytes + svd + facts + self.pending_tokens.nbytes + self.pending_t.nbytes
                   + MAX_GAPS * 16 + (self.items.nbytes() if self.items is not None else 0))

    def status(self) -> dict[str, Any]:
        """The stream's memory side as status shows it: plain values, taken without the lock."""
        return {"coverage": self.coverage, "stream_time": self.last_time, "frames_processed": self.frames_processed,
                "pending_frames": self.pending_frames, "clips": self.clips, "memory_bytes": self.memory_bytes,
                "gaps": [list(g) for g in self.gaps], "ood": self.ood.status(),
                **({"timeline": self.timeline.status()} if self.timeline is not None else {}),
                **({"items": self.items.status()} if self.items is not None else {}),
                **({"evidence": self.evidence.status()} if self.evidence is not None else {})}

    # -- persistence ------------------------------------------------------------------------
    def snapshot_meta(self) -> dict[str, Any]:
        """What a snapshot's metadata records of this stream: its memory's span and clocks."""
        return {"coverage": self.coverage, "frames_processed": self.frames_processed, "last_time": self.last_time,
                **self.clock.meta()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Fixed-shape arrays of the whole stream state (for snapshots)."""
        with self.lock:
            nan = float("nan")
            state = {f"memory_{k}": v for k, v in self.memory.read().items()}
            state.update(self.svd.state_dict())
            state["pending_tokens"] = self.pending_tokens.copy()
            state["pending_t"] = self.pending_t.copy()
            state["clock"] = np.array([
                self.first_t if self.first_t is not None else nan,
                self.end_t if self.end_t is not None else nan,
                self.last_time if self.last_time is not None else nan,
                self.frames_processed, self.clips, self.pending_frames, STATE_VERSION], np.float64)
            state["gaps"] = np.array(list(self._gaps), np.float64).reshape(-1, 2)
            facts = self._committed.facts
            if facts is not None:
                m = self._committed.memory["mem_t"].shape[1]  # the memory's rows; the timeline keeps its own
                state.update({FACT_KEY + n: v[:m].copy() for n, v in facts.items()})
            if self.timeline is not None:
                state.update(self.timeline.state_dict())
            if self.items is not None:
                state.update(self.items.state_dict())  # its keys start with ITEMS_KEY
            return state

    def load_state_dict(self, state: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        """Restore ``state_dict``'s arrays (and, given a snapshot's ``meta``, the source's clock it
        recorded); ValueError (and an empty state) when they do not fit, ``MissingFacts`` when this
        state reads facts and the arrays hold none. Facts in the arrays of a state that reads none
        are ignored."""
        with self.lock:
            facts = None
            if self.fact_specs is not None:
                found = {k[len(FACT_KEY):]: v for k, v in state.items() if k.startswith(FACT_KEY)}
                if not found:
                    self.reset()
                    raise MissingFacts("the snapshot holds no reader facts (written by a runtime answering "
                                       "with the heads), and this one answers with the reader")
                try:
                    if self.timeline is not None:
                        self.timeline.load_state_dict(state)
                    facts = self._checked_facts(self._with_timeline(found))
                except NoTimeline as err:  # sound, of another bundle kind: not to be set aside as damaged
                    self.reset()
                    raise MissingTimeline(str(err)) from None
                except ValueError as err:
                    self.reset()
                    raise ValueError(f"state does not fit this engine ({err})") from None
            try:
                clock = np.asarray(state["clock"], np.float64)
                if clock.shape != (7,) or int(clock[6]) != STATE_VERSION:
                    raise ValueError(f"clock has shape {clock.shape}")
                pending = np.asarray(state["pending_tokens"], np.float32)
                if pending.shape != self.pending_tokens.shape:
                    raise ValueError(f"pending clip is {pending.shape}, expected {self.pending_tokens.shape}")
                gaps = np.asarray(state["gaps"], np.float64).reshape(-1, 2)
                self.memory.load({k[len("memory_"):]: v for k, v in state.items() if k.startswith("memory_")})
                self.svd.load_state_dict(state)
            except (KeyError, ValueError) as err:
                self.reset()
                raise ValueError(f"state does not fit this engine ({err})") from None
            self.pending_tokens[:] = pending
            self.pending_t[:] = np.asarray(state["pending_t"], np.float64)
            f = lambda x: None if math.isnan(x) else float(x)  # noqa: E731
            self.first_t, self.end_t, self.last_time = f(clock[0]), f(clock[1]), f(clock[2])
            self.frames_processed, self.clips, self.pending_frames = int(clock[3]), int(clock[4]), int(clock[5])
            self._gaps = deque((tuple(g) for g in gaps.tolist()), maxlen=MAX_GAPS)
            self.last_input = self.last_time
            if self._memory_grid is not None and self.last_time is not None:
                self._memory_grid.take(self.last_time)  # the next memory frame a period after the last
            if self.items is not None:
                found = {k: v for k, v in state.items() if k.startswith(ITEMS_KEY)}
                try:  # a snapshot from before the event path has no item state: the tracks start empty
                    if found:
                        self.items.load_state_dict(found, self.items.bundle_id)
                    else:
                        self.items.reset()
                except ValueError as err:
                    self.reset()
                    raise ValueError(f"state does not fit this engine ({err})") from None
            self._publish(facts)
            if meta is not None:
                self.clock.restore(meta)
