"""The stream loop and the service around it: intake thread (its loop in intake.py), batched queries,
snapshots, status.

    source --(sample at model fps)--> intake thread --> the ingest path (edge_runtime/engine/ingest.py:
                                     backbone, clip, sampler, SVD, commit: host copy swapped in), by
                                     Engine.ingest alone or through a hub's IngestBatcher
    HTTP / CLI queries --> QueryBatcher (one heads call for whatever is waiting) --> Engine.answer
                                                         (reads the last commit; never waits on intake)

Everything the stream carries, its clock included, is its ``StreamState`` (``stream``): the stream
time of each frame comes from the state's clock (edge_runtime/engine/source_clock.py), and the
snapshot is written from the state alone plus the bundle and source it belongs to. A file or the
demo resumes where the restored memory ends: its frames up to there are skipped (read again, the
memory would hold that part twice), and one the memory holds to its end adds nothing.

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

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edge_runtime.atomic_write import set_aside
from edge_runtime.engine import snapshot as snap
from edge_runtime.query.catalog import Catalog
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.stream_state import MissingFacts, MissingTimeline
from edge_runtime.serve import zones_file
from edge_runtime.serve.intake import Intake
from edge_runtime.serve.query_batcher import BatcherClosed, QueryBatcher
from edge_runtime.serve.rate_meter import RateMeter
from edge_runtime.serve.run_status import runtime_status
from edge_runtime.serve.run_state import Lifecycle, RunState, SourceMismatch, StreamError, label_of, source_identity
from edge_runtime.serve.telemetry import Telemetry

if TYPE_CHECKING:
    from edge_runtime.engine.ingest_batcher import IngestBatcher
    from edge_runtime.items.zones import Zones

log = logging.getLogger("lvm_edge")


class Runtime(Intake):
    """One stream: its state (``stream``) on the engine's shared graphs + at most one source +
    snapshots + the query batcher. Alone it ingests through ``engine.ingest``; in a hub
    (``edge_runtime.serve.streams.Streams``) it gets a ``name``, the hub's ``ingestor`` (the frames
    of all its streams batched) and the shared ``catalog``."""

    def __init__(self, engine: Engine, *, state_dir: str | Path | None = None, snapshot_every: float | None = None,
                 telemetry: Telemetry | None = None, max_batch: int = 64, batch_wait_s: float = 0.003,
                 batch_frames: int | None = None, warn: Callable[[str], None] | None = None,
                 name: str = "default", ingestor: "IngestBatcher | None" = None,
                 catalog: Catalog | None = None, zones: Zones | None = None) -> None:
        """``zones``: the config's for this stream (they win over those set over the API, in
        ``<state dir>/zones.json``); without either an event path proposes its own."""
        self.engine = engine
        self.stream = engine.new_stream()
        self.name = name
        self.ingestor = ingestor
        self.telemetry = telemetry or Telemetry(name)
        self.stream.observe_stages(self.telemetry.observe_stage)
        self.state_dir = Path(state_dir) if state_dir else None
        self.snapshot_every = snapshot_every
        self.batch_frames = int(batch_frames or engine.intake_batch)
        self.batch_frames_set = batch_frames is not None  # the config's: it wins over a paced stream's own
        self.warn = warn or (lambda msg: log.warning(msg))
        self.restored_from: dict[str, Any] | None = None
        self.lifecycle = Lifecycle()
        self.source_label: str | None = None
        self.source_uri: str | None = None  # the identity snapshots record
        self._source = None
        self._till = None                   # demo://: its till's reads (video seconds), see till_reads
        self._till_tx = None                # demo://: its till's transactions, see till_transactions
        self._time_up = threading.Event()   # a live source's wall-clock duration ran out
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._snap_lock = threading.Lock()
        self._last_snapshot = time.monotonic()
        self.last_snapshot_path: Path | None = None
        self.last_snapshot_at: float | None = None     # unix time of the last snapshot written
        self.snapshot_error: str | None = None         # why the last snapshot failed (one line), until one succeeds
        self.final_snapshot: str | None = None         # stop(): "written", "failed" or None (none was due)
        self.removed = False                           # Streams.remove() is stopping it
        self.frames_in = 0
        self._inflight = None  # (future, frames) of the batch handed to the shared ingestor
        self._meter = RateMeter()
        self._source_stats: dict[str, Any] | None = None
        self.started = time.time()
        self.batcher = QueryBatcher(engine, self.stream, max_batch=max_batch, wait_s=batch_wait_s, telemetry=self.telemetry)
        # called after each commit (the hub's alert rules); must return at once: it runs on the intake thread
        self.on_commit: Callable[["Runtime"], None] | None = None
        # the products queries can name instead of sending a picture; kept beside the snapshots
        if catalog is None and self.state_dir is not None:
            catalog = Catalog(self.state_dir, warn=self.warn)
        self.catalog = catalog
        # before the snapshot: restoring keeps configured zones, while configuring later would drop its tracks
        start_zones = zones_file.starting_zones(name, zones, self.state_dir, self.stream.items is not None, self.warn)
        if start_zones is not None:
            self.stream.set_zones(start_zones)
        if self.state_dir is not None:
            try:
                self._restore()
            except StreamError:
                self.batcher.close()
                raise
        # read when /metrics is scraped (an outage moves nothing else)
        self.telemetry.source_up.set_function(lambda: float(self.state is RunState.STREAMING))
        self.telemetry.gaps.set_function(lambda: float(len(self.stream.gaps)))
        self.telemetry.gap_seconds.set_function(lambda: float(sum(b - a for a, b in self.stream.gaps)))
        self.update_gauges()

    # -- persistence -------------------------------------------------------------------------
    def _restore(self) -> None:
        restored, warning = snap.restore(self.state_dir, self.engine.bundle.bundle_id)
        if warning:
            self.warn(warning)
        if restored is None:
            return
        try:
            self.stream.load_state_dict(restored.arrays, restored.meta)
        except MissingFacts as err:  # a sound snapshot of another answer kind: the user's data, left in place
            go_on = ("run the bundle without the timeline that wrote it" if isinstance(err, MissingTimeline)
                     else "answer with the heads (--answers heads)")
            raise StreamError(f"{restored.path}: {err}; {go_on} to continue it, or set it aside (--reset-state)",
                              409) from None
        except ValueError as err:
            aside = set_aside(restored.path, "corrupt")
            self.warn(f"{restored.path}: {err}; starting fresh (kept as {aside.name})")
            return
        self.source_uri = restored.meta.get("source_uri")
        self.restored_from = {"path": str(restored.path), "saved_at": restored.meta.get("saved_at"),
                              "coverage": self.stream.coverage, "frames_processed": self.stream.frames_processed,
                              "source": restored.meta.get("source"), "source_uri": self.source_uri}

    def check_source(self, uri: str | int) -> None:
        """SourceMismatch if the memory restored here came from another source than ``uri``.
        A snapshot from before sources were recorded, or with nothing in it, fits any source."""
        recorded = (self.restored_from or {}).get("source_uri")
        if not recorded or self.stream.frames_processed == 0:
            return
        requested = source_identity(uri)
        if requested != recorded:
            raise SourceMismatch(recorded, requested, self.restored_from["path"])

    def event_items(self):
        """This stream's item state (``edge_runtime.items.item_state.ItemState``); StreamError 409
        when it has no event path."""
        if self.stream.items is None:
            raise StreamError(f"stream {self.name!r} has no event path (its bundle has no event head): "
                              "zones do not apply", 409)
        return self.stream.items

    def set_zones(self, zones: Zones | None) -> Path | None:
        """This stream's zones (None: proposed again from the event head), kept in its state dir for
        the next start (written before they apply: a failed write changes nothing): the file's path,
        None when nothing is kept. StreamError 409 for a stream without an event path."""
        self.event_items()
        kept = zones_file.save(self.state_dir, zones) if self.state_dir is not None else None
        self.stream.set_zones(zones)
        return kept

    def snapshot(self) -> dict[str, Any]:
        """Write the state now (atomic). RuntimeError when there is no state dir."""
        if self.state_dir is None:
            raise RuntimeError("no state directory configured (--state-dir)")
        with self._snap_lock:
            arrays = self.stream.state_dict()
            meta = {"bundle_id": self.engine.bundle.bundle_id, "answers": self.engine.answers_kind, "saved_at": time.time(),
                    "source": self.source_label, "source_uri": self.source_uri, **self.stream.snapshot_meta()}
            t0 = time.perf_counter()
            target = self.state_dir / snap.SNAPSHOT_NAME
            try:
                path = snap.write_snapshot(target, arrays, meta)
            except Exception as err:
                self.telemetry.snapshot_errors.inc()
                why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
                self.snapshot_error = " ".join(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: cannot write {target}: {why}".split())
                if isinstance(err, OSError):  # name the file: a write's ENOSPC carries no file name
                    raise OSError(err.errno, why, str(target)) from None
                raise
            self.telemetry.observe_stage("snapshot", time.perf_counter() - t0)
            self.telemetry.snapshots.inc()
            self._last_snapshot = time.monotonic()
            if self.snapshot_error is not None:  # the log said it failed: say it is over
                self.warn(f"snapshot written again ({path}), after: {self.snapshot_error}")
            self.last_snapshot_path, self.last_snapshot_at, self.snapshot_error = path, meta["saved_at"], None
            return {"path": str(path), "bytes": path.stat().st_size, "saved_at": meta["saved_at"],
                    "coverage": meta["coverage"], "frames_processed": meta["frames_processed"]}

    def _maybe_snapshot(self, now: bool = False) -> None:
        """The periodic snapshot, when it is due (``now``: due at once); a failure is warned, not raised."""
        if self.state_dir is None or not self.snapshot_every:
            return
        if now or time.monotonic() - self._last_snapshot >= self.snapshot_every:
            try:
                self.snapshot()
            except OSError:
                self.warn(f"snapshot failed: {self.snapshot_error}")

    # -- session -----------------------------------------------------------------------------
    def reset(self) -> dict[str, Any]:
        """New session (a new customer): memory and SVD emptied; the stream clock goes on."""
        last = self.stream.last_time
        cov = self.stream.coverage or {}
        held = "nothing" if cov.get("start") is None else f"{cov['start']:.1f}-{cov['end']:.1f} s"
        self.stream.reset()  # the source's clock goes on: later frames still get later times
        # in the log: the memory is gone, and the next snapshot replaces the one on disk
        self.warn(f"{self.name}: session reset: the memory ({held}) was emptied")
        self.restored_from = None
        self.update_gauges()
        return {"reset": True, "stream_time": last}

    def query(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answers to ``requests`` (checked, batched with whatever else is asked meanwhile)."""
        fut = self.query_future(requests)
        try:
            return fut.result(timeout=self.batcher.timeout_s)
        except BatcherClosed:
            raise self._gone() from None

    async def query_async(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``query`` for the API's event loop: awaits the batch without holding a thread."""
        fut = asyncio.wrap_future(self.query_future(requests))
        try:  # shielded: a timeout here must not cancel the batch's Future under the batcher
            return await asyncio.wait_for(asyncio.shield(fut), self.batcher.timeout_s)
        except BatcherClosed:
            raise self._gone() from None

    def query_future(self, requests: list[dict[str, Any]]) -> Future:
        """Check and queue ``requests``; the Future gets their answers. Each answered query's latency
        (queueing included) goes to the ``query`` histogram."""
        t0 = time.perf_counter()
        try:
            fut = self.batcher.submit_future(requests)
        except BatcherClosed:
            raise self._gone() from None

        def observe(done: Future) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            dt = time.perf_counter() - t0
            for r in requests:
                self.telemetry.query.labels(type=str(r.get("type"))).observe(dt)

        fut.add_done_callback(observe)
        return fut

    def _gone(self) -> StreamError:
        return StreamError(f"stream {self.name!r} was removed or is shutting down", 404)

    # -- streaming ---------------------------------------------------------------------------
    def start(self, uri: str | int, *, realtime: bool = False, duration: float | None = None,
              source_options: dict[str, Any] | None = None, on_end: Callable[[], None] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("a source is already running")
        self.check_source(uri)
        self._stop.clear()
        self._time_up.clear()
        self.stream.clock.source_starting()
        self._done.clear()
        self.lifecycle.move(RunState.CONNECTING, error=None, end_reason=None)
        self.source_label = label_of(uri)
        self.source_uri = source_identity(uri)
        self._thread = threading.Thread(target=self._intake, name="lvm-intake", daemon=True,
                                        args=(uri, realtime, duration, dict(source_options or {}), on_end))
        self._thread.start()

    def update_gauges(self) -> None:
        """Set the telemetry gauges (memory bytes, coverage end, intake fps) from the stream now."""
        self.telemetry.memory_bytes.set(self.stream.memory_bytes)
        end = self.stream.coverage["end"]
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
                self.final_snapshot = "written"
            except (OSError, RuntimeError) as err:
                self.final_snapshot = "failed"
                since = (f"since the last snapshot ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.last_snapshot_at))})"
                         if self.last_snapshot_at else "of this run")
                self.warn(f"final snapshot failed ({self.snapshot_error or err}): the memory {since} is lost")

    def close(self) -> None:
        """Stop and let go of the batcher; the engine is its opener's to close (a hub's is shared)."""
        self.stop(snapshot=False, timeout=5.0)
        self.batcher.close()

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
    def wall_origin(self) -> float | None:
        """Unix time of stream time 0 for a live source (the stream's clock); None for a file or the demo."""
        return self.stream.clock.wall_origin

    @property
    def memory_began(self) -> float | None:
        """Unix time this stream's memory began empty (the stream's clock); None when unknown."""
        return self.stream.clock.memory_began

    @property
    def stream_now(self) -> float | None:
        """Stream time of the newest frame received (the stream's clock); None before any."""
        return self.stream.clock.stream_now

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
        lost = src.outage_since if src is not None else None
        clock = self.stream.clock
        return None if lost is None or not clock.started else clock.stream_time(lost)

    def till_reads(self, until: float) -> list[tuple[str, float]]:
        """A demo stream's till: (product, stream seconds) of each good scanner read up to ``until``,
        what the alert service takes as the point-of-sale feed with ``alerts.scans: pos``; [] for
        other sources (a real till POSTs to /v1/streams/<name>/scans)."""
        clock = self.stream.clock
        if self._till is None or not clock.started:
            return []
        reads = [(p, clock.stream_time(t)) for p, t in self._till()]
        return [(p, t) for p, t in reads if t <= until]

    def till_transactions(self, until: float) -> list[tuple[str, float]]:
        """A demo stream's till transactions: ("start" | "end", stream seconds) up to ``until``; [] for
        other sources (a real till POSTs to /v1/streams/<name>/till)."""
        clock = self.stream.clock
        if self._till_tx is None or not clock.started:
            return []
        marks = [(k, clock.stream_time(t)) for k, t in self._till_tx()]
        return [(k, t) for k, t in marks if t <= until]

    @property
    def source_problem(self) -> str | None:
        """Why a live source is not delivering right now (connecting, reconnecting, stalled), in
        one line; None while it delivers. The log has it too, but a status poller should not need it."""
        if self.state not in (RunState.CONNECTING, RunState.RECONNECTING):
            return None
        src = self._source
        return src.last_error if src is not None else None

    @property
    def ready(self) -> bool:
        answering = (RunState.IDLE, RunState.STREAMING, RunState.RECONNECTING, RunState.ENDED, RunState.STOPPED)
        return self.state in answering or self.stream.clips > 0

    def status(self) -> dict[str, Any]:
        return runtime_status(self)
