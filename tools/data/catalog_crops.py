"""Does a catalog product with several pictures answer better than one picture? Measured with a bundle.

    python -m tools.data.catalog_crops --bundle engines/lvm-tiny-fp32 --json docs/accuracy/catalog_crops.json

On the held-out generator videos lvm-eval scores (same seeds, looks and queries), the device
runtime's Engine streams each video once; every activity and time query is then asked with each of
the queried instance's catalog pictures:

- "generator": the generator's own picture of the instance (alone on grey; what lvm-eval asks with);
- "cut 1..N": the instance cut from the video at N of its boxes (the largest box in each of N equal
  parts of its track, the frame rendered at --cut-size px and framed like lvm-data's cuts), what a
  shop gets by cropping its own camera's footage.

Per query, the per-picture answers are combined with edge_runtime/query/by_product.py's rule (the one
the API uses) and with two alternatives, and scored with the ReST metrics (Recall@1x / @3x):

    one picture:  generator alone; each cut alone (mean over cuts)
    combined:     the rule over all pictures; over the cuts only
    alternatives: mean of the scores (activity) / summed probabilities (time) instead of the max;
                  one query with the pictures' backbone tokens averaged
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from edge_runtime.checkout.metrics import aggregate, score_query  # noqa: E402
from edge_runtime.query.by_product import RULE, combine  # noqa: E402


def cut_boxes(track: list, n: int) -> list[list[float]]:
    """The largest box in each of ``n`` equal parts (by time) of a track: views at different moments."""
    from export.dataset.video_data import best_box

    track = sorted(track, key=lambda b: b[0])
    parts = [p for p in np.array_split(np.arange(len(track)), n) if len(p)]
    return [best_box([track[i] for i in p]) for p in parts]


def instance_pictures(video, ann: dict, iid: int, size: int, cuts: int, cut_size: int) -> list[np.ndarray]:
    """[generator picture, cut 1, ..., cut n] of one instance."""
    from edge_runtime.checkout import CheckoutVideo
    from export.dataset.video_data import square_crop

    big = CheckoutVideo(seed=video.seed, duration_s=video.duration_s, size=cut_size, look=video.look)
    pics = [video.object_crop(iid, size)]
    track = ann["boxes"].get(str(iid)) or []
    for t, *box in cut_boxes(track, cuts) if track else []:
        pics.append(square_crop(big.frame(t), box))
    if len(pics) < cuts + 1:
        raise SystemExit(f"{video.video_id}: instance {iid} has {len(track)} boxes, fewer than --cuts {cuts}")
    return pics


def combine_mean(answers: list[dict], qtype: str, k: int) -> dict:
    """The alternative rule: mean activity scores; time intervals pooled with probabilities summed
    over pictures (an interval several pictures agree on rises)."""
    out = dict(answers[0])
    if qtype == "activity" and all("scores" in a for a in answers):
        s = np.mean([a["scores"] for a in answers], axis=0)
        out["scores"], out["ranked"] = s.tolist(), np.argsort(-s, kind="stable").tolist()
    elif qtype == "time" and all("intervals" in a for a in answers):
        acc: dict[tuple, list] = {}
        for a in answers:
            for s_, e_, p in a["intervals"]:
                key = (round(s_, 6), round(e_, 6))
                acc.setdefault(key, [s_, e_, 0.0])[2] += p / len(answers)
        out["intervals"] = sorted(acc.values(), key=lambda iv: -iv[2])[:k]
    return out


def summary(records: list[dict]) -> dict:
    agg = aggregate(records)
    per_type = {}
    for t in ("activity", "time"):
        for k in ("recall@1x", "recall@3x"):
            vals = [r[k] for r in records if r["type"] == t and r.get(k) is not None]
            per_type.setdefault(t, {})[k] = float(np.mean(vals)) if vals else None
        per_type[t]["queries"] = sum(1 for r in records if r["type"] == t and r.get("recall@1x") is not None)
    return {"all_windows": per_type, "recall@1x": {t: agg["recall@1x"][t] for t in ("activity", "time")},
            "recall@3x": {t: agg["recall@3x"][t] for t in ("activity", "time")}}


def paired(better: list[dict], base: list[list[dict]]) -> dict:
    """R@1x of ``better`` minus the mean R@1x of the ``base`` records, per query of each type: the
    mean difference and its standard error (the same queries on both sides, so the spread of the
    queries' difficulty cancels)."""
    out = {}
    for t in ("activity", "time"):
        d = [r["recall@1x"] - np.mean([b[i]["recall@1x"] for b in base]) for i, r in enumerate(better)
             if r["type"] == t and r["recall@1x"] is not None]
        out[t] = {"recall@1x_diff": float(np.mean(d)), "stderr": float(np.std(d, ddof=1) / np.sqrt(len(d))),
                  "queries": len(d)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.data.catalog_crops", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="engines/lvm-tiny-fp32")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cuts", type=int, default=3, help="cuts from the video per instance")
    ap.add_argument("--cut-size", type=int, default=448, help="frame side the cuts are taken from, px")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    from edge_runtime.checkout import heldout_video
    from edge_runtime.checkout.queries import engine_request
    from edge_runtime.engine.engine import Engine
    from export.dataset.video_data import attach_queries, render_video

    t0 = time.time()
    names = ["generator"] + [f"cut {j + 1}" for j in range(args.cuts)]
    variants = {"generator alone": [], "one cut alone (mean over cuts)": [], f"combined: {len(names)} pictures": [],
                f"combined: {args.cuts} cuts": [], f"mean rule: {len(names)} pictures": [],
                f"token mean: {len(names)} pictures": []}
    per_cut: list[list[dict]] = [[] for _ in range(args.cuts)]
    looks = []
    with Engine(args.bundle, threads=args.threads) as eng:
        size = eng.frame_size
        for i in range(args.videos):
            s, look = heldout_video(args.seed, i)
            looks.append(look)
            v = attach_queries(render_video(s, args.video_s, size, eng.fps, look=look), args.queries, s)
            stream = eng.new_stream()
            eng.ingest(stream, v.frames, v.times)  # as lvm-eval's engine path: the last partial clip is not flushed
            qs = [q for q in v.queries if q.type in ("activity", "time")]
            pics = {iid: instance_pictures(v.video, v.annotations, iid, size, args.cuts, args.cut_size)
                    for iid in sorted({q.instance_id for q in qs})}
            reqs = [engine_request(q, p) for q in qs for p in pics[q.instance_id]]
            answers = eng.answer(stream, reqs)
            mean_tokens = {iid: eng.encode_images(p).mean(axis=0) for iid, p in pics.items()}
            token_reqs = [{**engine_request(q, None), "object_image": None, "object_tokens": mean_tokens[q.instance_id]}
                          for q in qs]
            token_answers = eng.answer(stream, token_reqs)
            n = len(names)
            for j, q in enumerate(qs):
                per = answers[j * n:(j + 1) * n]
                variants["generator alone"].append(score_query(q, per[0]))
                for c in range(args.cuts):
                    per_cut[c].append(score_query(q, per[1 + c]))
                variants[f"combined: {n} pictures"].append(score_query(q, combine(per, q.type, 3)))
                variants[f"combined: {args.cuts} cuts"].append(score_query(q, combine(per[1:], q.type, 3)))
                variants[f"mean rule: {n} pictures"].append(score_query(q, combine_mean(per, q.type, 3)))
                variants[f"token mean: {n} pictures"].append(score_query(q, token_answers[j]))
            print(f"video {i + 1}/{args.videos} (seed {s}, look {look}): {len(qs)} queries, "
                  f"{time.time() - t0:.0f} s", flush=True)
    results = {name: summary(recs) for name, recs in variants.items() if recs}
    cuts_each = [summary(recs) for recs in per_cut]
    # each cut alone, averaged over the cuts: what one picture from the footage gives
    mean_cut = {"all_windows": {t: {k: float(np.mean([c["all_windows"][t][k] for c in cuts_each]))
                                    for k in ("recall@1x", "recall@3x")} for t in ("activity", "time")}}
    for t in ("activity", "time"):
        mean_cut["all_windows"][t]["queries"] = cuts_each[0]["all_windows"][t]["queries"]
    results["one cut alone (mean over cuts)"] = mean_cut
    results["each cut alone"] = [c["all_windows"] for c in cuts_each]
    n = len(names)
    results["paired"] = {
        f"combined: {n} pictures - generator alone": paired(variants[f"combined: {n} pictures"],
                                                             [variants["generator alone"]]),
        f"combined: {args.cuts} cuts - one cut alone": paired(variants[f"combined: {args.cuts} cuts"], per_cut)}
    out = {"meta": {"bundle": args.bundle, "videos": args.videos, "video_s": args.video_s,
                    "queries_per_video": args.queries, "seed": args.seed, "looks": looks, "cuts": args.cuts,
                    "cut_size": args.cut_size, "rule": RULE, "seconds": round(time.time() - t0, 1),
                    "command": "python -m tools.data.catalog_crops " + " ".join(sys.argv[1:])},
           "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        if name in ("each cut alone", "paired"):
            continue
        a, t = r["all_windows"]["activity"], r["all_windows"]["time"]
        print(f"{name:34s} activity R@1x {a['recall@1x']:.3f} R@3x {a['recall@3x']:.3f}   "
              f"time R@1x {t['recall@1x']:.3f} R@3x {t['recall@3x']:.3f}")
    for name, r in results["paired"].items():
        print(f"{name}: " + "   ".join(f"{t} R@1x {v['recall@1x_diff']:+.3f} +- {v['stderr']:.3f}" for t, v in r.items()))


if __name__ == "__main__":
    main()
