"""Many streams, one engine set: named ``Runtime``s sharing one bundle's backend sessions, their
frames batched together through one worker (``IngestBatcher``; a lone stream's batches are
batches of one), each with its own state (memory, SVD, clock, gaps), snapshots, reconnects and
query batcher. What the API and ``lvm-edge run`` hold.

State: the stream named ``default`` (a run with one unnamed source) keeps the state dir itself
(a single-stream run's snapshot lies there); every other stream keeps ``<state dir>/streams/<name>/``. The catalog of named products is the store's, shared by all.

A stream that fails (camera unplugged, RTSP down) stalls nothing: each has its own intake thread,
and the batcher runs whatever the others hand in.
"""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable

from edge_runtime.query.catalog import Catalog
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.ingest_batcher import IngestBatcher
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.serve.run_state import SourceMismatch, StreamError  # noqa: F401 — StreamError is this module's error
from edge_runtime.serve.telemetry import Metrics, Telemetry

log = logging.getLogger("lvm_edge")

DEFAULT = "default"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise StreamError(f"stream name {name!r} is not a safe file name (1-64 of A-Z a-z 0-9 _ . -, "
                          "starting with a letter or digit)")
    return name


def split_named(spec: str) -> tuple[str | None, str]:
    """``name=URI`` -> (name, URI); a bare URI -> (None, URI). A URI's own '=' (in ?k=v) is not a name."""
    head, eq, rest = spec.partition("=")
    # a path may hold '=' too: it names a stream when what precedes it cannot be a path's start
    # ('/', a scheme's ':' or a query's '?'), or when what follows is a URI with a scheme
    if eq and ":" not in head and "?" not in head and ("/" not in head or "://" in rest):
        return head, rest
    return None, spec


class Streams:
    def __init__(self, engine: Engine, *, state_dir: str | Path | None = None, snapshot_every: float | None = None,
                 max_batch: int = 64, batch_wait_s: float = 0.003, batch_frames: int | None = None,
                 warn: Callable[[str], None] | None = None, ingest_wait_s: float = 0.002) -> None:
        self.engine = engine  # the graphs every stream runs on; each Runtime keeps its own state
        self.state_dir = Path(state_dir) if state_dir else None
        self._opts = dict(snapshot_every=snapshot_every, max_batch=max_batch, batch_wait_s=batch_wait_s,
                          batch_frames=batch_frames, warn=warn)
        self._warn = warn or (lambda msg: log.warning(msg))
        self.metrics = Metrics()
        self.catalog = Catalog(self.state_dir, warn=self._warn) if self.state_dir is not None else None
        self.ingestor = IngestBatcher(engine, wait_s=ingest_wait_s)
        self.alerts = None  # an edge_runtime.alerts.service.AlertService when alerts are configured
        self._streams: dict[str, Runtime] = {}
        self._default: str | None = None  # the stream a request naming none means (``default``)
        self._lock = threading.RLock()

    @classmethod
    def wrap(cls, runtime: Runtime) -> "Streams":
        """A hub of one Runtime built on its own (tests, embedders): the API serves it as the stream 'default'."""
        hub = cls.__new__(cls)
        hub.engine, hub.state_dir = runtime.engine, runtime.state_dir
        hub._opts = dict(snapshot_every=runtime.snapshot_every, max_batch=runtime.batcher.max_batch,
                         batch_wait_s=runtime.batcher.wait_s, batch_frames=runtime.batch_frames, warn=runtime.warn)
        hub._warn = runtime.warn
        hub.metrics, hub.catalog = runtime.telemetry.metrics, runtime.catalog
        hub.ingestor = IngestBatcher(runtime.engine)
        hub._streams = {runtime.name: runtime}
        hub._default = runtime.name
        hub.alerts = None
        runtime.on_commit = hub.committed
        hub._lock = threading.RLock()
        return hub

    # -- the set -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    @property
    def default(self) -> str | None:
        """The stream a request without a ``stream`` field means: ``default`` if one was added, else the
        first added. It is never moved to another camera: once removed (while others run), a request
        naming no stream is refused until it is added again."""
        with self._lock:
            return self._default

    def get(self, name: str | None = None) -> Runtime:
        with self._lock:
            key = self._default if name is None else name
            rt = self._streams.get(key) if key is not None else None
        if rt is None:
            if name is None and len(self):
                raise StreamError(f"the default stream {key!r} was removed: name one of "
                                  f"{', '.join(self.names())} (the request's stream)", 409)
            if name is None:
                raise StreamError("no stream is running (add one: POST /v1/streams)", 404)
            raise StreamError(f"no stream named {name!r} (streams: {', '.join(self.names()) or 'none'})", 404)
        return rt

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self):
        return iter(list(self._streams.values()))

    def state_dir_of(self, name: str) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir if name == DEFAULT else self.state_dir / "streams" / name

    def create(self, name: str | None, *, zones: Any = None) -> Runtime:
        """A new stream's Runtime (memory restored from its snapshot, if any), not started yet;
        ``zones``: its configured zones (``edge_runtime.items.zones.Zones``), if any."""
        name = DEFAULT if name is None else check_name(name)
        with self._lock:
            if name in self._streams:
                raise StreamError(f"a stream named {name!r} already exists", 409)
            sdir = self.state_dir_of(name)
            if sdir is not None:
                sdir.mkdir(parents=True, exist_ok=True)
            rt = Runtime(self.engine, state_dir=sdir, name=name, ingestor=self.ingestor,
                         telemetry=Telemetry(name, metrics=self.metrics), catalog=self.catalog, zones=zones,
                         **self._opts)
            rt.on_commit = self.committed
            if name == DEFAULT or not self._streams or self._default is None:
                self._default = name
            self._streams[name] = rt
            return rt

    def add(self, name: str | None, uri: str | int, *, realtime: bool = False, duration: float | None = None,
            source_options: dict[str, Any] | None = None, zones: Any = None) -> Runtime:
        """Create and start a stream (``zones``: as ``create``). StreamError (one line) for a bad name, a duplicate, a source
        that cannot work (``sources.preflight``: checked after the cheap name checks, as it opens a
        file), or a snapshot of this name that holds another source's memory."""
        from edge_runtime.sources import SourceError, preflight

        key = DEFAULT if name is None else check_name(name)
        if key in self._streams:
            raise StreamError(f"a stream named {key!r} already exists", 409)
        try:
            preflight(str(uri))
        except SourceError as err:
            raise StreamError(str(err)) from None
        before = self._default
        rt = self.create(name, zones=zones)
        try:
            rt.check_source(uri)
            rt.start(uri, realtime=realtime, duration=duration, source_options=source_options)
        except SourceMismatch as err:
            self._drop(rt)
            self._default = before
            raise StreamError(f"stream {rt.name!r}: its snapshot holds the memory of {err.recorded}, not "
                              f"{err.requested}; move {err.snapshot_path} aside or use another name", 409) from None
        except Exception:
            self._drop(rt)
            self._default = before
            raise
        return rt

    def remove(self, name: str) -> dict[str, Any]:
        """Stop a stream (drain, final snapshot) and forget it; its snapshot stays on disk, so
        adding it again with the same source goes on where it stopped."""
        rt = self.get(name)
        rt.removed = True   # for whoever watches it stop: removed, not ended
        rt.stop(snapshot=True)
        self._drop(rt)
        return {"removed": rt.name, "snapshot": str(rt.last_snapshot_path) if rt.last_snapshot_path else None,
                "coverage": rt.stream.coverage, "frames_processed": rt.stream.frames_processed}

    def _drop(self, rt: Runtime) -> None:
        with self._lock:
            if self._streams.get(rt.name) is rt:
                del self._streams[rt.name]
        if self.alerts is not None:
            self.alerts.forget(rt.name)
        rt.batcher.close()
        rt.telemetry.forget()

    def committed(self, rt: Runtime) -> None:
        """A stream committed a clip (its intake thread): its alert rules run soon, elsewhere."""
        if self.alerts is not None:
            self.alerts.committed(rt)

    # -- all of them -------------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        out = []
        for rt in self:
            e = rt.stream
            out.append({"name": rt.name, "source": rt.source_label, "state": rt.state.value, "error": rt.error,
                        "coverage": e.coverage, "frames_processed": e.frames_processed,
                        "fps": round(rt.intake_fps, 3), "memory_bytes": e.memory_bytes,
                        "default": rt.name == self.default})
        return out

    def close(self) -> None:
        for rt in self:
            rt.stop(snapshot=False, timeout=5.0)
        if self.alerts is not None:  # the streams' last commits are evaluated while they still answer
            self.alerts.close()
            self.alerts = None
        for rt in self:
            rt.batcher.close()
        self.ingestor.close()
        self.engine.close()
