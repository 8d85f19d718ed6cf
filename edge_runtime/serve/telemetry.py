"""Prometheus metrics, one registry per process (several runtimes in one test process each make
their own), every series labelled with its stream: ``Telemetry(stream, metrics=m)`` is one
stream's view of the registry ``m`` with plain attributes (``frames_in.inc()``,
``stage.labels(stage=...)``)."""
from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The process's registry and its metrics (what /metrics renders)."""
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        s = ["stream"]
        self.frames_in = Counter("lvm_frames_in", "Frames delivered by the source", s, registry=r)
        self.frames_processed = Counter("lvm_frames_processed", "Frames through the backbone", s, registry=r)
        self.frames_dropped = Gauge("lvm_frames_dropped", "Frames the source dropped (latest-frame-wins)", s, registry=r)
        self.clips = Counter("lvm_clips_committed", "Clips committed to memory", s, registry=r)
        self.reconnects = Gauge("lvm_source_reconnects", "Source reconnects", s, registry=r)
        self.stage = Histogram("lvm_stage_seconds", "Latency per pipeline stage", s + ["stage"],
                               buckets=_STAGE_BUCKETS, registry=r)
        self.query = Histogram("lvm_query_seconds", "Query latency (request to answer)", s + ["type"],
                               buckets=_STAGE_BUCKETS, registry=r)
        self.query_batch = Histogram("lvm_query_batch_size", "Queries answered per heads call", s,
                                     buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.memory_bytes = Gauge("lvm_memory_bytes", "Bytes of stream state (memory, SVD, pending clip)", s, registry=r)
        self.coverage_end = Gauge("lvm_coverage_end_seconds", "Stream time the committed memory reaches", s, registry=r)
        self.snapshots = Counter("lvm_snapshots", "Snapshots written", s, registry=r)
        self.snapshot_errors = Counter("lvm_snapshot_errors", "Snapshots that failed", s, registry=r)
        self.fps = Gauge("lvm_processed_fps", "Frames processed per wall-clock second (recent)", s, registry=r)
        # read when scraped: during an outage nothing else moves
        self.source_up = Gauge("lvm_source_up", "1 while the source delivers frames (streaming), else 0 (connecting, "
                               "reconnecting, ended, failed, stopped)", s, registry=r)
        self.gaps = Gauge("lvm_stream_gaps", "Gaps in the stream the memory records (outages, restarts)", s, registry=r)
        self.gap_seconds = Gauge("lvm_stream_gap_seconds", "Stream seconds inside those gaps", s, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_PLAIN = ("frames_in", "frames_processed", "frames_dropped", "clips", "reconnects", "query_batch", "memory_bytes",
          "coverage_end", "snapshots", "snapshot_errors", "fps", "source_up", "gaps", "gap_seconds")


class _Labelled:
    """A metric with one more label than the stream: ``.labels(type=...)`` with the stream filled in.
    It remembers the values it was given, so that the stream's series can be removed (``forget``)."""

    def __init__(self, metric, stream: str, label: str) -> None:
        self._metric, self._stream, self._label = metric, stream, label
        self._lock = threading.Lock()
        self._values: set[str] = set()

    def labels(self, **labels: str):
        child = self._metric.labels(stream=self._stream, **labels)
        with self._lock:
            self._values.add(str(labels[self._label]))
        return child

    def forget(self) -> None:
        with self._lock:
            values, self._values = self._values, set()
        for value in values:
            try:
                self._metric.remove(self._stream, value)
            except KeyError:
                pass


class Telemetry:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, stream: str = "default", *, metrics: Metrics | None = None) -> None:
        self.stream = stream
        self._metrics = metrics or Metrics()
        self.registry = self._metrics.registry
        for name in _PLAIN:
            setattr(self, name, getattr(self._metrics, name).labels(stream=stream))
        self.stage = _Labelled(self._metrics.stage, stream, "stage")
        self.query = _Labelled(self._metrics.query, stream, "type")

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    def forget(self) -> None:
        """Drop this stream's series (a stream removed at run time leaves no stale ones behind)."""
        m = self._metrics
        for name in _PLAIN:
            try:
                getattr(m, name).remove(self.stream)
            except KeyError:
                pass
        self.stage.forget()
        self.query.forget()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
