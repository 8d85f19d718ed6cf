"""Live sources (V4L2 cameras, Jetson CSI cameras, RTSP/HTTP streams): a reader in the background,
a bounded queue where the latest frame wins, reconnection with backoff, and a stall watchdog.

How it runs. A supervisor thread opens the source through an *opener* (edge_runtime/sources/
openers.py: a callable returning an object with ``read() -> (ok, image)`` and ``release()``;
``cv2.VideoCapture`` is one) on a fresh reader thread per connection, and watches it:
- the opener raising, or ``read()`` failing, ends the connection;
- no usable frame for ``stall_timeout_s`` (counted from the start of the attempt, so a hung open
  counts too) is a stall: the connection is abandoned and a new one started. The stuck reader is
  never touched from another thread (releasing an OpenCV capture that another thread is reading
  can crash); it releases its capture itself when its call returns, and never delivers again.
  Network captures are opened with FFmpeg open/read timeouts just under the stall timeout so
  that stuck calls do return; what a read returns only at that timeout is not a frame.
- between attempts it waits ``min(reconnect_max_s, reconnect_base_s * 2**failures)`` times a
  random factor in [0.5, 1] (jitter, so that many kiosks do not hammer one NVR in step), where
  ``failures`` counts consecutive attempts that delivered no frame; a connection that delivered
  frames resets it. It retries until stopped: a camera unplugged at night is back in the morning.

Stream time is monotonic seconds since the source was opened, so an outage is time passing with
no frames: it is recorded in ``gaps`` as (last frame before it, first frame after it); an outage
still open at ``close()`` is closed at that moment.

Frames are sampled at ``target_fps`` on the reader thread, before the queue, so ``dropped`` counts
only frames that were wanted and lost because the consumer was slower (the oldest queued frame
goes first). ``open_source`` never blocks on the network or the device: after a fast pre-flight
check (missing device node, no GStreamer for csi://) it returns at once and connection happens in
the background; ``connected`` and ``last_error`` say how that is going. ``stop()`` and ``close()``
work in every state, including a source that never connected.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from typing import Iterator

from edge_runtime.sources.base import Frame, Source, SourceError, fit_size, to_rgb, usable, view_of
from edge_runtime.sources.openers import READ_TIMEOUT_FRACTION, Capture, Opener

log = logging.getLogger(__name__)


# How long close() waits for a reader that is inside read() to come back and release its device.
RELEASE_JOIN_S = 1.0
# A source down for days (a camera unplugged) would log one line per attempt (every reconnect_max_s):
# the same failure again is logged at most once per REPEAT_LOG_S, with the attempts in between counted
REPEAT_LOG_S = 600.0


class _Connection:
    """One connection attempt: its reader thread and what happened to it."""

    def __init__(self, number: int, started: float):
        self.number = number
        self.last_activity = started  # start of the attempt, then each usable frame
        self.opened = False
        self.frames = 0
        self.abandoned = False        # set by the supervisor: this reader must not deliver again
        self.open_error: str | None = None
        self.end_reason: str | None = None
        self.done = False
        self.thread: threading.Thread | None = None


class LiveSource(Source):
    live = True

    def __init__(self, label: str, opener: Opener, *, target_fps: float | None, size: int | None = None,
                 queue_size: int = 4, stall_timeout_s: float = 5.0, reconnect_max_s: float = 30.0,
                 reconnect_base_s: float = 0.5, rng: random.Random | None = None, view_side: int | None = None):
        super().__init__(label, target_fps=target_fps, size=size, view_side=view_side)
        if not (isinstance(queue_size, int) and queue_size >= 1):
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        for name, value in (("stall_timeout_s", stall_timeout_s), ("reconnect_max_s", reconnect_max_s),
                            ("reconnect_base_s", reconnect_base_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self._opener = opener
        self.queue_size = queue_size
        self.stall_timeout_s = float(stall_timeout_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.reconnect_base_s = min(float(reconnect_base_s), self.reconnect_max_s)
        self._rng = rng or random.Random()
        self._stats.update(stalls=0, connect_failures=0)
        # One (reentrant) lock for the queue, the connection state, stats and gaps.
        self._cond = threading.Condition(threading.RLock())
        self._stats_lock = self._cond
        self._queue: deque[Frame] = deque()
        self._conn: _Connection | None = None
        self._connections = 0
        self._connected = False
        self._ever_opened = False
        self._last_error: str | None = None
        self._told: tuple[str, float, int] | None = None  # the failure last logged, when, attempts since
        self._last_frame_t: float | None = None
        self._lost_since: float | None = None  # stream time the current outage began
        self._n_in = 0
        self._t0 = time.monotonic()
        self._supervisor = threading.Thread(target=self._supervise, name=f"source:{label}", daemon=True)
        self._supervisor.start()

    # ---- public extras ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """A connection is open and has not failed or stalled (it may not have delivered yet)."""
        with self._cond:
            return self._connected

    @property
    def last_error(self) -> str | None:
        """The latest connect/read failure or stall, one line; None while all is well."""
        with self._cond:
            return self._last_error

    @property
    def outage_since(self) -> float | None:
        """Stream time the current outage began (it is in ``gaps`` once frames flow again or the
        source closes); None while frames are flowing or before the first attempt finished."""
        with self._cond:
            return self._lost_since

    def now(self) -> float:
        """Current stream time (seconds since the source was opened)."""
        return time.monotonic() - self._t0

    def backoff_delay(self, failures: int) -> float:
        """Seconds to wait before the next attempt after ``failures`` consecutive empty attempts."""
        ceiling = min(self.reconnect_max_s, self.reconnect_base_s * 2.0 ** min(failures, 60))
        return ceiling * self._rng.uniform(0.5, 1.0)

    # ---- Source -------------------------------------------------------------------------------
    def _frames(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                frame = self._queue.popleft()
            yield frame

    def _wake(self) -> None:
        with self._cond:
            if self._conn is not None:
                self._conn.abandoned = True
            self._cond.notify_all()

    def _release(self) -> None:
        # The supervisor first (stop is set: it exits within a poll), so that no connection is
        # started and no outage is opened after the bookkeeping below.
        if self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=1.0)
        with self._cond:
            if self._lost_since is not None:
                self._add_gap(self._lost_since, self.now())
                self._lost_since = None
            conn = self._conn
            if conn is not None:
                conn.abandoned = True
            self._connected = False
            self._queue.clear()
            self._cond.notify_all()
        if conn is not None and conn.thread is not None and conn.thread is not threading.current_thread():
            # An open reader returns from read() within a frame period and releases the device,
            # so a camera closed here can be reopened at once; a hung open is not waited for.
            conn.thread.join(timeout=RELEASE_JOIN_S if conn.opened else 0.1)
            if conn.thread.is_alive() and conn.opened:
                log.warning("%s: reader still inside the capture after %.0f s; it releases the device "
                            "when that call returns", self.label, RELEASE_JOIN_S)

    # ---- supervisor ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0
        first = True
        while not self._stop.is_set():
            if not first:
                delay = self.backoff_delay(failures)
                log.info("%s: next connection attempt in %.2f s", self.label, delay)
                if self._stop.wait(delay):
                    break
            first = False
            conn = self._start_connection()
            outcome = self._watch(conn)
            if outcome == "stopped":
                break
            with self._cond:
                self._connected = False
                if self._lost_since is None:
                    self._lost_since = self._last_frame_t if self._last_frame_t is not None else 0.0
                if outcome == "open_failed":
                    self._stats["connect_failures"] += 1
                    self._last_error = conn.open_error
                elif outcome == "stalled":
                    self._stats["stalls"] += 1
                    what = "no frame" if conn.opened else "open did not finish"
                    self._last_error = f"{self.label}: stalled ({what} for {self.stall_timeout_s:g} s)"
                else:
                    self._last_error = f"{self.label}: {conn.end_reason}"
                message = self._last_error
            failures = 0 if conn.frames else failures + 1
            self._tell(message)

    def _tell(self, message: str) -> None:
        """Log a connection failure: a new one at once, the same one again at most every REPEAT_LOG_S."""
        now = time.monotonic()
        if self._told is not None and self._told[0] == message and now - self._told[1] < REPEAT_LOG_S:
            self._told = (message, self._told[1], self._told[2] + 1)
            log.debug("%s", message)
            return
        again = self._told[2] if self._told is not None and self._told[0] == message else 0
        log.warning("%s%s", message, f" (failed {again} more times since it was last logged)" if again else "")
        self._told = (message, now, 0)

    def _start_connection(self) -> _Connection:
        with self._cond:
            self._connections += 1
            conn = _Connection(self._connections, time.monotonic())
            self._conn = conn
        conn.thread = threading.Thread(target=self._read, args=(conn,), daemon=True,
                                       name=f"source:{self.label}#{conn.number}")
        conn.thread.start()
        return conn

    def _watch(self, conn: _Connection) -> str:
        poll = min(0.1, self.stall_timeout_s / 4)
        with self._cond:
            while True:
                if self._stop.is_set():
                    conn.abandoned = True
                    return "stopped"
                if conn.open_error is not None:
                    return "open_failed"
                if conn.end_reason is not None:
                    return "ended"
                if time.monotonic() - conn.last_activity > self.stall_timeout_s:
                    conn.abandoned = True
                    return "stalled"
                self._cond.wait(poll)

    # ---- reader (one thread per connection) ---------------------------------------------------
    def _read(self, conn: _Connection) -> None:
        try:
            cap = self._opener()
        except Exception as e:  # noqa: BLE001 — an opener failing is a connection failure, never a crash
            message = str(e) if isinstance(e, SourceError) else f"{self.label}: open failed: {type(e).__name__}: {e}"
            with self._cond:
                conn.open_error = message.splitlines()[0] if message else f"{self.label}: open failed"
                conn.done = True
                self._cond.notify_all()
            return
        try:
            with self._cond:
                if conn.abandoned or self._stop.is_set():
                    return
                conn.opened = True
                conn.last_activity = time.monotonic()  # the stall clock restarts once open
                self._connected = True
                if self._ever_opened:
                    self._stats["reconnects"] += 1
                self._ever_opened = True
                log.info("%s: connected", self.label)
                self._told = None  # a failure after this one is news
                self._cond.notify_all()
            self._read_loop(conn, cap)
        except Exception as e:  # noqa: BLE001
            with self._cond:
                conn.end_reason = f"read raised {type(e).__name__}: {e}".splitlines()[0]
        finally:
            with self._cond:
                conn.done = True
                self._cond.notify_all()
            try:
                cap.release()
            except Exception as e:  # noqa: BLE001
                log.warning("%s: release failed: %s", self.label, e)

    def _read_loop(self, conn: _Connection, cap: Capture) -> None:
        while True:
            asked = time.monotonic()
            ok, image = cap.read()
            now = time.monotonic()
            if not ok:
                with self._cond:
                    if not conn.abandoned:
                        conn.end_reason = "read failed (stream ended or device lost)"
                return
            # A read that blocked until the capture's own timeout and then "succeeded" returned what
            # FFmpeg flushed when it gave up (the partial frame of a TCP stream gone silent mid-frame),
            # not a new frame: taken as one it would hold the watchdog off for another timeout.
            good = usable(image) and now - asked < READ_TIMEOUT_FRACTION * self.stall_timeout_s
            with self._cond:
                if conn.abandoned or self._stop.is_set():
                    return
                self._stats["frames_in"] += 1
                index = self._n_in
                self._n_in += 1
                if not good:
                    self._stats["decode_errors"] += 1
                    continue  # garbage does not feed the watchdog: a stream of it is a stall
                t = now - self._t0
                conn.last_activity = now
                conn.frames += 1
                if self._lost_since is not None:
                    self._add_gap(self._lost_since, t)
                    self._lost_since = None
                    self._last_error = None
                self._last_frame_t = t
                want = self._sampler.due(t)
            if not want:
                continue
            full = to_rgb(image, None)  # outside the lock: the consumer is not held up
            rgb = None if full is None else fit_size(full, self.size)
            view = None if full is None else view_of(full, rgb, self.view_side)
            with self._cond:
                if conn.abandoned or self._stop.is_set():
                    return
                if rgb is None or not self._sampler.due(t):
                    continue
                self._sampler.take(t)
                if len(self._queue) >= self.queue_size:
                    self._queue.popleft()  # latest frame wins
                    self._stats["dropped"] += 1
                self._queue.append(Frame(t=t, image=rgb, index=index, view=view))
                self._cond.notify_all()
