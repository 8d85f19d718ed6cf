"""The intake threads of many streams hand their frames to one worker, which runs whatever is
waiting as one batch (engine_batch.ingest_streams): at the machine's limit the queue fills while a
batch runs, so batches grow with the load, and a quiet machine adds only ``wait_s``.

A stream whose source stalls submits nothing and so holds no one up; a bad batch fails only the
stream that sent it.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from edge_runtime.engine import Engine
from edge_runtime.engine_batch import ingest_streams


class IngestBatcher:
    def __init__(self, *, wait_s: float = 0.002, max_frames: int = 128) -> None:
        self.wait_s, self.max_frames = wait_s, max_frames
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="lvm-ingest", daemon=True)
        self._thread.start()
        self.batches = 0
        self.frames = 0

    def submit(self, engine: Engine, frames: np.ndarray, times: np.ndarray) -> int:
        """Frames of one stream; blocks until they are in its memory. Returns clips committed."""
        fut: Future = Future()
        self._q.put((engine, frames, times, fut))
        return fut.result()

    def close(self) -> None:
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            items, n = [item], len(item[1])
            deadline = time.monotonic() + self.wait_s
            while n < self.max_frames:
                try:
                    nxt = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                items.append(nxt)
                n += len(nxt[1])
            self._run(items)

    def _run(self, items) -> None:
        try:
            results = ingest_streams([(e, f, t) for e, f, t, _ in items])
        except Exception as err:  # noqa: BLE001 — a backend failure: every waiting stream hears it
            for *_, fut in items:
                fut.set_exception(err)
            return
        self.batches += 1
        self.frames += sum(len(f) for _, f, _, _ in items)
        for (*_, fut), res in zip(items, results):
            if isinstance(res, Exception):
                fut.set_exception(res)
            else:
                fut.set_result(res)
