"""The engine: a bundle's three graphs, the device memory and the online SVD, behind one API.

Used by the server (``lvm-edge run``) and by offline evaluation / accuracy gates alike::

    eng = Engine("engines/lvm-tiny-fp32")
    eng.ingest(frames, times)          # (N, H, W, 3) uint8 RGB, (N,) seconds, increasing
    eng.answer([{"type": "activity", "start": 0, "end": 300, "object_image": crop}])

Stream handling: frames go through the backbone in batches; every T frames make a clip; each full
clip runs the sampler once (memory in the front buffer set -> back set, then swap), folds the
clip's per-frame mean tokens (T rows of d) into the OnlineSVD on the host, and commits. Only full
clips are committed: a partial clip stays pending (and is saved in snapshots) until more frames
arrive; ``flush()`` commits it early, padded with copies of its last frame, for callers that know
the stream has ended. The training / evaluation reference (export/train/streaming.py) drops a trailing
partial clip too, so ``ingest`` alone matches it.

Queries read an immutable host copy of the last committed state taken at commit time
(copy-on-commit): answering never blocks intake and intake never changes what a running query
sees. Concurrent ``ingest`` / ``reset`` / ``load_state_dict`` calls serialise on one lock.

Coverage: a frame at t stands for [t, t + 1/fps). The memory covers [first committed frame,
last committed frame + 1/fps) minus the gaps: a gap is recorded wherever consecutive frames are
more than ``gap_factor`` frame periods apart (source stalls, reconnects, restarts).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.query.answers import decode_answers, encode_queries, heads_rows_per_call
from edge_runtime.bundle import Bundle, load_bundle
from edge_runtime.backends.bundle_runners import open_runners
from edge_runtime.memory.clip_step import clip_inputs, fold_clip
from edge_runtime.query.coverage import covered_spans, hold_to_spans, no_memory_answer, window_coverage
from edge_runtime.sources.frames import resize_square
from edge_runtime.memory.token_memory import MEMORY_INPUTS, TokenMemory
from edge_runtime.memory.ood import OODMonitor
from edge_runtime.query.check import activity_id, check_request
from edge_runtime.query.reuse import CropTokens, unique_rows
from edge_runtime.memory.svd import OnlineSVD

MAX_GAPS = 256            # the gap list is bounded: constant memory over any run
STATE_VERSION = 1


@dataclass(frozen=True)
class Committed:
    """What queries read: host copies taken at a commit; never mutated afterwards."""
    memory: dict[str, np.ndarray]
    svd_basis: np.ndarray
    svd_sv: np.ndarray
    start: float | None
    end: float | None
    gaps: tuple[tuple[float, float], ...]
    version: int


class Engine:
    def __init__(self, bundle_dir: str | Path | Bundle, backend: str = "auto", threads: int | None = None, *,
                 batch_size: int | None = None, max_queries_per_call: int = 64, gap_factor: float = 2.0,
                 verify: bool = True, shared: "Engine | None" = None) -> None:
        self.bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir, verify=verify)
        self.cfg = self.bundle.cfg
        self.labels: list[str] = list(self.bundle.labels["activities"])
        self.products: list[str] = list(self.bundle.labels.get("products", []))
        self.object_extent = self.bundle.object_extent
        self.threads = threads
        # an engine made by stream_engine() runs on its owner's sessions; only the owner closes them
        self._owns_runners = shared is None
        if shared is None:
            self._runners, self.backend, self.notes = open_runners(self.bundle, backend, threads)
        else:
            self._runners, self.backend, self.notes = shared._runners, shared.backend, shared.notes
        self.backbone, self.sampler, self.heads = (self._runners[n] for n in ("backbone", "sampler", "heads"))

        c = self.cfg
        self.clip_frames, self.fps = c.stream.clip_frames, c.stream.fps
        self.tokens_per_frame, self.token_dim = c.backbone.tokens_per_frame, c.backbone.dim
        self.frame_size = c.backbone.image_size
        self.batch_size = int(batch_size or max(self.clip_frames, 16))
        # at most what fits the heads' activation budget: a big model's batch of queries runs in parts
        self.max_queries_per_call = min(int(max_queries_per_call), heads_rows_per_call(self.cfg))
        self.gap_factor = float(gap_factor)
        self.memory = TokenMemory(self.sampler)
        self.memory.batched = self.bundle.sampler_batches_streams
        self.svd = OnlineSVD.for_model(c)
        self.ood = OODMonitor.for_bundle(self.bundle)  # recent frames vs the training frames' statistics
        self._pending = np.zeros((self.clip_frames, self.tokens_per_frame, self.token_dim), np.float32)
        self._pending_t = np.zeros((self.clip_frames,), np.float64)
        heads_meta = self.heads.get_input_metadata()
        self._heads_dtypes = {n: m.dtype for n, m in heads_meta.items()}
        self._lock = threading.RLock()
        self.crop_tokens = CropTokens(self.encode_images)
        self.on_stage: Callable[[str, float], None] | None = None  # telemetry hook: (stage, seconds)
        self.reset()

    # -- setup -------------------------------------------------------------------------------
    def stream_engine(self) -> "Engine":
        """Another stream on this engine's graphs: the same backend sessions (loaded once), its own
        memory, SVD, clock, gaps and OOD monitor."""
        return Engine(self.bundle, self.backend, self.threads, batch_size=self.batch_size,
                      max_queries_per_call=self.max_queries_per_call, gap_factor=self.gap_factor, shared=self)

    def close(self) -> None:
        if not self._owns_runners:
            return
        for r in self._runners.values():
            r.deactivate()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stage(self, name: str, t0: float) -> None:
        if self.on_stage is not None:
            self.on_stage(name, time.perf_counter() - t0)

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty memory and SVD, a fresh clock: the next frame starts a new session."""
        with self._lock:
            self.memory.reset()
            self.svd.reset()
            self.ood.reset()
            self._n_pending = 0
            self._first_t: float | None = None
            self._end_t: float | None = None
            self._last_t: float | None = None
            self.frames_processed = 0
            self.clips = 0
            self._gaps: deque[tuple[float, float]] = deque(maxlen=MAX_GAPS)
            self._version = 0
            self._publish()

    def _publish(self) -> None:
        st = self.svd.state_dict()
        dt = self._heads_dtypes
        self._committed = Committed(
            memory=self.memory.read(),
            svd_basis=st["svd_basis"][None].astype(dt["svd_basis"]),
            svd_sv=st["svd_singular_values"][None].astype(dt["svd_sv"]),
            start=self._first_t, end=self._end_t,
            gaps=tuple(g for g in self._gaps if self._end_t is not None and g[0] < self._end_t),
            version=self._version)
        self._version += 1

    @property
    def committed(self) -> Committed:
        return self._committed

    @property
    def coverage(self) -> dict[str, float | None]:
        c = self._committed
        return {"start": c.start, "end": c.end}

    @property
    def last_time(self) -> float | None:
        """Time of the last frame ingested (committed or pending)."""
        return self._last_t

    @property
    def pending_frames(self) -> int:
        return self._n_pending

    @property
    def gaps(self) -> list[tuple[float, float]]:
        return list(self._gaps)

    @property
    def memory_bytes(self) -> int:
        """Bytes of stream state: device buffers, the committed copy, SVD, pending clip. Constant."""
        c = self._committed
        svd = sum(v.nbytes for v in self.svd.state_dict().values())
        return int(self.memory.nbytes + sum(v.nbytes for v in c.memory.values()) + c.svd_basis.nbytes
                   + c.svd_sv.nbytes + svd + self._pending.nbytes + self._pending_t.nbytes + MAX_GAPS * 16)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Fixed-shape arrays of the whole stream state (for snapshots)."""
        with self._lock:
            nan = float("nan")
            state = {f"memory_{k}": v for k, v in self.memory.read().items()}
            state.update(self.svd.state_dict())
            state["pending_tokens"] = self._pending.copy()
            state["pending_t"] = self._pending_t.copy()
            state["clock"] = np.array([
                self._first_t if self._first_t is not None else nan,
                self._end_t if self._end_t is not None else nan,
                self._last_t if self._last_t is not None else nan,
                self.frames_processed, self.clips, self._n_pending, STATE_VERSION], np.float64)
            state["gaps"] = np.array(list(self._gaps), np.float64).reshape(-1, 2)
            return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        with self._lock:
            try:
                clock = np.asarray(state["clock"], np.float64)
                if clock.shape != (7,) or int(clock[6]) != STATE_VERSION:
                    raise ValueError(f"clock has shape {clock.shape}")
                pending = np.asarray(state["pending_tokens"], np.float32)
                if pending.shape != self._pending.shape:
                    raise ValueError(f"pending clip is {pending.shape}, expected {self._pending.shape}")
                gaps = np.asarray(state["gaps"], np.float64).reshape(-1, 2)
                self.memory.load({k[len("memory_"):]: v for k, v in state.items() if k.startswith("memory_")})
                self.svd.load_state_dict(state)
            except (KeyError, ValueError) as err:
                self.reset()
                raise ValueError(f"state does not fit this engine ({err})") from None
            self._pending[:] = pending
            self._pending_t[:] = np.asarray(state["pending_t"], np.float64)
            f = lambda x: None if math.isnan(x) else float(x)  # noqa: E731
            self._first_t, self._end_t, self._last_t = f(clock[0]), f(clock[1]), f(clock[2])
            self.frames_processed, self.clips, self._n_pending = int(clock[3]), int(clock[4]), int(clock[5])
            self._gaps = deque((tuple(g) for g in gaps.tolist()), maxlen=MAX_GAPS)
            self._publish()

    # -- frames ------------------------------------------------------------------------------
    def encode(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> tokens (N, P, d); frames not S x S are resized first."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        if frames.shape[1:3] != (self.frame_size, self.frame_size):
            frames = np.stack([resize_square(f, self.frame_size) for f in frames])
        out = np.empty((len(frames), self.tokens_per_frame, self.token_dim), np.float32)
        for i in range(0, len(frames), self.batch_size):
            t0 = time.perf_counter()
            out[i : i + self.batch_size] = self.backbone.infer({"frames": np.ascontiguousarray(frames[i : i + self.batch_size])})["tokens"]
            self._stage("backbone", t0)
        return out

    def ingest(self, frames: np.ndarray, times: np.ndarray) -> int:
        """Add frames at stream times (seconds, strictly increasing). Returns clips committed."""
        with self._lock:
            frames, times = self.check_frames(frames, times)
            if len(times) == 0:
                return 0
            committed = 0
            for i in range(0, len(frames), self.batch_size):
                tokens = self.encode(frames[i : i + self.batch_size])
                for tok, t in zip(tokens, times[i : i + self.batch_size]):
                    if self._add(tok, float(t)):
                        self._commit(self.clip_frames)
                        committed += 1
            return committed

    def check_frames(self, frames: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``ingest``'s checks of frames and times, without running anything (ValueError)."""
        times = np.asarray(times, np.float64).reshape(-1)
        frames = np.asarray(frames)
        if frames.ndim != 4 or len(frames) != len(times):
            raise ValueError(f"need frames (N, H, W, 3) and times (N,), got {frames.shape} and {times.shape}")
        if len(times) and (not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0)):
            raise ValueError("frame times must be finite and strictly increasing")
        if len(times) and self._last_t is not None and times[0] <= self._last_t:
            raise ValueError(f"frame time {times[0]:.3f} s is not after the last one ({self._last_t:.3f} s)")
        return frames, times

    def ingest_tokens(self, tokens: np.ndarray, times: np.ndarray) -> int:
        """Like ``ingest`` for frames already through the backbone (N, P, d)."""
        times = np.asarray(times, np.float64).reshape(-1)
        with self._lock:
            if self._last_t is not None and len(times) and times[0] <= self._last_t:
                raise ValueError(f"frame time {times[0]:.3f} s is not after the last one ({self._last_t:.3f} s)")
            committed = 0
            for tok, t in zip(tokens, times):
                if self._add(np.asarray(tok, np.float32), float(t)):
                    self._commit(self.clip_frames)
                    committed += 1
            return committed

    def _add(self, tok: np.ndarray, t: float) -> bool:
        """Add one frame's tokens; True when the pending clip is full (the caller commits it)."""
        period = 1.0 / self.fps
        if self._last_t is not None and t - self._last_t > self.gap_factor * period:
            self._gaps.append((self._last_t + period, t))
        self._pending[self._n_pending] = tok
        self.ood.update(tok)
        self._pending_t[self._n_pending] = t
        self._n_pending += 1
        self._last_t = t
        self.frames_processed += 1
        return self._n_pending == self.clip_frames

    def flush(self) -> bool:
        """Commit a partial clip now (end of stream), padded with copies of its last frame."""
        with self._lock:
            n = self._n_pending
            if n == 0:
                return False
            self._pending[n:] = self._pending[n - 1]
            self._pending_t[n:] = self._pending_t[n - 1]
            self._commit(n)
            return True

    def _commit(self, n_real: int) -> None:
        t0 = time.perf_counter()
        self.memory.step(*clip_inputs(self._pending, self._pending_t))
        self._stage("sampler", t0)
        self._after_step(n_real)

    def _after_step(self, n_real: int) -> None:
        """The host half of a commit, after the sampler wrote the new memory: SVD, clock, publish."""
        t0 = time.perf_counter()
        fold_clip(self.svd, self._pending, n_real)
        self._stage("svd", t0)
        if self._first_t is None:
            self._first_t = float(self._pending_t[0])
        self._end_t = float(self._pending_t[n_real - 1]) + 1.0 / self.fps
        self._n_pending = 0
        self.clips += 1
        t0 = time.perf_counter()
        self._publish()
        self._stage("commit", t0)

    # -- queries -----------------------------------------------------------------------------
    def activity_id(self, activity: Any) -> int:
        """An activity given by id or by name -> id (QueryError when unknown)."""
        return activity_id(self.labels, activity)

    def check_request(self, req: dict[str, Any], where: str = "request") -> dict[str, Any]:
        """Validate one request; returns it normalised (QueryError on anything wrong)."""
        return check_request(req, where, labels=self.labels, tokens_shape=(self.tokens_per_frame, self.token_dim),
                             object_fps=self.cfg.stream.object_fps)

    def answer(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answer many queries in as few heads calls as possible (all of them, up to
        ``max_queries_per_call`` per call) from the last committed memory."""
        reqs = [self.check_request(r, f"request {i}") for i, r in enumerate(requests)]
        if not reqs:
            return []
        snap = self._committed  # one read: every query of this call sees the same commit
        imgs = [i for i, r in enumerate(reqs) if r["object_tokens"] is None and r["object_image"] is not None]
        if imgs:
            t0 = time.perf_counter()
            toks = self.crop_tokens([reqs[i]["object_image"] for i in imgs])
            self._stage("object_crops", t0)
            for i, tok in zip(imgs, toks):
                reqs[i]["object_tokens"] = tok
        out: list[dict[str, Any]] = []
        for i in range(0, len(reqs), self.max_queries_per_call):
            out.extend(self._answer_batch(reqs[i : i + self.max_queries_per_call], snap))
        ood = self.ood_status()
        for a in out:
            a["ood"] = dict(ood)
        return out

    def ood_status(self) -> dict[str, Any]:
        """How unlike the training data the last minute of frames is (edge_runtime/memory/ood.py)."""
        return self.ood.status()

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Images of any size -> (N, P, d) tokens, one backbone call per batch."""
        return self.encode(np.stack([resize_square(img, self.frame_size) for img in images]))

    def _answer_batch(self, reqs: list[dict[str, Any]], snap: Committed) -> list[dict[str, Any]]:
        """Answer from the covered part of each window only; a window the memory does not cover gets
        the typed no-memory answer and costs no heads call."""
        c = self.cfg
        spans = [covered_spans(snap, r["start"], r["end"]) for r in reqs]
        out: list[dict[str, Any]] = [no_memory_answer() for _ in reqs]
        ask = [i for i, sp in enumerate(spans) if sp]
        if ask:
            windows = [(spans[i][0][0], spans[i][-1][1]) for i in ask]
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
            self._stage("heads", t0)
            outputs = {k: np.asarray(v, np.float32)[inverse] for k, v in outputs.items()}
            answers = decode_answers(batch, outputs, object_fps=c.stream.object_fps,
                                     k=max(reqs[i]["k"] for i in ask), box_fps=[reqs[i]["fps"] for i in ask],
                                     object_extent=self.object_extent)
            for i, a in zip(ask, answers):
                r = reqs[i]
                if r["type"] == "time":
                    a["intervals"] = a["intervals"][: r["k"]]
                out[i] = hold_to_spans(a, spans[i], (r["start"], r["end"]))
        for r, a, sp in zip(reqs, out, spans):
            a.update(window_coverage(snap, r["start"], r["end"], sp))
        return out
