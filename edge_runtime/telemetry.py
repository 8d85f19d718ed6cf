"""Prometheus metrics of one runtime (its own registry, so several can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.frames_in = Counter("lvm_frames_in", "Frames delivered by the source", registry=r)
        self.frames_processed = Counter("lvm_frames_processed", "Frames through the backbone", registry=r)
        self.frames_dropped = Gauge("lvm_frames_dropped", "Frames the source dropped (latest-frame-wins)", registry=r)
        self.clips = Counter("lvm_clips_committed", "Clips committed to memory", registry=r)
        self.reconnects = Gauge("lvm_source_reconnects", "Source reconnects", registry=r)
        self.stage = Histogram("lvm_stage_seconds", "Latency per pipeline stage", ["stage"],
                               buckets=_STAGE_BUCKETS, registry=r)
        self.query = Histogram("lvm_query_seconds", "Query latency (request to answer)", ["type"],
                               buckets=_STAGE_BUCKETS, registry=r)
        self.query_batch = Histogram("lvm_query_batch_size", "Queries answered per heads call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.memory_bytes = Gauge("lvm_memory_bytes", "Bytes of stream state (memory, SVD, pending clip)", registry=r)
        self.coverage_end = Gauge("lvm_coverage_end_seconds", "Stream time the committed memory reaches", registry=r)
        self.snapshots = Counter("lvm_snapshots", "Snapshots written", registry=r)
        self.snapshot_errors = Counter("lvm_snapshot_errors", "Snapshots that failed", registry=r)
        self.fps = Gauge("lvm_processed_fps", "Frames processed per wall-clock second (recent)", registry=r)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
