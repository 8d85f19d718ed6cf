"""One track's frames as the track labeler reads them: a row per frame from its first detection on,
and the per-frame features computed from those rows.

A row: seconds since the track's start, detected (1/0), score, p(held), box (x1, y1, x2, y2; a frame
without a detection repeats the last box), product class (-1 undetected), scanner light (0 off,
1 green, 2 red). Rows are float32: 44 bytes a frame.
"""
from __future__ import annotations

import numpy as np

from .zones import Zones

ROW_COLS = ("dt", "seen", "score", "held", "x1", "y1", "x2", "y2", "class_id", "light")
LIGHT_CODES = {None: 0.0, "green": 1.0, "red": 2.0}
ZONE_ORDER = ("basket", "scanner", "counter", "bag")
MOTION_FRAMES = 2   # motion is read against the box this many frames before (0.4 s at 5 fps)
FEATURES = ("seen", "score", "held", "cx", "cy", "log_w", "log_h", *(f"in_{z}" for z in ZONE_ORDER),
            "light_green", "light_red", "iou_before", "dx_before", "dy_before")


def row(dt: float, box, score: float | None, held: float | None, class_id: int | None, light: str | None) -> tuple:
    """One frame's row; ``score`` None: the track was not detected in the frame (``box`` its last one)."""
    seen = score is not None
    return (float(dt), 1.0 if seen else 0.0, float(score) if seen else 0.0, float(held) if seen else 0.0,
            *map(float, box), float(class_id) if seen else -1.0, LIGHT_CODES.get(light, 0.0))


def row_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (n, 4) arrays of boxes x1, y1, x2, y2."""
    inter = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None).prod(-1)
    union = (a[:, 2:] - a[:, :2]).prod(-1) + (b[:, 2:] - b[:, :2]).prod(-1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def features(rows: np.ndarray, zones: Zones | None) -> np.ndarray:
    """(T, len(ROW_COLS)) rows of one track -> (T, len(FEATURES)) float32."""
    rows = np.asarray(rows, np.float32).reshape(-1, len(ROW_COLS))
    box = rows[:, 4:8]
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    zone = [zones.zone_of(float(x), float(y)) if zones is not None else None for x, y in zip(cx, cy)]
    in_zone = np.array([[z == name for name in ZONE_ORDER] for z in zone], np.float32).reshape(-1, len(ZONE_ORDER))
    before = np.concatenate([np.repeat(box[:1], MOTION_FRAMES, 0), box])[: len(box)]
    iou = row_iou(box, before)
    return np.column_stack([rows[:, 1], rows[:, 2], rows[:, 3], cx, cy, np.log(w + 1e-3), np.log(h + 1e-3), in_zone,
                            rows[:, 9] == 1.0, rows[:, 9] == 2.0, iou, cx - (before[:, 0] + before[:, 2]) / 2,
                            cy - (before[:, 1] + before[:, 3]) / 2]).astype(np.float32)
