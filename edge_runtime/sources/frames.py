"""Frames to the backbone's input size: one rule for the runtime's sources, the engine (frames and
query crops) and export's calibration, so that every path feeds the graphs the same pixels."""
from __future__ import annotations

import numpy as np


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3), stretched (the whole view is kept, the aspect is not).

    INTER_AREA when no side grows: that is when OpenCV really averages areas, the anti-aliased
    shrink. As soon as a side grows OpenCV's INTER_AREA is an interpolation too, so plain
    INTER_LINEAR is used. A frame already at the size is returned as is (no copy)."""
    if frame.shape[:2] == (size, size):
        return frame
    import cv2

    interp = cv2.INTER_AREA if min(frame.shape[:2]) >= size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)
