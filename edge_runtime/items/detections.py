"""One frame's item detections: what the detection head (or, for tests and evaluation, the checkout
generator's ground truth) says is in the frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .zones import ZONE_NAMES

LIGHTS: tuple[str, ...] = ("off", "green", "red")   # columns of ``light_p``
ZONE_CLASSES: tuple[str, ...] = ("none",) + ZONE_NAMES  # columns of ``zone_p``
MIN_SIDE = 1e-3  # a jittered box keeps at least this width and height (trackers refuse empty boxes)


@dataclass(frozen=True)
class Detections:
    """Item detections of the frame at stream time ``t``.

    boxes (n, 4) float32 x1, y1, x2, y2 in [0, 1] image coordinates; scores (n,) float32; classes (n,)
    int64 product ids; held (n,) float32 p(in a hand); light the scanner light ('green' / 'red' /
    None) and light_p (3,) float32 its p(off / green / red); zone_p (P, 5) float32 per grid cell
    p(none / basket / scanner / counter / bag), or None (for zone proposals, ``zones.propose``);
    instance_ids (n,) int64: the generator's instance of each detection, oracle detections only
    (evaluation reads it, tracking never does), else None; embed (n, E) float32 unit rows: each
    detection's identity in the memory reader's space (a bundle whose event head carries it), else None.
    """

    t: float
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    held: np.ndarray
    light: str | None = None
    light_p: np.ndarray = None  # type: ignore[assignment]  # set in __post_init__ from ``light``
    zone_p: np.ndarray | None = None
    instance_ids: np.ndarray | None = None
    embed: np.ndarray | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: arrays are normalised once, here
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(boxes)
        put(self, "t", float(self.t))
        put(self, "boxes", boxes)
        for name, dtype in (("scores", np.float32), ("classes", np.int64), ("held", np.float32)):
            a = np.asarray(getattr(self, name), dtype).reshape(-1)
            if len(a) != n:
                raise ValueError(f"detections at t={self.t:g}: {name} has {len(a)} values for {n} boxes")
            put(self, name, a)
        if self.light not in (None, "green", "red"):
            raise ValueError(f"detections at t={self.t:g}: light must be None, 'green' or 'red', got {self.light!r}")
        if self.light_p is None:
            put(self, "light_p", np.eye(3, dtype=np.float32)[LIGHTS.index(self.light or "off")])
        else:
            lp = np.asarray(self.light_p, np.float32).reshape(-1)
            if lp.shape != (3,):
                raise ValueError(f"detections at t={self.t:g}: light_p must have 3 values (off, green, red)")
            put(self, "light_p", lp)
        if self.zone_p is not None:
            zp = np.asarray(self.zone_p, np.float32)
            if zp.ndim != 2 or zp.shape[1] != len(ZONE_CLASSES):
                raise ValueError(f"detections at t={self.t:g}: zone_p must be (cells, {len(ZONE_CLASSES)}), "
                                 f"got {zp.shape}")
            put(self, "zone_p", zp)
        if self.instance_ids is not None:
            ids = np.asarray(self.instance_ids, np.int64).reshape(-1)
            if len(ids) != n:
                raise ValueError(f"detections at t={self.t:g}: instance_ids has {len(ids)} values for {n} boxes")
            put(self, "instance_ids", ids)
        if self.embed is not None:
            em = np.asarray(self.embed, np.float32)
            if em.ndim != 2 or len(em) != n:
                raise ValueError(f"detections at t={self.t:g}: embed must be (boxes, width), got {em.shape} for {n} boxes")
            put(self, "embed", em)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def centers(self) -> np.ndarray:
        """(n, 2) box centres."""
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2


def from_frame_labels(labels: dict, *, jitter: float = 0.0, miss: float = 0.0,
                      rng: np.random.Generator | None = None) -> Detections:
    """Oracle detections from ``CheckoutVideo.frame_labels(t)``: every visible item with score 1.

    ``jitter`` moves each box edge by a normal draw of sd ``jitter`` x the box's width (x) or height
    (y); ``miss`` drops each detection with that probability (a detector's misses). Both draw from
    ``rng`` (default: a generator seeded by the frame time, so the same frame gets the same noise).
    """
    if not 0.0 <= miss <= 1.0 or jitter < 0.0:
        raise ValueError(f"miss must be in 0..1 and jitter >= 0, got miss={miss}, jitter={jitter}")
    t = float(labels["t"])
    insts = labels["instances"]
    boxes = np.array([i["box"] for i in insts], np.float32).reshape(-1, 4)
    classes = np.array([i["class_id"] for i in insts], np.int64)
    held = np.array([float(i["held"]) for i in insts], np.float32)
    ids = np.array([i["instance_id"] for i in insts], np.int64)
    if (jitter > 0 or miss > 0) and len(boxes):
        rng = rng if rng is not None else np.random.default_rng(int(round(t * 1000)))
        if jitter > 0:
            wh = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
            boxes = boxes + rng.normal(0.0, jitter, boxes.shape).astype(np.float32) * wh
            lo, hi = np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])
            lo = np.clip(lo, 0.0, 1.0 - MIN_SIDE)
            boxes = np.concatenate([lo, np.clip(hi, lo + MIN_SIDE, 1.0)], 1)
        keep = rng.random(len(boxes)) >= miss
        boxes, classes, held, ids = boxes[keep], classes[keep], held[keep], ids[keep]
    return Detections(t, boxes, np.ones(len(boxes), np.float32), classes, held, labels.get("scanner_flash"),
                      instance_ids=ids)
