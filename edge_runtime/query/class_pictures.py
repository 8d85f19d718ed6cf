"""Pictures of a bundle's product classes, for asking about a class when the catalog has no product.

The shipped bundle's classes are the checkout generator's (edge_runtime/checkout/catalog.py), so
each of them can be drawn as ``lvm-edge demo --save-crops`` draws a product instance: alone on grey,
long side ~78 % of the picture. One picture per label colour the generator gives the class (the
sides a catalog entry would hold). A class the generator does not draw (a bundle trained on other
footage) has no picture: its products must be registered in the catalog to be asked about.
numpy and OpenCV only (the runtime never imports torch).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from edge_runtime.checkout.catalog import PRODUCT_IDS, PRODUCT_SPECS
from edge_runtime.checkout.render import ONE, SHIFT, product_shape

NEUTRAL_TINT = (1.0, 1.0, 1.0)


@lru_cache(maxsize=256)
def _picture(class_id: int, variant: int, size: int) -> np.ndarray:
    sh = product_shape(class_id, variant, NEUTRAL_TINT, PRODUCT_SPECS[class_id].size)
    img = np.full((size, size, 3), 128, np.uint8)
    ext = np.abs(sh.hull).max() * 2
    scale = 0.78 / max(ext, 1e-6)
    px = np.round((sh.pts * scale + 0.5) * size * ONE).astype(np.int32)
    for col, poly in zip(sh.colours, np.split(px, sh.splits)):
        cv2.fillPoly(img, [poly], col, cv2.LINE_AA, SHIFT)
    img.setflags(write=False)  # cached: shared by every caller
    return img


def class_pictures(names: list[str], size: int, most: int = 2) -> dict[str, list[np.ndarray]]:
    """class name -> up to ``most`` pictures (size x size RGB uint8), for the names the generator
    draws; names it does not draw are left out."""
    out: dict[str, list[np.ndarray]] = {}
    for name in names:
        cid = PRODUCT_IDS.get(name)
        if cid is None:
            continue
        n = max(1, min(most, len(PRODUCT_SPECS[cid].label_options)))
        out[name] = [_picture(cid, v, int(size)) for v in range(n)]
    return out


def class_picture_grid(names: list[str], size: int) -> tuple[list[np.ndarray], int] | None:
    """Every class of ``names`` drawn the same number of times Q: (the K x Q pictures, class by class, Q);
    None when a class is not drawn (a bundle of other footage) or there is none. What a class's identity
    is made of (``Engine.class_identities``, the track labeler stage)."""
    pics = class_pictures(list(names), size)
    if not names or len(pics) < len(names):
        return None
    q = min(len(pics[n]) for n in names)
    return [p for n in names for p in pics[n][:q]], q
