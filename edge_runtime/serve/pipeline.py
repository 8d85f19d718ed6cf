"""The stream loop and the service around it: intake thread, batched queries, snapshots, status.

    source --(sample at model fps)--> intake thread --> the ingest path (edge_runtime/engine/ingest.py:
                                     backbone, clip, sampler, SVD, commit: host copy swapped in), by
                                     Engine.ingest alone or through a hub's IngestBatcher
    HTTP / CLI queries --> QueryBatcher (one heads call for whatever is waiting) --> Engine.answer
                                                         (reads the last commit; never waits on intake)

Stream clock: frames get stream time = offset + (source t - first source t). On a fresh start the
offset is 0. After a restore it is the restored end (last frame + one frame period) plus, for live
sources, the wall-clock time the runtime was down, so "the last 5 minutes" keeps meaning real
time; the jump is recorded as a gap in the memory timeline by the engine.

How a stream ends. ``duration`` stops it after that many seconds of stream time, or, for a live
source, of wall time since it was opened (a dead camera delivers no frame, so its stream time never
advances); a file or the demo may end first. At every end that was not asked for with ``stop()``
the last partial clip is committed (padded, as ``Engine.flush`` does), so the memory covers the
whole stream, and ``end_reason`` says in one line why and at what stream time it ended: the end of
the file, a file that stops decoding early (also in ``error``: the rest was never read), the
duration reached. A live source that delivered nothing within ``duration`` fails.

Stopping works from every state (connecting to a camera that never answers, streaming, ended,
failed): ``stop()`` sets a flag, stops the source (its iteration ends at the next frame boundary
or wake-up), waits a bounded time for the intake thread to hand in what it holds (drain), and
writes a final snapshot. The partial clip is not committed then: the snapshot keeps it pending, and
a restart goes on filling it.

The stream's state (``RunState``, with its error and end reason) changes only through its
``Lifecycle``, under one lock, from the intake thread and from ``stop()`` alike.

A snapshot records the source it came from (``SourceSpec.identity``); ``start`` refuses another
source while that memory is loaded (SourceMismatch), because continuing would mix two streams'
memories and clocks. A snapshot written while answering with the heads holds no reader facts: a
runtime answering with the reader refuses it (StreamError, one line) and leaves the file as it is.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edge_runtime.atomic_write import set_aside
from edge_runtime.engine import snapshot as snap
from edge_runtime.query.catalog import Catalog
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.stream_state import MissingFacts
from edge_runtime.serve.query_batcher import BatcherClosed, QueryBatcher
from edge_runtime.serve.rate_meter import RateMeter
from edge_runtime.serve.run_status import runtime_status
from edge_runtime.serve.run_state import (Lifecycle, RunState, SourceMismatch, StreamError, end_reason, label_of,
                                          source_identity)
from edge_runtime.serve.telemetry import Telemetry

if TYPE_CHECKING:
    from edge_runtime.engine.ingest_batcher import IngestBatcher

log = logging.getLogger("lvm_edge")


class Runtime:
    """One stream: its engine (a view of the shared graphs with this stream's state) + at most one
    source + snapshots + the query batcher. Alone it ingests through ``engine.ingest``; in a hub
    (``edge_runtime.serve.streams.Streams``) it gets a ``name``, the hub's ``ingestor`` (the frames
    of all its streams batched) and the shared ``catalog``."""

    def __init__(self, engine: Engine, *, state_dir: str | Path | None = None, snapshot_every: float | None = None,
                 telemetry: Telemetry | None = None, max_batch: int = 64, batch_wait_s: float = 0.003,
                 batch_frames: int | None = None, warn: Callable[[str], None] | None = None,
                 name: str = "default", ingestor: "IngestBatcher | None" = None,
                 catalog: Catalog | None = None) -> None:
        self.engine = engine
        self.name = name
        self.ingestor = ingestor
        self.telemetry = telemetry or Telemetry(name)
        engine.on_stage = self.telemetry.observe_stage
        self.state_dir = Path(state_dir) if state_dir else None
        self.snapshot_every = snapshot_every
        self.batch_frames = int(batch_frames or engine.clip_frames)
        self.warn = warn or (lambda msg: log.warning(msg))
        self.restored_from: dict[str, Any] | None = None
        self._restored_meta: dict[str, Any] | None = None
        self.lifecycle = Lifecycle()
        self.source_label: str | None = None
        self.source_uri: str | None = None  # the identity snapshots record
        self._source = None
        self._offset = 0.0                  # stream time of the source's first frame
        self._t_first: float | None = None  # that frame's source time
        self.wall_origin: float | None = None  # live sources: the unix time of stream time 0
        self._time_up = threading.Event()   # a live source's wall-clock duration ran out
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._snap_lock = threading.Lock()
        self._last_snapshot = time.monotonic()
        self.last_snapshot_path: Path | None = None
        self.frames_in = 0
        self._inflight = None  # (future, frames) of the batch handed to the shared ingestor
        self._meter = RateMeter()
        self._source_stats: dict[str, Any] | None = None
        self.started = time.time()
        self.batcher = QueryBatcher(engine, max_batch=max_batch, wait_s=batch_wait_s, telemetry=self.telemetry)
        # called after each commit (the hub's alert rules); must return at once: it runs on the intake thread
        self.on_commit: Callable[["Runtime"], None] | None = None
        # the products queries can name instead of sending a picture; kept beside the snapshots
        if catalog is None and self.state_dir is not None:
            catalog = Catalog(self.state_dir, warn=self.warn)
        self.catalog = catalog
        if self.state_dir is not None:
            try:
                self._restore()
            except StreamError:
                self.batcher.close()
                raise
        self.update_gauges()

    # -- persistence -------------------------------------------------------------------------
    def _restore(self) -> None:
        restored, warning = snap.restore(self.state_dir, self.engine.bundle.bundle_id)
        if warning:
            self.warn(warning)
        if restored is None:
            return
        try:
            self.engine.load_state_dict(restored.arrays)
        except MissingFacts as err:  # a sound snapshot of another answer kind: the user's data, left in place
            raise StreamError(f"{restored.path}: {err}; answer with the heads (--answers heads) to continue "
                              f"it, or set it aside (--reset-state)", 409) from None
        except ValueError as err:
            aside = set_aside(restored.path, "corrupt")
            self.warn(f"{restored.path}: {err}; starting fresh (kept as {aside.name})")
            return
        self._restored_meta = restored.meta
        self.source_uri = restored.meta.get("source_uri")
        self.restored_from = {"path": str(restored.path), "saved_at": restored.meta.get("saved_at"),
                              "coverage": self.engine.coverage, "frames_processed": self.engine.frames_processed,
                              "source": restored.meta.get("source"), "source_uri": self.source_uri}

    def check_source(self, uri: str | int) -> None:
        """SourceMismatch if the memory restored here came from another source than ``uri``.
        A snapshot from before sources were recorded, or with nothing in it, fits any source."""
        recorded = (self.restored_from or {}).get("source_uri")
        if not recorded or self.engine.frames_processed == 0:
            return
        requested = source_identity(uri)
        if requested != recorded:
            raise SourceMismatch(recorded, requested, self.restored_from["path"])

    def snapshot(self) -> dict[str, Any]:
        """Write the state now (atomic). RuntimeError when there is no state dir."""
        if self.state_dir is None:
            raise RuntimeError("no state directory configured (--state-dir)")
        with self._snap_lock:
            arrays = self.engine.state_dict()
            meta = {"bundle_id": self.engine.bundle.bundle_id, "answers": self.engine.answers_kind, "saved_at": time.time(),
                    "source": self.source_label, "source_uri": self.source_uri, "coverage": self.engine.coverage,
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
                self.warn(f"snapshot failed: {err}")

    # -- session -----------------------------------------------------------------------------
    def reset(self) -> dict[str, Any]:
        """New session (a new customer): memory and SVD emptied; the stream clock goes on."""
        last = self.engine.last_time
        self.engine.reset()  # the intake's clock is its own: later frames still get later times
        self.restored_from = None
        self.update_gauges()
        return {"reset": True, "stream_time": last}

    def query(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        try:
            answers = self.batcher.submit(requests)
        except BatcherClosed:
            raise StreamError(f"stream {self.name!r} was removed or is shutting down", 404) from None
        dt = time.perf_counter() - t0
        for r in requests:
            self.telemetry.query.labels(type=str(r.get("type"))).observe(dt)
        return answers

    # -- streaming ---------------------------------------------------------------------------
    def start(self, uri: str | int, *, realtime: bool = False, duration: float | None = None,
              source_options: dict[str, Any] | None = None, on_end: Callable[[], None] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("a source is already running")
        self.check_source(uri)
        self._stop.clear()
        self._time_up.clear()
        self._t_first = None
        self._done.clear()
        self.lifecycle.move(RunState.CONNECTING, error=None, end_reason=None)
        self.source_label = label_of(uri)
        self.source_uri = source_identity(uri)
        self._thread = threading.Thread(target=self._intake, name="lvm-intake", daemon=True,
                                        args=(uri, realtime, duration, dict(source_options or {}), on_end))
        self._thread.start()

    def _intake(self, uri, realtime, duration, options, on_end) -> None:
        from edge_runtime.sources import SourceError, open_source

        frames: list[np.ndarray] = []
        times: list[float] = []
        timer: threading.Timer | None = None
        try:
            src = open_source(uri, target_fps=self.engine.fps, realtime=realtime, size=self.engine.frame_size, **options)
            with src:
                self._source = src
                self.source_label = getattr(src, "label", str(uri))
                if self._stop.is_set():
                    return
                live = bool(getattr(src, "live", False))
                if duration is not None and live:
                    timer = threading.Timer(duration, self._wall_time_up, args=(src,))
                    timer.daemon = True
                    timer.start()
                self._offset = self._resume_offset(live)
                received = 0
                limit_reached = False
                for frame in src:
                    if self._t_first is None:
                        self._t_first = frame.t
                        # a live frame was captured (now() - t) ago; files and demo have no wall clock
                        lag = src.now() - frame.t if live and hasattr(src, "now") else 0.0
                        self.wall_origin = time.time() - lag - self._offset if live else None
                        # CONNECTING until a first frame arrives
                        self.lifecycle.move(RunState.STREAMING, only_from={RunState.CONNECTING})
                    rel = frame.t - self._t_first
                    if duration is not None and rel >= duration:
                        limit_reached = True
                        break
                    received += 1
                    self.frames_in += 1
                    self.telemetry.frames_in.inc()
                    self._meter.add(1)  # per frame: a 1-fps stream ingests one batch per clip
                    frames.append(frame.image)
                    times.append(self._offset + rel)
                    if self._inflight is not None and self._inflight[0].done():
                        # the batch handed over last has committed: count it and run the commit hook
                        # (alert rules) now, not when the next batch is handed over a clip later
                        self._settle()
                    if len(frames) >= self.batch_frames:
                        # handed over before ingesting: if anything after the engine's commit raises,
                        # the drain below must not feed the same frames again
                        batch, frames, times = (frames, times), [], []
                        self._ingest(*batch, wait=False)
                        self._maybe_snapshot()
                    if self._stop.is_set():
                        break
                if timer is not None:
                    timer.cancel()
                batch, frames, times = (frames, times), [], []
                self._ingest(*batch)   # drain what was received
                self._poll_source_stats()
                if not self._stop.is_set():
                    self._end(src, duration, limit_reached or self._time_up.is_set(), received)
        except SourceError as err:
            self.lifecycle.move(RunState.FAILED, error=str(err))
        except Exception as err:  # keep the service up and say what broke, in one line
            log.exception("intake failed")
            self.lifecycle.move(RunState.FAILED,
                                error=f"intake failed: {' '.join(str(err).split())[:200] or type(err).__name__}")
        finally:
            if timer is not None:
                timer.cancel()
            try:
                self._ingest(frames, times)  # settles a batch still in flight, too
            except Exception:
                log.exception("drain failed")
            self._source = None
            if self._stop.is_set():
                self.lifecycle.move(RunState.STOPPED, only_from=Lifecycle.STOPPABLE)
            self._done.set()
            if on_end is not None:
                on_end()

    def _wall_time_up(self, src) -> None:
        self._time_up.set()
        src.stop()

    def _end(self, src, duration: float | None, limited: bool, received: int) -> None:
        """The stream ended without stop(): commit the partial clip, say why and when."""
        if received == 0 and self._time_up.is_set():
            why = getattr(src, "last_error", None)
            self.lifecycle.move(RunState.FAILED, error=f"{src.label}: no frame received in {duration:g} s"
                                + (f" (last: {why})" if why else ""))
            return
        pending = self.engine.pending_frames
        flushed = self.engine.flush()
        if flushed:
            self.telemetry.clips.inc()
            self._committed()
        self.update_gauges()
        reason, problem = end_reason(src, self._source_time(getattr(src, "position", None)), duration,
                                     limited, self._time_up.is_set(), pending if flushed else 0)
        log.info("%s", reason)
        self.lifecycle.move(RunState.ENDED, end_reason=reason, **({"error": reason} if problem else {}))

    def _source_time(self, t: float | None) -> float:
        """A source time as stream time (the last frame's time where ``t`` is None)."""
        if t is None or self._t_first is None:
            return self.engine.last_time or 0.0
        return self._offset + max(0.0, t - self._t_first)

    def _resume_offset(self, live: bool) -> float:
        last = self.engine.last_time
        if last is None:
            return 0.0
        offset = last + 1.0 / self.engine.fps
        if live and self._restored_meta and self._restored_meta.get("saved_at"):
            offset += max(0.0, time.time() - float(self._restored_meta["saved_at"]))
        self._restored_meta = None
        return offset

    def _ingest(self, frames: list[np.ndarray], times: list[float], *, wait: bool = True) -> None:
        """Frames into memory. Through a shared ingestor, ``wait=False`` returns once they are
        handed over, so this stream decodes its next batch while the batch runs; one batch in
        flight per stream keeps its frames in order, and every later call settles it first."""
        self._settle()
        if frames:
            if self.ingestor is not None:
                self._inflight = (self.ingestor.submit_async(self.engine, np.stack(frames), np.asarray(times)),
                                  len(frames))
                if wait:
                    self._settle()
                return
            self._account(len(frames), self.engine.ingest(np.stack(frames), np.asarray(times)))

    def _settle(self) -> None:
        """Wait for the batch in flight (its error raised here) and count it."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            fut, n = inflight
            self._account(n, fut.result())

    def _account(self, n_frames: int, n_clips: int) -> None:
        self.telemetry.frames_processed.inc(n_frames)
        if n_clips:
            self.telemetry.clips.inc(n_clips)
            self._committed()
        self._poll_source_stats()
        self.update_gauges()

    def _committed(self) -> None:
        hook = self.on_commit
        if hook is not None:
            try:
                hook(self)
            except Exception:  # alerts are beside the stream: their failure must not fail it
                log.exception("commit hook failed")

    def _poll_source_stats(self) -> None:
        src = self._source
        if src is None:
            return
        st = src.stats
        self.telemetry.frames_dropped.set(st.get("dropped", 0))
        self.telemetry.reconnects.set(st.get("reconnects", 0))
        self._source_stats = st

    def update_gauges(self) -> None:
        """Set the telemetry gauges (memory bytes, coverage end, intake fps) from the stream now."""
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
                self.warn(f"intake did not stop within {timeout:.0f} s; snapshotting what is committed")
        self.lifecycle.move(RunState.STOPPED, only_from=Lifecycle.STOPPABLE)
        if snapshot and self.state_dir is not None:
            try:
                self.snapshot()
            except (OSError, RuntimeError) as err:
                self.warn(f"final snapshot failed: {err}")

    def close(self) -> None:
        self.stop(snapshot=False, timeout=5.0)
        self.batcher.close()
        self.engine.close()

    # -- status ------------------------------------------------------------------------------
    @property
    def state(self) -> RunState:
        """The intake's state, with STREAMING shown as RECONNECTING while a live source is out."""
        state = self.lifecycle.state
        if state is RunState.STREAMING and self.outage_since is not None:
            return RunState.RECONNECTING
        return state

    @property
    def error(self) -> str | None:
        return self.lifecycle.error

    @property
    def end_reason(self) -> str | None:
        return self.lifecycle.end_reason

    @property
    def intake_fps(self) -> float:
        """Frames per second the intake received, over the last few seconds."""
        return self._meter.rate()

    @property
    def source_stats(self) -> dict[str, Any]:
        """The source's counters (dropped, reconnects, decode errors) as last polled; {} before any."""
        src = self._source
        return dict(self._source_stats or (src.stats if src is not None else {}))

    @property
    def outage_since(self) -> float | None:
        """Stream time of the last frame before the current outage of a live source; else None."""
        src = self._source
        lost = getattr(src, "outage_since", None) if src is not None else None
        return None if lost is None or self._t_first is None else self._source_time(lost)

    @property
    def source_problem(self) -> str | None:
        """Why a live source is not delivering right now (connecting, reconnecting, stalled), in
        one line; None while it delivers. The log has it too, but a status poller should not need it."""
        if self.state not in (RunState.CONNECTING, RunState.RECONNECTING):
            return None
        src = self._source
        return getattr(src, "last_error", None) if src is not None else None

    @property
    def ready(self) -> bool:
        answering = (RunState.IDLE, RunState.STREAMING, RunState.RECONNECTING, RunState.ENDED, RunState.STOPPED)
        return self.state in answering or self.engine.clips > 0

    def status(self) -> dict[str, Any]:
        return runtime_status(self)
