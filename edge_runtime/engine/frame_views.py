"""The camera's views of a stream's latest frames, kept from the intake until the event path crops
them: an alert's evidence picture is cut from the camera's view (``Frame.view``, up to VIEW_SIDE px)
rather than from the model's frame (112 px for lvm-tiny), where an item is a few dozen pixels.

The intake hands each frame's view in before the frame is ingested; the ingest path takes the view of
each frame it crops, by stream time. Views wait at most for the batch in flight and the next one
(``MAX_VIEWS``); one that is not taken in time is dropped, and its frame's crops come from the model's
frame as without a view. Two threads use it (intake and ingest), so a small lock guards it.
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

VIEW_SIDE = 640   # a view's longer side at most: an item a sixth of the frame wide gives a ~160 px crop
MAX_VIEWS = 16    # views waiting at most (a 640 x 480 view is 0.9 MB): a few batches at 5 fps
_SAME_T = 1e-6    # the intake's and the ingest path's stream times of a frame are the same float


class FrameViews:
    """``offer(t, view)`` from the intake, ``take(t)`` from the ingest path, in time order."""

    def __init__(self, max_views: int = MAX_VIEWS) -> None:
        self._views: deque[tuple[float, np.ndarray]] = deque(maxlen=max_views)
        self._lock = threading.Lock()

    def offer(self, t: float, view: np.ndarray) -> None:
        with self._lock:
            self._views.append((float(t), view))

    def take(self, t: float) -> np.ndarray | None:
        """The view of the frame at stream time ``t``, or None; views of earlier frames go."""
        with self._lock:
            views = self._views
            while views and views[0][0] < t - _SAME_T:
                views.popleft()
            if views and views[0][0] <= t + _SAME_T:
                return views.popleft()[1]
            return None

    def clear(self) -> None:
        with self._lock:
            self._views.clear()
