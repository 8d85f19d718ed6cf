"""The engine: a bundle's graphs behind one API, shared by every stream it serves.

Used by the server (``lvm-edge run``) and by offline evaluation / accuracy gates alike::

    eng = Engine("engines/lvm-tiny-fp32")
    stream = eng.new_stream()
    eng.ingest(stream, frames, times)  # (N, H, W, 3) uint8 RGB, (N,) seconds, increasing
    eng.answer(stream, [{"type": "activity", "start": 0, "end": 300, "object_image": crop}])

The graphs do the work: ``encode`` (backbone), ``step`` (one sampler call for the full clips of
many streams, then each stream's commit), ``answer`` (from a stream's committed reading). Answers
come from the memory reader or the query heads (``answers``: "auto" takes the reader when the
bundle carries one; ``answers_kind`` says which). With the reader, ``step`` also runs the "reader"
graph once on the memories it committed (one call for all of them) and each commit keeps those
facts; a batch of queries is then one "answer" graph call on the facts
(edge_runtime/query/reader_query.py), and every answer says ``answered_by``.
What a stream carries from frame to frame (pending clip, clock, gaps, memory, SVD, OOD, the
committed reading) is its ``StreamState`` (edge_runtime/engine/stream_state.py), made by
``new_stream()``; the Engine holds only the graphs (their sessions loaded once), and every call
that reads or changes a stream is handed its state. Frames of any number of streams go in through
one path (edge_runtime/engine/ingest.py).

Only full clips are committed; ``flush(stream)`` commits a partial clip early, padded with copies of its
last frame, for callers that know the stream has ended. The training / evaluation reference
(export/train/streaming.py) drops a trailing partial clip too, so ``ingest`` alone matches it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.query.answers import decode_answers, encode_queries, heads_rows_per_call
from edge_runtime.backends.bundle import Bundle, load_bundle
from edge_runtime.backends.bundle_runners import open_runners
from edge_runtime.engine.facts import fact_specs, read_facts, rows_dynamic
from edge_runtime.memory.timeline import TimelineSpec, clip_rows
from edge_runtime.engine.ingest import ingest_streams, ingest_tokens
from edge_runtime.engine.event_path import EventPath
from edge_runtime.engine.stream_state import StreamState
from edge_runtime.memory.committed import Committed
from edge_runtime.query import reader_query
from edge_runtime.query.coverage import covered_spans, hold_to_spans, no_memory_answer, window_coverage
from edge_runtime.sources.frames import resize_square
from edge_runtime.memory.token_memory import MEMORY_INPUTS, TokenMemory
from edge_runtime.memory.ood import OODMonitor
from edge_runtime.query.check import activity_id, check_request
from edge_runtime.query.reuse import CropTokens, unique_queries, unique_rows
from edge_runtime.memory.svd import svd_from_config

# a paced stream's frames wait at most this long for the event path (Engine.paced_batch): 2 frames at 5 fps.
# A second's frames put up to 0.8 s of waiting before an item event's decision, and its nudge's p95 over 1 s
PACED_HANDOVER_S = 0.4


class Engine:
    def __init__(self, bundle_dir: str | Path | Bundle, backend: str = "auto", threads: int | None = None, *,
                 batch_size: int | None = None, max_queries_per_call: int = 64, gap_factor: float = 2.0,
                 verify: bool = True, answers: str = "auto", event_fps: float | None = None,
                 events: bool = True) -> None:
        self.bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir, verify=verify)
        self.answers = answers
        self.answers_kind = reader_query.answers_kind(self.bundle, answers)  # "reader" | "heads"
        self.reader_section = reader_query.reader_section(self.bundle) if self.answers_kind == "reader" else None
        self.cfg = self.bundle.cfg
        self.labels: list[str] = list(self.bundle.labels["activities"])
        self.products: list[str] = list(self.bundle.labels.get("products", []))
        self.object_extent = self.bundle.object_extent
        self.threads = threads
        self._runners, self.backend, self.notes = open_runners(self.bundle, backend, threads)
        self.backbone, self.sampler, self.heads = (self._runners[n] for n in ("backbone", "sampler", "heads"))
        reads = self.answers_kind == "reader"
        self.reader = self._runners["reader"] if reads else None
        self.answerer = self._runners["answer"] if reads else None
        self._answer_dtypes = {n: m.dtype for n, m in self.answerer.get_input_metadata().items()} if reads else {}
        # the reader's timeline track (a FIFO per stream, read beside the memory), when the bundle has one
        tl = self.bundle.timeline if reads else None
        self.timeline = TimelineSpec.from_manifest(tl, self.bundle.cfg) if tl is not None else None
        rows = self.bundle.cfg.stream.memory_tokens + (self.timeline.capacity if self.timeline is not None else 0)
        self._fact_specs = fact_specs(self.answerer, rows) if reads else None
        self._window_rows = reads and rows_dynamic(self.answerer)  # feed only the rows the windows hold

        c = self.cfg
        self.clip_frames, self.fps = c.stream.clip_frames, c.stream.fps
        self.tokens_per_frame, self.token_dim = c.backbone.tokens_per_frame, c.backbone.dim
        self.frame_size = c.backbone.image_size
        self.batch_size = int(batch_size or max(self.clip_frames, 16))
        # at most what fits the heads' activation budget: a big model's batch of queries runs in parts
        self.max_queries_per_call = min(int(max_queries_per_call), heads_rows_per_call(self.cfg))
        self.gap_factor = float(gap_factor)
        self._heads_dtypes = {n: m.dtype for n, m in self.heads.get_input_metadata().items()}
        self.crop_tokens = CropTokens(self.encode_images)
        # the bundle's event head (None without one): frames then arrive at its event_fps and the
        # memory takes those on its own 1/fps grid (edge_runtime/engine/event_path.py)
        # events=False: the memory path alone, as a bundle without the head (side-by-side measurements)
        self.events = EventPath.from_bundle(self.bundle, self._runners, event_fps) if events else None
        if self.events is not None and self.events.identity:
            self.events.prototypes = self.class_identities()

    @property
    def intake_fps(self) -> float:
        """The rate a source is sampled at for this engine: the event path's, else the memory's."""
        return self.events.event_fps if self.events is not None else self.fps

    @property
    def event_activities(self) -> list[str]:
        """The activities a stream's events can name: the bundle's labels, and with an event path those
        its item tracks decide (pass_around among them, which an 8-activity memory cannot name) and
        the basket stays (items/basket.py)."""
        if self.events is None:
            return list(self.labels)
        from edge_runtime.items.basket import ACTIVITIES as BASKET
        from edge_runtime.items.item_events import LABELERS

        return list(dict.fromkeys(self.labels + list(LABELERS["geometric"].activities) + list(BASKET)))

    @property
    def intake_batch(self) -> int:
        """Frames a stream hands to the ingest path at a time: a clip at the memory's rate; a second's
        frames with an event path, so that item events are decided within a second of their frame."""
        if self.events is None:
            return self.clip_frames
        return max(1, int(round(self.events.event_fps)))

    @property
    def paced_batch(self) -> int:
        """Frames a paced stream (a camera, or ``--realtime``) hands over at a time: with an event path,
        PACED_HANDOVER_S of them, so an item event is decided, and its alert and nudge sent, that much
        sooner than after a second's frames; a file or an unpaced demo keeps ``intake_batch``."""
        if self.events is None:
            return self.intake_batch
        return max(1, min(self.intake_batch, int(round(self.events.event_fps * PACED_HANDOVER_S))))

    # -- setup -------------------------------------------------------------------------------
    def new_stream(self) -> StreamState:
        """An empty stream state on this engine's sampler: device memory, SVD, OOD monitor, clock."""
        memory = TokenMemory(self.sampler)
        memory.batched = self.bundle.sampler_batches_streams
        # recent frames against the training frames' statistics
        return StreamState(memory, svd_from_config(self.cfg), OODMonitor.for_bundle(self.bundle),
                           clip_frames=self.clip_frames, tokens_per_frame=self.tokens_per_frame,
                           token_dim=self.token_dim, fps=self.fps, gap_factor=self.gap_factor,
                           heads_dtypes=self._heads_dtypes, facts=self._fact_specs, timeline=self.timeline,
                           items=self._new_items())

    def _new_items(self):
        """A stream's item tracks and events when the bundle has an event head, else None."""
        if self.events is None:
            return None
        from edge_runtime.items.item_state import ItemState

        # zones: proposed from the head's zone map (a runtime with the stream's configured zones sets them)
        return ItemState(None, bundle_id=self.bundle.bundle_id, fps=self.events.event_fps,
                         sequence=self.events.sequence, embed_dim=self.events.embed_dim)

    def close(self) -> None:
        for r in self._runners.values():
            r.deactivate()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- frames ------------------------------------------------------------------------------
    def fit_frames(self, frames: np.ndarray) -> np.ndarray:
        """Frames at the backbone's input size (S x S); others are resized."""
        if frames.shape[1:3] != (self.frame_size, self.frame_size):
            frames = np.stack([resize_square(f, self.frame_size) for f in frames])
        return frames

    def encode(self, frames: np.ndarray, report: Callable[[str, float], None] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> tokens (N, P, d); frames not S x S are resized first. ``report``
        hears (stage, seconds) of each backbone call (a stream's ``StreamState.report``)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        frames = self.fit_frames(frames)
        out = np.empty((len(frames), self.tokens_per_frame, self.token_dim), np.float32)
        for i in range(0, len(frames), self.batch_size):
            t0 = time.perf_counter()
            out[i : i + self.batch_size] = self.backbone.infer({"frames": np.ascontiguousarray(frames[i : i + self.batch_size])})["tokens"]
            if report is not None:
                report("backbone", time.perf_counter() - t0)
        return out

    def detect(self, tokens: np.ndarray, times: np.ndarray, report: Callable[[str, float], None] | None = None) -> list:
        """Tokens (N, P, d) of N frames -> their item detections (``EventPath.detect``)."""
        if self.events is None:
            raise ValueError("this bundle has no event head")
        return self.events.detect(tokens, times, report)

    def step(self, states: list[StreamState]) -> None:
        """The full (or padded) pending clips of ``states`` through the sampler, in one call when
        its graph batches streams, then each state commits; with the reader, the new memories go
        through the reader graph together first, and each commit is published with its facts."""
        t0 = time.perf_counter()
        TokenMemory.step_many([s.memory for s in states], [s.clip_inputs() for s in states])
        dt = time.perf_counter() - t0
        commits, clips = [], []
        for s in states:
            s.report("sampler", dt / len(states))
            # the clip's frames, as reader rows for the timeline, before fold empties the pending clip
            clips.append(clip_rows(s.pending_tokens, s.pending_t, s.pending_frames, self.timeline)
                         if s.timeline is not None else None)
            commits.append(s.fold())
        facts: list = [None] * len(states)
        tokens: list = [None] * len(states)
        if self.reader is not None:
            t0 = time.perf_counter()
            facts, tokens = read_facts(self.reader, commits, clips, self.timeline)
            dt = time.perf_counter() - t0
            for s in states:
                s.report("reader", dt / len(states))
        for s, c, f, tok in zip(states, commits, facts, tokens):
            s.publish(c, f, tok)

    def ingest(self, stream: StreamState, frames: np.ndarray, times: np.ndarray) -> int:
        """Add frames to ``stream`` at stream times (seconds, strictly increasing). Returns clips committed."""
        return _one(ingest_streams(self, [(stream, frames, times)]))

    def ingest_tokens(self, stream: StreamState, tokens: np.ndarray, times: np.ndarray) -> int:
        """Like ``ingest`` for frames already through the backbone (N, P, d)."""
        return _one(ingest_tokens(self, [(stream, tokens, times)]))

    @staticmethod
    def check_frames(frames: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``ingest``'s checks of the frames' and times' shapes, without running anything (ValueError);
        the times' order is the stream's check (``StreamState.check_times``)."""
        times = np.asarray(times, np.float64).reshape(-1)
        frames = np.asarray(frames)
        if frames.ndim != 4 or len(frames) != len(times):
            raise ValueError(f"need frames (N, H, W, 3) and times (N,), got {frames.shape} and {times.shape}")
        return frames, times

    def flush(self, stream: StreamState) -> bool:
        """Commit ``stream``'s partial clip now (end of stream), padded with copies of its last frame."""
        with stream.lock:
            if not stream.pad():
                return False
            self.step([stream])
            return True

    # -- queries -----------------------------------------------------------------------------
    def activity_id(self, activity: Any) -> int:
        """An activity given by id or by name -> id (QueryError when unknown)."""
        return activity_id(self.labels, activity)

    def check_request(self, req: dict[str, Any], where: str = "request") -> dict[str, Any]:
        """Validate one request; returns it normalised (QueryError on anything wrong)."""
        return check_request(req, where, labels=self.labels, tokens_shape=(self.tokens_per_frame, self.token_dim),
                             object_fps=self.cfg.stream.object_fps)

    def answer(self, stream: StreamState, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answer many queries in as few heads calls as possible (all of them, up to
        ``max_queries_per_call`` per call) from ``stream``'s last committed memory."""
        return self.answer_checked(stream, [self.check_request(r, f"request {i}") for i, r in enumerate(requests)])

    def answer_checked(self, stream: StreamState, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``answer`` for requests ``check_request`` returned (the query batcher checks each one as it is
        queued, so that a bad one is refused alone, before anything waits on it)."""
        if not reqs:
            return []
        snap = stream.committed  # one read: every query of this call sees the same commit
        imgs = [i for i, r in enumerate(reqs) if r["object_tokens"] is None and r["object_image"] is not None]
        if imgs:
            t0 = time.perf_counter()
            toks = self.crop_tokens([reqs[i]["object_image"] for i in imgs])
            stream.report("object_crops", time.perf_counter() - t0)
            for i, tok in zip(imgs, toks):
                reqs[i]["object_tokens"] = tok
        out: list[dict[str, Any]] = []
        for i in range(0, len(reqs), self.max_queries_per_call):
            out.extend(self._answer_batch(reqs[i : i + self.max_queries_per_call], snap, stream.report))
        ood = stream.ood.status()
        for a in out:
            a["ood"] = dict(ood)
        return out

    def picture_identities(self, images: list[np.ndarray]) -> np.ndarray | None:
        """Pictures of one product -> (Q, E) unit rows in the memory reader's identity space, matchable
        against an item track's identity (edge_runtime/items/identity.py); None when the bundle's event
        head carries no identity."""
        if self.events is None or not self.events.identity or not images:
            return None
        return self.events.embed_pictures(self.crop_tokens(list(images)))

    def class_identities(self) -> np.ndarray | None:
        """(K, Q, E): the identities of Q drawn pictures of each of the bundle's K product classes, what the
        event path names a detection by beside its class (event_path.py ``IDENTITY_WEIGHT``); None when
        the head carries no identity or a class has no drawn picture (a bundle of other footage)."""
        from edge_runtime.query.class_pictures import class_picture_grid

        names = list(self.products)
        grid = class_picture_grid(names, self.frame_size)
        if self.events is None or not self.events.identity or grid is None:
            return None
        return self.picture_identities(grid[0]).reshape(len(names), grid[1], -1)

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Images of any size -> (N, P, d) tokens, one backbone call per batch."""
        return self.encode(np.stack([resize_square(img, self.frame_size) for img in images]))

    def _answer_batch(self, reqs: list[dict[str, Any]], snap: Committed, report) -> list[dict[str, Any]]:
        """Answer from the covered part of each window only; a window the memory does not cover gets
        the typed no-memory answer and costs no graph call."""
        spans = [covered_spans(snap, r["start"], r["end"]) for r in reqs]
        out: list[dict[str, Any]] = [no_memory_answer() for _ in reqs]
        ask = [i for i, sp in enumerate(spans) if sp]
        if ask:
            windows = [(spans[i][0][0], spans[i][-1][1]) for i in ask]
            if self.answerer is not None:
                self._answer_reader(reqs, ask, windows, spans, snap, out, report)
            else:
                self._answer_heads(reqs, ask, windows, spans, snap, out, report)
        for r, a, sp in zip(reqs, out, spans):
            a.update(window_coverage(snap, r["start"], r["end"], sp))
            a["answered_by"] = self.answers_kind
            if self.answerer is not None and a["status"] == "no_memory":
                a["p_seen"] = a["confidence"] = None  # nothing in memory for the window: no evidence to judge
        return out

    def _answer_reader(self, reqs, ask: list[int], windows, spans, snap: Committed, out: list, report) -> None:
        """One answer-graph call for the queries ``ask`` over their covered ``windows``; each answer
        held to its spans, then judged (p_seen, confidence, not_seen)."""
        sec = self.reader_section
        asked = [reqs[i] for i in ask]
        keep, inverse = unique_queries(asked, windows)  # identical queries (many clients asking the same) once
        every = len(keep) == len(asked)  # no query repeated: outputs as they are, no copies
        feed = reader_query.reader_feed([asked[j] for j in keep], [windows[j] for j in keep], snap,
                                        self._answer_dtypes, (self.tokens_per_frame, self.token_dim),
                                        only_windows=self._window_rows)
        t0 = time.perf_counter()
        outputs = self.answerer.infer(feed)
        report("answer", time.perf_counter() - t0)
        outputs = {k: np.asarray(v, np.float32) if every else np.asarray(v, np.float32)[inverse]
                   for k, v in outputs.items()}
        q_window = feed["q_window"] if every else feed["q_window"][inverse]
        answers = reader_query.read_out(asked, q_window, outputs, sec, self.cfg.stream.object_fps)
        for j, (i, a) in enumerate(zip(ask, answers)):
            r = reqs[i]
            out[i] = reader_query.judge(hold_to_spans(a, spans[i], (r["start"], r["end"])), r["type"],
                                        float(outputs["evidence"][j]), outputs["intervals"][j], sec,
                                        window_s=r["end"] - r["start"], activity=r["activity"])
            out[i]["read_from"] = reader_query.tracks_read(snap, (r["start"], r["end"]))

    def _answer_heads(self, reqs, ask: list[int], windows, spans, snap: Committed, out: list, report) -> None:
        """One heads call (identical rows once) for the queries ``ask`` over their covered ``windows``."""
        c = self.cfg
        batch = encode_queries([reqs[i]["type"] for i in ask], windows, [reqs[i]["activity"] for i in ask],
                               [reqs[i]["object_tokens"] for i in ask], fps=c.stream.fps,
                               max_queries=c.heads.window_queries,
                               tokens_shape=(self.tokens_per_frame, self.token_dim))
        dt = self._heads_dtypes
        keep, inverse = unique_rows(batch)  # identical rows (many clients asking the same) run once
        feed = {k: v[keep].astype(dt[k], copy=False) for k, v in batch.as_feed().items()}
        feed.update({k: snap.memory[k] for k in MEMORY_INPUTS})
        feed["svd_basis"], feed["svd_sv"] = snap.svd_basis, snap.svd_sv
        t0 = time.perf_counter()
        outputs = self.heads.infer(feed)
        report("heads", time.perf_counter() - t0)
        outputs = {k: np.asarray(v, np.float32)[inverse] for k, v in outputs.items()}
        answers = decode_answers(batch, outputs, object_fps=c.stream.object_fps,
                                 k=max(reqs[i]["k"] for i in ask), box_fps=[reqs[i]["fps"] for i in ask],
                                 object_extent=self.object_extent)
        for i, a in zip(ask, answers):
            r = reqs[i]
            if r["type"] == "time":
                a["intervals"] = a["intervals"][: r["k"]]
            out[i] = hold_to_spans(a, spans[i], (r["start"], r["end"]))


def _one(results: list[int | Exception]) -> int:
    """The single item's result of an ingest call: its clips, or its error raised."""
    if isinstance(results[0], Exception):
        raise results[0]
    return results[0]
