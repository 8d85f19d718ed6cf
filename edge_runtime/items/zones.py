"""The checkout's zones in the image: basket, scanner, counter, bag, each a polygon in normalised image
coordinates, and the scanner's ``light`` (a small patch whose pixels tell the light's colour:
scanner_light.py). Configured per stream as data (``Zones.from_dict``), proposed from the detection
head's zone map (``propose``; the light from the frames, scanner_light.LightProposal), or taken from the
checkout generator's scene (``scene_zones``)."""
from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

ZONE_NAMES: tuple[str, ...] = ("basket", "scanner", "counter", "bag")   # where an item is (the head's zone map)
LIGHT = "light"                                    # where the scanner's light is seen: no place for an item
ALL_ZONES: tuple[str, ...] = ZONE_NAMES + (LIGHT,)
# which zone a point belongs to where polygons overlap: the small, telling zones first
PRECEDENCE: tuple[str, ...] = ("scanner", "bag", "basket", "counter")


class Zones(BaseModel):
    """Polygons per zone name; a zone may be left out (that zone is never entered)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    polygons: dict[str, tuple[tuple[float, float], ...]]

    @field_validator("polygons", mode="before")
    @classmethod
    def _check(cls, value):
        if not isinstance(value, dict):
            raise ValueError(f"zones must be a mapping of zone name to polygon, got {type(value).__name__}")
        out = {}
        for name, poly in value.items():
            if name not in ALL_ZONES:
                raise ValueError(f"zone {name!r} is not one of {', '.join(ALL_ZONES)}")
            try:
                pts = np.asarray(poly, np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"zone {name!r}: points must be [x, y] number pairs") from None
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise ValueError(f"zone {name!r}: points must be [x, y] pairs")
            if len(pts) < 3:
                raise ValueError(f"zone {name!r}: a polygon needs at least 3 points, got {len(pts)}")
            if not np.isfinite(pts).all() or pts.min() < 0.0 or pts.max() > 1.0:
                raise ValueError(f"zone {name!r}: every point must lie in [0, 1] (normalised image coordinates)")
            out[name] = tuple((float(x), float(y)) for x, y in pts)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Zones:
        """From the stream config's ``{zone: [[x, y], ...]}``; ValueError with one line naming the zone."""
        try:
            return cls(polygons=data)
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {n: [list(p) for p in poly] for n, poly in self.polygons.items()}

    @property
    def top(self) -> float | None:
        """The highest point of any zone (least y); above it lies the store floor across the counter,
        off the counter. None without zones."""
        ys = [y for name, poly in self.polygons.items() if name != LIGHT for _, y in poly]
        return min(ys) if ys else None

    def with_light(self, polygon) -> "Zones":
        """These zones with the light's polygon set (None: without one)."""
        polygons = {n: p for n, p in self.polygons.items() if n != LIGHT}
        return Zones.from_dict(polygons if polygon is None else polygons | {LIGHT: polygon})

    def zone_of(self, x: float, y: float) -> str | None:
        """The zone holding image point (x, y) (``PRECEDENCE`` where zones overlap), None outside all."""
        for name in PRECEDENCE:
            poly = self.polygons.get(name)
            if poly is not None and cv2.pointPolygonTest(np.asarray(poly, np.float32), (float(x), float(y)), False) >= 0:
                return name
        return None


def propose(zone_p_mean: np.ndarray, grid: int, *, threshold: float = 0.5, upsample: int = 8) -> Zones:
    """Zones from the head's zone probabilities averaged over frames: (grid, grid, 5) or (grid*grid, 5),
    columns none / basket / scanner / counter / bag, row-major cells over the image.

    Each zone is the convex hull of the largest connected region of cells where it is the most likely
    class with p >= ``threshold``, simplified (approxPolyDP); a zone no cell reaches is left out.
    """
    p = np.asarray(zone_p_mean, np.float32)
    if p.ndim == 2:
        if p.shape[0] != grid * grid:
            raise ValueError(f"zone map has {p.shape[0]} cells, expected grid*grid = {grid * grid}")
        p = p.reshape(grid, grid, -1)
    if p.shape != (grid, grid, 1 + len(ZONE_NAMES)):
        raise ValueError(f"zone map must be ({grid}, {grid}, {1 + len(ZONE_NAMES)}), got {p.shape}")
    best = p.argmax(-1)
    size = grid * upsample
    polygons = {}
    for k, name in enumerate(ZONE_NAMES, start=1):
        mask = ((best == k) & (p[..., k] >= threshold)).astype(np.uint8)
        if not mask.any():
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        big = cv2.resize((comp == largest).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.convexHull(max(contours, key=cv2.contourArea))
        poly = cv2.approxPolyDP(hull, 0.01 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float64)
        poly = np.clip((poly + 0.5) / size, 0.0, 1.0)  # pixel centres, within half an upsampled pixel of the edge
        if len(poly) >= 3:
            polygons[name] = poly.tolist()
    return Zones(polygons=polygons)


def scene_zones(video) -> Zones:
    """A ``CheckoutVideo``'s true zones (``checkout.scene.ZONES``, the light: ``SCANNER_LIGHT``) as image
    polygons, via its camera."""
    from edge_runtime.checkout.scene import SCANNER_LIGHT, ZONES, apply_h

    polygons = {}
    for name, (x1, y1, x2, y2) in ({n: ZONES[n] for n in ZONE_NAMES} | {LIGHT: SCANNER_LIGHT}).items():
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
        polygons[name] = np.clip(apply_h(video.renderer.H, corners), 0.0, 1.0).tolist()
    return Zones(polygons=polygons)
