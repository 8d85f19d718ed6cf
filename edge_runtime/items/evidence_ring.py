"""A stream's recent crops of its item tracks, as small JPEGs, for an alert's evidence: a ring bounded
in bytes, never video.

As each frame's tracks are updated, every track detected in it gets a crop of its box (with a
margin), at most one per ``every_s`` per track; with ``mode="frame"`` the whole frame instead, one per
``every_s``, listing the tracks seen in it. Crops are encoded when taken (OpenCV's JPEG, which the
runtime already carries) and dropped oldest first once the ring holds more than ``max_bytes``: a lane
keeps the last minutes of crops, whatever runs through it. An alert raised later picks from the ring
the crops of its item before, at and after its event (``pick``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping

import numpy as np

MODES = ("item", "frame", "off")
DEFAULT_MAX_BYTES = 2_000_000   # about 1,000 item crops: several minutes of a busy lane at every_s
EVERY_S = 0.4                   # at most one crop per track (or frame) this often: 2.5 a second at 5 fps
MARGIN = 0.25                   # an item crop takes this share of the box's size around it on each side
ITEM_SIDE = 160                 # an item crop's longer side at most (px); smaller ones are kept as they are
FRAME_SIDE = 480                # a frame's longer side at most (px)
QUALITY = 80                    # JPEG quality: an item crop is 2-6 KB


@dataclass(frozen=True)
class Crop:
    """One JPEG of the ring: taken at stream time ``t``, of the tracks ``tracks`` (one for an item crop)."""

    t: float
    tracks: tuple[int, ...]
    jpeg: bytes


def encode_jpeg(rgb: np.ndarray, max_side: int, quality: int = QUALITY) -> bytes:
    """An RGB image as JPEG bytes, shrunk so its longer side is at most ``max_side``."""
    import cv2

    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def crop_box(rgb: np.ndarray, box, margin: float = MARGIN) -> np.ndarray:
    """The part of ``rgb`` under ``box`` (x1, y1, x2, y2 in [0, 1]) widened by ``margin`` of its size."""
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    a, b = int(np.floor(max(0.0, x1 - mx) * w)), int(np.ceil(min(1.0, x2 + mx) * w))
    c, d = int(np.floor(max(0.0, y1 - my) * h)), int(np.ceil(min(1.0, y2 + my) * h))
    return rgb[c : max(d, c + 1), a : max(b, a + 1)]


class EvidenceRing:
    """``add(frame, t, boxes)`` per frame, in time order; ``pick(track, start, end)`` for an alert."""

    def __init__(self, mode: str = "item", max_bytes: int = DEFAULT_MAX_BYTES, every_s: float = EVERY_S) -> None:
        if mode not in ("item", "frame"):
            raise ValueError(f"evidence mode {mode!r}: expected item or frame (off keeps no ring)")
        if max_bytes < 1:
            raise ValueError("an evidence ring needs max_bytes >= 1")
        self.mode, self.max_bytes, self.every_s = mode, int(max_bytes), float(every_s)
        self.crops: deque[Crop] = deque()
        self.nbytes = 0
        self.taken = 0                      # crops encoded since the start (dropped ones included)
        self._last: dict[int, float] = {}   # track (-1: the frame) -> when its last crop was taken

    def clear(self) -> None:
        self.crops.clear()
        self.nbytes = 0
        self._last.clear()

    def add(self, rgb: np.ndarray, t: float, boxes: Mapping[int, np.ndarray]) -> int:
        """The crops of frame ``rgb`` at stream time ``t``, whose tracks detected in it are ``boxes``
        (track id -> box); -> how many were taken."""
        if not boxes:
            return 0
        if self.mode == "frame":
            if t - self._last.get(-1, -np.inf) < self.every_s - 1e-6:  # frame times are float sums
                return 0
            self._last[-1] = t
            self._keep(Crop(t, tuple(sorted(int(k) for k in boxes)), encode_jpeg(rgb, FRAME_SIDE)))
            return 1
        n = 0
        for track, box in boxes.items():
            if t - self._last.get(int(track), -np.inf) < self.every_s - 1e-6:
                continue
            self._last[int(track)] = t
            self._keep(Crop(t, (int(track),), encode_jpeg(crop_box(rgb, box), ITEM_SIDE)))
            n += 1
        if len(self._last) > 4 * 64:  # tracks long gone: forget when their last crop was taken
            horizon = t - 10 * self.every_s
            self._last = {k: v for k, v in self._last.items() if v >= horizon}
        return n

    def _keep(self, crop: Crop) -> None:
        self.crops.append(crop)
        self.nbytes += len(crop.jpeg)
        self.taken += 1
        while self.nbytes > self.max_bytes and self.crops:  # the bound holds after every crop
            self.nbytes -= len(self.crops.popleft().jpeg)

    def pick(self, track: int, start: float, end: float, lead_s: float = 1.0) -> list[tuple[str, Crop]]:
        """Up to three crops of ``track``, in time order: those nearest ``lead_s`` before ``start``, the
        event's middle and ``lead_s`` after ``end``, each taken once; each labelled by when it was
        taken: ``before`` the event, ``at`` it or ``after`` it. Fewer when the ring holds fewer."""
        mine = [c for c in self.crops if int(track) in c.tracks]
        chosen: set[int] = set()
        for want in (start - lead_s, (start + end) / 2, end + lead_s):
            free = [i for i in range(len(mine)) if i not in chosen]
            if free:
                chosen.add(min(free, key=lambda k: abs(mine[k].t - want)))
        label = lambda t: "before" if t < start else "after" if t > end else "at"  # noqa: E731
        return [(label(mine[i].t), mine[i]) for i in sorted(chosen, key=lambda i: mine[i].t)]

    def status(self) -> dict:
        return {"mode": self.mode, "crops": len(self.crops), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                "taken": self.taken, "oldest": self.crops[0].t if self.crops else None}
