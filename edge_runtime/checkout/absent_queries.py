"""Absent queries: questions whose true answer is "not seen" in the asked window (numpy only).

ReST asks only about things that happened, so a model that always answers scores the same as one
that knows when it has no evidence. These queries complete the benchmark:

- activity (object + window): a product none of whose instances (same class: identical look) is
  visible at any time in the window;
- object (activity + window): an activity that happens in the video but at no time in the window;
- time (activity + object + window): an object that *is* visible in the window, with an activity
  that happens in the video but never, in the window, to that object or one of its class (the identity matches, the
  activity does not: the hard case).

Ground truth fields stay empty, so ``metrics.score_query`` gives no recall for them; they carry
``absent=True`` and their qid holds ``/absent-``. Windows have the ReST lengths and are drawn uniformly over the video.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from edge_runtime.query.types import NAMES

from .queries import WINDOWS, Query

# added to a video's query seed: absent queries draw from their own stream, so adding them leaves
# the present queries of the same seed as they were
ABSENT_SEED = 7919


def is_absent(q: Query) -> bool:
    return q.absent or "/absent-" in q.qid


def _visible(ann: dict) -> dict[int, tuple[float, float]]:
    """instance -> (first, last) second it is visible: its box track, else appear / vanish."""
    out = {}
    for inst in ann["instances"]:
        iid = int(inst["instance_id"])
        track = ann.get("boxes", {}).get(str(iid)) or ann.get("boxes", {}).get(iid)
        if track:
            out[iid] = (float(track[0][0]), float(track[-1][0]))
        elif "appear" in inst:
            out[iid] = (float(inst["appear"]), float(inst["vanish"]))
    return out


def sample_absent_queries(annotations: dict, n: int, rng: np.random.Generator, *,
                          types: Sequence[str] = NAMES,
                          windows: Iterable[str] = ("short", "medium", "long"),
                          crop_ids: Iterable[int] | None = None, max_tries: int = 50) -> list[Query]:
    """Up to ``n`` absent queries, types and windows cycled evenly. ``crop_ids``: the instances that
    have a picture to ask with (default: all)."""
    ann = annotations
    D = float(ann["duration_s"])
    vid = str(ann["video_id"])
    vis = _visible(ann)
    cls = {int(i["instance_id"]): int(i.get("class_id", i["instance_id"])) for i in ann["instances"]}
    askable = sorted(set(vis) & (set(int(i) for i in crop_ids) if crop_ids is not None else set(vis)))
    events = ann.get("events", [])
    acts = sorted({int(e["activity_id"]) for e in events})
    combos = [(t, w) for t in types for w in windows]
    out: list[Query] = []
    tries = 0
    while len(out) < n and tries < max_tries * max(n, 1) and askable and acts:
        tries += 1
        qtype, wname = combos[int(rng.integers(len(combos)))]
        W = min(WINDOWS[wname], D)
        s = round(float(rng.uniform(0.0, max(0.0, D - W))), 2)
        e = min(s + W, D)
        seen_now = {i for i, (a, b) in vis.items() if a <= e and b >= s}
        seen_cls = {cls[i] for i in seen_now}
        over = [ev for ev in events if ev["start"] < e and ev["end"] > s]
        iid = act = None
        if qtype == "activity":
            cands = [i for i in askable if cls[i] not in seen_cls]
            if cands:
                iid = cands[int(rng.integers(len(cands)))]
        elif qtype == "object":
            cands = [a for a in acts if not any(int(ev["activity_id"]) == a for ev in over)]
            if cands:
                act = cands[int(rng.integers(len(cands)))]
        else:
            # a product of the same class looks the same: its event would be a right answer
            pairs = [(i, a) for i in askable if i in seen_now for a in acts
                     if not any(int(ev["activity_id"]) == a and cls.get(int(ev["instance_id"])) == cls[i]
                                for ev in over)]
            if pairs:
                iid, act = pairs[int(rng.integers(len(pairs)))]
        if iid is None and act is None:
            continue
        out.append(Query(qid=f"{vid}/absent-{qtype}/{wname}/{len(out):04d}", video_id=vid, type=qtype,
                         window=wname, start=s, end=e, instance_id=iid, activity_id=act, absent=True))
    return out
