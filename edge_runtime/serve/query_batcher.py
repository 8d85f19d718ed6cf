"""Queries arriving together answered in one heads call: the API's many small requests become one
batch, and a request that fails alone does not fail the others."""
from __future__ import annotations

import sys
from concurrent.futures import Future
from typing import Any

from edge_runtime.engine.batch_queue import BatcherClosed, BatchQueue
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.stream_state import StreamState
from edge_runtime.serve.telemetry import Telemetry

__all__ = ["BatcherClosed", "QueryBatcher"]


class QueryBatcher:
    """Collects queries to one stream arriving together (within ``wait_s``) into one Engine.answer call."""

    def __init__(self, engine: Engine, stream: StreamState, *, max_batch: int = 64, wait_s: float = 0.003,
                 telemetry: Telemetry | None = None, timeout_s: float = 60.0) -> None:
        self.engine, self.stream = engine, stream
        self.max_batch, self.wait_s, self.timeout_s = max_batch, wait_s, timeout_s
        self.telemetry = telemetry
        self._queue = BatchQueue(self._answer, wait_s=wait_s, limit=max_batch, size=len, name="lvm-queries")

    def submit_future(self, requests: list[dict[str, Any]]) -> Future:
        """Check and queue; the Future gets the answers (an async caller awaits it without a thread).
        A request that fails its check raises here, before anything is queued."""
        reqs = [self.engine.check_request(r, f"request {i}" if len(requests) > 1 else "request")
                for i, r in enumerate(requests)]
        if not reqs:
            done: Future = Future()
            done.set_result([])
            return done
        return self._queue.put(reqs)

    def close(self) -> None:
        self._queue.close()

    def _answer(self, items) -> None:
        flat = [r for reqs, _ in items for r in reqs]
        try:
            answers = self.engine.answer_checked(self.stream, flat)  # checked in submit_future
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
