"""What state a run is in, why its stream ended, and which source a memory belongs to."""
from __future__ import annotations

import threading
from enum import Enum


class RunState(str, Enum):
    """Where the runtime's stream is. A str, printed as its value (what StrEnum does from Python
    3.11 on), so status JSON and messages keep showing the plain name, e.g. "streaming"."""

    IDLE = "idle"                  # no source started yet
    CONNECTING = "connecting"      # a source is opening; no frame has arrived
    STREAMING = "streaming"        # frames are going into memory
    RECONNECTING = "reconnecting"  # a live source lost its connection and is retrying; queries answered
    ENDED = "ended"                # the stream ended (``end_reason``); queries are still answered
    FAILED = "failed"              # the source or the intake broke; ``error`` says how
    STOPPED = "stopped"            # stop() was called

    __str__ = str.__str__
    __format__ = str.__format__


_KEEP = object()


class Lifecycle:
    """A stream's RunState with the error and end reason that go with it. They change only in
    ``move``, under one lock: the intake thread and ``stop()`` both settle a stream, and a move
    that names the states it may leave happens only from those, so a late one cannot undo a
    settled state (a failure stays a failure)."""

    # what stop() may settle: a failed stream stays failed, a stopped one is already stopped
    STOPPABLE = frozenset({RunState.IDLE, RunState.CONNECTING, RunState.STREAMING, RunState.ENDED})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = RunState.IDLE
        self._error: str | None = None
        self._end_reason: str | None = None

    @property
    def state(self) -> RunState:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def end_reason(self) -> str | None:
        return self._end_reason

    def move(self, to: RunState, *, only_from=None, error=_KEEP, end_reason=_KEEP) -> bool:
        """Go to ``to`` (when the state is one of ``only_from``, if given), setting ``error`` and
        ``end_reason`` where given. -> whether it moved."""
        with self._lock:
            if only_from is not None and self._state not in only_from:
                return False
            # the words first: whoever reads the new state without the lock finds them in place
            if error is not _KEEP:
                self._error = error
            if end_reason is not _KEEP:
                self._end_reason = end_reason
            self._state = to
            return True


class StreamError(ValueError):
    """About a stream of a Streams hub, in one line for the user; ``status`` is the HTTP status the
    API answers with (404 unknown or removed, 409 taken, 422 invalid)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class SourceMismatch(RuntimeError):
    """The memory loaded from a snapshot came from another source than the one being started."""

    def __init__(self, recorded: str, requested: str, snapshot_path: str) -> None:
        super().__init__(f"{snapshot_path} holds the memory of {recorded}, not of {requested}")
        self.recorded, self.requested, self.snapshot_path = recorded, requested, snapshot_path


def label_of(uri) -> str:
    """The source as logs and the API may show it (credentials redacted)."""
    try:
        from edge_runtime.sources import parse_source_uri

        return parse_source_uri(uri).label
    except Exception:
        return "<unparsed source>"


def source_identity(uri) -> str:
    """What a snapshot records as its source (``SourceSpec.identity``); the label if unparsable."""
    try:
        from edge_runtime.sources import parse_source_uri

        return parse_source_uri(uri).identity
    except Exception:
        return label_of(uri)


def end_reason(src, at: float, duration: float | None, limited: bool, wall_clock: bool,
               committed: int) -> tuple[str, str | None]:
    """-> (one line saying why and at what stream time ``src`` ended, the file's problem or None).

    at: stream time of the end (for a file, its last decoded frame). limited: ``duration`` ended
    it; wall_clock: that was a live source's wall-clock bound. committed: frames of the partial
    clip committed at the end (0: none)."""
    problem = None if limited else src.end_problem
    if limited:
        clock = "wall-clock time since the source opened" if wall_clock else "stream time"
        reason = f"{src.label}: duration of {duration:g} s reached ({clock})"
    elif problem:
        reason = f"{src.label}: stopped at {at:.1f} s: {problem}"
    else:  # files say where their end is (end_problem None); the demo just runs out
        reason = f"{src.label}: end of {src.medium} at {at:.1f} s"
    skipped = int(src.stats.get("decode_errors", 0))
    if skipped:
        reason += f"; {skipped} undecodable frame(s) skipped"
    if committed:
        reason += f"; the last {committed} frame(s) committed as a padded clip"
    return reason, problem
