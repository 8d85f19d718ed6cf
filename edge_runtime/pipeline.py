"""The stream loop and the service around it: intake thread, batched queries, snapshots, status.

    source --(sample at model fps)--> intake thread --> Engine.ingest (backbone, clip, sampler, SVD,
                                                         commit: host copy swapped in)
    HTTP / CLI queries --> QueryBatcher (one heads call for whatever is waiting) --> Engine.answer
                                                         (reads the last commit; never waits on intake)

Stream clock: frames get stream time = offset + (source t - first source t). On a fresh start the
offset is 0. After a restore it is the restored end (last frame + one frame period) plus, for live
sources, the wall-clock time the runtime was down, so "the last 5 minutes" keeps meaning real
time; the jump is recorded as a gap in the memory timeline by the engine.

Stopping works from every state (connecting to a camera that never answers, streaming, ended,
failed): ``stop()`` sets a flag, stops the source (its iteration ends at the next frame boundary
or wake-up), waits a bounded time for the intake thread to hand in what it holds (drain), and
writes a final snapshot.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime import snapshot as snap
from edge_runtime.engine import Engine
from edge_runtime.telemetry import Telemetry

log = logging.getLogger("lvm_edge")


class RunState(str, Enum):
    """Where the runtime's stream is. A str, printed as its value (what StrEnum does from Python
    3.11 on), so status JSON and messages keep showing the plain name, e.g. "streaming"."""

    IDLE = "idle"              # no source started yet
    CONNECTING = "connecting"  # a source is opening; no frame has arrived
    STREAMING = "streaming"    # frames are going into memory
    ENDED = "ended"            # the source ran out; queries are still answered
    FAILED = "failed"          # the source or the intake broke; ``error`` says how
    STOPPED = "stopped"        # stop() was called

    __str__ = str.__str__
    __format__ = str.__format__


def _label(uri) -> str:
    """The source as logs and the API may show it (credentials redacted)."""
    try:
        from edge_runtime.sources import parse_source_uri

        return parse_source_uri(uri).label
    except Exception:
        return "<unparsed source>"


class QueryBatcher:
    """Collects queries arriving together (within ``wait_s``) into one Engine.answer call."""

    def __init__(self, engine: Engine, *, max_batch: int = 64, wait_s: float = 0.003,
                 telemetry: Telemetry | None = None, timeout_s: float = 60.0) -> None:
        self.engine, self.max_batch, self.wait_s, self.timeout_s = engine, max_batch, wait_s, timeout_s
        self.telemetry = telemetry
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="lvm-queries", daemon=True)
        self._thread.start()

    def submit(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reqs = [self.engine.check_request(r, f"request {i}" if len(requests) > 1 else "request")
                for i, r in enumerate(requests)]
        if not reqs:
            return []
        fut: Future = Future()
        self._q.put((reqs, fut))
        return fut.result(timeout=self.timeout_s)

    def close(self) -> None:
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            items, n = [item], len(item[0])
            deadline = time.monotonic() + self.wait_s
            while n < self.max_batch:
                try:
                    nxt = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                items.append(nxt)
                n += len(nxt[0])
            self._answer(items)

    def _answer(self, items) -> None:
        flat = [r for reqs, _ in items for r in reqs]
        try:
            answers = self.engine.answer(flat)
        except Exception:
            if len(items) > 1:  # isolate the request that failed: the others still get answers
                for it in items:
                    self._answer([it])
                return
            items[0][1].set_exception(sys.exc_info()[1])
            return
        if self.telemetry:
            self.telemetry.query_batch.observe(len(flat))
        i = 0
        for reqs, fut in items:
            fut.set_result(answers[i : i + len(reqs)])
            i += len(reqs)


class RateMeter:
    """Events per second over the last ``window_s`` (bounded samples: constant memory)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=4096)

    def add(self, n: int, now: float | None = None) -> None:
        self._samples.append((now if now is not None else time.monotonic(), n))

    def rate(self, now: float | None = None) -> float:
        now = now if now is not None else time.monotonic()
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        span = max(now - self._samples[0][0], 1e-3)
        return sum(n for _, n in self._samples) / span if len(self._samples) > 1 else 0.0


class Runtime:
    """One engine + at most one source + snapshots + the query batcher; what the API serves."""

    def __init__(self, engine: Engine, *, state_dir: str | Path | None = None, snapshot_every: float | None = None,
                 telemetry: Telemetry | None = None, max_batch: int = 64, batch_wait_s: float = 0.003,
                 batch_frames: int | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.telemetry = telemetry or Telemetry()
        engine.on_stage = self.telemetry.observe_stage
        self.state_dir = Path(state_dir) if state_dir else None
        self.snapshot_every = snapshot_every
        self.batch_frames = int(batch_frames or engine.T)
        self._warn = warn or (lambda msg: log.warning(msg))
        self.restored_from: dict[str, Any] | None = None
        self._restored_meta: dict[str, Any] | None = None
        self.state = RunState.IDLE
        self.error: str | None = None
        self.source_label: str | None = None
        self._source = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._snap_lock = threading.Lock()
        self._last_snapshot = time.monotonic()
        self.last_snapshot_path: Path | None = None
        self.frames_in = 0
        self._meter = RateMeter()
        self.started = time.time()
        self.batcher = QueryBatcher(engine, max_batch=max_batch, wait_s=batch_wait_s, telemetry=self.telemetry)
        if self.state_dir is not None:
            self._restore()
        self._update_gauges()

    # -- persistence -------------------------------------------------------------------------
    def _restore(self) -> None:
        restored, warning = snap.restore(self.state_dir, self.engine.bundle.bundle_id)
        if warning:
            self._warn(warning)
        if restored is None:
            return
        try:
            self.engine.load_state_dict(restored.arrays)
        except ValueError as err:
            aside = snap.set_aside(restored.path, "corrupt")
            self._warn(f"{restored.path}: {err}; starting fresh (kept as {aside.name})")
            return
        self._restored_meta = restored.meta
        self.restored_from = {"path": str(restored.path), "saved_at": restored.meta.get("saved_at"),
                              "coverage": self.engine.coverage, "frames_processed": self.engine.frames_processed,
                              "source": restored.meta.get("source")}

    def snapshot(self) -> dict[str, Any]:
        """Write the state now (atomic). RuntimeError when there is no state dir."""
        if self.state_dir is None:
            raise RuntimeError("no state directory configured (--state-dir)")
        with self._snap_lock:
            arrays = self.engine.state_dict()
            meta = {"bundle_id": self.engine.bundle.bundle_id, "saved_at": time.time(),
                    "source": self.source_label, "coverage": self.engine.coverage,
                    "frames_processed": self.engine.frames_processed, "last_time": self.engine.last_time}
            t0 = time.perf_counter()
            try:
                path = snap.write_snapshot(self.state_dir / snap.SNAPSHOT_NAME, arrays, meta)
            except Exception:
                self.telemetry.snapshot_errors.inc()
                raise
            self.telemetry.observe_stage("snapshot", time.perf_counter() - t0)
            self.telemetry.snapshots.inc()
            self._last_snapshot = time.monotonic()
            self.last_snapshot_path = path
            return {"path": str(path), "bytes": path.stat().st_size, "saved_at": meta["saved_at"],
                    "coverage": meta["coverage"], "frames_processed": meta["frames_processed"]}

    def _maybe_snapshot(self) -> None:
        if self.state_dir is None or not self.snapshot_every:
            return
        if time.monotonic() - self._last_snapshot >= self.snapshot_every:
            try:
                self.snapshot()
            except OSError as err:
                self._warn(f"snapshot failed: {err}")

    # -- session -----------------------------------------------------------------------------
    def reset(self) -> dict[str, Any]:
        """New session (a new customer): memory and SVD emptied; the stream clock goes on."""
        last = self.engine.last_time
        self.engine.reset()  # the intake's clock is its own: later frames still get later times
        self.restored_from = None
        self._update_gauges()
        return {"reset": True, "stream_time": last}

    def query(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        answers = self.batcher.submit(requests)
        dt = time.perf_counter() - t0
        for r in requests:
            self.telemetry.query.labels(type=str(r.get("type"))).observe(dt)
        return answers

    # -- streaming ---------------------------------------------------------------------------
    def start(self, uri: str | int, *, realtime: bool = False, duration: float | None = None,
              source_options: dict[str, Any] | None = None, on_end: Callable[[], None] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("a source is already running")
        self._stop.clear()
        self._done.clear()
        self.error = None
        self.state = RunState.CONNECTING
        self.source_label = _label(uri)
        self._thread = threading.Thread(target=self._intake, name="lvm-intake", daemon=True,
                                        args=(uri, realtime, duration, dict(source_options or {}), on_end))
        self._thread.start()

    def _intake(self, uri, realtime, duration, options, on_end) -> None:
        from edge_runtime.sources import SourceError, open_source

        frames: list[np.ndarray] = []
        times: list[float] = []
        try:
            src = open_source(uri, target_fps=self.engine.fps, realtime=realtime, size=self.engine.S, **options)
            with src:
                self._source = src
                self.source_label = getattr(src, "label", str(uri))
                if self._stop.is_set():
                    return
                t_first = None
                offset = self._resume_offset(getattr(src, "live", False))
                for frame in src:
                    if t_first is None:
                        t_first = frame.t
                        self.state = RunState.STREAMING  # CONNECTING until a first frame arrives
                    rel = frame.t - t_first
                    if duration is not None and rel >= duration:
                        break
                    self.frames_in += 1
                    self.telemetry.frames_in.inc()
                    frames.append(frame.image)
                    times.append(offset + rel)
                    if len(frames) >= self.batch_frames:
                        self._ingest(frames, times)
                        frames, times = [], []
                        self._maybe_snapshot()
                    if self._stop.is_set():
                        break
                self._ingest(frames, times)   # drain what was received
                frames, times = [], []
                self._poll_source_stats()
                if not self._stop.is_set():
                    self.state = RunState.ENDED
        except SourceError as err:
            self.error = str(err)
            self.state = RunState.FAILED
        except Exception as err:  # keep the service up and say what broke, in one line
            log.exception("intake failed")
            self.error = f"intake failed: {' '.join(str(err).split())[:200] or type(err).__name__}"
            self.state = RunState.FAILED
        finally:
            if frames:
                try:
                    self._ingest(frames, times)
                except Exception:
                    log.exception("drain failed")
            self._source = None
            if self._stop.is_set() and self.state is not RunState.FAILED:
                self.state = RunState.STOPPED
            self._done.set()
            if on_end is not None:
                on_end()

    def _resume_offset(self, live: bool) -> float:
        last = self.engine.last_time
        if last is None:
            return 0.0
        offset = last + 1.0 / self.engine.fps
        if live and self._restored_meta and self._restored_meta.get("saved_at"):
            offset += max(0.0, time.time() - float(self._restored_meta["saved_at"]))
        self._restored_meta = None
        return offset

    def _ingest(self, frames: list[np.ndarray], times: list[float]) -> None:
        if not frames:
            return
        n_clips = self.engine.ingest(np.stack(frames), np.asarray(times))
        self.telemetry.frames_processed.inc(len(frames))
        if n_clips:
            self.telemetry.clips.inc(n_clips)
        self._meter.add(len(frames))
        self._poll_source_stats()
        self._update_gauges()

    def _poll_source_stats(self) -> None:
        src = self._source
        if src is None:
            return
        st = src.stats
        self.telemetry.frames_dropped.set(st.get("dropped", 0))
        self.telemetry.reconnects.set(st.get("reconnects", 0))
        self._source_stats = st

    def _update_gauges(self) -> None:
        self.telemetry.memory_bytes.set(self.engine.memory_bytes)
        end = self.engine.coverage["end"]
        if end is not None:
            self.telemetry.coverage_end.set(end)
        self.telemetry.fps.set(self._meter.rate())

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, *, snapshot: bool = True, timeout: float = 15.0) -> None:
        """Stop the source, drain, snapshot. Safe from any state, more than once."""
        self._stop.set()
        src = self._source
        if src is not None:
            try:
                src.stop()
            except Exception:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._warn(f"intake did not stop within {timeout:.0f} s; snapshotting what is committed")
        if self.state in (RunState.IDLE, RunState.CONNECTING, RunState.STREAMING, RunState.ENDED):
            self.state = RunState.STOPPED
        if snapshot and self.state_dir is not None:
            try:
                self.snapshot()
            except (OSError, RuntimeError) as err:
                self._warn(f"final snapshot failed: {err}")

    def close(self) -> None:
        self.stop(snapshot=False, timeout=5.0)
        self.batcher.close()
        self.engine.close()

    # -- status ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        answering = (RunState.IDLE, RunState.STREAMING, RunState.ENDED, RunState.STOPPED)
        return self.state in answering or self.engine.clips > 0

    def status(self) -> dict[str, Any]:
        e = self.engine
        st = getattr(self, "_source_stats", None) or (self._source.stats if self._source is not None else {})
        fps = self._meter.rate()
        return {
            "state": self.state.value,
            "error": self.error,
            "source": self.source_label,
            "coverage": e.coverage,
            "stream_time": e.last_time,
            "frames_in": self.frames_in,
            "frames_processed": e.frames_processed,
            "pending_frames": e.pending_frames,
            "clips": e.clips,
            "memory_bytes": e.memory_bytes,
            "gaps": [list(g) for g in e.gaps],
            "restored_from": self.restored_from,
            "fps": round(fps, 3),
            "stream_rate": round(fps / e.fps, 3),
            "dropped": int(st.get("dropped", 0)),
            "reconnects": int(st.get("reconnects", 0)),
            "backend": e.backend,
            "bundle": e.bundle.bundle_id,
            "last_snapshot": str(self.last_snapshot_path) if self.last_snapshot_path else None,
            "uptime_s": round(time.time() - self.started, 1),
        }
