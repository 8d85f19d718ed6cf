"""The scanner light read from the pixels of the stream's ``light`` zone, beside the event head's read.

The event head reads the light from the backbone's 7x7 tokens: it sees nearly every flash come on, but
in looks it was not trained on it names some green flashes red, and each such misread is a scan the
labeler leaves unpaid. A scanner's light is a small, fixed patch of the picture whose colour jumps when
it flashes, so where the stream has a ``light`` zone (configured, edited on the dashboard, or proposed
here from the frames where the head reads a flash come on), the zone's pixels decide the colour:

- ``ZoneRead`` compares each of the zone's pixels with the zone as it was in the last frame read off:
  the zone is lit green (red) when a share of its pixels rose in green (red) alone, for at most
  ``MAX_LIT_S``; a change that is neither is something in front of the light ("hidden").
- ``fuse``: the head still decides that a flash came (the zone alone reads an arm or a green product in
  front of the light as lit); the zone names its colour, or says there was none when it sees the light
  plainly off; hidden, the head's read stands.
- ``LightProposal`` proposes the zone from the frames where the head reads a flash come on (sure of it,
  after seconds without one): the small spot lit in the flash's colour at most of them, standing out
  from the ring around it (the scanner's glass lights too, but items over it hide it and show their own
  colours), once ``PROPOSE_ONSETS`` flashes came and a spot stands out.
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace

import cv2
import numpy as np

LIT = 50.0            # 8-bit: a pixel's green (red) channel this much brighter than before the flash...
RATIO = 2.0           # ...and this many times the other channels' rise is lit that colour (an orange or a
                      # skin-coloured thing moving in rises in red and green together)
LIT_SHARE = 0.25      # the zone is lit a colour when this share of its pixels is lit so, twice the other
MAX_LIT_S = 1.0       # a flash lasts a fraction of a second: lit longer, it is something red or green in front
STILL = 30.0          # a pixel that changed less than this in every channel is as it was
STILL_SHARE = 0.9     # the zone reads off (no flash) only when this share of its pixels is as it was
PROPOSE_ONSETS = 10   # flashes the head reads come on before the zone is proposed (a few minutes of scans)
PROPOSE_SURE = 0.7    # the head's p(lit) at a flash's first frame for the proposal to count it
PROPOSE_QUIET = 3.0   # s of no flash the head reads before it
CHECK_ONSETS = 10     # a light zone is checked against the head's last sure flashes...
CHECK_OFF = 8         # ...and doubted when it saw the light plainly off at this many of them
PROPOSE_SIDE = 160    # frames are shrunk to this longest side while proposing (the sums stay small)
PROPOSE_SPOT = 0.2    # a spot: the ring around it lit at most this share as often as it is
PROPOSE_KEEP = 0.6    # the zone: pixels lit at this share of the best one's onsets, connected to it...
PROPOSE_REACH = 0.025  # ...within this share of the frame's longest side of it


def lit(before: np.ndarray, now: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel (float RGB arrays of one shape): lit green, lit red, and still (unchanged)."""
    d = now - before
    r, g, b = d[..., 0], d[..., 1], d[..., 2]
    green = (g > LIT) & (g > RATIO * r) & (g > RATIO * b)
    red = (r > LIT) & (r > RATIO * g) & (r > RATIO * b)
    return green, red, np.abs(d).max(-1) < STILL


class ZoneRead:
    """One stream's read of its light zone: ``read(frame)`` per frame in time order -> "off", "green",
    "red" or "hidden", each pixel against the zone as it was in the last frame read off (a flash lasts
    a frame or two; an item in front of the light moves little in that time, and is not lit)."""

    def __init__(self, polygon) -> None:
        self.polygon = np.asarray(polygon, np.float32).reshape(-1, 2)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._box = (0, 0, 0, 0)
        self.before: np.ndarray | None = None   # the zone's pixels in the last frame read off
        self.lit_since: float | None = None     # when the zone was first read lit, while it is

    def _pixels(self, frame: np.ndarray) -> np.ndarray:
        """The zone's pixels of ``frame`` (n, 3) float32 (its mask made once per frame size, over the
        polygon's bounding box: a full frame is never indexed)."""
        h, w = frame.shape[:2]
        if self._mask is None or self._shape != (h, w):
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(self.polygon * [w, h]).astype(np.int32)], 1)
            if not mask.any():  # a zone smaller than a pixel at this size: the pixel under its middle
                cx, cy = self.polygon.mean(0)
                mask[min(h - 1, int(cy * h)), min(w - 1, int(cx * w))] = 1
            ys, xs = np.nonzero(mask)
            self._box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
            self._mask = mask[self._box[0]:self._box[1], self._box[2]:self._box[3]].astype(bool)
            self._shape, self.before = (h, w), None
        y0, y1, x0, x1 = self._box
        return np.asarray(frame)[y0:y1, x0:x1][self._mask].reshape(-1, 3).astype(np.float32)

    def read(self, frame: np.ndarray, t: float) -> str:
        """The zone in ``frame`` (RGB) at stream time ``t``."""
        now = self._pixels(frame)
        if self.before is None:
            self.before = now
            return "hidden"
        green, red, still = lit(self.before, now)
        g, r = float(green.mean()), float(red.mean())
        colour = "green" if g >= LIT_SHARE and g > 2 * r else "red" if r >= LIT_SHARE and r > 2 * g else None
        if colour is not None:
            self.lit_since = t if self.lit_since is None else self.lit_since
            if t - self.lit_since <= MAX_LIT_S:
                return colour
        self.before, self.lit_since = now, None
        return "off" if float(still.mean()) >= STILL_SHARE else "hidden"


def fuse(head: str | None, zone: str) -> str | None:
    """The light as the item path reads it: the head's (None, "green", "red") and the zone's read."""
    if head is None or zone == "hidden":
        return head
    return None if zone == "off" else zone


class SureOnsets:
    """``onset(t, head_light, p_lit)`` per frame in time order -> whether the head reads a flash come on
    there and is sure of it (``PROPOSE_SURE``), after ``PROPOSE_QUIET`` s of none (a burst of reads is
    an item in front of the glass as often as flashes)."""

    def __init__(self) -> None:
        self.last_lit = -np.inf   # the last frame the head read a flash

    def onset(self, t: float, head_light: str | None, p_lit: float) -> bool:
        sure = head_light is not None and p_lit >= PROPOSE_SURE and t - self.last_lit >= PROPOSE_QUIET
        if head_light is not None:
            self.last_lit = t
        return sure


class LightProposal:
    """Where the scanner light is, from the frames: ``add(frame, t, head_light, p_lit)`` per frame in
    time order; ``zone()`` the proposed polygon (normalised image coordinates) once ``PROPOSE_ONSETS``
    flashes came on and a spot stands out, else None. Its sums are held in memory only (a restart
    before the zone is proposed proposes again; the zone itself is kept in the stream's snapshot)."""

    def __init__(self) -> None:
        self.prev: np.ndarray | None = None
        self.sure = SureOnsets()
        self.on_sum: np.ndarray | None = None    # per pixel, the frames a flash came on where it lit its colour
                                                 # (less twice those where it lit the other)
        self.onsets = 0
        self._judged = 0       # the onsets the last judgement saw (the zone is judged again at each new one)
        self.proposed: list[list[float]] | None = None

    def add(self, frame: np.ndarray, t: float, head_light: str | None, p_lit: float) -> None:
        """One frame, its stream time, the head's light and its p(lit): the flashes that count are the
        head's sure onsets (``SureOnsets``)."""
        h, w = frame.shape[:2]
        scale = min(1.0, PROPOSE_SIDE / max(h, w))
        small = frame if scale == 1.0 else cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        if self.prev is not None and self.prev.shape == small.shape:
            green, red, _ = lit(self.prev, small)
            if self.on_sum is None:
                self.on_sum = np.zeros(green.shape, np.float32)
            if self.sure.onset(t, head_light, p_lit):
                # the flash's colour is what most of the lit pixels show (the glass and the light together);
                # a pixel lit the other colour is something red or green in front of the light there
                right, wrong = (green, red) if green.sum() >= red.sum() else (red, green)
                self.on_sum += right
                self.on_sum -= 2.0 * wrong
                self.onsets += 1
        else:
            self.sure.onset(t, head_light, p_lit)
        self.prev = small

    def zone(self) -> list[list[float]] | None:
        if self.proposed is None and self.onsets >= PROPOSE_ONSETS and self.onsets != self._judged:
            self._judged = self.onsets
            self.proposed = self._judge()
        return self.proposed

    def _judge(self) -> list[list[float]] | None:
        # the light: a small spot lit in the flash's colour at most onsets, standing out from the ring
        # around it (the glass beside it lights too, but is hidden by the items over it more often)
        on = np.clip(self.on_sum / self.onsets, 0.0, 1.0)
        h, w = on.shape
        r = max(2, int(round(PROPOSE_REACH * max(h, w))))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        ring = (np.hypot(yy, xx) > r - 1) & (np.hypot(yy, xx) <= r + 0.5)
        around = cv2.filter2D(on, -1, (ring / ring.sum()).astype(np.float32), borderType=cv2.BORDER_REPLICATE)
        score = on - around
        y, x = np.unravel_index(int(score.argmax()), score.shape)
        if not around[y, x] <= PROPOSE_SPOT * on[y, x]:
            return None  # no spot stands out yet (the glass's edge beside items): more flashes will tell
        keep = (on >= PROPOSE_KEEP * on[y, x]).astype(np.uint8)
        window = np.zeros_like(keep)
        window[max(0, y - r + 1):y + r, max(0, x - r + 1):x + r] = 1
        _, comp = cv2.connectedComponents(keep * window, connectivity=8)
        ys, xs = np.nonzero(comp == comp[y, x])
        x1, x2 = xs.min() / w, (xs.max() + 1) / w
        y1, y2 = ys.min() / h, (ys.max() + 1) / h
        return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


class ScannerLight:
    """One stream's light from its frames: the zone's read fused with the head's where the stream has a
    light zone, else the proposal of one. ``origin``: "configured", "proposed" or None (proposing)."""

    def __init__(self, polygon=None, origin: str | None = None, note: str = "") -> None:
        self.polygon = None if polygon is None else [list(map(float, p)) for p in polygon]
        self.origin = origin if polygon is not None else None
        self.zone_read = ZoneRead(self.polygon) if self.polygon is not None else None
        self.proposal = LightProposal() if self.polygon is None else None
        self.sure = SureOnsets()
        self.checks: deque[bool] = deque(maxlen=CHECK_ONSETS)  # at the head's sure onsets: the zone saw it off
        self.note = note   # why the zone is doubted or was dropped, for the status

    def see(self, dets, frame: np.ndarray | None):
        """-> (the frame's detections with the light as the item path reads it, whether the light zone
        changed at this frame: proposed, or a proposed one dropped). Without the frame the head's read
        stands."""
        if frame is None:
            return dets, False
        p_lit = 1.0 - float(dets.light_p[0])
        if self.zone_read is None:
            self.proposal.add(frame, dets.t, dets.light, p_lit)
            if self.proposal.zone() is None:
                return dets, False
            self.__init__(self.proposal.zone(), "proposed")
            return dets, True
        zone = self.zone_read.read(frame, dets.t)
        if self.sure.onset(dets.t, dets.light, p_lit) and self._doubted(zone == "off"):
            return dets, True
        light = fuse(dets.light, zone)
        if light == dets.light:
            return dets, False
        return replace(dets, light=light, light_p=None), False

    def _doubted(self, saw_off: bool) -> bool:
        """A flash the head is sure of that the zone saw plainly off: most of the last ``CHECK_ONSETS``
        so, the zone is not on the light (the camera moved, or it was proposed or marked wrong). A proposed
        zone is dropped and proposed again (True); a configured one stays, and the status says so."""
        self.checks.append(saw_off)
        if len(self.checks) < CHECK_ONSETS or sum(self.checks) < CHECK_OFF:
            if self.origin == "configured":
                self.note = ""
            return False
        why = (f"the light zone saw the light off at {sum(self.checks)} of the last {CHECK_ONSETS} flashes "
               "the event head was sure of")
        if self.origin == "configured":
            self.note = f"; {why}: check where it is"
            return False
        self.__init__(note=f" ({why}: proposing it again)")
        return True

    def status(self) -> str:
        if self.origin is not None:
            return f"{self.origin}: its colour read from the light zone's pixels{self.note}"
        return (f"the event head's read; proposing the light zone from the frames "
                f"({self.proposal.onsets} of {PROPOSE_ONSETS} flashes){self.note}")
