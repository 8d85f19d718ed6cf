"""Item events from oracle detections against the generator's annotations: the event path's ceiling
with a perfect detection head, and how it degrades with box jitter and misses.

    python -m tools.accuracy.item_events_eval --videos 8 --duration 1800 --jitter 0.05 --miss 0.1

Held-out videos (``heldout_video(seed, i)``) with scan avoidance ``--shrink`` (default 0.3,0.3,0.1:
many unscanned items), detections at 5 fps from ``frame_labels`` (no rendering), the true zones
(``scene_zones``), the scanner light as the frame labels give it (``--no-light``: none, so only till
reads scan), and with ``--till`` the till's good reads (``shrink.pos_scans``) fed as they happen.

A predicted event's instance is the instance most of its track's detections within the event came
from. An event matches a ground-truth event of the same activity and instance whose interval
overlaps it (one to one). ``unscanned_bagged``: of the instances the annotations mark bagged
unscanned or passed around, the share that end as a bag event with no scan (the alert's upper
bound); ``scanned_flagged``: of the instances scanned and bagged, the share whose bag event has no
scan (false alarms).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

import numpy as np

from edge_runtime.checkout import ACTIVITIES, PRODUCT_IDS, CheckoutVideo, heldout_video
from edge_runtime.checkout.shrink import pos_scans
from edge_runtime.items.detections import from_frame_labels
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.zones import scene_zones

FPS = 5.0


def run_video(v: CheckoutVideo, *, jitter: float, miss: float, light: bool, till: bool) -> tuple[list, dict]:
    """-> (predicted events as (activity, instance, start, end, scanned_at), annotations)."""
    ann = v.annotations()
    state = ItemState(scene_zones(v), bundle_id="oracle", fps=FPS)
    reads = [(t, PRODUCT_IDS[p]) for p, t in pos_scans(ann)] if till else []
    rng = np.random.default_rng(v.seed)
    seen: dict[int, list[tuple[float, int]]] = defaultdict(list)   # track id -> (t, instance) of its detections
    events = []
    for k in range(int(v.duration_s * FPS)):
        t = k / FPS
        taken = []
        while reads and reads[0][0] <= t:
            taken.append(reads.pop(0))
        state.add_till_reads(taken)
        labels = v.frame_labels(t)
        if not light:
            labels = {**labels, "scanner_flash": None}
        d = from_frame_labels(labels, jitter=jitter, miss=miss, rng=rng)
        events += state.update(d)
        for tid, i in state.tracker.last_seen.items():
            seen[tid].append((t, int(d.instance_ids[i])))
    events += state.flush()
    out = []
    for e in events:
        inside = [i for t, i in seen[e.track_id] if e.start <= t <= e.end] or [i for _, i in seen[e.track_id]]
        out.append((e.activity, Counter(inside).most_common(1)[0][0], e.start, e.end, e.scanned_at))
    return out, ann


def score(results: list[tuple[list, dict]]) -> dict:
    per = {a: Counter() for a in ACTIVITIES}
    unscanned = Counter()
    for pred, ann in results:
        truth = [(e["activity"], e["instance_id"], e["start"], e["end"]) for e in ann["events"]]
        used = set()
        for a, inst, s, e, _ in pred:
            per[a]["pred"] += 1
            hit = next((j for j, (ta, ti, ts, te) in enumerate(truth)
                        if j not in used and ta == a and ti == inst and s <= te and e >= ts), None)
            if hit is not None:
                used.add(hit)
                per[a]["matched"] += 1
        for ta, *_ in truth:
            per[ta]["true"] += 1
        bags = defaultdict(list)
        for a, inst, _, _, scanned in pred:
            if a == "bag":
                bags[inst].append(scanned)
        for rec in ann["instances"]:
            kind = ("unscanned" if rec.get("shrink") in ("bagged_unscanned", "pass_around")
                    else "scanned" if rec.get("scanned") and any(e["activity"] == "bag" and e["instance_id"] ==
                                                                 rec["instance_id"] for e in ann["events"]) else None)
            if kind is None:
                continue
            unscanned[kind] += 1
            if bags.get(rec["instance_id"]) and all(s is None for s in bags[rec["instance_id"]]):
                unscanned[kind + "_flagged"] += 1
    table = {a: {"true": c["true"], "pred": c["pred"], "recall": c["matched"] / c["true"] if c["true"] else None,
                 "precision": c["matched"] / c["pred"] if c["pred"] else None} for a, c in per.items()}
    return {"activities": table,
            "unscanned_bagged": unscanned["unscanned_flagged"] / max(1, unscanned["unscanned"]),
            "unscanned_items": unscanned["unscanned"],
            "scanned_flagged": unscanned["scanned_flagged"] / max(1, unscanned["scanned"]),
            "scanned_items": unscanned["scanned"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--duration", type=float, default=1800.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shrink", default="0.3,0.3,0.1")
    ap.add_argument("--jitter", type=float, default=0.05)
    ap.add_argument("--miss", type=float, default=0.1)
    ap.add_argument("--no-light", action="store_true", help="the head sees no scanner light")
    ap.add_argument("--till", action="store_true", help="feed the till's good reads")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    results = []
    for i in range(a.videos):
        s, lk = heldout_video(a.seed, i)
        v = CheckoutVideo(s, a.duration, look=lk, shrink=a.shrink)
        results.append(run_video(v, jitter=a.jitter, miss=a.miss, light=not a.no_light, till=a.till))
    r = score(results)
    print(f"{a.videos} held-out videos x {a.duration:g} s, shrink {a.shrink}, jitter {a.jitter:g}, miss {a.miss:g}, "
          f"light {'off' if a.no_light else 'on'}, till {'on' if a.till else 'off'}")
    for act, c in r["activities"].items():
        rec = "-" if c["recall"] is None else f"{c['recall']:.3f}"
        pre = "-" if c["precision"] is None else f"{c['precision']:.3f}"
        print(f"  {act:12s} true {c['true']:4d}  pred {c['pred']:4d}  recall {rec}  precision {pre}")
    print(f"  unscanned items bagged with no scan: {r['unscanned_bagged']:.3f} of {r['unscanned_items']}; "
          f"scanned items flagged: {r['scanned_flagged']:.3f} of {r['scanned_items']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
