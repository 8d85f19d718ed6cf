"""Drawing frames: a static background per (look, size), then the script's state at time t.

Everything dynamic is drawn with OpenCV polygons in scene coordinates pushed through the look's camera
homography (sub-pixel, anti-aliased). Lighting drift, blur and sensor noise are applied last. Nothing
here keeps state between frames, so ``frame(t)`` is a pure function of (seed, look, size, t).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .catalog import PRODUCT_SPECS, instance_parts
from .scene import BAG, BASKET, FLOOR_Y, LIGHT_POINT, LOOKS, SCANNER, SCREEN, STAGING, Look, apply_h, camera_matrix
from .script import Instance, Pose, Script, Session, helper_position, hand_position

SHIFT = 4
ONE = 1 << SHIFT
NOISE_BANK = 16
AD_COLOURS = ((230, 60, 60), (60, 160, 230), (250, 200, 40), (90, 200, 90), (200, 90, 200))
LIFT_GROW = 0.18   # a lifted item is closer to the camera: drawn this much bigger at lift 1


@dataclass
class InstanceShape:
    colours: list[tuple[int, int, int]]
    pts: np.ndarray        # (N, 2) local points of all parts, long side = 1
    splits: list[int]
    hull: np.ndarray       # (H, 2) convex hull of the item (its box and its shadow)
    size: float


# Every product instance has its own tint, so a long stream meets new keys all the time: 64 holds a
# frame's instances (at most 8 seen) several times over, and a 24-hour demo stream stays flat in
# memory (4096 grew the process by ~0.1 MB per stream-hour until it was full, ~90 hours in).
@lru_cache(maxsize=64)
def product_shape(class_id: int, label_variant: int, tint: tuple[float, float, float], size: float) -> InstanceShape:
    """How a product of class ``class_id`` is drawn, with that label colour and tint: its polygons in
    local coordinates (long side 1) and their hull."""
    parts = instance_parts(class_id, label_variant, tint)
    pts = np.concatenate([p for _, p in parts])
    splits = np.cumsum([len(p) for _, p in parts])[:-1].tolist()
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    return InstanceShape([c for c, _ in parts], pts, splits, hull, size)


def shape_of(inst: Instance) -> InstanceShape:
    return product_shape(inst.class_id, inst.label_variant, inst.tint, inst.size)


def place(local: np.ndarray, pose: Pose, size: float) -> np.ndarray:
    """Local item points -> scene points for a pose."""
    x, y, sc, ang, lift = pose
    s = size * sc * (1.0 + LIFT_GROW * lift)
    c, si = math.cos(ang) * s, math.sin(ang) * s
    return local @ np.array([[c, si], [-si, c]]) + (x, y)


def item_box(inst: Instance, pose: Pose, H: np.ndarray) -> tuple[float, float, float, float] | None:
    """Normalised image box (x1, y1, x2, y2) clipped to the frame, None when outside it."""
    p = apply_h(H, place(shape_of(inst).hull, pose, inst.size))
    x1, y1 = max(0.0, float(p[:, 0].min())), max(0.0, float(p[:, 1].min()))
    x2, y2 = min(1.0, float(p[:, 0].max())), min(1.0, float(p[:, 1].max()))
    if x2 - x1 <= 1e-3 or y2 - y1 <= 1e-3:
        return None
    return (x1, y1, x2, y2)


def _rect(r: tuple[float, float, float, float], pad: float = 0.0) -> np.ndarray:
    x1, y1, x2, y2 = r
    return np.array([[x1 - pad, y1 - pad], [x2 + pad, y1 - pad], [x2 + pad, y2 + pad], [x1 - pad, y2 + pad]], np.float64)


def _texture(look: Look, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 counter surface."""
    base = np.array(look.counter, np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    if look.texture == "wood":
        n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), w / 60)
        f = 1 + 0.07 * np.sin(yy * 140 + 6 * n) + 0.03 * np.sin(yy * 23 + xx * 2)
        return base * f[..., None]
    if look.texture in ("granite", "speckle"):
        n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), w / 40)
        img = base * (1 + 0.04 * n)[..., None]
        k = int(h * w * (0.03 if look.texture == "granite" else 0.05))
        ys, xs = rng.integers(0, h, k), rng.integers(0, w, k)
        cols = np.array([[40, 40, 45], [235, 235, 230], [110, 100, 95]] if look.texture == "granite"
                        else [[30, 60, 60], [220, 230, 220], [160, 120, 90]], np.float32)
        img[ys, xs] = cols[rng.integers(0, 3, k)]
        return cv2.GaussianBlur(img, (0, 0), 0.6)
    if look.texture == "slate":
        n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), w / 15)
        n2 = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.0)
        return base * (1 + 0.9 * n + 0.05 * n2)[..., None]
    if look.texture == "laminate":
        n = rng.normal(0, 1, (h, w)).astype(np.float32)
        f = 1 + 0.015 * n - 0.05 * (np.mod(xx * 4.0, 1.0) < 0.006)
        return base * f[..., None]
    if look.texture == "steel":
        n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), sigmaX=w / 6, sigmaY=0.7)
        return base * (1 + 3.0 * n + 0.04 * xx)[..., None]
    raise ValueError(look.texture)


@lru_cache(maxsize=32)
def background(look_index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (background RGB uint8 (size, size, 3), counter mask bool (size, size, 1))."""
    look = LOOKS[look_index]
    rng = np.random.default_rng([1234, look_index])
    pad = 0.25
    C = 3 * size  # canvas px per scene unit (supersampled)
    side = int(round((1 + 2 * pad) * C))
    cv_ = lambda pts: np.round((np.asarray(pts) + pad) * C * ONE).astype(np.int32)  # noqa: E731
    canvas = np.zeros((side, side, 3), np.float32)
    fy = int(round((FLOOR_Y + pad) * C))
    floor = np.array(look.floor, np.float32)
    canvas[:fy] = floor
    yy, xx = np.mgrid[0:fy, 0:side]
    tiles = ((np.mod(xx / C, 0.12) < 0.006) | (np.mod(yy / C, 0.12) < 0.006))
    canvas[:fy][tiles] *= 0.8
    canvas[fy:] = _texture(look, side - fy, side, rng)
    canvas[fy : fy + max(1, int(0.018 * C))] *= 0.65  # counter lip
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    # staging area outline, bag holder rails, scanner housing + glass, screen bezel
    cv2.polylines(canvas, [cv_(_rect(STAGING))], True, tuple(int(c * 0.85) for c in look.counter), max(1, C // 150), cv2.LINE_AA, SHIFT)
    for x in (BAG[0] + 0.015, BAG[2] - 0.015):
        cv2.line(canvas, tuple(cv_([x, BAG[1] - 0.02])), tuple(cv_([x, BAG[3] + 0.02])), (150, 150, 155), max(1, C // 60), cv2.LINE_AA, SHIFT)
    cv2.fillPoly(canvas, [cv_(_rect(SCANNER, 0.02))], (50, 52, 58), cv2.LINE_AA, SHIFT)
    cv2.fillPoly(canvas, [cv_(_rect(SCANNER))], (24, 28, 34), cv2.LINE_AA, SHIFT)
    cv2.fillPoly(canvas, [cv_(np.array([[SCANNER[0] + 0.02, SCANNER[1] + 0.02], [SCANNER[0] + 0.08, SCANNER[1] + 0.02],
                                        [SCANNER[0] + 0.04, SCANNER[3] - 0.02], [SCANNER[0] + 0.02, SCANNER[3] - 0.02]]))],
                 (40, 46, 54), cv2.LINE_AA, SHIFT)  # reflection on the glass
    cv2.fillPoly(canvas, [cv_(_rect(SCREEN, 0.012))], (28, 28, 32), cv2.LINE_AA, SHIFT)
    mask = np.zeros((side, side), np.uint8)
    mask[fy:] = 255
    H = camera_matrix(look)
    S_in = np.array([[C, 0, pad * C], [0, C, pad * C], [0, 0, 1]], np.float64)
    S_out = np.diag([2.0 * size, 2.0 * size, 1.0])
    M = S_out @ H @ np.linalg.inv(S_in)
    big = cv2.warpPerspective(canvas, M, (2 * size, 2 * size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    bg = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    m = cv2.warpPerspective(mask, M, (2 * size, 2 * size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    m = cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) > 127
    bg.setflags(write=False)
    m.setflags(write=False)
    return bg, m[..., None]


@lru_cache(maxsize=32)
def noise_bank(look_index: int, size: int) -> np.ndarray:
    """(NOISE_BANK, size, size, 3) float32 sensor noise frames, shared by all videos of a look and size
    (which frame a time t gets depends on the seed)."""
    rng = np.random.default_rng([4321, look_index, size])
    bank = np.round(rng.normal(0, LOOKS[look_index].noise, (NOISE_BANK, size, size, 3))).astype(np.float32)
    bank.setflags(write=False)
    return bank


class Renderer:
    def __init__(self, script: Script, look_index: int, size: int) -> None:
        self.script, self.size, self.look_index = script, size, look_index
        self.look = LOOKS[look_index]
        self.H = camera_matrix(self.look)
        self.Hpx = np.diag([size * ONE, size * ONE, 1.0]) @ self.H
        self._hl = self.Hpx.tolist()
        self.bg, self.counter_mask = background(look_index, size)
        self.noise = noise_bank(look_index, size)
        g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        self.gx, self.gy = np.meshgrid(g, g)
        self.shadow = tuple(int(c * 0.55) for c in self.look.counter)
        self.light = np.array(self.look.light, np.float32) * self.look.brightness

    # ---------------------------------------------------------------- primitives
    def px(self, pts: np.ndarray) -> np.ndarray:
        H = self.Hpx
        p = pts @ H[:2, :2].T + H[:2, 2]
        w = pts @ H[2, :2] + H[2, 2]
        return np.round(p / w[:, None]).astype(np.int32)

    def pt(self, xy) -> tuple[int, int]:
        x, y = xy
        (a, b, c), (d, e, f), (g, h, i) = self._hl
        w = g * x + h * y + i
        return (int(round((a * x + b * y + c) / w)), int(round((d * x + e * y + f) / w)))

    def fill(self, img: np.ndarray, pts: np.ndarray, colour) -> None:
        cv2.fillPoly(img, [self.px(pts)], colour, cv2.LINE_AA, SHIFT)

    def line(self, img, a, b, colour, width: float) -> None:
        cv2.line(img, self.pt(a), self.pt(b), colour, max(1, int(round(width * self.size))), cv2.LINE_AA, SHIFT)

    def ellipse(self, img, c, rx: float, ry: float, angle_deg: float, colour) -> None:
        cen = self.pt(c)
        ax = (max(1, int(rx * self.size * ONE)), max(1, int(ry * self.size * ONE)))
        cv2.ellipse(img, cen, ax, angle_deg, 0, 360, colour, -1, cv2.LINE_AA, SHIFT)

    # ---------------------------------------------------------------- scene parts
    def item(self, img: np.ndarray, inst: Instance, pose: Pose, shadow: bool = True) -> None:
        sh = shape_of(inst)
        lift = pose[4]
        if shadow:
            off = 0.008 + 0.03 * lift
            hull = place(sh.hull, pose, inst.size) + (off, off * 1.2)
            self.fill(img, hull, self.shadow)
        pts = self.px(place(sh.pts, pose, inst.size))
        for col, poly in zip(sh.colours, np.split(pts, sh.splits)):
            cv2.fillPoly(img, [poly], col, cv2.LINE_AA, SHIFT)

    def arm(self, img, root, hand, skin, sleeve) -> None:
        dx, dy = hand[0] - root[0], hand[1] - root[1]
        n = math.hypot(dx, dy) or 1.0
        ux, uy = dx / n, dy / n
        wrist = (hand[0] - ux * 0.035, hand[1] - uy * 0.035)
        elbow = (root[0] + dx * 0.45, root[1] + dy * 0.45)
        self.line(img, root, wrist, tuple(int(c * 0.85) for c in skin), 0.068)
        self.line(img, root, elbow, sleeve, 0.095)

    def palm(self, img, root, hand, skin, raised: bool = False) -> None:
        a, b = self.pt(root), self.pt(hand)
        ang = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
        if raised:
            self.ellipse(img, (hand[0] + 0.03, hand[1] + 0.04), 0.045, 0.034, ang, self.shadow)
        self.ellipse(img, hand, 0.045, 0.034, ang, skin)
        dx, dy = hand[0] - root[0], hand[1] - root[1]
        n = math.hypot(dx, dy) or 1.0
        ux, uy = dx / n, dy / n
        finger = tuple(int(c * 0.9) for c in skin)
        for k in (-1, 0, 1):
            s = (hand[0] + ux * 0.03 - uy * 0.018 * k, hand[1] + uy * 0.03 + ux * 0.018 * k)
            self.line(img, s, (s[0] + ux * 0.035, s[1] + uy * 0.035), finger, 0.018)
        self.line(img, (hand[0] - uy * 0.03, hand[1] + ux * 0.03), (hand[0] + ux * 0.02 - uy * 0.05, hand[1] + uy * 0.02 + ux * 0.05),
                  finger, 0.02)  # thumb

    def person(self, img, x: float, y: float, s: float, shirt, hair, swing: float) -> None:
        self.ellipse(img, (x - s * 0.95, y + 0.25 * s * swing), 0.32 * s, 0.22 * s, 0, tuple(int(c * 0.8) for c in shirt))
        self.ellipse(img, (x + s * 0.95, y - 0.25 * s * swing), 0.32 * s, 0.22 * s, 0, tuple(int(c * 0.8) for c in shirt))
        self.ellipse(img, (x, y), s, 0.5 * s, 0, shirt)
        self.ellipse(img, (x, y - 0.05 * s), 0.38 * s, 0.38 * s, 0, hair)

    def basket(self, img, colour) -> None:
        dark = tuple(int(c * 0.5) for c in colour)
        mid = tuple(int(c * 0.8) for c in colour)
        self.fill(img, _rect(BASKET), dark)
        x1, y1, x2, y2 = BASKET
        for x in np.linspace(x1, x2, 6)[1:-1]:
            self.line(img, (x, y1), (x, y2), mid, 0.008)
        for y in np.linspace(y1, y2, 8)[1:-1]:
            self.line(img, (x1, y), (x2, y), mid, 0.008)
        cv2.polylines(img, [self.px(_rect(BASKET))], True, colour, max(1, int(0.022 * self.size)), cv2.LINE_AA, SHIFT)

    def bag(self, img, contents: list[tuple[int, int, int]]) -> None:
        col = self.look.bag
        x1, y1, x2, y2 = BAG
        body = np.array([[x1 + 0.02, y1 + 0.03], [x2 - 0.02, y1 + 0.03], [x2 - 0.005, y2 - 0.03], [x1 + 0.005, y2 - 0.03]])
        self.fill(img, body, tuple(int(c * 0.9) for c in col))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        self.ellipse(img, (cx, cy), 0.115, 0.19, 0, tuple(int(c * 0.45) for c in col))
        for k, c in enumerate(contents[-8:]):
            a = 2.4 * k
            r = 0.03 + 0.012 * k
            self.ellipse(img, (cx + 0.6 * r * math.cos(a), cy + r * math.sin(a)), 0.035, 0.03, 0, tuple(int(v * 0.7) for v in c))
        fold = tuple(int(c * 0.75) for c in col)
        self.line(img, (x1 + 0.03, y1 + 0.05), (x1 + 0.05, y2 - 0.06), fold, 0.008)
        self.line(img, (x2 - 0.03, y1 + 0.05), (x2 - 0.05, y2 - 0.06), fold, 0.008)
        self.line(img, (cx - 0.07, y1 + 0.03), (cx + 0.07, y1 + 0.03), col, 0.015)  # handle loops on the rails
        self.line(img, (cx - 0.07, y2 - 0.03), (cx + 0.07, y2 - 0.03), col, 0.015)

    def scanner(self, img, flash: str | None) -> None:
        x1, y1, x2, y2 = SCANNER
        if flash is not None:
            glow = (90, 235, 120) if flash == "green" else (240, 80, 60)
            self.fill(img, _rect(SCANNER, -0.01), glow)
        self.line(img, (x1 + 0.02, (y1 + y2) / 2), (x2 - 0.02, (y1 + y2) / 2), (200, 30, 30), 0.008)
        led = (60, 255, 90) if flash == "green" else (255, 60, 40) if flash == "red" else (90, 30, 30)
        self.ellipse(img, LIGHT_POINT, 0.012, 0.012, 0, led)

    def screen(self, img, t: float) -> None:
        k = int(math.floor(t / 6.0))
        col = AD_COLOURS[(k * 7 + self.script.seed) % len(AD_COLOURS)]
        x1, y1, x2, y2 = SCREEN
        self.fill(img, _rect(SCREEN), col)
        u = (t / 3.0) % 1.0
        bx = x1 + 0.02 + u * (x2 - x1 - 0.06)
        self.fill(img, _rect((bx, y1 + 0.02, bx + 0.04, y2 - 0.02)), (245, 245, 245))

    # ---------------------------------------------------------------- the frame
    def render(self, t: float) -> np.ndarray:
        sc = self.script
        img = self.bg.copy()
        people = sc.people_at(t)
        if people:
            for p in people:
                u = (t - p["t0"]) / (p["t1"] - p["t0"])
                x = p["x0"] + (p["x1"] - p["x0"]) * u
                self.person(img, x, p["y"], p["s"], p["shirt"], p["hair"], math.sin(2 * math.pi * 0.9 * (t - p["t0"]) + p["phase"]))
            np.copyto(img, self.bg, where=self.counter_mask)
        self.screen(img, t)
        self.scanner(img, sc.flash_at(t))
        sess = sc.session_at(t)
        insts = sc.instances
        bagged = []
        if sess is not None:
            bagged = [PRODUCT_SPECS[insts[i].class_id].palette["body"] for i in sess.instance_ids
                      if insts[i].vanish <= t and insts[i].segs[-1].kind == "bag"]
        self.bag(img, bagged)
        if sess is not None:
            self.session(img, sess, t)
        w = sc.wipe_at(t)
        if w is not None:
            tau = t - w["t0"]
            hand = (w["c"][0] + 0.06 * math.cos(2 * math.pi * tau / 1.3), w["c"][1] + 0.04 * math.sin(2 * math.pi * tau / 1.3))
            self.arm(img, w["root"], hand, w["skin"], w["sleeve"])
            self.ellipse(img, (hand[0] + 0.01, hand[1] + 0.01), 0.06, 0.045, 20 * math.sin(tau), (70, 140, 220))
            self.palm(img, w["root"], hand, w["skin"])
        return self.finish(img, t)

    def session(self, img: np.ndarray, sess: Session, t: float) -> None:
        insts = self.script.instances
        cust = sess.customer
        self.basket(img, cust.basket)
        resting, held = [], []
        for iid in sess.instance_ids:
            st = insts[iid].pose(t)
            if st is None:
                continue
            pose, in_hand = st
            (held if in_hand else resting).append((insts[iid], pose))
        resting.sort(key=lambda ip: (ip[1][1], ip[0].instance_id))
        for inst, pose in resting:
            self.item(img, inst, pose)
        # the customer at the bottom edge: shoulders, head, the idle left hand
        self.ellipse(img, (cust.entry_x, 1.09), 0.3, 0.14, 0, cust.shirt)
        self.ellipse(img, (cust.entry_x - 0.02, 1.08), 0.085, 0.075, 0, cust.hair)
        lroot, lhand = (cust.entry_x - 0.16, 1.04), (cust.entry_x - 0.2, 0.95)
        self.arm(img, lroot, lhand, cust.skin, cust.shirt)
        self.palm(img, lroot, lhand, cust.skin)
        hp = hand_position(sess, insts, t)
        if hp is not None:
            self.arm(img, cust.root, hp[0], cust.skin, cust.shirt)
        for inst, pose in held:
            self.item(img, inst, pose)
        if hp is not None:
            self.palm(img, cust.root, hp[0], cust.skin, raised=hp[1] in ("hover", "reach"))
        helper = helper_position(sess, insts, t)
        if helper is not None:
            seg = next(s for s in sess.helper if s.t0 <= t < s.t1)
            self.arm(img, helper[0], helper[1], seg.p["skin"], seg.p["sleeve"])
            self.palm(img, helper[0], helper[1], seg.p["skin"])

    def finish(self, img: np.ndarray, t: float) -> np.ndarray:
        sc = self.script
        gain, ang, strength = sc.light_at(t)
        grad = cv2.addWeighted(self.gx, strength * math.cos(ang), self.gy, strength * math.sin(ang), 1.0)
        f = cv2.merge([grad * float(g) for g in gain.astype(np.float32) * self.light])
        out = cv2.multiply(img, f, dtype=cv2.CV_32F)
        sigma = sc.blur_at(t)
        if sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), sigma * self.size / 112.0)
        k = (int(round(t * 1000.0)) * 2654435761 + sc.seed * 40503) % NOISE_BANK
        out = cv2.add(out, self.noise[k])
        return cv2.convertScaleAbs(out)  # saturates at 255; |x| of the rare tiny negatives is harmless

    def crop(self, inst: Instance, size: int) -> np.ndarray:
        """The instance alone on a neutral grey background, long side ~78% of the crop, no camera effects."""
        img = np.full((size, size, 3), 128, np.uint8)
        sh = shape_of(inst)
        c, s = math.cos(inst.angle0), math.sin(inst.angle0)
        pts = sh.pts @ np.array([[c, s], [-s, c]])
        ext = np.abs(sh.hull @ np.array([[c, s], [-s, c]])).max() * 2
        scale = 0.78 / max(ext, 1e-6)
        px = np.round((pts * scale + 0.5) * size * ONE).astype(np.int32)
        for col, poly in zip(sh.colours, np.split(px, sh.splits)):
            cv2.fillPoly(img, [poly], col, cv2.LINE_AA, SHIFT)
        return img
