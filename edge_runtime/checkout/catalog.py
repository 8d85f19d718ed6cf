"""What the checkout world contains: activity classes, product classes and their drawings.

Products are drawn from polygons in a local frame (long side = 1, centred on 0, y down) so the same
template renders an item on the counter, in a hand, and alone as the object crop of a query.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# index = class id. The order is part of the data format: never reorder, only append.
ACTIVITIES: tuple[str, ...] = (
    "pick_up",    # basket -> counter
    "scan",       # counter -> over the scanner, waved until the scanner light flashes
    "bag",        # scanner (or counter) -> into the bag, item disappears
    "put_back",   # counter -> back into the basket
    "hold",       # lifted and kept in the hand over the counter, then set down
    "inspect",    # brought toward the camera (grows) and turned, then set down
    "hand_over",  # passed to a second person reaching in at the top edge, leaves the frame
    "browse",     # the hand hovers over an item in the basket without moving it
    "pass_around",  # counter -> over the scanner glass and set down, no flash (scan avoidance: shrink.py)
)
ACTIVITY_IDS: dict[str, int] = {a: i for i, a in enumerate(ACTIVITIES)}
# the activities of every video without shrink: the shipped model, lvm-train and the accuracy
# benchmark use these (an 8-activity model cannot name pass_around)
BASE_ACTIVITIES: tuple[str, ...] = ACTIVITIES[:8]

Poly = np.ndarray  # (N, 2) float64 local coordinates


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0, arc=(0, 360)) -> Poly:
    pts = cv2.ellipse2Poly((0, 0), (1000, 1000), 0, arc[0], arc[1], 10).astype(np.float64) / 1000.0
    pts *= (rx, ry)
    if angle_deg:
        a = np.deg2rad(angle_deg)
        c, s = np.cos(a), np.sin(a)
        pts = pts @ np.array([[c, s], [-s, c]])
    return pts + (cx, cy)


def _rect(cx: float, cy: float, w: float, h: float) -> Poly:
    return np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2],
                     [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]], np.float64)


def _rounded_rect(cx: float, cy: float, w: float, h: float, r: float) -> Poly:
    pts = []
    for (ox, oy, a0) in ((w / 2 - r, -h / 2 + r, 270), (w / 2 - r, h / 2 - r, 0),
                         (-w / 2 + r, h / 2 - r, 90), (-w / 2 + r, -h / 2 + r, 180)):
        pts.append(_ellipse(cx + ox, cy + oy, r, r, arc=(a0, a0 + 90)))
    return np.concatenate(pts)


def _poly(*xy: tuple[float, float]) -> Poly:
    return np.asarray(xy, np.float64)


Part = tuple[str, Poly]  # (palette key or "#rrggbb", polygon)


@dataclass(frozen=True)
class ProductSpec:
    name: str
    size: float                                  # long side in scene units (frame width = 1)
    palette: dict[str, tuple[int, int, int]]     # RGB: body, accent, label, ...
    label_options: tuple[tuple[int, int, int], ...]  # per-instance label colour variants
    parts: tuple[Part, ...] = field(repr=False)


def _zigzag_bag() -> Poly:
    top = [(-0.38 + 0.76 * i / 8, -0.5 + (0.04 if i % 2 else 0.0)) for i in range(9)]
    bot = [(0.38 - 0.76 * i / 8, 0.5 - (0.04 if i % 2 else 0.0)) for i in range(9)]
    return _poly((-0.40, -0.44), *top, (0.40, -0.44), (0.42, 0.0), (0.40, 0.44), *bot, (-0.40, 0.44), (-0.42, 0.0))


def _banana() -> Poly:
    outer = _ellipse(-0.25, 0.0, 0.75, 0.52, arc=(-70, 70))
    inner = _ellipse(-0.38, 0.0, 0.55, 0.36, arc=(-62, 62))[::-1]
    return np.concatenate([outer, inner])


def _products() -> tuple[ProductSpec, ...]:
    P = []
    P.append(ProductSpec("cereal_box", 0.25, {"body": (205, 40, 38), "accent": (250, 205, 40)},
                         ((255, 255, 255), (60, 160, 230), (90, 200, 80)), (
        ("body", _rect(0, 0, 0.72, 1.0)),
        ("accent", _poly((-0.36, 0.05), (0.36, -0.25), (0.36, -0.05), (-0.36, 0.25))),
        ("label", _ellipse(0.0, -0.28, 0.17, 0.15)),
        ("#3c1e14", _rect(0, 0.36, 0.5, 0.06)))))
    P.append(ProductSpec("milk_carton", 0.22, {"body": (245, 245, 240), "accent": (40, 90, 200)},
                         ((40, 90, 200), (220, 40, 60), (40, 160, 80)), (
        ("body", _rect(0, 0, 0.58, 1.0)),
        ("accent", _rect(0, -0.36, 0.58, 0.28)),
        ("#dcdcdc", _rect(0, -0.36, 0.58, 0.05)),
        ("label", _rect(0, 0.16, 0.58, 0.16)))))
    P.append(ProductSpec("soda_can", 0.2, {"body": (30, 95, 215), "accent": (200, 205, 210)},
                         ((235, 40, 40), (255, 255, 255), (250, 200, 30)), (
        ("body", _ellipse(0, 0, 0.5, 0.5)),
        ("accent", _ellipse(0, 0, 0.36, 0.36)),
        ("label", _ellipse(0, 0, 0.36, 0.36, arc=(150, 210))),
        ("#6e737a", _ellipse(0.0, -0.14, 0.12, 0.07)))))
    P.append(ProductSpec("water_bottle", 0.23, {"body": (165, 220, 240), "accent": (35, 110, 220)},
                         ((35, 110, 220), (20, 170, 150), (120, 60, 200)), (
        ("body", np.concatenate([_rounded_rect(0, 0.12, 0.42, 0.76, 0.12),
                                 _poly((0.1, -0.27), (0.07, -0.42), (-0.07, -0.42), (-0.1, -0.27))])),
        ("label", _rect(0, 0.12, 0.42, 0.2)),
        ("accent", _rect(0, -0.45, 0.16, 0.1)))))
    P.append(ProductSpec("wine_bottle", 0.26, {"body": (25, 85, 45), "accent": (120, 20, 40)},
                         ((240, 230, 200), (250, 250, 250), (215, 190, 120)), (
        ("body", np.concatenate([_rounded_rect(0, 0.2, 0.36, 0.6, 0.1),
                                 _poly((0.18, -0.1), (0.07, -0.22), (0.07, -0.5), (-0.07, -0.5),
                                       (-0.07, -0.22), (-0.18, -0.1))])),
        ("label", _rect(0, 0.22, 0.36, 0.22)),
        ("accent", _rect(0, -0.43, 0.14, 0.14)))))
    P.append(ProductSpec("chips_bag", 0.24, {"body": (250, 150, 20), "accent": (215, 30, 30)},
                         ((40, 150, 40), (40, 60, 200), (120, 40, 20)), (
        ("body", _zigzag_bag()),
        ("accent", _ellipse(0, -0.02, 0.24, 0.2)),
        ("label", _rect(0, 0.3, 0.8, 0.12)))))
    P.append(ProductSpec("banana", 0.23, {"body": (245, 215, 45), "accent": (95, 70, 30)},
                         ((95, 70, 30), (120, 150, 40)), (
        ("body", _banana()),
        ("label", _ellipse(0.0, -0.46, 0.05, 0.05)),
        ("accent", _ellipse(0.0, 0.46, 0.04, 0.04)))))
    P.append(ProductSpec("apple", 0.2, {"body": (200, 20, 35), "accent": (80, 160, 40)},
                         ((255, 120, 120), (240, 90, 60)), (
        ("body", _ellipse(0, 0.04, 0.46, 0.44)),
        ("label", _ellipse(-0.15, -0.08, 0.1, 0.07)),
        ("#503214", _rect(0.0, -0.38, 0.06, 0.16)),
        ("accent", _ellipse(0.14, -0.38, 0.14, 0.06, angle_deg=-25)))))
    P.append(ProductSpec("bread", 0.24, {"body": (205, 150, 85), "accent": (150, 95, 45)},
                         ((230, 190, 130), (250, 235, 200)), (
        ("body", _rounded_rect(0, 0, 0.55, 1.0, 0.22)),
        ("accent", _ellipse(0, -0.22, 0.2, 0.04, angle_deg=-25)),
        ("accent", _ellipse(0, 0.0, 0.2, 0.04, angle_deg=-25)),
        ("accent", _ellipse(0, 0.22, 0.2, 0.04, angle_deg=-25)),
        ("label", _rect(0, 0.44, 0.4, 0.05)))))
    bumps = [("accent", _ellipse(x, y, 0.1, 0.1)) for x in (-0.15, 0.15) for y in (-0.33, -0.11, 0.11, 0.33)]
    P.append(ProductSpec("egg_carton", 0.22, {"body": (205, 195, 175), "accent": (170, 160, 140)},
                         ((90, 140, 60), (200, 90, 40)), (
        ("body", _rect(0, 0, 0.6, 1.0)), *bumps,
        ("label", _rect(0, -0.48, 0.6, 0.06)))))
    P.append(ProductSpec("detergent", 0.22, {"body": (245, 125, 25), "accent": (250, 250, 250)},
                         ((30, 70, 190), (40, 170, 60), (200, 30, 120)), (
        ("body", _rounded_rect(0, 0, 0.72, 1.0, 0.12)),
        ("#b45a0a", _ellipse(0.16, -0.28, 0.14, 0.12)),
        ("accent", _ellipse(-0.2, -0.36, 0.11, 0.11)),
        ("label", _rect(0, 0.18, 0.56, 0.36)))))
    P.append(ProductSpec("chocolate_bar", 0.23, {"body": (105, 35, 135), "accent": (205, 205, 215)},
                         ((250, 250, 250), (240, 200, 60)), (
        ("body", _rect(0, 0, 0.5, 1.0)),
        ("accent", _rect(0, -0.44, 0.5, 0.12)),
        ("accent", _rect(0, 0.44, 0.5, 0.12)),
        ("label", _rect(0, 0.02, 0.36, 0.1)))))
    P.append(ProductSpec("cheese", 0.21, {"body": (252, 225, 120), "accent": (215, 165, 40)},
                         ((200, 40, 40), (215, 165, 40)), (
        ("body", _poly((-0.45, 0.38), (0.45, 0.38), (0.0, -0.5))),
        ("label", _poly((-0.45, 0.38), (0.45, 0.38), (0.41, 0.3), (-0.41, 0.3))),
        ("accent", _ellipse(-0.1, 0.12, 0.08, 0.08)),
        ("accent", _ellipse(0.13, 0.2, 0.06, 0.06)),
        ("accent", _ellipse(0.02, -0.14, 0.06, 0.06)))))
    florets = [("body", _ellipse(x, y, r, r)) for x, y, r in
               ((-0.22, -0.22, 0.2), (0.2, -0.24, 0.2), (0.0, -0.33, 0.18), (-0.08, -0.06, 0.2), (0.16, -0.05, 0.17))]
    P.append(ProductSpec("broccoli", 0.21, {"body": (40, 120, 45), "accent": (150, 200, 100)},
                         ((25, 90, 35), (70, 150, 60)), (
        ("accent", _poly((-0.1, 0.0), (0.1, 0.0), (0.12, 0.5), (-0.12, 0.5))),
        *florets,
        ("label", _ellipse(0.03, -0.2, 0.07, 0.07)))))
    return tuple(P)


PRODUCT_SPECS: tuple[ProductSpec, ...] = _products()
PRODUCTS: tuple[str, ...] = tuple(p.name for p in PRODUCT_SPECS)
PRODUCT_IDS: dict[str, int] = {p: i for i, p in enumerate(PRODUCTS)}


def _hex(c: str) -> tuple[int, int, int]:
    return (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16))


def instance_parts(class_id: int, label_variant: int, tint: tuple[float, float, float]) -> list[tuple[tuple[int, int, int], Poly]]:
    """The polygons of one product instance with its own colours (class palette, its label variant,
    a small per-instance tint)."""
    spec = PRODUCT_SPECS[class_id]
    label = spec.label_options[label_variant % len(spec.label_options)]
    out = []
    for key, poly in spec.parts:
        if key.startswith("#"):
            col = _hex(key)
        elif key == "label":
            col = label
        else:
            col = spec.palette[key]
        col = tuple(int(np.clip(c * k, 0, 255)) for c, k in zip(col, tint))
        out.append((col, poly))
    return out
