"""Draining the outbox: one thread per sink, so a webhook that hangs for its timeout never holds up
the broker, and nothing here runs on a stream's intake thread.

Each thread takes the oldest alerts its sink has not acknowledged, hands them to the sink's
``deliver`` (-> the seqs acknowledged; SinkError when it cannot deliver now), and marks those
delivered in the outbox. After a failure it waits 0.5 s, doubling up to ``max_backoff_s`` (30 s),
with jitter so a store's boxes do not retry in step; a new alert does not cut that wait short, a
sink saying it is ready again (the broker reconnected) does.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

log = logging.getLogger("lvm_edge")


class SinkError(Exception):
    """A sink cannot deliver now (one line); the dispatcher backs off and tries again."""


class SinkWorker:
    def __init__(self, outbox, sink, *, batch: int = 50, first_backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 on_delivered: Callable[[str, int], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.outbox, self.sink = outbox, sink
        self.batch = batch
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self._on_delivered = on_delivered or (lambda sink, n: None)
        self._on_error = on_error or (lambda sink: None)
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_delivered_at: float | None = None
        self.retry_at: float | None = None  # monotonic time of the next try while backing off
        self._delay = 0.0
        self._cv = threading.Condition()
        self._kicked = self._ready = self._stop = False
        sink.on_ready = self.ready
        self._thread = threading.Thread(target=self._loop, name=f"lvm-alerts:{sink.name}"[:60], daemon=True)

    def start(self) -> "SinkWorker":
        self._thread.start()
        return self

    def kick(self) -> None:
        """A new alert is in the outbox."""
        with self._cv:
            self._kicked = True
            self._cv.notify()

    def ready(self) -> None:
        """The sink can deliver again (broker connected): retry now, whatever the backoff said."""
        with self._cv:
            self._ready = True
            self._cv.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _sleep(self, seconds: float, *, wake_on_kick: bool) -> None:
        end = time.monotonic() + seconds
        with self._cv:
            while not (self._stop or self._ready or (wake_on_kick and self._kicked)):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            self._ready = False
            if wake_on_kick:
                self._kicked = False

    def _fail(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self._on_error(self.sink.name)
        self._delay = min(self.max_backoff_s, max(self.first_backoff_s, self._delay * 2))
        wait = self._delay * random.uniform(0.8, 1.2)
        self.retry_at = time.monotonic() + wait
        self._sleep(wait, wake_on_kick=False)
        self.retry_at = None

    def _loop(self) -> None:
        from edge_runtime.alerts.outbox import OutboxError

        while not self._stop:
            try:
                batch = self.outbox.due(self.sink.name, self.batch)
                if not batch:
                    self._sleep(1.0, wake_on_kick=True)
                    continue
                done = self.sink.deliver(batch)
                if done:
                    self.outbox.delivered(self.sink.name, done)
                    self.delivered += len(done)
                    self.last_delivered_at = time.time()
                    self._on_delivered(self.sink.name, len(done))
                    self._delay, self.last_error = 0.0, None
                if len(done) < len(batch):  # waiting for acknowledgements (or a lane): look again shortly
                    self._sleep(0.05 if done else 0.25, wake_on_kick=False)
            except SinkError as err:
                self._fail(str(err))
            except OutboxError as err:
                self._fail(f"outbox: {err}")
            except Exception as err:  # a bug in a sink must not end delivery: say it, back off, go on
                log.exception("alert delivery to %s failed", self.sink.name)
                self._fail(f"{type(err).__name__}: {' '.join(str(err).split())[:200]}")

    def status(self) -> dict[str, Any]:
        retry = self.retry_at
        return {"delivered": self.delivered, "failures": self.failures, "last_error": self.last_error,
                "last_delivered_at": self.last_delivered_at,
                "retry_in_s": round(max(0.0, retry - time.monotonic()), 1) if retry is not None else None}
