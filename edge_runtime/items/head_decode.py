"""The event head's outputs (a bundle's ``event_head`` graph) -> one ``Detections`` per frame.

A detection is a grid cell whose ``det_score`` is at least the threshold (the manifest's
``events.threshold``) and whose box overlaps no higher-scoring detection's box by more than ``nms_iou``
(greedy non-maximum suppression on the decoded boxes). An item's neighbouring cells see the same item
and give nearly the same box, so they are suppressed; two items side by side (an item lifted past the
basket, items packed in the basket) give different boxes and both stay. Keeping only the cells whose
score is the largest of their 3x3 neighbourhood kept one item in every 3x3 cells: on 2,147 held-out
frames a head found 48 % of the items that way (held ones: 77 %) and 61 % (84 %) by box suppression.
"""
from __future__ import annotations

import numpy as np

from .detections import LIGHTS, ZONE_CLASSES, Detections

OUTPUTS = ("det_score", "det_box", "det_class", "det_held", "light", "zone")
EMBED = "det_embed"  # optional (N, P, E): the reader's identity of each cell (edge_runtime/backends/bundle.py)
NMS_IOU = 0.2


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4), (m, 4) x1, y1, x2, y2 -> (n, m) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def suppress(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Boxes ordered by score, highest first -> the indices greedy non-maximum suppression keeps."""
    if len(boxes) < 2:
        return np.arange(len(boxes))
    over = box_iou(boxes, boxes) > iou
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if alive[i]:
            alive[i + 1:] &= ~over[i, i + 1:]
    return np.flatnonzero(alive)


def name_by_identity(class_p: np.ndarray, embed: np.ndarray, prototypes: np.ndarray, weight: float) -> np.ndarray:
    """Each cell's product: argmax over classes of log p(class) + ``weight`` x the cosine of the cell's
    identity with the class's best picture. class_p (..., K), embed (..., E), prototypes (K, Q, E) unit
    rows (Q pictures a class) -> (...) class ids."""
    sims = np.einsum("...e,kqe->...kq", embed, prototypes).max(-1)
    return (np.log(np.clip(class_p, 1e-9, None)) + weight * sims).argmax(-1)


def decode(outputs: dict[str, np.ndarray], times: np.ndarray, threshold: float,
           nms_iou: float = NMS_IOU, prototypes: np.ndarray | None = None, weight: float = 0.0) -> list[Detections]:
    """``outputs``: the event head's six outputs for N frames (det_score (N, P), det_box (N, P, 4),
    det_class (N, P, K), det_held (N, P), light (N, 3), zone (N, P, 5); det_embed (N, P, E) when the
    head has it); ``times`` (N,) their stream times. -> N ``Detections``, detections ordered by score, highest first."""
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
    held = np.asarray(outputs["det_held"], np.float32).reshape(n, cells)
    embed = np.asarray(outputs[EMBED], np.float32).reshape(n, cells, -1) if EMBED in outputs else None
    class_p = np.asarray(outputs["det_class"], np.float32)
    if embed is not None and prototypes is not None and weight > 0:
        classes = name_by_identity(class_p.reshape(n, cells, -1), embed, prototypes, weight)
    else:
        classes = class_p.argmax(-1)
    keep = score >= threshold
    out = []
    for i in range(n):
        cells_i = np.flatnonzero(keep[i])
        cells_i = cells_i[np.argsort(-score[i, cells_i], kind="stable")]
        cells_i = cells_i[suppress(boxes[i, cells_i], nms_iou)]
        state = LIGHTS[int(light[i].argmax())]
        out.append(Detections(float(times[i]), boxes[i, cells_i], score[i, cells_i], classes[i, cells_i],
                              held[i, cells_i], None if state == "off" else state, light[i], zone[i],
                              embed=None if embed is None else embed[i, cells_i]))
    return out
