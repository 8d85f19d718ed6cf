"""The event stage's frame augmentation: each training frame is changed once, before the frozen
backbone, so that the head meets counters, lights and camera placements the four training looks do
not have (the held-out looks differ in exactly these).

- the counter: its visible surface (the counter mask less what covers it and less the scanner) is
  recoloured to a random colour, reds and greens included, so that a green or red counter is never
  read as the scanner's flash (the flash is drawn on the scanner glass, which keeps its pixels);
- the camera: a small roll, zoom and shift of the whole frame; the labels move with it (``affine``
  maps normalised image points, and the caller pushes boxes and zone cells through it);
- the light and the sensor: per-channel gains, brightness, contrast, noise and a slight blur.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.checkout import CheckoutVideo
from edge_runtime.checkout.scene import SCANNER, apply_h

RECOLOUR_P = 0.7
ROLL_DEG = 6.0
ZOOM = (0.94, 1.1)
SHIFT = 0.03
GAIN = 0.12          # per channel, +-
BRIGHTNESS = (0.8, 1.2)
CONTRAST = (0.8, 1.2)
NOISE = 5.0          # sensor noise sigma in 8-bit units, up to
BLUR_P = 0.3
COVER_DIFF = 30.0    # a counter pixel this far (summed over channels) from the empty counter is covered


@dataclass(frozen=True)
class Augmented:
    image: np.ndarray   # (S, S, 3) uint8
    affine: np.ndarray  # 3x3: normalised image points of the rendered frame -> of ``image``


def scanner_mask(video: CheckoutVideo) -> np.ndarray:
    """(S, S) bool: the scanner glass and its LED in the rendered frame, kept as drawn."""
    S = video.size
    x1, y1, x2, y2 = SCANNER
    pad = 0.03
    quad = apply_h(video.renderer.H, np.array([[x1 - pad, y1 - pad], [x2 + pad, y1 - pad],
                                               [x2 + pad, y2 + pad], [x1 - pad, y2 + pad]], np.float64))
    mask = np.zeros((S, S), np.uint8)
    cv2.fillPoly(mask, [np.round(quad * S).astype(np.int32)], 1)
    return mask.astype(bool)


def recolour_counter(img: np.ndarray, video: CheckoutVideo, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame with the uncovered counter surface scaled per channel to a random base colour."""
    r = video.renderer
    bg = r.bg.astype(np.float32)
    counter = r.counter_mask[..., 0] & ~keep
    f = img.astype(np.float32)
    # the frame's light over the empty counter: per-channel median ratio of frame to background
    ratio = np.median(f[counter] / np.maximum(bg[counter], 1.0), axis=0)
    bare = counter & (np.abs(f - bg * ratio).sum(-1) < COVER_DIFF)
    target = rng.uniform(25, 235, 3).astype(np.float32)
    scale = np.clip(target / np.maximum(np.array(r.look.counter, np.float32), 1.0), 0.2, 4.0)
    f[bare] *= scale
    return np.clip(f, 0, 255)


def camera_affine(rng: np.random.Generator) -> np.ndarray:
    """3x3 normalised-coordinate affine: a roll and zoom about the centre, then a shift."""
    a = np.deg2rad(rng.uniform(-ROLL_DEG, ROLL_DEG))
    z = rng.uniform(*ZOOM)
    c, s = np.cos(a) * z, np.sin(a) * z
    dx, dy = rng.uniform(-SHIFT, SHIFT, 2)
    return np.array([[c, -s, 0.5 - 0.5 * c + 0.5 * s + dx], [s, c, 0.5 - 0.5 * s - 0.5 * c + dy], [0, 0, 1]])


def augment(img: np.ndarray, video: CheckoutVideo, keep: np.ndarray, rng: np.random.Generator) -> Augmented:
    """One rendered frame of ``video`` -> its augmented frame and the affine its labels move by."""
    S = img.shape[0]
    f = recolour_counter(img, video, keep, rng) if rng.random() < RECOLOUR_P else img.astype(np.float32)
    A = camera_affine(rng)
    px = np.diag([S, S, 1.0]) @ A @ np.diag([1.0 / S, 1.0 / S, 1.0])
    f = cv2.warpAffine(f, px[:2], (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gains = rng.uniform(1 - GAIN, 1 + GAIN, 3) * rng.uniform(*BRIGHTNESS)
    mean = f.mean()
    f = (f - mean) * rng.uniform(*CONTRAST) + mean
    f = f * gains.astype(np.float32)
    if rng.random() < BLUR_P:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.3, 0.9))
    f = f + rng.normal(0, rng.uniform(0, NOISE), f.shape).astype(np.float32)
    return Augmented(np.clip(np.round(f), 0, 255).astype(np.uint8), A)


def move_box(box: np.ndarray, A: np.ndarray) -> np.ndarray | None:
    """An x1y1x2y2 box through ``A``: the bounds of its moved corners, clipped to the frame; None when
    less than half of it stays in view."""
    x1, y1, x2, y2 = box
    pts = apply_h(A, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64))
    lo, hi = pts.min(0), pts.max(0)
    clo, chi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
    full = np.prod(hi - lo)
    if full <= 0 or np.prod(np.clip(chi - clo, 0, None)) < 0.5 * full:
        return None
    return np.concatenate([clo, chi]).astype(np.float32)
