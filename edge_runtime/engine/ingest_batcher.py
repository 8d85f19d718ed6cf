"""The intake threads of a hub's streams hand their frames to one worker, which runs whatever is
waiting as one batch through the one ingest path (``ingest.ingest_streams``; a lone stream's batch
is a batch of one): at the machine's limit the queue fills while a batch runs, so batches grow with
the load, and a quiet machine adds only ``wait_s``.

A stream whose source stalls submits nothing and so holds no one up; a bad batch fails only the
stream that sent it.
"""
from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from edge_runtime.engine.batch_queue import BatchQueue
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.ingest import ingest_streams
from edge_runtime.engine.stream_state import StreamState


class IngestBatcher:
    def __init__(self, engine: Engine, *, wait_s: float = 0.002, max_frames: int = 128) -> None:
        self.engine, self.wait_s, self.max_frames = engine, wait_s, max_frames
        self.batches = 0
        self.frames = 0
        self._queue = BatchQueue(self._run, wait_s=wait_s, limit=max_frames, size=lambda item: len(item[1]),
                                 name="lvm-ingest")

    def submit(self, stream: StreamState, frames: np.ndarray, times: np.ndarray) -> int:
        """Frames of one stream; blocks until they are in its memory. Returns clips committed."""
        return self.submit_async(stream, frames, times).result()

    def submit_async(self, stream: StreamState, frames: np.ndarray, times: np.ndarray) -> Future:
        """Hand frames over; the future gives the clips committed (or the error). A stream keeps
        its frames in order by waiting for one future before handing over its next frames."""
        return self._queue.put((stream, frames, times))

    def close(self) -> None:
        self._queue.close()

    def _run(self, items) -> None:
        try:
            results = ingest_streams(self.engine, [payload for payload, _ in items])
        except Exception as err:  # noqa: BLE001 — a backend failure: every waiting stream hears it
            for _, fut in items:
                fut.set_exception(err)
            return
        self.batches += 1
        self.frames += sum(len(payload[1]) for payload, _ in items)
        for (_, fut), res in zip(items, results):
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)
