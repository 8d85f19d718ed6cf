"""The event script of one video: customers, their items, what they do with them and when.

Everything here is generated from the seed alone (the look only changes how it is drawn) and is cheap
(a 30-minute video takes a few milliseconds). Sessions are generated one after another, each from its
own random stream, so a shorter video with the same seed is a prefix of a longer one.

Motion is stored as segments; ``Track.pose(t)`` evaluates a segment at any time, so a frame is a pure
function of t. Scene coordinates: see ``scene.py``.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from .catalog import ACTIVITY_IDS, PRODUCT_SPECS
from .scene import BAG_POINT, BASKET_SLOTS, COUNTER_SLOTS, SCANNER_POINT

Pose = tuple[float, float, float, float, float]  # x, y, scale, angle (rad), lift (0 on a surface .. 1 held high)

A = ACTIVITY_IDS
SKIN = ((233, 190, 160), (205, 150, 115), (160, 110, 75), (110, 75, 50), (240, 205, 180))
SHIRTS = ((200, 60, 60), (50, 90, 170), (60, 140, 80), (230, 180, 50), (120, 60, 150), (60, 60, 60),
          (230, 230, 230), (200, 120, 60), (40, 150, 160))
HAIR = ((30, 25, 20), (90, 60, 30), (180, 140, 80), (120, 120, 120), (60, 35, 20))
BASKETS = ((200, 40, 40), (40, 90, 190), (40, 140, 60), (60, 60, 60))
STAFF = ((30, 70, 60), (30, 40, 90))

# item chains after the item leaves the basket (weights, activity names); () = never touched
CHAINS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.44, ("pick_up", "scan", "bag")),
    (0.09, ("pick_up", "hold", "scan", "bag")),
    (0.08, ("pick_up", "inspect", "scan", "bag")),
    (0.04, ("pick_up", "scan", "hold", "bag")),
    (0.07, ("pick_up", "inspect", "put_back")),
    (0.06, ("pick_up", "put_back")),
    (0.05, ("pick_up", "hold", "put_back")),
    (0.06, ("pick_up", "hand_over")),
    (0.05, ("pick_up", "scan", "hand_over")),
    (0.06, ()),
)
DURATIONS = {  # seconds (uniform range) of one event
    "pick_up": (2.0, 4.5), "scan": (3.0, 9.0), "bag": (2.0, 4.5), "put_back": (2.0, 4.5),
    "hold": (6.0, 28.0), "inspect": (6.0, 22.0), "hand_over": (4.0, 8.0), "browse": (2.0, 5.0),
}
FLASH_S = 0.35
PEOPLE_BLOCK_S = 60.0


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

    def zone(self, t: float) -> str | None:
        s = self.seg_at(t)
        if s is None:
            return None
        return s.p.get("zone", "hand") if s.kind == "rest" else "hand"


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


# --------------------------------------------------------------------------------------------- build


def _r2(x: float) -> float:
    return round(float(x), 2)


class _SessionBuilder:
    def __init__(self, index: int, start: float, rng: np.random.Generator, next_iid: int) -> None:
        self.k, self.rng, self.start = index, rng, start
        r = rng
        self.customer = Customer(entry_x=float(r.uniform(0.36, 0.62)), skin=SKIN[r.integers(len(SKIN))],
                                 shirt=SHIRTS[r.integers(len(SHIRTS))], hair=HAIR[r.integers(len(HAIR))],
                                 basket=BASKETS[r.integers(len(BASKETS))])
        self.insts: dict[int, Instance] = {}
        self.cur_pose: dict[int, Pose] = {}
        self.place: dict[int, str] = {}
        self.home: dict[int, Pose] = {}
        self.counter_slot: dict[int, int] = {}
        self.events: list[Event] = []
        self.flashes: list[tuple[float, float, str]] = []
        self.hand: list[Seg] = []
        self.helper: list[Seg] = []
        n = int(r.choice(np.arange(1, 9), p=[0.10, 0.12, 0.15, 0.16, 0.15, 0.13, 0.11, 0.08]))
        slots = r.permutation(len(BASKET_SLOTS))[:n]
        for j in range(n):
            iid = next_iid + j
            cid = int(r.integers(len(PRODUCT_SPECS)))
            spec = PRODUCT_SPECS[cid]
            ang0 = float(r.uniform(-0.5, 0.5) + (math.pi if r.random() < 0.3 else 0.0))
            inst = Instance(iid, cid, index, int(r.integers(len(spec.label_options))),
                            tuple(float(x) for x in r.uniform(0.94, 1.06, 3)),
                            spec.size * float(r.uniform(0.92, 1.08)), ang0, appear=start, vanish=math.inf)
            sx, sy = BASKET_SLOTS[slots[j]]
            pose = (sx + float(r.uniform(-0.015, 0.015)), sy + float(r.uniform(-0.012, 0.012)), 0.92, ang0, 0.0)
            self.insts[iid] = inst
            self.cur_pose[iid] = self.home[iid] = pose
            self.place[iid] = "basket"
            inst.segs.append(Seg(start, math.inf, "rest", pose, p={"zone": "basket"}))
        self.hand_pos = self.customer.rest
        self.cur = start + float(r.uniform(2.0, 5.0))
        self.hand.append(Seg(start, self.cur, "rest", self.hand_pos))

    # -- bookkeeping
    def _move(self, iid: int, kind: str, t0: float, t1: float, dest: Pose | None, dest_zone: str | None, **p) -> int:
        inst = self.insts[iid]
        last = inst.segs[-1]
        last.t1 = t0
        seg = Seg(t0, t1, kind, self.cur_pose[iid], dest if dest is not None else self.cur_pose[iid], p)
        inst.segs.append(seg)
        idx = len(inst.segs) - 1
        if dest_zone is None:  # leaves view at t1
            inst.vanish = t1
            self.place[iid] = "gone"
        else:
            self.cur_pose[iid] = dest
            self.place[iid] = dest_zone
            inst.segs.append(Seg(t1, math.inf, "rest", dest, p={"zone": dest_zone}))
        return idx

    def _reach(self, target: tuple[float, float]) -> None:
        d = math.hypot(target[0] - self.hand_pos[0], target[1] - self.hand_pos[1])
        dur = _r2(0.3 + 1.6 * d + self.rng.uniform(0.0, 0.3))
        self.hand.append(Seg(self.cur, self.cur + dur, "reach", self.hand_pos, target))
        self.cur = _r2(self.cur + dur)
        self.hand_pos = target

    def _pause(self, dur: float) -> None:
        dur = _r2(dur)
        if dur <= 0:
            return
        self.hand.append(Seg(self.cur, self.cur + dur, "rest", self.hand_pos))
        self.cur = _r2(self.cur + dur)

    def _free_counter_slot(self) -> int:
        used = set(self.counter_slot.values())
        free = [i for i in range(len(COUNTER_SLOTS)) if i not in used]
        return int(self.rng.choice(free)) if free else int(self.rng.integers(len(COUNTER_SLOTS)))

    # -- one task
    def do(self, act: str, iid: int, tasks: list) -> bool:
        r, inst, cust = self.rng, self.insts[iid], self.customer
        where = self.place[iid]
        ok = {"browse": where == "basket", "pick_up": where == "basket", "scan": where == "counter",
              "bag": where in ("scanner", "counter"), "put_back": where == "counter", "hold": where in ("counter", "scanner"),
              "inspect": where == "counter", "hand_over": where in ("counter", "scanner")}[act]
        if not ok:
            return False
        pose = self.cur_pose[iid]
        if act == "browse":
            target = (pose[0] + 0.01, pose[1] + 0.03)
            self._reach(target)
            dur = _r2(r.uniform(*DURATIONS[act]))
            self.hand.append(Seg(self.cur, self.cur + dur, "hover", target))
            self.events.append(Event(A[act], iid, self.cur, _r2(self.cur + dur), self.k))
            self.cur = _r2(self.cur + dur)
            return True
        self._reach(grip_point(pose, inst.size, cust.root))
        dur = _r2(r.uniform(*DURATIONS[act]))
        t0, t1 = self.cur, _r2(self.cur + dur)
        if act == "pick_up":
            slot = self._free_counter_slot()
            self.counter_slot[iid] = slot
            cx, cy = COUNTER_SLOTS[slot]
            dest = (cx + float(r.uniform(-0.02, 0.02)), cy + float(r.uniform(-0.015, 0.015)), 1.0,
                    inst.angle0 + float(r.uniform(-0.35, 0.35)), 0.0)
            seg = self._move(iid, "carry", t0, t1, dest, "counter", peak=0.7)
        elif act == "put_back":
            self.counter_slot.pop(iid, None)
            seg = self._move(iid, "carry", t0, t1, self.home[iid], "basket", peak=0.6)
            if r.random() < 0.35:  # changes their mind again later
                tasks.append(("pick_up", iid))
                tasks.append(("scan", iid))
                tasks.append(("bag", iid))
        elif act == "scan":
            self.counter_slot.pop(iid, None)
            dest = (SCANNER_POINT[0] + float(r.uniform(-0.02, 0.02)), SCANNER_POINT[1] + float(r.uniform(-0.02, 0.02)),
                    1.0, pose[3] + float(r.uniform(-0.3, 0.3)), 0.0)
            good = float(r.uniform(0.55, 0.8))
            marks = [(good, "green")]
            if r.random() < 0.3:
                marks.append((float(r.uniform(0.36, good - 0.12)), "red"))
            for u, col in sorted(marks):
                f0 = _r2(t0 + u * dur)
                self.flashes.append((f0, _r2(f0 + FLASH_S), col))
            settle = min(0.9, good + (FLASH_S + 0.3) / dur)
            seg = self._move(iid, "scan", t0, t1, dest, "scanner", settle=settle, phase=float(r.uniform(0, 2 * math.pi)))
        elif act == "bag":
            self.counter_slot.pop(iid, None)
            dest = (BAG_POINT[0] + float(r.uniform(-0.04, 0.04)), BAG_POINT[1] + float(r.uniform(-0.05, 0.05)),
                    pose[2] * 0.55, pose[3] + 0.3, 0.0)
            seg = self._move(iid, "bag", t0, t1, dest, None)
        elif act in ("hold", "inspect"):
            if where == "scanner":
                slot = self._free_counter_slot()
                self.counter_slot[iid] = slot
                cx, cy = COUNTER_SLOTS[slot]
                dest = (cx + float(r.uniform(-0.02, 0.02)), cy + float(r.uniform(-0.015, 0.015)), 1.0, pose[3], 0.0)
            else:
                dest = (pose[0] + float(r.uniform(-0.02, 0.02)), pose[1] + float(r.uniform(-0.02, 0.02)), 1.0,
                        pose[3] + float(r.uniform(-0.3, 0.3)), 0.0)
            if act == "hold":  # anywhere over the counter: the scanner, the basket and the bag included
                center = (float(r.uniform(0.18, 0.85)), float(r.uniform(0.36, 0.85)))
                seg = self._move(iid, "hold", t0, t1, dest, "counter", center=center, phase=float(r.uniform(0, 6.28)))
            else:
                center = (float(r.uniform(0.25, 0.75)), float(r.uniform(0.38, 0.75)))
                seg = self._move(iid, "inspect", t0, t1, dest, "counter", center=center,
                                 zoom=float(r.uniform(1.3, 1.6)), phase=float(r.uniform(0, 6.28)))
        elif act == "hand_over":
            self.counter_slot.pop(iid, None)
            mx = float(r.uniform(0.3, 0.72))
            meet, exit_ = (mx, float(r.uniform(0.27, 0.33))), (mx + float(r.uniform(-0.1, 0.1)), -0.45)
            seg = self._move(iid, "handover", t0, t1, None, None, meet=meet, exit=exit_)
            root = (mx + float(r.uniform(0.04, 0.12)), -0.2)
            self.helper.append(Seg(_r2(t0 + 0.25 * dur), t1, "arm", root, meet,
                                   {"iid": iid, "seg": seg, "grip_t": t0 + 0.45 * dur,
                                    "sleeve": STAFF[int(r.integers(len(STAFF)))] if r.random() < 0.3 else SHIRTS[int(r.integers(len(SHIRTS)))],
                                    "skin": SKIN[int(r.integers(len(SKIN)))]}))
        else:
            raise ValueError(act)
        self.events.append(Event(A[act], iid, t0, t1, self.k))
        self.cur = t1
        if act == "hand_over":  # the shopper lets go once the other person has it, the hand stays there
            tl = _r2(t0 + 0.6 * dur)
            self.hand.append(Seg(t0, tl, "grip", (), p={"iid": iid, "seg": seg}))
            self.hand_pos = grip_point(item_pose(self.insts[iid].segs[seg], tl), inst.size, cust.root)
            self.hand.append(Seg(tl, t1, "rest", self.hand_pos))
            return True
        self.hand.append(Seg(t0, t1, "grip", (), p={"iid": iid, "seg": seg}))
        end_pose = item_pose(self.insts[iid].segs[seg], t1 - 1e-6)
        self.hand_pos = grip_point(end_pose, inst.size, cust.root)
        return True

    def run(self) -> None:
        r = self.rng
        iids = list(self.insts)
        chains = {}
        for iid in iids:
            w = np.array([c[0] for c in CHAINS])
            chains[iid] = list(CHAINS[int(r.choice(len(CHAINS), p=w / w.sum()))][1])
        order = [i for i in r.permutation(iids).tolist() if chains[i]]
        tasks: list[tuple[str, int]] = []
        if len(iids) >= 2 and r.random() < 0.4:
            for iid in r.permutation(iids)[: int(r.integers(2, min(4, len(iids)) + 1))].tolist():
                tasks.append(("browse", iid))
        batch = r.random() < 0.3
        i = 0
        while i < len(order):
            g = int(r.integers(2, 4)) if batch else 1
            group = order[i : i + g]
            i += g
            for iid in group:
                if chains[iid] and chains[iid][0] == "pick_up":
                    tasks.append(("pick_up", iid))
            for iid in group:
                rest = chains[iid][1:] if chains[iid] and chains[iid][0] == "pick_up" else chains[iid]
                tasks.extend((a, iid) for a in rest)
        j = 0
        while j < len(tasks):
            act, iid = tasks[j]
            j += 1
            if act == "pick_up" and r.random() < 0.08:  # a glance over what is left in the basket
                others = [o for o in iids if o != iid and self.place[o] == "basket"]
                if others:
                    self.do("browse", int(r.choice(others)), tasks)
                    self._pause(r.uniform(0.2, 0.8))
            if not self.do(act, iid, tasks):
                continue
            nxt_same = j < len(tasks) and tasks[j][1] == iid
            if r.random() < 0.07:  # a longer break: phone, wallet, chat
                self._reach(self.customer.rest)
                self._pause(r.uniform(5.0, 20.0))
            else:
                self._pause(r.uniform(0.2, 1.2) if nxt_same else r.uniform(0.5, 2.5))
        self._reach(self.customer.rest)
        self.end = _r2(self.cur + r.uniform(2.0, 6.0))
        self.hand.append(Seg(self.cur, self.end, "rest", self.hand_pos))
        for inst in self.insts.values():
            inst.vanish = min(inst.vanish, self.end)
            inst.segs[-1].t1 = min(inst.segs[-1].t1, inst.vanish)

    def session(self) -> Session:
        return Session(self.k, self.start, self.end, self.customer, list(self.insts), self.hand, self.helper)


def build_script(seed: int, duration: float) -> Script:
    main = np.random.default_rng([seed, 0])
    sessions: list[Session] = []
    instances: dict[int, Instance] = {}
    events: list[Event] = []
    flashes: list[tuple[float, float, str]] = []
    t = _r2(main.uniform(3.0, 40.0))
    k, next_iid = 0, 0
    while t < duration:
        b = _SessionBuilder(k, t, np.random.default_rng([seed, 1, k]), next_iid)
        b.run()
        sessions.append(b.session())
        instances.update(b.insts)
        events.extend(b.events)
        flashes.extend(b.flashes)
        next_iid += len(b.insts)
        k += 1
        t = _r2(b.end + 40.0 + main.gamma(2.0, 100.0))
    gaps = [(0.0, sessions[0].start if sessions else duration)]
    gaps += [(a.end, b.start) for a, b in zip(sessions, sessions[1:])]
    if sessions:
        gaps.append((sessions[-1].end, max(duration, sessions[-1].end)))

    # spurious scanner blinks, background walkers, cleaning, blur, lighting: block-wise streams
    for blk in range(int(math.ceil(duration / 600.0)) + 1):
        r = np.random.default_rng([seed, 2, blk])
        if r.random() < 0.5:
            f0 = _r2(blk * 600.0 + r.uniform(0, 600))
            flashes.append((f0, _r2(f0 + FLASH_S), "green"))
    people = []
    for blk in range(int(math.ceil(duration / PEOPLE_BLOCK_S)) + 1):
        r = np.random.default_rng([seed, 3, blk])
        for _ in range(int(r.poisson(0.9))):
            t0 = blk * PEOPLE_BLOCK_S + float(r.uniform(0, PEOPLE_BLOCK_S))
            d = float(r.uniform(5.0, 14.0))
            left = r.random() < 0.5
            people.append({"t0": t0, "t1": t0 + d, "y": float(r.uniform(0.03, 0.2)),
                           "x0": -0.2 if left else 1.2, "x1": 1.2 if left else -0.2,
                           "s": float(r.uniform(0.08, 0.12)), "shirt": SHIRTS[int(r.integers(len(SHIRTS)))],
                           "hair": HAIR[int(r.integers(len(HAIR)))], "phase": float(r.uniform(0, 6.28))})
    wipes = []
    for gi, (g0, g1) in enumerate(gaps):
        r = np.random.default_rng([seed, 4, gi])
        if g1 - g0 > 40 and r.random() < 0.3:
            d = float(r.uniform(6.0, 20.0))
            t0 = float(r.uniform(g0 + 10, g1 - 10 - d)) if g1 - g0 > d + 20 else g0 + 5
            wipes.append({"t0": t0, "t1": t0 + d, "root": (float(r.uniform(0.3, 0.8)), -0.15),
                          "c": (float(r.uniform(0.35, 0.65)), float(r.uniform(0.45, 0.8))),
                          "sleeve": STAFF[int(r.integers(len(STAFF)))], "skin": SKIN[int(r.integers(len(SKIN)))]})
    blurs = []
    for blk in range(int(math.ceil(duration / 120.0)) + 1):
        r = np.random.default_rng([seed, 5, blk])
        if r.random() < 0.35:
            t0 = blk * 120.0 + float(r.uniform(0, 117))
            blurs.append((t0, t0 + float(r.uniform(0.5, 3.0)), float(r.uniform(0.7, 1.6))))
    r = np.random.default_rng([seed, 6])
    dips = []
    for blk in range(int(math.ceil(duration / 300.0)) + 1):
        rb = np.random.default_rng([seed, 7, blk])
        if rb.random() < 0.25:
            d0 = blk * 300.0 + float(rb.uniform(0, 250))
            dips.append((d0, d0 + float(rb.uniform(20, 90)), float(rb.uniform(0.1, 0.25))))
    light = {"a1": float(r.uniform(0.05, 0.12)), "p1": float(r.uniform(500, 1400)), "f1": float(r.uniform(0, 6.28)),
             "a2": float(r.uniform(0.02, 0.05)), "p2": float(r.uniform(90, 240)), "f2": float(r.uniform(0, 6.28)),
             "ta": float(r.uniform(0.02, 0.06)), "tp": float(r.uniform(400, 1200)), "tf": float(r.uniform(0, 6.28)),
             "g0": float(r.uniform(0, 6.28)), "gp": float(r.uniform(800, 2400)), "gs": float(r.uniform(0.08, 0.2)),
             "dips": dips}
    flashes.sort()
    # an event the video ends before is not part of it (its first frames may still show at the very end)
    events = sorted((e for e in events if e.end <= duration), key=lambda e: e.start)
    s = Script(seed, duration, sessions, instances, events, flashes, people, wipes, blurs, light)
    s.finish()
    return s
