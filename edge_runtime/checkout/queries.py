"""ReST queries over an annotation dict: give two of (activity, object, time), ask the third.

Works from the annotation dict alone (docs/annotation-format.md), so converted real annotations can
be queried the same way. Rules (all checked again on every sampled query):

- window = [start, end] with end - start = WINDOWS[name] clipped to the video, 0 <= start < end <= duration;
- activity query (instance + window -> set of activities): an activity is drawn uniformly, then one of
  its events; the query's instance is that event's. The window fully contains that event and cuts
  none of the instance's events (each is fully inside or fully outside), so the answer set is exact.
  With probability ``split_prob`` a window edge is placed in the gap between two events of the
  instance, so the answer is a strict subset of what was done to it overall.
- object query (activity + window -> boxes): exactly one event of that activity overlaps the window
  (and it lies fully inside), so the answer is one instance's track over that event's frames at 5 fps.
  Common activities (scan, bag, pick_up) happen many times per customer, so in long windows object
  queries mostly ask about the rarer ones; the activity is drawn uniformly among those that have a
  valid window.
- time query (activity + instance + window -> [start, end]): the event lies fully inside the window
  and no other event with the same activity and instance overlaps it. Activity drawn uniformly among
  those with a valid window, then an event of it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edge_runtime.query.types import BY_NAME, NAMES

WINDOWS: dict[str, float] = {"short": 300.0, "medium": 900.0, "long": 1800.0}

Interval = tuple[float, float]


@dataclass(frozen=True)
class Query:
    qid: str
    video_id: str
    type: str                    # a query type's name (edge_runtime/query/types.py NAMES)
    window: str                  # "short" | "medium" | "long"
    start: float                 # seconds from the video start
    end: float
    instance_id: int | None      # given for activity and time queries
    activity_id: int | None      # given for object and time queries
    gt_activities: tuple[int, ...] = ()                                         # activity queries
    gt_boxes: tuple[tuple[float, float, float, float, float], ...] = ()         # object queries: (t, x1, y1, x2, y2)
    gt_interval: tuple[float, float] | None = None                              # time queries
    gt_instance_id: int | None = None   # object queries: whose track gt_boxes is (not an input)
    absent: bool = False         # the true answer is "not seen" (absent_queries.py): no gt_* field is set

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gt_activities"] = list(self.gt_activities)
        d["gt_boxes"] = [list(b) for b in self.gt_boxes]
        d["gt_interval"] = list(self.gt_interval) if self.gt_interval is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Query:
        return cls(qid=str(d["qid"]), video_id=str(d["video_id"]), type=str(d["type"]), window=str(d["window"]),
                   start=float(d["start"]), end=float(d["end"]),
                   instance_id=None if d.get("instance_id") is None else int(d["instance_id"]),
                   activity_id=None if d.get("activity_id") is None else int(d["activity_id"]),
                   gt_activities=tuple(int(a) for a in d.get("gt_activities", ())),
                   gt_boxes=tuple(tuple(float(v) for v in b) for b in d.get("gt_boxes", ())),
                   gt_interval=None if d.get("gt_interval") is None else (float(d["gt_interval"][0]), float(d["gt_interval"][1])),
                   gt_instance_id=None if d.get("gt_instance_id") is None else int(d["gt_instance_id"]),
                   # files written before the field mark an absent query in its qid alone
                   absent=bool(d.get("absent", "/absent-" in str(d["qid"]))))


# ------------------------------------------------------------------ interval sets over window starts


def _intersect(cur: list[Interval], lo: float, hi: float) -> list[Interval]:
    out = []
    for a, b in cur:
        a2, b2 = max(a, lo), min(b, hi)
        if a2 <= b2:
            out.append((a2, b2))
    return out


def _subtract_open(cur: list[Interval], lo: float, hi: float) -> list[Interval]:
    """Remove the open interval (lo, hi)."""
    if not lo < hi:
        return cur
    out = []
    for a, b in cur:
        if b <= lo or a >= hi:
            out.append((a, b))
            continue
        if a <= lo:
            out.append((a, lo))
        if b >= hi:
            out.append((hi, b))
    return out


def _sample(cur: list[Interval], rng: np.random.Generator) -> float | None:
    if not cur:
        return None
    lens = np.array([b - a for a, b in cur])
    if lens.sum() <= 0:
        return float(cur[int(rng.integers(len(cur)))][0])
    i = int(rng.choice(len(cur), p=lens / lens.sum()))
    return float(rng.uniform(cur[i][0], cur[i][1]))


def _inside(e: dict, s: float, t: float) -> bool:
    return s <= e["start"] and e["end"] <= t


def _overlaps(e: dict, s: float, t: float) -> bool:
    return e["start"] < t and e["end"] > s


def _cut(e: dict, s: float, t: float) -> bool:
    return _overlaps(e, s, t) and not _inside(e, s, t)


class _Ctx:
    def __init__(self, ann: dict) -> None:
        self.ann = ann
        self.D = float(ann["duration_s"])
        self.vid = str(ann["video_id"])
        self.events = sorted(ann["events"], key=lambda e: (e["start"], e["end"]))
        self.by_inst: dict[int, list[dict]] = {}
        self.by_act: dict[int, list[dict]] = {}
        for e in self.events:
            self.by_inst.setdefault(int(e["instance_id"]), []).append(e)
            self.by_act.setdefault(int(e["activity_id"]), []).append(e)
        self.boxes = {int(k): v for k, v in ann.get("boxes", {}).items()}
        self.box_fps = float(ann.get("fps_boxes", 5.0))

    def W(self, window: str) -> float:
        return min(WINDOWS[window], self.D)

    def base(self, W: float) -> list[Interval]:
        return [(0.0, max(0.0, self.D - W))]

    def track(self, iid: int, s: float, t: float) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in b) for b in self.boxes.get(iid, ()) if s <= b[0] <= t)


# ------------------------------------------------------------------ per-type samplers


def _activity(ctx: _Ctx, W: float, rng, split_prob: float):
    # an activity uniformly (so the answer sets are not all {pick_up, scan, bag}), then one of its
    # events; the instance of that event is the query's object
    acts = sorted(a for a, evs in ctx.by_act.items() if any(e["end"] - e["start"] <= W for e in evs))
    if not acts:
        return None
    cands = ctx.by_act[acts[int(rng.integers(len(acts)))]]
    e = cands[int(rng.integers(len(cands)))]
    iid = int(e["instance_id"])
    evs = ctx.by_inst[iid]
    cur = _intersect(ctx.base(W), e["end"] - W, e["start"])
    for f in evs:
        cur = _subtract_open(cur, f["start"] - W, f["end"] - W)
        cur = _subtract_open(cur, f["start"], f["end"])
    if len(evs) > 1 and rng.random() < split_prob:
        j = int(rng.integers(len(evs) - 1))
        g0, g1 = evs[j]["end"], evs[j + 1]["start"]
        split = _intersect(cur, g0 - W, g1 - W) if e["end"] <= g0 else _intersect(cur, g0, g1)
        cur = split or cur
    s = _sample(cur, rng)
    if s is None:
        return None
    return dict(instance_id=iid, activity_id=None), s, lambda s, t: _activity_gt(ctx, iid, s, t)


def _activity_gt(ctx: _Ctx, iid: int, s: float, t: float):
    evs = ctx.by_inst[iid]
    if any(_cut(f, s, t) for f in evs):
        return None
    acts = tuple(sorted({int(f["activity_id"]) for f in evs if _inside(f, s, t)}))
    return dict(gt_activities=acts) if acts else None


def _by_activity(ctx: _Ctx, W: float, rng, conflicts):
    """Pick an activity uniformly among those with a feasible (event, window), then such an event."""
    options: dict[int, list[tuple[dict, list[Interval]]]] = {}
    for a, evs in ctx.by_act.items():
        for e in evs:
            cur = _intersect(ctx.base(W), e["end"] - W, e["start"])
            for f in conflicts(e):
                cur = _subtract_open(cur, f["start"] - W, f["end"])
            if cur:
                options.setdefault(a, []).append((e, cur))
    if not options:
        return None
    a = sorted(options)[int(rng.integers(len(options)))]
    e, cur = options[a][int(rng.integers(len(options[a])))]
    return e, _sample(cur, rng)


def _object(ctx: _Ctx, W: float, rng, split_prob: float):
    got = _by_activity(ctx, W, rng, lambda e: [f for f in ctx.by_act[int(e["activity_id"])] if f is not e])
    if got is None or got[1] is None:
        return None
    e, s = got
    a = int(e["activity_id"])
    return dict(instance_id=None, activity_id=a), s, lambda s, t: _object_gt(ctx, a, s, t)


def _object_gt(ctx: _Ctx, a: int, s: float, t: float):
    over = [f for f in ctx.by_act.get(a, []) if _overlaps(f, s, t)]
    if len(over) != 1 or not _inside(over[0], s, t):
        return None
    e = over[0]
    iid = int(e["instance_id"])
    boxes = ctx.track(iid, e["start"], e["end"])
    return dict(gt_boxes=boxes, gt_instance_id=iid) if boxes else None


def _time(ctx: _Ctx, W: float, rng, split_prob: float):
    got = _by_activity(ctx, W, rng, lambda e: [f for f in ctx.by_inst[int(e["instance_id"])]
                                                if f is not e and f["activity_id"] == e["activity_id"]])
    if got is None or got[1] is None:
        return None
    e, s = got
    a, iid = int(e["activity_id"]), int(e["instance_id"])
    return dict(instance_id=iid, activity_id=a), s, lambda s, t: _time_gt(ctx, a, iid, s, t)


def _time_gt(ctx: _Ctx, a: int, iid: int, s: float, t: float):
    over = [f for f in ctx.by_inst.get(iid, []) if f["activity_id"] == a and _overlaps(f, s, t)]
    if len(over) != 1 or not _inside(over[0], s, t):
        return None
    return dict(gt_interval=(float(over[0]["start"]), float(over[0]["end"])))


_SAMPLERS = {"activity": _activity, "object": _object, "time": _time}


def sample_queries(annotations: dict, n: int, rng: np.random.Generator,
                   types: Sequence[str] = NAMES, windows: Sequence[str] = ("short", "medium", "long"),
                   split_prob: float = 0.35, max_tries: int = 20) -> list[Query]:
    """Up to ``n`` valid queries, spread evenly over types x windows (cycled in random order).

    A (type, window) pair with no valid query in this video (e.g. an object query for an activity that
    happens many times in every long window) is dropped after ``max_tries`` failures, so fewer than
    ``n`` queries can come back for a short or quiet video. Window starts are rounded to 0.01 s.
    """
    for t in types:
        if t not in _SAMPLERS:
            known = [n for n in NAMES if n in _SAMPLERS]
            raise ValueError(f"unknown query type {t!r}; the generator samples: {', '.join(known)}")
    for w in windows:
        if w not in WINDOWS:
            raise ValueError(f"unknown window {w!r}; known: {', '.join(WINDOWS)}")
    ctx = _Ctx(annotations)
    out: list[Query] = []
    if n <= 0 or ctx.D <= 0 or not ctx.events:
        return out
    combos = [(t, w) for t in types for w in windows]
    fails = {c: 0 for c in combos}
    while len(out) < n:
        alive = [c for c in combos if fails[c] < max_tries]
        if not alive:
            break
        for j in rng.permutation(len(alive)).tolist():
            if len(out) >= n:
                break
            qtype, wname = alive[j]
            q = _one(ctx, qtype, wname, rng, split_prob, len(out))
            if q is None:
                fails[(qtype, wname)] += 1
            else:
                out.append(q)
    return out


def _one(ctx: _Ctx, qtype: str, wname: str, rng, split_prob: float, k: int) -> Query | None:
    W = ctx.W(wname)
    got = _SAMPLERS[qtype](ctx, W, rng, split_prob)
    if got is None:
        return None
    given, s, gt_fn = got
    for cand in (round(s, 2), s):
        cand = min(max(cand, 0.0), max(0.0, ctx.D - W))
        t = min(cand + W, ctx.D)
        gt = gt_fn(cand, t)
        if gt is not None and cand < t:
            return Query(qid=f"{ctx.vid}/{qtype}/{wname}/{k:04d}", video_id=ctx.vid, type=qtype, window=wname,
                         start=float(cand), end=float(t), **given, **gt)
    return None


def engine_request(q: Query, crop, k: int = 3) -> dict:
    """The Engine request that asks a generator query as a user would: what its type is given, the
    object as its picture (``crop``)."""
    row = BY_NAME[q.type]
    return {"type": q.type, "start": q.start, "end": q.end,
            "activity": q.activity_id if row.takes_activity else None,
            "object_image": crop if row.takes_object else None, "k": k}
