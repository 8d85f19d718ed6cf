"""What every source shares: the Frame it yields, the one error it raises, sampling by timestamp,
and the Source contract (iterate, stop from any thread, close from any state, stats, gaps).

A source owns its clock: ``Frame.t`` is stream seconds — the file's timestamps for files and the
demo, monotonic seconds since the source was opened for live sources — so an outage shows up as
time passing with no frames (``gaps``) rather than as frames that never happened.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edge_runtime.sources.frames import resize_square

MAX_GAPS = 4096  # the most recent gaps kept


class SourceError(RuntimeError):
    """A source that cannot be opened or read as asked; the message is one line naming it."""


@dataclass
class Frame:
    t: float          # stream seconds of this frame (source time, not wall time)
    image: np.ndarray  # (H, W, 3) uint8 RGB; (size, size, 3) when the source was opened with size
    index: int        # 0-based count of frames read from the source before sampling
    # the camera's whole view, aspect kept, at most view_side px on its longer side, when the source
    # was opened with view_side and its frames are larger than ``image``: the alerts' evidence pictures
    # are cut from it (the model's frame is 112 px for lvm-tiny); None otherwise
    view: np.ndarray | None = None


class TimestampSampler:
    """Keeps a frame when its timestamp reaches the next sample time on a 1/fps grid.

    The grid starts at the first frame. After a jump of more than one period (a gap, a seek) the
    grid re-anchors at the kept frame, so a gap never yields a burst of catch-up frames; a frame is
    never yielded twice. ``fps=None`` keeps every frame.
    """

    def __init__(self, fps: float | None):
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"target_fps must be a positive number or None, got {fps!r}")
        self.period = None if fps is None else 1.0 / fps
        # Container timestamps are rounded (ms in AVI/MP4): a frame 0.1 ms early still counts.
        self._tol = 0.0 if self.period is None else min(1e-3, self.period * 1e-2)
        self._next: float | None = None

    def due(self, t: float) -> bool:
        """Whether a frame at ``t`` would be kept; changes nothing (check the frame, then ``take``)."""
        return self.period is None or self._next is None or t + self._tol >= self._next

    def take(self, t: float) -> None:
        """Record that the frame at ``t`` was kept (only call when ``due(t)``)."""
        if self.period is None:
            return
        if self._next is None:
            self._next = t + self.period
            return
        if t + self._tol - self._next >= self.period:
            self._next = t + self.period  # after a jump, re-anchor: no catch-up burst, full spacing
        else:
            self._next += self.period  # on the grid: a 30 fps file sampled at 7 fps gives 7 fps

    def keep(self, t: float) -> bool:
        if not self.due(t):
            return False
        self.take(t)
        return True


def usable(image: object) -> bool:
    """Cheap check that a decoded frame can be converted (``to_rgb`` would not return None)."""
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.size > 0
            and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)))
            and image.shape[0] >= 2 and image.shape[1] >= 2)


def to_rgb(image: object, size: int | None) -> np.ndarray | None:
    """An OpenCV BGR(A)/gray frame as (H, W, 3) uint8 RGB, resized to (size, size); None if unusable.

    Damaged streams come back from OpenCV as None, empty arrays, or odd shapes/dtypes: those are
    decode errors for the caller to count, never exceptions.
    """
    import cv2

    if not usable(image):
        return None
    assert isinstance(image, np.ndarray)
    if image.ndim == 2:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 3:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return fit_size(rgb, size)


def fit_size(rgb: np.ndarray, size: int | None) -> np.ndarray:
    """The engine's resize (edge_runtime.sources.frames), or the frame as it is when no size was asked."""
    return rgb if size is None else resize_square(rgb, size)


def view_of(rgb: np.ndarray, image: np.ndarray, side: int | None) -> np.ndarray | None:
    """The decoded frame ``rgb`` shrunk (aspect kept) to at most ``side`` px on its longer side, for
    ``Frame.view``; None without ``side`` or when it would show no more than ``image`` (the model's
    frame) does: no copy is kept that adds nothing."""
    if side is None or max(rgb.shape[:2]) <= max(image.shape[:2]):
        return None
    import cv2

    h, w = rgb.shape[:2]
    if max(h, w) <= side:
        return rgb
    scale = side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class Source:
    """The contract. Subclasses implement ``_frames()`` (a generator of Frames, already sampled)
    and ``_release()``; the base class gives iteration, stop, close, context management, stats.

    ``stop()`` may be called from any thread (a signal handler, the API); iteration then ends at
    the next frame boundary. ``close()`` stops, releases the device/file, and is idempotent.

    What a source can say about itself is declared here with the answer of a source that cannot
    (the defaults below), and overridden by the sources that can, so the runtime reads each one
    directly whatever the source.
    """

    live: bool = False
    """A camera or network stream: real time, never ends on its own, reconnects; its stream time is
    monotonic seconds since it was opened (``now``). Files and the demo are not live."""
    medium: str = "stream"
    """What the line saying where the source ended calls it ("end of file", "end of stream")."""
    position: float | None = None
    """Source time of the last frame decoded, kept by the sampler or not (files); None for the sources
    that know no more than the times of the frames they yield."""
    end_problem: str | None = None
    """Why reading stopped before the source's end (a truncated file), one line; None after a clean end."""
    last_error: str | None = None
    """A live source's latest connect/read failure or stall, one line; None while all is well."""
    outage_since: float | None = None
    """Stream time a live source's current outage began; None while frames flow (and for the others)."""
    native_fps: float | None = None
    """The source's own frame rate where it states one (a file's container, the demo's); None otherwise."""

    def __init__(self, label: str, *, target_fps: float | None, size: int | None, view_side: int | None = None):
        if size is not None and (not isinstance(size, int) or size < 2):
            raise ValueError(f"size must be an int >= 2 or None, got {size!r}")
        if view_side is not None and (not isinstance(view_side, int) or view_side < 2):
            raise ValueError(f"view_side must be an int >= 2 or None, got {view_side!r}")
        self.label = label
        self.size = size
        self.view_side = view_side  # Frame.view's longer side at most; None: no view
        self.target_fps = target_fps
        self._sampler = TimestampSampler(target_fps)
        self._stop = threading.Event()
        self._closed = False
        self._close_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = dict(frames_in=0, frames_out=0, dropped=0, reconnects=0, decode_errors=0)
        # Bounded: a source that flaps all night must not grow memory.
        self._gaps: deque[tuple[float, float]] = deque(maxlen=MAX_GAPS)
        # what a realtime file or demo waits on; live sources are real time already and never use it
        self._pacer = Pacer(self._stop)

    # ---- public -------------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        with self._stats_lock:
            return dict(self._stats)

    @property
    def gaps(self) -> list[tuple[float, float]]:
        """Stream-time intervals with no frames (outages, stalls, reconnects), oldest first."""
        with self._stats_lock:
            return list(self._gaps)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def now(self) -> float | None:
        """Current stream time on the source's own clock: a live source's (its frames' ``t`` were this
        clock's when captured); None for files and the demo, whose time is the video's, not the wall's."""
        return None

    def till_reads(self) -> list[tuple[str, float]]:
        """The till that comes with the source's video: (product, source seconds) of each good scanner
        read, what a store's point-of-sale system would send; [] for a source without one (all but
        demo://)."""
        return []

    def till_transactions(self) -> list[tuple[str, float]]:
        """The till's transactions that come with the source's video: ("start" | "end", source seconds)
        of each customer's; [] for a source without one (all but demo://)."""
        return []

    def pace_from(self, t: float) -> None:
        """A paced (real-time) file or demo: release the frames before source time ``t`` at once and pace
        from there (a restored memory already holds them). Live sources are not paced: nothing to do."""
        self._pacer.free_until = t

    def stop(self) -> None:
        """Make iteration end promptly. Thread-safe, idempotent; does not release anything."""
        self._stop.set()
        self._wake()

    def close(self) -> None:
        """Stop and release. Idempotent; safe from any state, including never-connected."""
        self.stop()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._release()

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise SourceError(f"{self.label}: source is closed")
        for frame in self._frames():
            if self._stop.is_set():
                return
            self._count("frames_out")
            yield frame

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} live={self.live}>"

    # ---- for subclasses -----------------------------------------------------------------------
    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _wake(self) -> None:
        """Interrupt a blocking wait in ``_frames`` (subclasses with queues/timers override)."""

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _add_gap(self, start: float, end: float) -> None:
        if end > start:
            with self._stats_lock:
                self._gaps.append((start, end))


class Pacer:
    """Real-time pacing for file-like sources: frame t is released no earlier than t - t_first
    seconds after the first one. Waits on the stop event, so ``stop()`` cuts a wait short. A slow
    consumer is never caught up by dropping: files deliver every sampled frame."""

    def __init__(self, stop: threading.Event):
        self._stop = stop
        self._origin: tuple[float, float] | None = None
        self.free_until = float("-inf")   # frames before this source time are released at once

    def wait(self, t: float) -> None:
        if t < self.free_until:
            return
        now = time.monotonic()
        if self._origin is None:
            self._origin = (t, now)
            return
        delay = self._origin[1] + (t - self._origin[0]) - now
        if delay > 0:
            self._stop.wait(delay)
