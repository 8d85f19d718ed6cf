"""The best activity answers a reader could give if it could not tell same-looking items apart.

    python -m tools.accuracy.activity_ceiling --seed 0 --seed 1 --seed 2 --videos 16 --json out.json

An activity query shows one item (a picture of it) and asks what was done to *that* item in the
window. Items of one product class are drawn alike (a per-item label colour and a slight tint are
all that differ), so a reader that matches the picture by product class sees the activities of
every item of that class in the window. This tool scores ideal readers on the generator's ground
truth alone (no model, no rendering), on the held-out videos and present activity queries
``lvm-eval --videos N --queries Q --seed S`` asks:

- ``no_video``: activities ranked by the bundle's class prior (what the reader adds to its scores);
- ``class_union``: knows exactly which activities any item of the asked class had in the window;
- ``class_share``: ranks each activity by the share of the class's items in the window that had it
  (the best any reader can do that identifies items by class alone);
- ``class_and_label``: the same share among the class's items with the asked item's label colour
  (a reader that also tells label colours apart);
- ``item``: knows the asked item's own activities (100 % by construction).

Ties are broken by the class prior. The activity target, the no-video ranking + 12 points, is
printed beside each window.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

READERS = ("no_video", "class_union", "class_share", "class_and_label", "item")
TARGET_MARGIN = 0.12  # activity R@1x at least the no-video ranking + 12 points


def item_label_colours(video) -> dict[int, int]:
    """Each item's label colour (its index among its product's ``label_options``) in a CheckoutVideo:
    the generator's script knows it; the annotations do not carry it."""
    return {int(i): int(x.label_variant) for i, x in video.script.instances.items()}


def query_scores(q, inside: list[dict], label: dict[int, int], prior: np.ndarray) -> dict:
    """Each ideal reader's activity scores (C,) for one present activity query ``q``; ``inside``: the
    events of items of its product class that lie in its window."""
    def share(evs: list[dict]) -> np.ndarray:
        items = {int(e["instance_id"]) for e in evs}
        done = np.zeros(len(prior))
        for a in range(len(prior)):
            done[a] = len({int(e["instance_id"]) for e in evs if int(e["activity_id"]) == a})
        return done / max(1, len(items))

    tie = 1e-3 * prior
    by_class = share(inside)
    own = np.zeros(len(prior))
    own[list(q.gt_activities)] = 1.0
    return {"no_video": prior.copy(), "class_union": (by_class > 0) + tie, "class_share": by_class + tie,
            "class_and_label": share([e for e in inside if label[int(e["instance_id"])] == label[q.instance_id]]) + tie,
            "item": own + tie}


def video_records(seed: int, look: int, video_s: float, queries: int, prior: np.ndarray, size: int = 112) -> list[dict]:
    """Per present activity query of one held-out video: its window, how many items of its class had
    events in it, and each ideal reader's R@1x."""
    from edge_runtime.checkout import CheckoutVideo, sample_queries
    from edge_runtime.checkout.metrics import score_query

    cv = CheckoutVideo(seed=seed, duration_s=video_s, size=size, look=look)
    ann = cv.annotations()
    cls = {int(x["instance_id"]): int(x.get("class_id", x["instance_id"])) for x in ann["instances"]}
    label = item_label_colours(cv)
    out = []
    for q in sample_queries(ann, queries, np.random.default_rng(seed)):  # lvm-eval's present queries
        if q.type != "activity":
            continue
        inside = [e for e in ann["events"] if cls[int(e["instance_id"])] == cls[q.instance_id]
                  and q.start <= e["start"] and e["end"] <= q.end]
        rec = {"window": q.window, "class_items": len({int(e["instance_id"]) for e in inside})}
        for name, sc in query_scores(q, inside, label, prior).items():
            rec[name] = score_query(q, {"scores": sc.tolist(), "ranked": np.argsort(-sc, kind="stable").tolist()})["recall@1x"]
        out.append(rec)
    return out


def summarise(records: list[dict]) -> dict:
    out = {}
    for w in ("short", "medium", "long"):
        rs = [r for r in records if r["window"] == w]
        if not rs:
            continue
        row = {name: round(100 * float(np.mean([r[name] for r in rs])), 1) for name in READERS}
        row.update(queries=len(rs), target=round(row["no_video"] + 100 * TARGET_MARGIN, 1),
                   class_items_mean=round(float(np.mean([r["class_items"] for r in rs])), 2),
                   share_with_other_items=round(float(np.mean([r["class_items"] > 1 for r in rs])), 3))
        out[w] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.activity_ceiling", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="engines/lvm-tiny-fp32", help="bundle whose class prior ranks ties (its manifest)")
    ap.add_argument("--seed", type=int, action="append", help="held-out generator seed, as lvm-eval --seed "
                    "(repeat for several; default 0)")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args(argv)
    if args.videos < 1 or args.queries < 1 or args.video_s <= 0:
        ap.exit(2, f"{ap.prog}: --videos, --queries and --video-s must be positive\n")
    manifest = Path(args.bundle) / "manifest.json"
    try:
        prior = np.asarray(json.loads(manifest.read_text())["answers"]["reader"]["prior"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        ap.exit(2, f"{ap.prog}: {manifest}: no reader class prior ({type(err).__name__}: {err})\n")
    from edge_runtime.checkout import heldout_video

    tables = {}
    for seed in args.seed or [0]:
        records = []
        for i in range(args.videos):
            s, look = heldout_video(seed, i)
            records += video_records(s, look, args.video_s, args.queries, prior)
        tables[str(seed)] = table = summarise(records)
        print(f"seed {seed}\n{'window':8s} {'queries':>7s} " + " ".join(f"{n:>15s}" for n in READERS) + f" {'target':>7s}")
        for w, row in table.items():
            print(f"{w:8s} {row['queries']:7d} " + " ".join(f"{row[n]:15.1f}" for n in READERS) + f" {row['target']:7.1f}")
    if args.json:
        out = {"tool": "tools/accuracy/activity_ceiling.py", "bundle": args.bundle, "videos": args.videos,
               "video_s": args.video_s, "queries_per_video": args.queries, "readers": list(READERS),
               "by_seed": tables}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
