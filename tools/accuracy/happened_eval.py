"""Event precision / recall of ``what_happened`` over 5-minute windows of held-out generator videos.

    python -m tools.accuracy.happened_eval --json docs/lab/accuracy/happened.json
    python -m tools.accuracy.happened_eval --eval-seed 1 --sweep      # tuning: other videos, every setting
    python -m tools.accuracy.happened_eval --eval-seed 1 --videos 4 --floors 0.5,0.55,0.6,0.65 --one-activity off,0.3,0.5
    python -m tools.accuracy.happened_eval --eval-seed 2 --videos 4 --queries 300 --json docs/accuracy/happened_items.json

Each video (``heldout_video(seed, i)``: seeds training never used; i = 0 in a look training never
saw, i = 1 in a training look) is streamed once through the bundle (an Engine, the shipped reader,
catalog empty: the bundle's product classes by their drawn pictures), then ``what_happened`` answers
each 5-minute window. Ground truth: the video's annotated events overlapping the window (activity,
the product class of its instance, start, end). A predicted event is right when an unmatched truth
event has the same activity and product and tIoU > 0.3 (greedy, most confident first). Precision =
right / predicted, recall = matched truth / truth, summed over all windows. ``--sweep`` tries the
settings (least confidence, candidate activities per product, one product per interval);
``--floors`` and ``--one-activity`` try every pair of those floors and ``one_activity_each`` overlaps
(``off``: every activity's reading kept) with the shipped rest. Report the chosen setting on videos that
were not used to choose it. ``--losses`` says, for every truth event
the shipped setting misses, the first step of ``what_happened`` that lost it (``LOSSES``).
With an event head (not ``--no-items``) the shipped setting is also run on the memory alone, the item
events are scored alone, and ``--queries N`` asks queries of every type (present and absent) of the
reader alone and judged with the item events (tools/accuracy/answers_with_items.py).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from edge_runtime.checkout import CheckoutVideo
from edge_runtime.checkout.metrics import tiou
from edge_runtime.checkout.scene import heldout_video
from edge_runtime.engine.engine import Engine
from edge_runtime.engine.stream_state import StreamState
from edge_runtime.query import happened
from edge_runtime.query.happened import what_happened
from edge_runtime.query.item_events import item_events, item_path
from tools.accuracy import answers_with_items
from tools.repo_paths import REPO

TIOU = 0.3


def truth(ann: dict, start: float, end: float) -> list[tuple[str, str, float, float]]:
    """(activity, product, start, end) of the annotated events overlapping [start, end], clipped to it."""
    product = {i["instance_id"]: i["product"] for i in ann["instances"]}
    return [(e["activity"], product[e["instance_id"]], max(e["start"], start), min(e["end"], end))
            for e in ann["events"] if e["end"] > start and e["start"] < end]


# the steps of what_happened, in order, at which a truth event can be lost
LOSSES = ("product judged not seen", "activity not among the candidates", "time answer judged not seen",
          "no interval at tIoU > 0.3", "interval below the confidence floor", "merged, or another product kept",
          "another activity kept for the product")


def matched(pred, gt) -> set[int]:
    """Indices of the truth events ``pred`` matches: greedy, most confident prediction first (a
    prediction is right when it matches a truth event, so right predictions = matched truth events)."""
    used: set[int] = set()
    for p in sorted(pred, key=lambda e: -e.confidence):
        for j, g in enumerate(gt):
            if j not in used and g[0] == p.activity and g[1] == p.product and tiou((p.start, p.end), g[2:]) > TIOU:
                used.add(j)
                break
    return used


def lost_at(steps: dict, g: tuple[str, str, float, float], labels: list[str], engine) -> str:
    """The first step of what_happened (its ``trace``) that lost truth event ``g`` (one of LOSSES)."""
    activity, product, start, end = g
    a = steps["activity"].get(product)
    if a is None or not happened.happened_at_all(engine, a):
        return LOSSES[0]
    act = labels.index(activity)
    t = steps["time"].get((product, act))
    if t is None:
        return LOSSES[1]
    if not happened.happened_at_all(engine, t) or not t.get("intervals"):
        return LOSSES[2]
    if not any(tiou((float(s), float(e)), (start, end)) > TIOU for s, e, _ in t["intervals"]):
        return LOSSES[3]
    if not any(k[0] == product and k[1] == act and tiou(k[2:4], (start, end)) > TIOU for k in steps["kept"]):
        return LOSSES[4]
    if not any(k[0] == product and k[1] == act and tiou(k[2:4], (start, end)) > TIOU for k in steps["one_product"]):
        return LOSSES[5]
    return LOSSES[6]


def run(streamed: list[tuple[Engine, StreamState, dict]], window_s: float, floor: float | None, top: int, exclusive: bool,
        one_activity: float | None = happened.ONE_ACTIVITY_TIOU, losses: bool = False, items: bool = True,
        confirmed: float | None = None) -> dict:
    """Precision and recall of one setting (``floor`` and ``confirmed``: what_happened's min_confidence and
    confirmed_floor, None: its defaults; ``one_activity``: one_activity_each's overlap, None: off;
    ``items``: what_happened reads the stream's item events, False: the memory's alone);
    with ``losses``, also "missed_at": per LOSSES step, how many truth events were lost there
    (what_happened's trace of each window)."""
    n_pred = n_right = n_gt = n_found = 0
    missed_at = dict.fromkeys(LOSSES, 0)
    t0, calls = time.perf_counter(), 0
    setting = {"min_confidence": floor, "top_activities": top, "one_product": exclusive,
               "one_activity": one_activity is not None, "items": items, "confirmed_floor": confirmed,
               **({"one_activity_tiou": one_activity} if one_activity is not None else {})}
    for eng, stream, ann in streamed:
        labels = list(eng.labels)
        for s in np.arange(0.0, ann["duration_s"] - window_s + 1e-6, window_s):
            steps: dict = {}
            ev = what_happened((eng, stream), None, (float(s), float(s + window_s)), **setting, trace=steps)
            calls += 1
            gt = truth(ann, float(s), float(s + window_s))
            hit = matched(ev, gt)
            n_pred, n_right, n_gt, n_found = n_pred + len(ev), n_right + len(hit), n_gt + len(gt), n_found + len(hit)
            if losses:
                for j, g in enumerate(gt):
                    if j not in hit:
                        missed_at[lost_at(steps, g, labels, eng)] += 1
    out = {"min_confidence": "default" if floor is None else floor, "top_activities": top,
           "one_product_each": exclusive, "one_activity_tiou": one_activity, "items": items,
           "confirmed_floor": "default" if confirmed is None else confirmed, **scores(n_pred, n_right, n_gt, n_found),
           "ms_per_window": round(1000 * (time.perf_counter() - t0) / max(calls, 1), 1)}
    if losses:
        out["missed_at"] = missed_at
    return out


def scores(n_pred: int, n_right: int, n_gt: int, n_found: int) -> dict:
    p = n_right / n_pred if n_pred else None
    r = n_found / n_gt if n_gt else None
    f1 = 2 * p * r / (p + r) if p and r else 0.0
    return {"predicted": n_pred, "right": n_right, "truth": n_gt, "found": n_found,
            "precision": round(p, 4) if p is not None else None, "recall": round(r, 4) if r is not None else None,
            "f1": round(f1, 4)}


def items_alone(streamed: list[tuple[Engine, StreamState, dict]], window_s: float) -> dict | None:
    """Precision and recall of the streams' item events themselves (every activity their labeler names,
    cut to each window), scored as what_happened's events are; None without an event path."""
    n_pred = n_right = n_gt = 0
    for eng, stream, ann in streamed:
        if item_path(eng, stream) is None:
            return None
        acts = set(stream.items.activities)
        for s in np.arange(0.0, ann["duration_s"] - window_s + 1e-6, window_s):
            w = (float(s), float(s + window_s))
            ev = [e for e in item_events(eng, stream, w, clip=True) if e.activity in acts]
            gt = truth(ann, *w)
            hit = matched(ev, gt)
            n_pred, n_right, n_gt = n_pred + len(ev), n_right + len(hit), n_gt + len(gt)
    return scores(n_pred, n_right, n_gt, n_right)


def _floats(text: str) -> list[float]:
    """``--floors``: comma-separated numbers in 0..1."""
    try:
        out = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers, e.g. 0.5,0.6") from None
    if not out or any(not 0.0 <= x <= 1.0 for x in out):
        raise argparse.ArgumentTypeError(f"{text!r}: each must be in 0..1")
    return out


def _overlaps(text: str) -> list[float | None]:
    """``--one-activity``: comma-separated tIoU values in 0..1, or ``off``."""
    try:
        return [None if x.strip() == "off" else _floats(x)[0] for x in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated overlaps in 0..1, or off") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.happened_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "engines" / "lvm-tiny-fp32"))
    ap.add_argument("--eval-seed", type=int, default=0, help="heldout_video(seed, i) for i in 0..videos-1")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--window-s", type=float, default=300.0)
    ap.add_argument("--sweep", action="store_true", help="every setting, not only the shipped one")
    ap.add_argument("--floors", type=_floats, metavar="F,F,...",
                    help="least confidences to try, each with every --one-activity value (0..1)")
    ap.add_argument("--one-activity", type=_overlaps, metavar="X,X,...",
                    help="one_activity_each overlaps (tIoU, 0..1) to try, 'off' for none; default: the shipped one")
    ap.add_argument("--confirmed-floors", type=_floats, metavar="F,F,...",
                    help="with an event path: least confidences of a memory interval an item event confirms to try, "
                         "each with every --floors value (0..1)")
    ap.add_argument("--losses", action="store_true",
                    help="also count, per step of what_happened, the truth events the shipped setting misses there")
    ap.add_argument("--no-items", action="store_true",
                    help="stream without the event head (the memory's path alone, at its own fps); without it "
                         "the shipped setting is run with and without the item events, and the item events are "
                         "scored alone")
    ap.add_argument("--queries", type=int, default=0, metavar="N",
                    help="also N queries a video of every type (and N/2 absent ones), asked by product class: "
                         "the reader's answers alone and judged with the item events (with an event path)")
    ap.add_argument("--cut-grid", action="store_true",
                    help="with --queries: also judge them at every SEEN_WITH_ITEMS of answers_with_items.GRID (to choose it; "
                         "with --ask-by picture, at every IDENTITY_MATCH of answers_with_items.IDENTITY_GRID)")
    ap.add_argument("--ask-by", choices=("class", "picture"), default="class",
                    help="with --queries: ask for an object by its product class's name (default), or by the "
                         "asked item's own picture, as a product without a bundle class is asked")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    streamed, shown, t0 = [], [], time.perf_counter()
    with Engine(args.bundle, threads=1, events=not args.no_items) as eng:
        videos = []
        for i in range(args.videos):
            seed, look = heldout_video(args.eval_seed, i)
            stream = eng.new_stream()
            video = CheckoutVideo(seed=seed, duration_s=args.video_s, size=eng.frame_size, look=look)
            ts, fr = zip(*video.frames(eng.intake_fps, 0.0, None))
            eng.ingest(stream, np.stack(fr), np.asarray(ts, np.float64))
            eng.flush(stream)
            if stream.items is not None:
                stream.items.flush()
            streamed.append((eng, stream, video.annotations()))
            shown.append((stream, video))
            videos.append({"seed": seed, "look": look, "duration_s": args.video_s})
        print(f"{len(videos)} videos streamed in {time.perf_counter() - t0:.0f} s", flush=True)
        one = happened.ONE_ACTIVITY_TIOU
        # the shipped floors (None): MIN_CONFIDENCE, or where the item events cover a window their source's
        # ITEM_FLOORS entry's
        shipped = (None, happened.TOP_ACTIVITIES, happened.EXCLUSIVE, one, None)
        settings = [(f, t, x, one, None) for f, t, x in itertools.product((0.0, 0.1, 0.2, 0.3, 0.5, 0.7), (1, 2, 3, 5),
                                                                               (False, True))] if args.sweep else [shipped]
        if args.floors or args.one_activity or args.confirmed_floors:
            settings += [(f, shipped[1], shipped[2], o, c) for f in (args.floors or [shipped[0]])
                         for o in (args.one_activity or [one]) for c in (args.confirmed_floors or [None])]
        settings = list(dict.fromkeys(settings))
        if shipped not in settings:  # the sweep's grid may lack the shipped floor: its row is always run
            settings.append(shipped)
        rows = []
        lost = None
        # with an event path, the shipped setting also with the memory alone: side by side
        runs = [(*x, True) for x in settings] + ([(*shipped, False)] if not args.no_items else [])
        for floor, top, excl, overlap, confirmed, items in runs:
            r = run(streamed, args.window_s, floor, top, excl, overlap,
                    losses=args.losses and (floor, top, excl, overlap, confirmed) == shipped and items, items=items,
                    confirmed=confirmed)
            rows.append(r)
            if "missed_at" in r:
                lost = {"truth": r["truth"], "found": r["found"], "missed_at": r.pop("missed_at")}
            at = "default" if floor is None else format(floor, "g")
            print(f"min_conf {at} top {top} one_product_each {excl!s:5} one_activity "
                  f"{'off' if overlap is None else format(overlap, 'g'):4} "
                  f"{('+ items confirm ' + ('default' if confirmed is None else format(confirmed, 'g'))) if items else 'memory         '}  "
                  f"P {r['precision']}  R {r['recall']}  "
                  f"F1 {r['f1']}  ({r['predicted']} predicted, {r['truth']} true; {r['ms_per_window']} ms a window)",
                  flush=True)
        alone = items_alone(streamed, args.window_s)
        if alone is not None:
            print(f"item events alone  P {alone['precision']}  R {alone['recall']}  F1 {alone['f1']}  "
                  f"({alone['predicted']} predicted, {alone['truth']} true)", flush=True)
        asked = None
        if args.queries > 0 and not args.no_items:
            asked = answers_with_items.queries(eng, shown, args.queries, args.eval_seed, grid=args.cut_grid,
                                               ask_by=args.ask_by)
            for who in ("reader", "with_items", "reader_matched"):
                for qtype, x in asked[who].items():
                    print(f"queries, {who:17s} {qtype:8s}: absent -> not seen {x['absent_not_seen']}  present -> "
                          f"not seen {x['present_not_seen']}  ({x['present']} present, {x['absent']} absent)", flush=True)
            for who, per in asked["recall"].items():
                print(f"R@1x, {who:10s} " + "  ".join(f"{t} {w} {x['r@1x']} ({x['n']})" for t, ws in per.items()
                                                     for w, x in ws.items()), flush=True)
            for g in asked.get("grid", []):
                key = "identity_match" if "identity_match" in g else "seen_with_items"
                print(f"  {key} {g[key]}: absent -> not seen {g['absent_not_seen']}  present -> not seen "
                      f"{g['present_not_seen']}  (activity: {g['activity']['absent_not_seen']} / "
                      f"{g['activity']['present_not_seen']})", flush=True)
        if lost is not None:
            print(f"of {lost['truth']} truth events {lost['found']} found; missed at:")
            for step, n in lost["missed_at"].items():
                print(f"  {step:40s} {n:4d}  ({100 * n / max(lost['truth'], 1):.1f} % of the truth)")
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    bundle = {"name": Path(args.bundle).name, "created": manifest.get("created"),  # which export, not where
              "reader_sha256": ((manifest.get("answers") or {}).get("reader") or {}).get("file_sha256")}
    result = {"tool": "tools/accuracy/happened_eval.py", "bundle": bundle, "items": not args.no_items,
              "videos": videos, "window_s": args.window_s, "tiou": TIOU,
              "match": "same activity and product class, tIoU > 0.3, greedy by confidence",
              "shipped_setting": {"min_confidence": happened.MIN_CONFIDENCE,
                                  "item_floors": {k: vars(v) for k, v in happened.ITEM_FLOORS.items()},
                                  "top_activities": shipped[1],
                                  "one_product_each": shipped[2], "one_activity_tiou": shipped[3],
                                  "confirmed_floor": shipped[4]},
              "runs": rows, "item_events_alone": alone}
    if asked is not None:
        result["queries"] = asked
    if lost is not None:
        result["losses"] = {"setting": "shipped", "steps": list(LOSSES), **lost}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
