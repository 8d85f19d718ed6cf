"""Queries arriving together answered in one heads call: the API's many small requests become one
batch, and a request that fails alone does not fail the others."""
from __future__ import annotations

import queue
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

from edge_runtime.engine import Engine
from edge_runtime.telemetry import Telemetry


class BatcherClosed(RuntimeError):
    """The batcher was closed (its stream removed or the runtime shutting down)."""


class QueryBatcher:
    """Collects queries arriving together (within ``wait_s``) into one Engine.answer call."""

    def __init__(self, engine: Engine, *, max_batch: int = 64, wait_s: float = 0.003,
                 telemetry: Telemetry | None = None, timeout_s: float = 60.0) -> None:
        self.engine, self.max_batch, self.wait_s, self.timeout_s = engine, max_batch, wait_s, timeout_s
        self.telemetry = telemetry
        self._q: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lvm-queries", daemon=True)
        self._thread.start()

    def submit(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reqs = [self.engine.check_request(r, f"request {i}" if len(requests) > 1 else "request")
                for i, r in enumerate(requests)]
        if not reqs:
            return []
        if self._closed:
            raise BatcherClosed("closed")
        fut: Future = Future()
        self._q.put((reqs, fut))
        return fut.result(timeout=self.timeout_s)

    def close(self) -> None:
        """Stop the worker; whatever is still queued, or submitted later, gets BatcherClosed."""
        self._closed = True
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                self._fail_waiting()
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

    def _fail_waiting(self) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(BatcherClosed("closed"))

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
