"""Counter layout (scene coordinates) and the looks: counter material, lighting, camera placement.

Scene coordinates: the counter seen from above, x right and y down, the frame is [0, 1]^2 before the
look's camera transform. The shopper stands at the bottom edge; across the counter (top band) is the
store floor where other people walk by.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# zones, (x1, y1, x2, y2) in scene units
FLOOR_Y = 0.24                                  # counter back edge; above it: store floor
BASKET = (0.03, 0.40, 0.37, 0.95)               # where the customer's basket stands
SCANNER = (0.41, 0.33, 0.63, 0.58)              # scanner glass
STAGING = (0.39, 0.63, 0.65, 0.96)              # free counter space in front of the scanner
BAG = (0.67, 0.35, 0.97, 0.86)                  # bag holder with the bag
SCREEN = (0.05, 0.265, 0.33, 0.355)             # kiosk screen lying at the back of the counter
ZONES = {"basket": BASKET, "scanner": SCANNER, "counter": STAGING, "bag": BAG}
LIGHT_POINT = (SCANNER[2] + 0.005, SCANNER[1] - 0.005)   # the scanner's light (an LED at the glass's corner)
SCANNER_LIGHT = (LIGHT_POINT[0] - 0.012, LIGHT_POINT[1] - 0.012, LIGHT_POINT[0] + 0.012, LIGHT_POINT[1] + 0.012)

SCANNER_POINT = (0.52, 0.455)
BAG_POINT = (0.82, 0.56)
BASKET_SLOTS = tuple((x, y) for y in (0.52, 0.64, 0.76, 0.87) for x in (0.12, 0.28))
COUNTER_SLOTS = ((0.46, 0.75), (0.58, 0.81), (0.49, 0.88))


def zone_of(x: float, y: float) -> str:
    """Name of the zone that contains a scene point ('floor' above the counter, 'counter' elsewhere)."""
    if y < FLOOR_Y:
        return "floor"
    for name in ("basket", "scanner", "bag"):
        x1, y1, x2, y2 = ZONES[name]
        if x1 <= x <= x2 and y1 <= y <= y2:
            return name
    return "counter"


@dataclass(frozen=True)
class Look:
    name: str
    counter: tuple[int, int, int]       # base RGB
    texture: str                        # wood | granite | slate | laminate | speckle | steel
    floor: tuple[int, int, int]
    bag: tuple[int, int, int]
    light: tuple[float, float, float]   # per-channel gain (colour temperature)
    brightness: float
    rot_deg: float                      # camera roll
    zoom: float
    shift: tuple[float, float]
    keystone: float                     # top edge narrower by this fraction (camera tilt)
    noise: float                        # sensor noise sigma in 8-bit units


LOOKS: tuple[Look, ...] = (
    Look("oak", (196, 160, 112), "wood", (120, 120, 128), (246, 246, 242), (1.05, 1.0, 0.92), 1.0,
         0.0, 1.0, (0.0, 0.0), 0.06, 3.0),
    Look("granite", (150, 150, 152), "granite", (96, 90, 84), (246, 246, 242), (1.0, 1.0, 1.0), 0.97,
         2.5, 1.03, (0.01, -0.01), 0.10, 3.5),
    Look("slate", (82, 92, 108), "slate", (140, 130, 110), (190, 150, 105), (0.95, 1.0, 1.07), 1.05,
         -2.0, 1.05, (-0.015, 0.01), 0.04, 4.0),
    Look("laminate", (222, 222, 214), "laminate", (80, 95, 90), (246, 246, 242), (1.0, 1.0, 0.97), 0.95,
         1.0, 0.98, (0.0, 0.015), 0.14, 3.0),
    # held out for evaluation: colours, textures and camera placements the training looks do not have
    Look("teal", (70, 140, 135), "speckle", (150, 110, 90), (185, 140, 95), (1.07, 0.98, 0.9), 0.88,
         -4.0, 1.07, (0.02, 0.0), 0.09, 4.5),
    Look("steel", (176, 180, 186), "steel", (60, 60, 70), (246, 246, 242), (0.94, 1.0, 1.08), 1.08,
         4.5, 1.0, (-0.02, -0.015), 0.12, 3.5),
)
TRAIN_LOOKS: tuple[int, ...] = (0, 1, 2, 3)
EVAL_LOOKS: tuple[int, ...] = (4, 5)
# held-out video seeds start here (training uses seed * 1000 + i with seed < 1000 by convention)
EVAL_SEED_BASE = 1_000_000
LOOK_NAMES: dict[str, int] = {lk.name: i for i, lk in enumerate(LOOKS)}


def training_video(seed: int, i: int) -> tuple[int, int]:
    """Video ``i`` of a training run with ``seed``: (its generator seed, its look). Every stage, tool
    and reference that needs "the videos lvm-train --seed S trained on" asks here."""
    return seed * 1000 + i, TRAIN_LOOKS[i % len(TRAIN_LOOKS)]


def heldout_video(seed: int, i: int) -> tuple[int, int]:
    """Video ``i`` of an evaluation with ``seed`` (lvm-eval, the accuracy gate): (its generator seed,
    its look); even i in the looks training never saw, odd i in training looks."""
    look = EVAL_LOOKS[i // 2 % len(EVAL_LOOKS)] if i % 2 == 0 else TRAIN_LOOKS[i // 2 % len(TRAIN_LOOKS)]
    return EVAL_SEED_BASE + seed * 1000 + i, look


def resolve_look(look, seed: int) -> int:
    """None -> a training look derived from the seed; int, digit string or look name -> index."""
    if look is None:
        return TRAIN_LOOKS[seed % len(TRAIN_LOOKS)]
    if isinstance(look, str):
        s = look.strip().lower()
        if s in LOOK_NAMES:
            return LOOK_NAMES[s]
        if not s.lstrip("-").isdigit():
            raise ValueError(f"unknown look {look!r}; known: {', '.join(LOOK_NAMES)} or 0..{len(LOOKS) - 1}")
        look = int(s)
    look = int(look)
    if not 0 <= look < len(LOOKS):
        raise ValueError(f"look must be in 0..{len(LOOKS) - 1}, got {look}")
    return look


def camera_matrix(look: Look) -> np.ndarray:
    """3x3 homography: scene coordinates -> normalised image coordinates."""
    k = look.keystone
    src = np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])
    dst = np.float32([[k / 2, 0], [1 - k / 2, 0], [1, 1], [0, 1]])
    K = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    # the keystone shrinks the top: zoom back so the scene still fills the frame
    a = np.deg2rad(look.rot_deg)
    c, s = np.cos(a) * look.zoom, np.sin(a) * look.zoom
    T1 = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], np.float64)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
    T2 = np.array([[1, 0, 0.5 + look.shift[0]], [0, 1, 0.5 + look.shift[1]], [0, 0, 1]], np.float64)
    return T2 @ R @ T1 @ K


def apply_h(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) scene points -> (N, 2) normalised image points."""
    p = pts @ H[:2, :2].T + H[:2, 2]
    w = pts @ H[2, :2] + H[2, 2]
    return p / w[:, None]
