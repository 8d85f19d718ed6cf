"""A grid of alert-rule thresholds replayed over saved model events: how to choose a rule's defaults.

    python -m tools.accuracy.alerts_eval --events model --eval-seed 1 --videos 24 --save-events /tmp/seed1.json
    python -m tools.accuracy.alerts_sweep --events-from /tmp/seed1.json --rule bagged_without_scan --scans pos \\
        --grid min_confidence=0.5,0.6,0.7 --grid same_bag_s=0,1,2 --json docs/accuracy/alerts_tuning_pos.json

Every combination of the ``--grid`` values (the rule's defaults for the rest) is replayed exactly as
``alerts_eval --events-from`` replays one (tools/accuracy/alerts_eval.py: the same evaluation loop and
scoring), in seconds. Choose on a tuning seed; report the chosen setting on another.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from edge_runtime.alerts.rules import RULES
from edge_runtime.checkout import CheckoutVideo, ShrinkRates, heldout_video
from tools.accuracy.alerts_eval import load_events, paid_bags, parse_sets, replay, score, summarise, targets, till_events


def parse_grid(rule: str, items: list[str]) -> dict[str, list[float]]:
    """``KEY=V1,V2,...`` -> {key: [values]}, each value checked as ``--set`` checks it; ValueError (one line)."""
    grid: dict[str, list[float]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,... e.g. min_confidence=0.5,0.7")
        vals = []
        for v in values.split(","):
            vals.append(parse_sets([f"{rule}.{key.strip()}={v.strip()}"])[rule][key.strip()])
        grid[key.strip()] = vals
    return grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.alerts_sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events-from", required=True, metavar="FILE", help="model events saved by alerts_eval --save-events")
    ap.add_argument("--rule", required=True, choices=sorted(RULES))
    ap.add_argument("--scans", choices=("vision", "pos"), default="vision",
                    help="where the rule's scans come from (as alerts_eval --scans)")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                    help="a threshold and the values to try (repeatable); the others keep their defaults")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    try:
        grid = parse_grid(args.rule, args.grid)
        doc = load_events(args.events_from)
    except ValueError as err:
        print(f"alerts_sweep: {err}", file=sys.stderr)
        return 2
    rates = ShrinkRates(**doc["shrink"])
    videos = []
    for i, v in enumerate(doc["per_video"]):
        seed, look = heldout_video(doc["eval_seed"], i)
        ann = CheckoutVideo(seed=seed, duration_s=doc["video_s"], size=doc["frame_size"], look=look,
                            shrink=rates).annotations()
        videos.append((v["commits"], ann))
    scanned = sum(sum(bool(x["scanned"]) for x in ann["instances"]) for _, ann in videos)
    hours = doc["videos"] * doc["video_s"] / 3600
    rows = []
    print(f"{args.rule}, scans {args.scans}: {doc['videos']} videos of seed {doc['eval_seed']}, {scanned} scanned items")
    for combo in itertools.product(*grid.values()):
        th = {**RULES[args.rule].thresholds, **dict(zip(grid, combo))}
        per = []
        for commits, ann in videos:
            till = till_events(ann) if args.scans == "pos" else []
            raised = replay(commits, {args.rule: th}, doc["labels"], args.scans, till)
            per.append(score(raised, targets(ann)[args.rule], paid_bags(ann)))
        s = summarise(per, scanned, hours)
        lat = [x for p in per for x in p["latency_s"]]
        p95 = round(float(np.percentile(lat, 95)), 1) if lat else None
        rows.append({"thresholds": th, **{k: s[k] for k in ("targets", "found", "false_alerts", "false_per_100_scanned")},
                     "latency_s": {**(s["latency_s"] or {}), "p95": p95}})
        print(f"{dict(zip(grid, combo))}: found {s['found']} of {s['targets']}, {s['false_alerts']} false "
              f"({s['false_per_100_scanned']} per 100 scanned items), latency p95 {p95} s")
    if args.json:
        out = {"tool": "tools/accuracy/alerts_sweep.py", "events_from": args.events_from, "bundle": doc["bundle"],
               "reader_file_sha256": doc.get("reader_file_sha256"), "eval_seed": doc["eval_seed"],
               "videos": doc["videos"], "rule": args.rule, "scans": args.scans, "scanned_items": scanned, "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
