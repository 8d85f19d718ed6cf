"""Building one video's event script from its seed: sessions one after another, each from its own
random stream (so a shorter video with the same seed is a prefix of a longer one), items moved along
their activity chains with timed segments, flashes, people and helpers."""
from __future__ import annotations

import math

import numpy as np

from .catalog import ACTIVITY_IDS, PRODUCT_SPECS
from .scene import BAG_POINT, BASKET_SLOTS, COUNTER_SLOTS, SCANNER_POINT
from .script import Customer, Event, Instance, Pose, Script, Seg, Session, grip_point, item_pose
from .shrink import ShrinkRates, choose

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
    "pass_around": (1.5, 3.5),  # quicker than a scan: nothing is waved until the scanner beeps
}
FLASH_S = 0.35
PEOPLE_BLOCK_S = 60.0
def _r2(x: float) -> float:
    return round(float(x), 2)


class _SessionBuilder:
    def __init__(self, index: int, start: float, rng: np.random.Generator, next_iid: int,
                 seed: int = 0, shrink: ShrinkRates | None = None) -> None:
        self.k, self.rng, self.start = index, rng, start
        self.seed, self.shrink = seed, shrink
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
              "bag": where in ("scanner", "counter") or (where == "basket" and inst.shrink == "bagged_unscanned"),
              "pass_around": where == "counter", "put_back": where == "counter", "hold": where in ("counter", "scanner"),
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
        elif act == "pass_around":  # lifted over the glass and set down on it: no wave, no flash
            self.counter_slot.pop(iid, None)
            dest = (SCANNER_POINT[0] + float(r.uniform(-0.03, 0.03)), SCANNER_POINT[1] + float(r.uniform(-0.03, 0.03)),
                    1.0, pose[3] + float(r.uniform(-0.3, 0.3)), 0.0)
            seg = self._move(iid, "carry", t0, t1, dest, "scanner", peak=0.75)
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
        # scan avoidance: its own random stream, so without shrink nothing else here changes
        for iid, (behaviour, chain) in zip(iids, choose(self.shrink, self.seed, self.k, [tuple(chains[i]) for i in iids])):
            self.insts[iid].shrink = behaviour
            chains[iid] = list(chain)
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


def build_script(seed: int, duration: float, shrink: ShrinkRates | None = None) -> Script:
    """The script of one video; ``shrink`` (rates that are on, or None) adds scan avoidance (shrink.py)."""
    main = np.random.default_rng([seed, 0])
    sessions: list[Session] = []
    instances: dict[int, Instance] = {}
    events: list[Event] = []
    flashes: list[tuple[float, float, str]] = []
    t = _r2(main.uniform(3.0, 40.0))
    k, next_iid = 0, 0
    while t < duration:
        b = _SessionBuilder(k, t, np.random.default_rng([seed, 1, k]), next_iid, seed, shrink)
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
    blurs = _occasional(seed, 5, duration, block_s=120.0, chance=0.35, start=117, length=(0.5, 3.0), level=(0.7, 1.6))
    r = np.random.default_rng([seed, 6])
    dips = _occasional(seed, 7, duration, block_s=300.0, chance=0.25, start=250, length=(20, 90), level=(0.1, 0.25))
    light = {"a1": float(r.uniform(0.05, 0.12)), "p1": float(r.uniform(500, 1400)), "f1": float(r.uniform(0, 6.28)),
             "a2": float(r.uniform(0.02, 0.05)), "p2": float(r.uniform(90, 240)), "f2": float(r.uniform(0, 6.28)),
             "ta": float(r.uniform(0.02, 0.06)), "tp": float(r.uniform(400, 1200)), "tf": float(r.uniform(0, 6.28)),
             "g0": float(r.uniform(0, 6.28)), "gp": float(r.uniform(800, 2400)), "gs": float(r.uniform(0.08, 0.2)),
             "dips": dips}
    flashes.sort()
    # an event the video ends before is not part of it (its first frames may still show at the very end)
    events = sorted((e for e in events if e.end <= duration), key=lambda e: e.start)
    s = Script(seed, duration, sessions, instances, events, flashes, people, wipes, blurs, light, shrink)
    s.finish()
    return s


def _occasional(seed: int, stream: int, duration: float, *, block_s: float, chance: float, start: float,
                length: tuple[float, float], level: tuple[float, float]) -> list[tuple[float, float, float]]:
    """Rare (t0, t1, level) spans: at most one per block, each block with its own generator so that a
    longer video keeps a shorter one's spans."""
    spans = []
    for blk in range(int(math.ceil(duration / block_s)) + 1):
        r = np.random.default_rng([seed, stream, blk])
        if r.random() < chance:
            t0 = blk * block_s + float(r.uniform(0, start))
            spans.append((t0, t0 + float(r.uniform(*length)), float(r.uniform(*level))))
    return spans
