"""Which product an item track shows: named by the event head's class vote, by its identity (the memory
reader's, edge_runtime/items/identity.py) against each class's drawn pictures, and by both.

    python -m tools.accuracy.track_identity --eval-seed 1 --videos 2 --video-s 600 --json out.json

Each held-out video (``heldout_video(seed, i)``) streams through the bundle's event path as the runtime
does. Every track that ends with at least ``--min-hits`` detections is given the ground-truth instance
its boxes overlap most (mean IoU over its last 60 detected frames, at least 0.3; others are left
out). Per track:

- vote: the track's class, as the runtime names it (score-weighted vote of its detections, each named
  with ``--identity-weight``, default the runtime's ``IDENTITY_WEIGHT``; 0: by the class alone);
- identity: the class whose drawn pictures (edge_runtime/query/class_pictures.py) its identity matches
  best;
- own picture: the cosine of its identity with its instance's own generator picture, and with each other
  class's pictures: what a product asked by a picture is matched at (``IDENTITY_MATCH``).

Reported: the share named right each way, and for cuts of the cosine the share of tracks that match
their own product's pictures and of (track, other product) pairs that match too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edge_runtime.items.head_decode import box_iou

CUTS = (0.3, 0.4, 0.5, 0.6, 0.7)


def owner(history: list, truth: dict[int, np.ndarray], fps: float) -> tuple[int | None, float]:
    """The instance whose boxes a track's last 60 boxes overlap most: (instance id, mean IoU)."""
    best, best_iou = None, 0.0
    for iid, rows in truth.items():
        ious = []
        for t, *box in history[-60:]:
            k = int(np.argmin(np.abs(rows[:, 0] - t)))
            near = abs(rows[k, 0] - t) <= 0.55 / fps
            ious.append(float(box_iou(np.asarray([box]), rows[k:k + 1, 1:5])[0, 0]) if near else 0.0)
        m = float(np.mean(ious))
        if m > best_iou:
            best, best_iou = iid, m
    return best, best_iou


def video_tracks(eng, video, min_hits: int) -> list[dict]:
    """Stream ``video`` through ``eng``'s event path; -> one row per ended track with a ground-truth owner."""
    from edge_runtime.items.identity import match
    from edge_runtime.query.class_pictures import class_pictures

    ann = video.annotations()
    truth = {int(k): np.asarray(v, np.float64) for k, v in ann["boxes"].items() if v}
    product = {int(i["instance_id"]): i["product"] for i in ann["instances"]}
    pics = class_pictures(list(eng.products), eng.frame_size)
    classes = {c: eng.picture_identities(p) for c, p in pics.items()}
    stream = eng.new_stream()
    ended = []
    record = stream.items.identities.record

    def keep(tracks):  # the tracks as they end, before only their identity is kept
        ended.extend((tr.identity, eng.products[tr.class_id], [r[:5] for r in tr.history])
                     for tr in tracks if tr.identity is not None and tr.hits >= min_hits)
        record(tracks)

    stream.items.identities.record = keep
    frames = video.frames(eng.intake_fps)
    while chunk := [f for _, f in zip(range(eng.intake_batch * 10), frames)]:
        eng.ingest(stream, np.stack([f for _, f in chunk]), np.asarray([t for t, _ in chunk], np.float64))
    stream.items.flush()
    rows, own = [], {}
    for ident, vote, history in ended:
        iid, fit = owner(history, truth, eng.intake_fps)
        if iid is None or fit < 0.3:
            continue
        if iid not in own:
            own[iid] = eng.picture_identities([video.object_crop(iid, eng.frame_size)])
        sims = {c: match(ident, e) for c, e in classes.items()}
        rows.append({"truth": product[iid], "vote": vote, "identity": max(sims, key=sims.get),
                     "own_picture": round(match(ident, own[iid]), 4),
                     "classes": {c: round(v, 4) for c, v in sims.items()}, "overlap": round(fit, 3)})
    return rows


def summary(rows: list[dict]) -> dict:
    same = np.array([r["classes"][r["truth"]] for r in rows])
    own = np.array([r["own_picture"] for r in rows])
    other = np.array([v for r in rows for c, v in r["classes"].items() if c != r["truth"]])
    return {"tracks": len(rows),
            "named_right": {"vote": round(float(np.mean([r["vote"] == r["truth"] for r in rows])), 4),
                            "identity": round(float(np.mean([r["identity"] == r["truth"] for r in rows])), 4)},
            "cuts": [{"cut": c, "own_product_pictures": round(float((same >= c).mean()), 4),
                      "own_picture": round(float((own >= c).mean()), 4),
                      "other_products": round(float((other >= c).mean()), 4)} for c in CUTS]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.track_identity", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="engines/lvm-tiny-fp32")
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--video-s", type=float, default=600.0)
    ap.add_argument("--min-hits", type=int, default=5, help="least detections of a track counted")
    ap.add_argument("--identity-weight", type=float, help="name detections with this weight (event_path.py "
                    "IDENTITY_WEIGHT, the default; 0: by the class alone)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from edge_runtime.checkout import CheckoutVideo, heldout_video
    from edge_runtime.engine.engine import Engine

    with Engine(args.bundle, threads=1) as eng:
        if eng.events is None or not eng.events.identity:
            print(f"track_identity: {args.bundle}: its event head carries no identity (export it with the memory "
                  "reader)", file=sys.stderr)
            return 2
        if args.identity_weight is not None:
            eng.events.identity_weight = args.identity_weight
        rows = []
        for i in range(args.videos):
            seed, look = heldout_video(args.eval_seed, i)
            rows += video_tracks(eng, CheckoutVideo(seed, args.video_s, look=look, size=eng.frame_size), args.min_hits)
            print(f"video {i}: {len(rows)} tracks so far", flush=True)
        weight = eng.events.identity_weight
    result = {"tool": "tools/accuracy/track_identity.py", "eval_seed": args.eval_seed, "videos": args.videos,
              "video_s": args.video_s, "identity_weight": weight, **summary(rows), "rows": rows}
    s = result
    print(f"{s['tracks']} tracks named right: by the vote (identity weight {weight:g}) {s['named_right']['vote']:.1%}, by identity "
          f"{s['named_right']['identity']:.1%}")
    for c in s["cuts"]:
        print(f"cosine >= {c['cut']}: own product's pictures {c['own_product_pictures']:.1%}, own picture "
              f"{c['own_picture']:.1%}, another product's {c['other_products']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
