"""The event script of one video: customers, their items, what they do with them and when.

Everything here is generated from the seed alone (the look only changes how it is drawn) and is cheap
(a 30-minute video takes a few milliseconds); ``script_builder.build_script`` makes it. This module
holds what a script is and how it is read at any time t.

Motion is stored as segments; ``Track.pose(t)`` evaluates a segment at any time, so a frame is a pure
function of t. Scene coordinates: see ``scene.py``.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

Pose = tuple[float, float, float, float, float]  # x, y, scale, angle (rad), lift (0 on a surface .. 1 held high)



def smooth(u: float) -> float:
    u = 0.0 if u < 0 else 1.0 if u > 1 else u
    return u * u * (3 - 2 * u)


def lerp_pose(a: Pose, b: Pose, e: float) -> Pose:
    return tuple(x + (y - x) * e for x, y in zip(a, b))  # type: ignore[return-value]


@dataclass
class Seg:
    t0: float
    t1: float
    kind: str
    a: tuple
    b: tuple = ()
    p: dict = field(default_factory=dict)


@dataclass
class Event:
    activity_id: int
    instance_id: int
    start: float
    end: float
    session: int


@dataclass
class Instance:
    instance_id: int
    class_id: int
    session: int
    label_variant: int
    tint: tuple[float, float, float]
    size: float           # long side, scene units
    angle0: float
    appear: float
    vanish: float         # end of visibility (leaves with the basket, into the bag, handed over)
    segs: list[Seg] = field(default_factory=list)
    _t0s: list[float] = field(default_factory=list, repr=False)
    shrink: str | None = None  # the scan-avoidance behaviour it was given (shrink.BEHAVIOURS), if any

    def finish(self) -> None:
        self._t0s = [s.t0 for s in self.segs]

    def seg_at(self, t: float) -> Seg | None:
        if not self.appear <= t < self.vanish:
            return None
        i = bisect.bisect_right(self._t0s, t) - 1
        return self.segs[i] if i >= 0 else None

    def pose(self, t: float) -> tuple[Pose, bool] | None:
        """-> (pose, held_in_hand) or None when not visible."""
        s = self.seg_at(t)
        if s is None:
            return None
        return item_pose(s, t), s.kind != "rest"


def item_pose(s: Seg, t: float) -> Pose:
    a, b, k = s.a, s.b, s.kind
    if k == "rest":
        return a
    dur = s.t1 - s.t0
    u = (t - s.t0) / dur if dur > 0 else 1.0
    tau = t - s.t0
    if k == "carry":  # grasp, lift along an arc, set down
        v = min(max((u - 0.15) / 0.7, 0.0), 1.0)
        e = smooth(v)
        x, y, sc, ang, lift = lerp_pose(a, b, e)
        return (x, y, sc, ang, lift + s.p.get("peak", 0.7) * math.sin(math.pi * v))
    if k == "scan":
        h = (b[0], b[1], b[2], b[3], 0.75)
        if u < 0.3:
            return _carry_to(a, h, u / 0.3, 0.1)
        settle = s.p["settle"]
        if u < settle:  # wave over the glass until the scanner beeps
            env = min(1.0, (u - 0.3) / 0.08)
            ph = s.p["phase"]
            return (h[0] + env * 0.028 * math.sin(2 * math.pi * 1.1 * tau + ph),
                    h[1] + env * 0.018 * math.sin(2 * math.pi * 0.8 * tau + 2 * ph),
                    h[2], h[3] + env * 0.25 * math.sin(2 * math.pi * 0.6 * tau + ph), h[4])
        w_end = (h[0] + 0.028 * math.sin(2 * math.pi * 1.1 * (settle * dur) + s.p["phase"]),
                 h[1] + 0.018 * math.sin(2 * math.pi * 0.8 * (settle * dur) + 2 * s.p["phase"]),
                 h[2], h[3] + 0.25 * math.sin(2 * math.pi * 0.6 * (settle * dur) + s.p["phase"]), h[4])
        return lerp_pose(w_end, b, smooth((u - settle) / max(1e-6, 1 - settle)))
    if k in ("hold", "inspect"):
        c = s.p["center"]
        ph = s.p["phase"]
        if k == "hold":
            d = (c[0] + 0.035 * math.sin(2 * math.pi * tau / 4.3 + ph), c[1] + 0.025 * math.sin(2 * math.pi * tau / 5.7 + 2 * ph),
                 a[2], a[3] + 0.2 * math.sin(tau / 3.1 + ph), 1.0)
            f = 0.12
        else:
            z = s.p["zoom"]
            d = (c[0] + 0.02 * math.sin(2 * math.pi * tau / 5.0 + ph), c[1] + 0.015 * math.sin(2 * math.pi * tau / 6.0 + ph),
                 a[2] * z * (1 + 0.06 * math.sin(2 * math.pi * tau / 3.0)),
                 a[3] + 1.1 * math.sin(2 * math.pi * tau / 4.0 + ph), 1.0)
            f = 0.18
        if u < f:
            return lerp_pose(a, d, smooth(u / f))
        if u > 1 - f:
            return lerp_pose(d, b, smooth((u - (1 - f)) / f))
        return d
    if k == "bag":
        above = (b[0], b[1] - 0.02, a[2], a[3] + 0.3, 0.8)
        if u < 0.7:
            return _carry_to(a, above, u / 0.7, 0.15 / 0.7)
        return lerp_pose(above, b, smooth((u - 0.7) / 0.3))
    if k == "handover":
        m, ex = s.p["meet"], s.p["exit"]
        meet = (m[0], m[1], a[2], a[3], 0.9)
        out = (ex[0], ex[1], a[2], a[3], 0.9)
        if u < 0.45:
            return _carry_to(a, meet, u / 0.45, 0.12 / 0.45)
        if u < 0.6:
            return meet
        v = (u - 0.6) / 0.4
        return lerp_pose(meet, out, v * v)
    raise ValueError(k)


def _carry_to(a: Pose, b: Pose, u: float, grasp: float) -> Pose:
    v = min(max((u - grasp) / (1 - grasp), 0.0), 1.0)
    return lerp_pose(a, b, smooth(v))


@dataclass
class Customer:
    entry_x: float
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    hair: tuple[int, int, int]
    basket: tuple[int, int, int]

    @property
    def root(self) -> tuple[float, float]:
        """Right shoulder: where the working arm starts (scene coordinates)."""
        return (self.entry_x + 0.16, 1.04)

    @property
    def rest(self) -> tuple[float, float]:
        return (self.entry_x + 0.12, 0.9)


@dataclass
class Session:
    index: int
    start: float
    end: float
    customer: Customer
    instance_ids: list[int]
    hand: list[Seg]                      # working hand: rest / reach / grip / hover
    helper: list[Seg]                    # second person's arm during hand-overs
    _t0s: list[float] = field(default_factory=list, repr=False)

    def finish(self) -> None:
        self._t0s = [s.t0 for s in self.hand]

    def hand_seg(self, t: float) -> Seg | None:
        i = bisect.bisect_right(self._t0s, t) - 1
        return self.hand[i] if i >= 0 else None


def grip_point(pose: Pose, size: float, root: tuple[float, float]) -> tuple[float, float]:
    """Where the palm sits on a held item: on its side facing the arm."""
    x, y, sc, _, lift = pose
    dx, dy = root[0] - x, root[1] - y
    n = math.hypot(dx, dy) or 1.0
    r = 0.32 * size * sc * (1 + 0.18 * lift)
    return (x + dx / n * r, y + dy / n * r)


def hand_position(sess: Session, insts: dict[int, Instance], t: float) -> tuple[tuple[float, float], str] | None:
    """-> ((x, y), mode) of the working hand, mode in rest/reach/grip/hover."""
    s = sess.hand_seg(t)
    if s is None or not sess.start <= t < sess.end:
        return None
    if s.kind == "rest":
        return s.a, "rest"
    if s.kind == "reach":
        e = smooth((t - s.t0) / max(1e-6, s.t1 - s.t0))
        return (s.a[0] + (s.b[0] - s.a[0]) * e, s.a[1] + (s.b[1] - s.a[1]) * e), "reach"
    if s.kind == "hover":
        tau = t - s.t0
        return (s.a[0] + 0.012 * math.sin(2 * math.pi * tau / 1.7), s.a[1] + 0.01 * math.sin(2 * math.pi * tau / 2.3)), "hover"
    inst = insts[s.p["iid"]]
    pose = item_pose(inst.segs[s.p["seg"]], t)
    return grip_point(pose, inst.size, sess.customer.root), "grip"


def helper_position(sess: Session, insts: dict[int, Instance], t: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """-> (root, hand) of the second person's arm, or None."""
    for s in sess.helper:
        if s.t0 <= t < s.t1:
            root = s.a
            if t < s.p["grip_t"]:
                e = smooth((t - s.t0) / max(1e-6, s.p["grip_t"] - s.t0))
                m = s.b
                return root, (root[0] + (m[0] - root[0]) * e, root[1] + (m[1] - root[1]) * e)
            inst = insts[s.p["iid"]]
            pose = item_pose(inst.segs[s.p["seg"]], t)
            return root, grip_point(pose, inst.size, root)
    return None


@dataclass
class Script:
    seed: int
    duration: float
    sessions: list[Session]
    instances: dict[int, Instance]
    events: list[Event]                              # every generated event (some may end after duration)
    flashes: list[tuple[float, float, str]]         # (t0, t1, "green" | "red")
    people: list[dict]                               # background walkers
    wipes: list[dict]                                # staff wiping the counter between customers
    blurs: list[tuple[float, float, float]]          # (t0, t1, sigma at 112 px)
    light: dict
    shrink: object = None                            # the ShrinkRates it was built with, None when off
    _sess_t0: list[float] = field(default_factory=list, repr=False)
    _flash_t0: list[float] = field(default_factory=list, repr=False)
    _ev_t0: list[float] = field(default_factory=list, repr=False)

    def finish(self) -> None:
        self._sess_t0 = [s.start for s in self.sessions]
        self._flash_t0 = [f[0] for f in self.flashes]
        self._ev_t0 = [e.start for e in self.events]
        for s in self.sessions:
            s.finish()
        for i in self.instances.values():
            i.finish()

    def session_at(self, t: float) -> Session | None:
        i = bisect.bisect_right(self._sess_t0, t) - 1
        if i >= 0 and t < self.sessions[i].end:
            return self.sessions[i]
        return None

    def flash_at(self, t: float) -> str | None:
        i = bisect.bisect_right(self._flash_t0, t) - 1
        if i >= 0 and t < self.flashes[i][1]:
            return self.flashes[i][2]
        return None

    def event_at(self, t: float) -> Event | None:
        i = bisect.bisect_right(self._ev_t0, t) - 1
        if i >= 0 and t < self.events[i].end:
            return self.events[i]
        return None

    def people_at(self, t: float) -> list[dict]:
        return [p for p in self.people if p["t0"] <= t < p["t1"]]

    def wipe_at(self, t: float) -> dict | None:
        for w in self.wipes:
            if w["t0"] <= t < w["t1"]:
                return w
        return None

    def blur_at(self, t: float) -> float:
        for b in self.blurs:
            if b[0] <= t < b[1]:
                return b[2]
        return 0.0

    def light_at(self, t: float) -> tuple[np.ndarray, float, float]:
        """-> (per-channel gain (3,), gradient angle, gradient strength)."""
        L = self.light
        g = 1.0 + L["a1"] * math.sin(2 * math.pi * t / L["p1"] + L["f1"]) + L["a2"] * math.sin(2 * math.pi * t / L["p2"] + L["f2"])
        for d0, d1, depth in L["dips"]:
            if d0 <= t < d1:
                g *= 1.0 - depth * math.sin(math.pi * (t - d0) / (d1 - d0)) ** 2
        tint = np.array([1.0 + L["ta"] * math.sin(2 * math.pi * t / L["tp"] + L["tf"]), 1.0,
                         1.0 - L["ta"] * math.sin(2 * math.pi * t / L["tp"] + L["tf"])])
        ang = L["g0"] + 2 * math.pi * t / L["gp"]
        return g * tint, ang, L["gs"]
