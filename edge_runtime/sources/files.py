"""Video files: every frame decoded in order, timestamps from the container, sampled by time.

Opening fails fast (SourceError) for a path that is missing, unreadable, not a video, or has no
decodable frame. Damage later in the file never raises:
- a frame OpenCV returns as None / empty / oddly shaped is skipped and counted in decode_errors;
- a grab that fails before the container's frame count is reached is a damaged stretch, not the
  end: the reader seeks one frame on and carries on (OpenCV's FFmpeg backend otherwise stops at
  the first undecodable packet of e.g. an MJPG AVI), counting each skipped position;
- a file whose reading stops well before that frame count (truncated, or damage that cannot be
  sought past) ends there, and ``end_problem`` says so in one line (None after a clean end), with
  ``position`` the file time of the last frame decoded;
- timestamps that go backwards or are missing (OpenCV reports 0 ms for the last frame of some
  AVIs) are replaced by previous + 1/fps, so ``t`` is strictly increasing.

``t`` is relative to the first frame (a file whose first pts is 41.7 ms starts at t = 0).
"""
from __future__ import annotations

import math
import os
import sys
import threading
from typing import Iterator

from edge_runtime.sources.base import Frame, Source, SourceError, fit_size, to_rgb, view_of

# Consecutive undecodable positions before a damaged file is treated as ended.
MAX_CONSECUTIVE_FAILURES = 30
# Frame counts in some containers are estimates (duration x fps): an end this close to the count is
# a clean end, not a truncated file.
COUNT_SLACK = 0.01
FALLBACK_FPS = 25.0


class FileSource(Source):
    live = False
    medium = "file"

    def __init__(self, path: str, *, label: str | None = None, target_fps: float | None,
                 realtime: bool = False, size: int | None = None, view_side: int | None = None):
        super().__init__(label or f"file {path}", target_fps=target_fps, size=size, view_side=view_side)
        quiet_decoder_logs()
        import cv2

        self.path = path
        self.realtime = realtime
        _check_readable(path, self.label)
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.label}: OpenCV cannot open it (not a video, or a codec this build lacks)")
        self._cap = cap
        # The capture is touched by the iterating thread and by close(), which may run in a signal
        # handler on that same thread: reentrant, and every user re-checks the capture is there.
        self._lock = threading.RLock()
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = self.native_fps = fps if math.isfinite(fps) and 0 < fps < 1000 else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count_hint = int(count) if math.isfinite(count) and count > 0 else None
        self._origin: float | None = None
        self._prev_t: float | None = None
        self._n = 0
        # Fail fast: a file with no decodable frame is an error at open, not an empty iteration.
        self._pending = self._grab()
        if not self._pending:
            self._release()
            raise SourceError(f"{self.label}: no decodable video frames")

    @property
    def position(self) -> float | None:
        """File time (seconds from the first frame) of the last frame decoded; None before any."""
        return self._prev_t

    # ---- Source -------------------------------------------------------------------------------
    def _frames(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            if self._pending:
                self._pending = False
            elif not self._grab():
                self._release()  # the end: give the decoder back now, not at close()
                return
            t = self._timestamp()
            index = self._n
            self._n += 1
            self._count("frames_in")
            if not self._sampler.due(t):
                continue  # grabbed (decoded) but not converted: cheap
            with self._lock:
                cap = self._cap
                if cap is None:
                    return
                ok, image = cap.retrieve()
            full = to_rgb(image, None) if ok else None
            if full is None:
                self._count("decode_errors")
                continue
            rgb = fit_size(full, self.size)
            self._sampler.take(t)
            if self.realtime:
                self._pacer.wait(t)
                if self._stop.is_set():
                    return
            yield Frame(t=t, image=rgb, index=index, view=view_of(full, rgb, self.view_side))

    def _release(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    # ---- decoding -----------------------------------------------------------------------------
    def _grab(self) -> bool:
        """Decode the next frame; False at the end of the file (or when closed/stopped)."""
        import cv2

        failures = 0
        while not self._stop.is_set():
            with self._lock:
                cap = self._cap
                if cap is None:
                    return False
                if cap.grab():
                    if failures:
                        self._count("decode_errors", failures)
                    return True
                pos = cap.get(cv2.CAP_PROP_POS_FRAMES)
                total = self.frame_count_hint
                if total is None or not math.isfinite(pos) or pos >= total - 1:
                    return False  # the end (failures before an end are not counted: unknowable)
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    return self._ended_early(pos, total, f"{failures} undecodable frames in a row")
                failures += 1
                cap.set(cv2.CAP_PROP_POS_FRAMES, pos + 1)
                if not cap.get(cv2.CAP_PROP_POS_FRAMES) > pos:
                    return self._ended_early(pos, total, "no frame decodes past it and it cannot be sought past")
        return False

    def _ended_early(self, pos: float, total: int, what: str) -> bool:
        """Record why reading stopped at frame ``pos`` of ``total``; False (the end) for ``_grab``."""
        if total - pos > max(2.0, COUNT_SLACK * total):
            self.end_problem = (f"decoding stopped at frame {int(pos)} of {total}: {what} "
                                f"(the file is truncated or damaged)")
        return False

    def _timestamp(self) -> float:
        import cv2

        with self._lock:
            cap = self._cap
            raw = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if cap is not None else float("nan")
        step = 1.0 / (self.fps or FALLBACK_FPS)
        if self._origin is None:
            self._origin = raw if math.isfinite(raw) and raw >= 0 else 0.0
        t = raw - self._origin
        if self._prev_t is None:
            t = t if math.isfinite(t) and t >= 0 else 0.0
        elif not math.isfinite(t) or t <= self._prev_t:
            t = self._prev_t + step
        self._prev_t = t
        return t


def quiet_decoder_logs() -> None:
    """Keep OpenCV's and FFmpeg's own log lines ("moov atom not found", "Error at MB: 1004", a
    failed reconnect's warnings) off the terminal: the sources say what went wrong in one line.

    FFmpeg's level is read once, when the process opens its first capture, so this must run before
    any capture is opened; a level already set in the environment (to debug a codec) is kept."""
    chosen = "OPENCV_LOG_LEVEL" in os.environ
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and not chosen:  # imported already (the CLI's modules draw with it): too late for the variable
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _check_readable(path: str, label: str) -> None:
    if "%" in os.path.basename(path) and not os.path.exists(path):
        return  # an image-sequence pattern (frame_%04d.png): OpenCV's check below decides
    if not os.path.exists(path):
        raise SourceError(f"{label}: no such file")
    if os.path.isdir(path):
        raise SourceError(f"{label}: is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"{label}: permission denied")
    if os.path.getsize(path) == 0:
        raise SourceError(f"{label}: file is empty")
