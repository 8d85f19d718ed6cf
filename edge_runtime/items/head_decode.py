"""The event head's outputs (a bundle's ``event_head`` graph) -> one ``Detections`` per frame.

A detection is a grid cell whose ``det_score`` is the largest of its 3x3 neighbourhood and at least
the threshold (the manifest's ``events.threshold``): an item's box centre lies in one cell, and its
neighbours, which see the same item, score lower; the local maximum keeps one detection per item
without a box-overlap suppression.
"""
from __future__ import annotations

import numpy as np

from .detections import LIGHTS, ZONE_CLASSES, Detections

OUTPUTS = ("det_score", "det_box", "det_class", "det_held", "light", "zone")


def local_maxima(scores: np.ndarray, grid: int) -> np.ndarray:
    """(N, P) scores on a grid x grid layout -> (N, P) bool: the cell is the maximum of its 3x3 neighbourhood."""
    s = scores.reshape(len(scores), grid, grid)
    padded = np.pad(s, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    best = np.max([padded[:, 1 + dy:1 + dy + grid, 1 + dx:1 + dx + grid]
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return (s >= best).reshape(len(scores), -1)


def decode(outputs: dict[str, np.ndarray], times: np.ndarray, threshold: float) -> list[Detections]:
    """``outputs``: the event head's six outputs for N frames (det_score (N, P), det_box (N, P, 4),
    det_class (N, P, K), det_held (N, P), light (N, 3), zone (N, P, 5)); ``times`` (N,) their stream
    times. -> N ``Detections``, detections ordered by score, highest first."""
    missing = [n for n in OUTPUTS if n not in outputs]
    if missing:
        raise ValueError(f"event head outputs lack {', '.join(missing)}")
    score = np.asarray(outputs["det_score"], np.float32)
    times = np.asarray(times, np.float64).reshape(-1)
    if score.ndim != 2 or len(times) != len(score):
        raise ValueError(f"det_score must be (frames, cells) with one time a frame; got {score.shape} and "
                         f"{len(times)} times")
    n, cells = score.shape
    grid = round(cells ** 0.5)
    if grid * grid != cells:
        raise ValueError(f"det_score has {cells} cells a frame, not a square grid")
    light = np.asarray(outputs["light"], np.float32).reshape(n, len(LIGHTS))
    zone = np.asarray(outputs["zone"], np.float32).reshape(n, cells, len(ZONE_CLASSES))
    boxes = np.asarray(outputs["det_box"], np.float32).reshape(n, cells, 4)
    classes = np.asarray(outputs["det_class"]).argmax(-1)
    held = np.asarray(outputs["det_held"], np.float32).reshape(n, cells)
    keep = local_maxima(score, grid) & (score >= threshold)
    out = []
    for i in range(n):
        cells_i = np.flatnonzero(keep[i])
        cells_i = cells_i[np.argsort(-score[i, cells_i], kind="stable")]
        state = LIGHTS[int(light[i].argmax())]
        out.append(Detections(float(times[i]), boxes[i, cells_i], score[i, cells_i], classes[i, cells_i],
                              held[i, cells_i], None if state == "off" else state, light[i], zone[i]))
    return out
