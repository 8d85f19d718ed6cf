"""How well the standing alert rules find scan avoidance on held-out generator videos.

    python -m tools.accuracy.alerts_eval --threads 1 --json docs/accuracy/alerts.json
    python -m tools.accuracy.alerts_eval --events truth --videos 100     # the oracle alone: no rendering, seconds

Videos: ``heldout_video(eval_seed, i)`` (seeds and, for even i, looks that training never used) with
the generator's default scan-avoidance rates (``ShrinkRates.default()``; ``--shrink B,P,L`` for others). Each video is played as
the runtime plays a stream: the rules are evaluated at every commit (every clip of the bundle,
16 s for lvm-tiny) over the events of the window since the previous evaluation with the service's
overlap before it (edge_runtime/alerts/service.py), with each rule's default thresholds.

Two sources of events:
- ``truth``: the annotated events, complete once they have ended (confidence 1). An oracle: it
  checks the rules and this scoring, and must find every target with no false alert.
- ``model``: ``what_happened`` on the bundle's memory of the video, as the runtime computes it.

Targets, per rule, from the annotations: ``bagged_without_scan``: every item bagged and never
scanned (the shrink behaviours bagged_unscanned and pass_around); ``pass_around``: every
pass_around event. An alert is right when it names the target's product and its interval overlaps
the target's, widened by ``MATCH_TOL_S`` on each side (one alert per target, earliest first); other
alerts are false (``false_on_scanned_bags``: of those, the ones at a real bag of a scanned item, i.e.
the scan was missed). Latency: stream time from the end of the target event to the commit whose
evaluation raised the alert. Items left in the basket are counted but no rule reads them: they leave
no event.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from edge_runtime.alerts.rules import RULES, RuleEngine
from edge_runtime.checkout import ACTIVITIES, CheckoutVideo, ShrinkRates, heldout_video
from edge_runtime.query.events import Event

REPO = Path(__file__).resolve().parents[2]
MATCH_TOL_S = 5.0          # an alert's interval may miss its target's by this much and still name it
OVERLAP_S = 30.0           # as edge_runtime/alerts/service.py: each evaluation re-reads this much
DEFAULT_EVAL_SEED = 2      # heldout seed 1 chose what_happened's settings, seed 0 reports them


def truth_events(ann: dict) -> list[Event]:
    product = {i["instance_id"]: i["product"] for i in ann["instances"]}
    return [Event(e["activity"], e["activity_id"], product[e["instance_id"]], float(e["start"]), float(e["end"]),
                  1.0, None, ("truth",)) for e in ann["events"]]


def paid_bags(ann: dict) -> list[tuple[str, float, float]]:
    """(product, start, end) of every bag of a scanned item: where a missed scan makes a false alert."""
    inst = {i["instance_id"]: i for i in ann["instances"]}
    return [(inst[e["instance_id"]]["product"], float(e["start"]), float(e["end"])) for e in ann["events"]
            if e["activity"] == "bag" and inst[e["instance_id"]]["scanned"]]


def _near(d: dict, target: tuple[str, float, float]) -> bool:
    p, s, e = target
    return p == d["product"] and d["start"] < e + MATCH_TOL_S and d["end"] > s - MATCH_TOL_S


def targets(ann: dict) -> dict[str, list[tuple[str, float, float]]]:
    """rule -> [(product, start, end)] of what it should raise an alert for."""
    inst = {i["instance_id"]: i for i in ann["instances"]}
    out: dict[str, list[tuple[str, float, float]]] = {"bagged_without_scan": [], "pass_around": []}
    for e in ann["events"]:
        i = inst[e["instance_id"]]
        if e["activity"] == "bag" and not i["scanned"]:
            out["bagged_without_scan"].append((i["product"], float(e["start"]), float(e["end"])))
        elif e["activity"] == "pass_around":
            out["pass_around"].append((i["product"], float(e["start"]), float(e["end"])))
    return out


class Evaluations:
    """The alert service's loop for one stream: at each commit, the rules over the events of the window
    since the previous evaluation, with OVERLAP_S of it read again."""

    def __init__(self, engine: RuleEngine, events_in) -> None:
        self.engine, self.events_in, self.last = engine, events_in, None
        self.raised: list[tuple[dict, float]] = []   # (draft, stream time of the commit that raised it)

    def commit(self, now: float, cov_start: float) -> None:
        start = cov_start if self.last is None else max(cov_start, self.last - OVERLAP_S)
        self.last = now
        if now > start:
            self.raised += [(d, now) for d in self.engine.evaluate(self.events_in((start, now)), now)]


def oracle(ann: dict, rules: dict, clip_s: float) -> list[tuple[dict, float]]:
    events = truth_events(ann)
    dur = float(ann["duration_s"])
    now = [0.0]

    def known(window):  # an event is in the memory once it has ended
        return [e for e in events if e.end <= now[0] and e.end > window[0] and e.start < window[1]]

    ev = Evaluations(RuleEngine(rules, list(ACTIVITIES)), known)
    for k in range(1, int(np.ceil(dur / clip_s)) + 1):
        now[0] = min(k * clip_s, dur)
        ev.commit(now[0], 0.0)
    return ev.raised


def model(eng, video: CheckoutVideo, rules: dict) -> tuple[list[tuple[dict, float]], dict]:
    """Stream ``video`` through the engine from an empty memory, evaluating at every commit."""
    from edge_runtime.query.happened import what_happened

    eng.reset()
    ev = Evaluations(RuleEngine(rules, list(eng.labels)), lambda window: what_happened(eng, None, window))
    frames = list(video.frames(eng.fps))
    t0, commits, step = time.perf_counter(), 0, eng.clip_frames
    for k in range(0, len(frames), step):
        chunk = frames[k:k + step]
        n = eng.ingest(np.stack([f for _, f in chunk]), np.asarray([t for t, _ in chunk], np.float64))
        if k + step >= len(frames):
            n += int(bool(eng.flush()))
        if n:
            commits += 1
            cov = eng.coverage
            ev.commit(float(cov["end"]), float(cov["start"]))
    return ev.raised, {"seconds": round(time.perf_counter() - t0, 1), "commits": commits}


def score(raised: list[tuple[dict, float]], want: list[tuple[str, float, float]],
          paid: list[tuple[str, float, float]]) -> dict:
    used, lat, false, on_paid = set(), [], 0, 0
    for d, at in sorted(raised, key=lambda x: (x[0]["start"], x[1])):
        hit = next((j for j, t in enumerate(want) if j not in used and _near(d, t)), None)
        if hit is None:
            false += 1
            on_paid += any(_near(d, t) for t in paid)
        else:
            used.add(hit)
            lat.append(at - want[hit][2])
    return {"targets": len(want), "found": len(used), "alerts": len(raised), "false": false,
            "false_on_scanned_bags": on_paid, "latency_s": lat}


def summarise(per_video: list[dict], scanned: int, hours: float) -> dict:
    t = sum(v["targets"] for v in per_video)
    f = sum(v["found"] for v in per_video)
    false = sum(v["false"] for v in per_video)
    lat = [x for v in per_video for x in v["latency_s"]]
    return {"targets": t, "found": f, "recall": round(f / t, 4) if t else None,
            "alerts": sum(v["alerts"] for v in per_video), "false_alerts": false,
            "false_on_scanned_bags": sum(v["false_on_scanned_bags"] for v in per_video),
            "false_per_100_scanned": round(100 * false / scanned, 2) if scanned else None,
            "false_per_hour": round(false / hours, 2) if hours else None,
            "latency_s": {"median": round(float(np.median(lat)), 1), "mean": round(float(np.mean(lat)), 1),
                          "max": round(float(np.max(lat)), 1)} if lat else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.alerts_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(REPO / "engines" / "lvm-tiny-fp32"))
    ap.add_argument("--events", choices=("truth", "model", "both"), default="both",
                    help="truth: the annotated events (oracle); model: what_happened on the bundle's memory")
    ap.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED, help="heldout_video(seed, i), i < --videos")
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shrink", default="default", metavar="RATES",
                    help="scan avoidance in the videos: default (the generator's default rates) or B,P,L")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.videos < 1 or args.video_s <= 0 or args.threads < 1:
        print("alerts_eval: --videos, --video-s and --threads must be positive", file=sys.stderr)
        return 2
    if args.events != "truth" and not Path(args.bundle, "manifest.json").is_file():
        print(f"alerts_eval: --bundle {args.bundle}: no manifest.json (an exported bundle folder)", file=sys.stderr)
        return 2
    try:
        rates = ShrinkRates.parse(args.shrink)
    except ValueError as err:
        print(f"alerts_eval: --shrink: {err}", file=sys.stderr)
        return 2
    if not rates.on:
        print("alerts_eval: --shrink: rates of 0 leave nothing to alert on", file=sys.stderr)
        return 2
    rules = {name: dict(spec.thresholds) for name, spec in RULES.items()}
    sources = ["truth", "model"] if args.events == "both" else [args.events]
    per = {s: {r: [] for r in rules} for s in sources}
    not_run: dict[str, dict[str, str]] = {s: {} for s in sources}
    videos, scanned, left, hours = [], 0, 0, 0.0
    base = None
    if "model" in sources:
        try:
            from edge_runtime.query.happened import what_happened  # noqa: F401
        except ImportError as err:
            print(f"alerts_eval: model events unavailable: edge_runtime.query.happened cannot be imported ({err})",
                  file=sys.stderr)
            return 2
        from edge_runtime.engine.engine import Engine

        base = Engine(args.bundle, threads=args.threads)
        for name in rules:
            try:
                RuleEngine({name: {}}, list(base.labels))
            except ValueError as err:
                not_run["model"][name] = str(err)
    clip_s = base.clip_frames / base.fps if base is not None else 16.0
    try:
        for i in range(args.videos):
            seed, look = heldout_video(args.eval_seed, i)
            size = base.frame_size if base is not None else 112
            video = CheckoutVideo(seed=seed, duration_s=args.video_s, size=size, look=look, shrink=rates)
            ann = video.annotations()
            want, paid = targets(ann), paid_bags(ann)
            info = {"seed": seed, "look": look, "duration_s": args.video_s,
                    "scanned_items": sum(bool(x["scanned"]) for x in ann["instances"]),
                    "targets": {r: len(v) for r, v in want.items()},
                    "left_in_basket": sum(x["shrink"] == "left_in_basket" for x in ann["instances"])}
            scanned, left, hours = scanned + info["scanned_items"], left + info["left_in_basket"], hours + args.video_s / 3600
            if "truth" in sources:
                raised = oracle(ann, rules, clip_s)
                for r in rules:
                    per["truth"][r].append(score([x for x in raised if x[0]["rule"] == r], want[r], paid))
            if "model" in sources:
                run_rules = {r: th for r, th in rules.items() if r not in not_run["model"]}
                raised, info["model_stream"] = model(base, video, run_rules)
                for r in run_rules:
                    per["model"][r].append(score([x for x in raised if x[0]["rule"] == r], want[r], paid))
            videos.append(info)
            print(f"video {i}: seed {seed} look {look}: targets {info['targets']}, {info['scanned_items']} scanned items"
                  + (f", streamed in {info['model_stream']['seconds']} s" if "model_stream" in info else ""), flush=True)
    finally:
        if base is not None:
            base.close()
    result = {"tool": "tools/accuracy/alerts_eval.py", "bundle": os.path.relpath(args.bundle, REPO),
              "eval_seed": args.eval_seed, "videos": videos, "shrink": rates.to_dict(), "threads": args.threads,
              "rules": rules, "commit_every_s": clip_s, "overlap_s": OVERLAP_S, "match_tol_s": MATCH_TOL_S,
              "scanned_items": scanned, "hours": round(hours, 3), "left_in_basket_items": left,
              "results": {s: {r: ({"not_run": not_run[s][r]} if r in not_run[s] else summarise(per[s][r], scanned, hours))
                              for r in rules} for s in sources}}
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def table(result: dict) -> str:
    rows = [f"{len(result['videos'])} videos, {result['hours']:g} h, {result['scanned_items']} scanned items, "
            f"{result['left_in_basket_items']} left in the basket (no rule)",
            "| events | rule | targets | found | recall | false (at a scanned item's bag) | per 100 scanned | per hour "
            "| latency median / max s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for src, by_rule in result["results"].items():
        for rule, r in by_rule.items():
            if "not_run" in r:
                rows.append(f"| {src} | {rule} | not run: {r['not_run']} |")
                continue
            lat = "-" if r["latency_s"] is None else f"{r['latency_s']['median']} / {r['latency_s']['max']}"
            rec = "n/a" if r["recall"] is None else f"{100 * r['recall']:.0f} %"
            rows.append(f"| {src} | {rule} | {r['targets']} | {r['found']} | {rec} | {r['false_alerts']} "
                        f"({r['false_on_scanned_bags']}) | "
                        f"{r['false_per_100_scanned']} | {r['false_per_hour']} | "
                        f"{lat} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
