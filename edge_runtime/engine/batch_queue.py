"""The one way work arriving together becomes a batch: a worker thread takes the first item that
waits, gathers whatever else arrives within ``wait_s`` (up to ``limit`` units), and runs them as
one batch. Each item carries a Future; closing fails what still waits, so no caller hangs."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable


class BatcherClosed(RuntimeError):
    """The batcher was closed (its stream removed or the runtime shutting down)."""


class BatchQueue:
    def __init__(self, run: Callable[[list[tuple[Any, Future]]], None], *, wait_s: float, limit: int,
                 size: Callable[[Any], int], name: str) -> None:
        self._run, self.wait_s, self.limit, self._size = run, wait_s, limit, size
        self._q: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, payload: Any) -> Future:
        if self._closed:
            raise BatcherClosed("closed")
        fut: Future = Future()
        self._q.put((payload, fut))
        return fut

    def close(self) -> None:
        """Stop the worker; whatever is still queued, or put later, gets BatcherClosed."""
        self._closed = True
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                self._fail_waiting()
                return
            items, n = [item], self._size(item[0])
            deadline = time.monotonic() + self.wait_s
            while n < self.limit:
                try:
                    nxt = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                items.append(nxt)
                n += self._size(nxt[0])
            self._run(items)

    def _fail_waiting(self) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(BatcherClosed("closed"))
