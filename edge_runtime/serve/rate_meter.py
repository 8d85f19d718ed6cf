"""Events per second over a sliding window, for the status line, /v1/status and the fps gauge."""
from __future__ import annotations

import threading
import time
from collections import deque


class RateMeter:
    """Events per second over the last ``window_s`` (bounded samples: constant memory).

    The rate is the events after an anchor divided by the time since it. The anchor is the newest
    sample that has left the window (or, before any has, the oldest one, whose own events are not
    counted: they arrived before the span starts). So a stream slower than the window (a 1-fps camera
    whose frames are recorded one by one, or one frame every 15 s) still reads its true rate rather
    than 0, and a stream that stops decays to 0 as its samples leave the window.

    Thread-safe: the intake thread adds while API threads read the rate (/v1/status); without the
    lock a read summing the samples while a frame was added raised in the intake and failed the stream.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=4096)
        self._anchor: float | None = None
        self._lock = threading.Lock()

    def add(self, n: int, now: float | None = None) -> None:
        with self._lock:
            self._samples.append((now if now is not None else time.monotonic(), n))

    def rate(self, now: float | None = None) -> float:
        now = now if now is not None else time.monotonic()
        with self._lock:
            return self._rate(now)

    def _rate(self, now: float) -> float:
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._anchor = self._samples.popleft()[0]
        if self._anchor is not None:
            start, events = self._anchor, sum(n for _, n in self._samples)
        elif len(self._samples) >= 2:
            start, events = self._samples[0][0], sum(n for _, n in self._samples) - self._samples[0][1]
        else:
            return 0.0
        return events / max(now - start, 1e-3)
