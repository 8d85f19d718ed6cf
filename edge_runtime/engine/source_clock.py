"""A stream's source clock: how its source's frame times become stream times, and where stream time
0 lies on the wall clock. Part of the ``StreamState`` (its ``clock``), saved in its snapshot's metadata.

Frames get stream time = offset + (source t - first source t). On a fresh start the offset is 0.
After a restore, a live source's offset is the restored end (last frame + one frame period) plus the
wall-clock time the stream was down, taken on the restored memory's ``wall_origin`` (so "the last 5
minutes" and "since 14:05" keep meaning real time, and the jump is a gap in the memory); a snapshot
without that clock goes on from its last frame plus the time since it was saved. A file or the demo
keeps offset 0 and resumes where the restored memory ends (its frames up to there are skipped).
"""
from __future__ import annotations

import time
from typing import Any, Callable


class SourceClock:
    """Written only through its methods (the intake's calls on its stream's state); read through
    its read-only properties."""

    def __init__(self, fps: float, last_time: Callable[[], float | None]) -> None:
        self._fps = float(fps)
        self._last_time = last_time          # the memory's last frame (the state's ``last_time``)
        self._offset = 0.0                   # stream time of the source's first frame
        self._t_first: float | None = None   # that frame's source time
        self._wall_origin: float | None = None  # live sources: the unix time of stream time 0
        # when this memory began empty (unix time): alerts raised before it belong to another memory of
        # this stream name (before a --reset-state), whose stream times restarted at 0
        self._memory_began: float | None = time.time()
        self._stream_now: float | None = None    # stream time of the newest frame received (alert ticks)
        self._restored: dict[str, Any] = {}      # the snapshot's clock, read once, at the next source's start

    # -- reading -----------------------------------------------------------------------------
    @property
    def wall_origin(self) -> float | None:
        """Unix time of stream time 0 for a live source; None for a file or the demo."""
        return self._wall_origin

    @property
    def memory_began(self) -> float | None:
        """Unix time this memory began empty; None when a restored snapshot did not record it."""
        return self._memory_began

    @property
    def stream_now(self) -> float | None:
        """Stream time of the newest frame received (None before any)."""
        return self._stream_now

    @property
    def started(self) -> bool:
        """Whether the current source delivered its first frame (its times map to stream times)."""
        return self._t_first is not None

    def elapsed(self, t: float) -> float:
        """Source seconds since the current source's first frame."""
        return t - self._t_first

    def stream_time(self, t: float | None) -> float:
        """A source time as stream time (the memory's last frame's time where ``t`` is None or no frame came yet)."""
        if t is None or self._t_first is None:
            return self._last_time() or 0.0
        return self._offset + max(0.0, t - self._t_first)

    def meta(self) -> dict[str, Any]:
        """What a snapshot records of this clock."""
        return {"wall_origin": self._wall_origin, "memory_began": self._memory_began}

    # -- the intake's calls ------------------------------------------------------------------
    def source_starting(self) -> None:
        """A source is starting: its first frame places it on the stream's clock."""
        self._t_first = None

    def source_opened(self, live: bool) -> float | None:
        """The source is open -> the stream time its frames must pass (a file or the demo resumes where
        the restored memory ends; None for a live source). A live source's offset waits for its first
        frame: a camera still out at a restart may take minutes to come back, and that is downtime."""
        self._offset = 0.0 if live else self._resume_offset(live)
        return None if live else self._last_time()

    def first_frame(self, t: float, live: bool, captured: float | None = None) -> None:
        """The source's first frame, at source time ``t``; a live one captured at unix time ``captured``."""
        if live:
            self._offset = self._resume_offset(live, captured=captured)
        self._t_first = t
        self._wall_origin = captured - self._offset if live else None

    def received(self, stream_t: float) -> None:
        """A frame was received at stream time ``stream_t``."""
        self._stream_now = stream_t

    def restore(self, meta: dict[str, Any]) -> None:
        """Go on with the clock a snapshot recorded: a live memory's ``wall_origin`` answers "since 14:05"
        even before the camera is back; ``memory_began`` is None (unknown) in snapshots without it."""
        self._wall_origin = meta.get("wall_origin")
        self._memory_began = meta.get("memory_began")
        self._restored = {k: meta.get(k) for k in ("wall_origin", "saved_at")}

    def _resume_offset(self, live: bool, captured: float | None = None) -> float:
        """Stream time of the source's first frame: 0 on a fresh start, and for a file or the demo. A
        live source's frame captured at unix time ``captured`` takes its time on the restored memory's
        clock (``wall_origin``), so the gap is what the memory lacks; without that clock, the restored
        end plus the time since the snapshot was saved. Never before the restored end."""
        last = self._last_time()
        meta, self._restored = self._restored, {}
        if last is None or not live:
            return 0.0
        after = last + 1.0 / self._fps
        if captured is not None and meta.get("wall_origin") is not None:
            return max(after, captured - float(meta["wall_origin"]))
        if meta.get("saved_at"):
            return after + max(0.0, time.time() - float(meta["saved_at"]))
        return after
