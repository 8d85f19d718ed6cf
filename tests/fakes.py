"""Test doubles shared by several test modules."""
import threading


class StoppableSource:
    """A fake frame source used as the runtime uses sources: in a with block, ended by stop() or by
    leaving the block; subclasses iterate frames and wait on ``self._stop``."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def stop(self):
        self._stop.set()
