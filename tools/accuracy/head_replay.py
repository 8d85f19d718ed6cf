"""The alert rules on item tracks, replayed from the event head's saved outputs: tune the item path
(tracker, labeler, rules' thresholds) in seconds a video instead of streaming it again.

    python -m tools.accuracy.head_replay save --eval-seed 1 --videos 6 --shrink 0.45,0.45,0.1 --out /tmp/heads-s1
    python -m tools.accuracy.head_replay replay /tmp/heads-s1 --set bagged_without_scan.item_min_confidence=0.4

``save`` streams each held-out video (``heldout_video(seed, i)``, as ``alerts_eval`` makes it) at the
head's ``event_fps`` through the bundle's backbone and event head, and keeps the head's six outputs per
frame (float32, about 45 MB per 30-minute video) with what makes them valid (the bundle's event head
file hash, seed, look, shrink rates). ``replay`` decodes them at the manifest's threshold (``--threshold``
for another), runs the runtime's ``ItemState`` on them (zones proposed from the head's zone map, the
till's reads fed as they happen with ``--scans pos``) and the rules after every second's frames (``--handover-s``), as
the runtime and ``alerts_eval --events model`` do; its scoring and table are ``alerts_eval``'s. At the
same code and thresholds a replay raises the streamed run's alerts, at the same stream times. ``--list``
prints each alert after the table, right or false (with its product's annotated events near it), and
each target missed: where to start looking at a false alert.
Edits to ``edge_runtime/items`` or the rules take effect on the next replay; a new bundle or event head
needs a new ``save``.
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

from edge_runtime.checkout import CheckoutVideo, ShrinkRates, heldout_video
from edge_runtime.alerts.cleared import RULES as CLEARED_RULES
from edge_runtime.items import head_decode
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.scanner_light import ScannerLight
from edge_runtime.items.zones import LIGHT, scene_zones
from tools.accuracy import alerts_eval as ae
from tools.repo_paths import REPO

FORMAT = "lvm-edge/head-outputs/1"
ITEM_RULES = ("bagged_without_scan", "pass_around", "left_in_basket")
NUDGED = "bagged_without_scan"   # the rule whose early nudges are scored too


def _refuse(message: str) -> int:
    print(f"head_replay: {message}", file=sys.stderr)
    return 2


def saved_video(meta: dict, i: int) -> CheckoutVideo:
    seed, look = heldout_video(meta["eval_seed"], i)
    return CheckoutVideo(seed=seed, duration_s=meta["video_s"], size=meta["frame_size"], look=look,
                         shrink=ShrinkRates(**meta["shrink"]))


def save(args) -> int:
    from edge_runtime.engine.engine import Engine

    out = Path(args.out)
    try:
        rates = ShrinkRates.parse(args.shrink)
    except ValueError as err:
        return _refuse(f"--shrink: {err}")
    if args.videos < 1 or args.video_s <= 0:
        return _refuse("--videos and --video-s must be positive")
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        return _refuse(f"--bundle {bundle}: no manifest.json (an exported bundle folder)")
    eng = Engine(bundle, threads=args.threads)
    if eng.events is None:
        return _refuse(f"--bundle {bundle}: it has no event head (export it without --no-events)")
    manifest = json.loads((bundle / "manifest.json").read_text())
    meta = {"format": FORMAT, "bundle": os.path.relpath(bundle.resolve(), REPO),
            "event_head_sha256": manifest["events"].get("file_sha256"), "threshold": eng.events.settings.threshold,
            "event_fps": eng.events.event_fps, "products": list(eng.products), "labels": ae.rule_labels(eng),
            "frame_size": eng.frame_size, "eval_seed": args.eval_seed, "videos": args.videos,
            "video_s": args.video_s, "shrink": rates.to_dict(), "per_video": []}
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.videos):
        video, t0 = saved_video(meta, i), time.perf_counter()
        outs: dict[str, list[np.ndarray]] = {}
        times = []
        frames = video.frames(eng.events.event_fps)
        while chunk := list(itertools.islice(frames, eng.batch_size)):
            tokens = eng.encode(np.stack([f for _, f in chunk]))
            for name, a in eng.events.runner.infer({"tokens": np.ascontiguousarray(tokens, np.float32)}).items():
                outs.setdefault(name, []).append(np.asarray(a, np.float32))
            times.append(np.asarray([t for t, _ in chunk], np.float64))
        np.savez(out / f"video{i}.npz", times=np.concatenate(times), **{k: np.concatenate(v) for k, v in outs.items()})
        meta["per_video"].append({"seed": video.seed, "look": video.look, "frames": int(sum(len(t) for t in times))})
        print(f"video {i}: seed {video.seed} look {video.look}: saved in {time.perf_counter() - t0:.0f} s", flush=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"saved the event head's outputs of {args.videos} videos to {out}")
    return 0


_LABELERS: dict[str, object] = {}


def bundle_labeler(meta: dict):
    """The track labeler of the bundle the outputs were saved from, as the runtime runs it (None when
    the bundle has none); ValueError (one line) when that bundle is gone or its event head is no longer
    the one whose outputs were saved."""
    from edge_runtime.backends.bundle import BundleError, load_bundle
    from edge_runtime.engine.event_path import track_labeler

    path = Path(meta["bundle"]) if Path(meta["bundle"]).is_absolute() else REPO / meta["bundle"]
    if str(path) not in _LABELERS:
        try:
            bundle = load_bundle(path)
            head = (bundle.manifest.get("events") or {}).get("file_sha256")
            if head != meta["event_head_sha256"]:
                raise ValueError(f"{path}: its event head is no longer the one whose outputs were saved; save "
                                 f"again, or replay with --no-track-labels")
            _LABELERS[str(path)] = track_labeler(bundle)
        except BundleError as err:
            raise ValueError(f"the saved outputs' bundle: {err}") from None
    return _LABELERS[str(path)]


_PROTOTYPES: dict[str, object] = {}


def bundle_prototypes(meta: dict):
    """The identities of the drawn pictures of each product class, through the saved outputs' bundle (as
    the runtime's engine makes them); None when its event head carries no identity."""
    from edge_runtime.engine.engine import Engine

    path = Path(meta["bundle"]) if Path(meta["bundle"]).is_absolute() else REPO / meta["bundle"]
    if str(path) not in _PROTOTYPES:
        with Engine(path, threads=1) as eng:
            _PROTOTYPES[str(path)] = eng.class_identities()
    return _PROTOTYPES[str(path)]


def replay_video(meta: dict, outputs: dict[str, np.ndarray], video: CheckoutVideo, rules: dict, scans: str,
                 threshold: float, handover_s: float = 1.0, track_labels: bool = True,
                 identity_weight: float | None = None, frames: bool = True,
                 light_zone: str = "proposed") -> list[tuple[dict, float]]:
    """-> the alerts raised, as (draft, stream time), over one video's saved head outputs; the rules run
    after every ``handover_s`` of frames (1 s: a file's hand-over; 0.4 s: a camera's); with
    ``track_labels`` the bundle's track labeler takes a second look at each track that ends, as the runtime's does;
    with ``frames`` the video's frames are drawn again beside them (the light zone's pixels, as the runtime reads them):
    ``light_zone`` "proposed" as the stream runs (the runtime's way), "early" proposed over the whole video
    first and read from its start (a stream that proposed it before), "scene" the generator's light square
    from the start (as an installer marks it)."""
    ann = video.annotations()
    till = ae.till_events(ann) if scans == "pos" else []
    tx = ae.transactions(ann) if scans == "pos" else []
    from edge_runtime.engine.event_path import IDENTITY_WEIGHT

    weight = IDENTITY_WEIGHT if identity_weight is None else identity_weight
    names = head_decode.OUTPUTS + ((head_decode.EMBED,) if head_decode.EMBED in outputs else ())
    dets = head_decode.decode({k: outputs[k].astype(np.float32) for k in names}, outputs["times"], threshold,
                              prototypes=bundle_prototypes(meta) if weight > 0 and head_decode.EMBED in outputs else None,
                              weight=weight)
    light = None
    if frames and light_zone == "scene":
        light = scene_zones(video).polygons[LIGHT]
    elif frames and light_zone == "early":
        light = early_light_zone(dets, video, meta["event_fps"])
    items = ItemState(None, bundle_id="replay", fps=meta["event_fps"],
                      sequence=bundle_labeler(meta) if track_labels else None, light_zone=light)
    images = (f for _, f in video.frames(meta["event_fps"])) if frames else None
    return ae.rules_over_items(dets, items, meta["products"], meta["labels"], rules, scans, till, tx,
                               per_second=max(1, int(round(meta["event_fps"] * handover_s))), frames=images)


def early_light_zone(dets: list, video: CheckoutVideo, fps: float):
    """The light zone a stream proposes over the whole video (the head's light and the frames drawn
    again), or None when it proposes none."""
    light = ScannerLight()
    for d, (_, frame) in zip(dets, video.frames(fps)):
        light.see(d, frame)
        if light.polygon is not None:
            return light.polygon
    return None


def load_meta(folder: Path) -> dict:
    """The folder's meta.json; ValueError (one line) for a folder ``save`` did not write."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: no readable meta.json ({err}); make the folder with `save`") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder}: not a folder of saved head outputs (format {meta.get('format')!r})")
    return meta


def replayed(folder: Path, meta: dict, rules: dict, scans: str, threshold: float, handover_s: float = 1.0,
             track_labels: bool = True, identity_weight: float | None = None, frames: bool = True,
             light_zone: str = "proposed"):
    """-> (video, its annotations, the alerts raised) of each saved video, in order; ValueError (one line)
    when the generator no longer gives the video that was saved."""
    for i, sv in enumerate(meta["per_video"]):
        video = saved_video(meta, i)
        if (video.seed, video.look) != (sv["seed"], sv["look"]):
            raise ValueError(f"{folder}: video {i}: the generator now gives seed {video.seed} look {video.look}, "
                             f"the folder saved {sv['seed']} / {sv['look']}")
        with np.load(folder / f"video{i}.npz") as z:
            outputs = {k: z[k] for k in z.files}
        yield video, video.annotations(), replay_video(meta, outputs, video, rules, scans, threshold, handover_s,
                                                       track_labels, identity_weight, frames, light_zone)


NEAR_S = 30.0   # --list: a false alert's product's annotated events this close are shown with it


def alert_lines(i: int, ann: dict, raised: list[tuple[dict, float]], rules: dict) -> list[str]:
    """--list: one video's alerts of the item rules, each right or false (a false one with the annotated
    events of its product within ``NEAR_S``), then the targets no alert found."""
    want, out = ae.targets(ann), []
    inst = {x["instance_id"]: x for x in ann["instances"]}
    for r in rules:
        if r not in want:
            continue
        mine = ae.rule_alerts(raised, r)
        hits = set()
        for d, at, hit in ae.matches(mine, want[r]):
            ev = (d.get("evidence") or [{}])[0]
            head = (f"video {i} {r}: {d['product']} {d['start']:.1f}-{d['end']:.1f} s, raised at {at:.1f} s "
                    f"(item {ev.get('item')}, {'+'.join(ev.get('tracks') or [])}, confidence {d['confidence']:.2f})")
            if d.get("cleared"):
                c = d["cleared"]
                head += f", cleared: {c['why']} at {c['t']:.1f} s (item {c['item']})"
            if hit is not None:
                hits.add(hit)
                out.append(f"{head}: right")
                continue
            near = [f"{e['activity']} {e['start']:.1f}-{e['end']:.1f}" for e in ann["events"]
                    if inst[e["instance_id"]]["product"] == d["product"]
                    and e["start"] < d["end"] + NEAR_S and e["end"] > d["start"] - NEAR_S]
            out.append(f"{head}: FALSE; annotated {d['product']}: {', '.join(near) or 'none near'}")
        out += [f"video {i} {r}: missed {p} {a:.1f}-{b:.1f} s" for j, (p, a, b) in enumerate(want[r]) if j not in hits]
    return out


def replay(args) -> int:
    src = Path(args.folder)
    try:
        meta = load_meta(src)
    except ValueError as err:
        return _refuse(str(err))
    try:
        rules = ae.parse_sets(args.sets)
    except ValueError as err:
        return _refuse(f"--set: {err}")
    rules = {r: th for r, th in rules.items() if r in ITEM_RULES}
    if not 0 < args.handover_s <= 60:
        return _refuse(f"--handover-s must be in (0, 60] seconds, got {args.handover_s:g}")
    threshold = meta["threshold"] if args.threshold is None else args.threshold
    per = {r: [] for r in rules}
    standing = {r: [] for r in rules if r in CLEARED_RULES}  # the alerts not cleared by what their item did next
    nudged: list[dict] = []   # bagged_without_scan's nudges, early ones and its alerts'
    nudged_left: list[dict] = []   # the same, but the early nudges the screen was told to take back
    videos, scanned, hours, n_tx, left = [], 0, 0.0, 0, 0
    try:
        runs = list(replayed(src, meta, rules, args.scans, threshold, args.handover_s, not args.no_track_labels,
                             args.identity_weight, not args.no_frames, args.light_zone))
    except ValueError as err:
        return _refuse(str(err))
    for video, ann, raised in runs:
        want, paid = ae.targets(ann), ae.paid_bags(ann)
        for r in rules:
            near = ae.unbought_in_basket(ann) if r in ae.ITEM_TARGETS else paid
            per[r].append(ae.score([x for x in raised if x[0]["rule"] == r], want[r], near))
            if r in standing:
                standing[r].append(ae.score([x for x in raised if x[0]["rule"] == r and not x[0].get("cleared")],
                                            want[r], near))
        if NUDGED in rules:
            nudged.append(ae.nudge_score([x for x in raised if x[0]["rule"] == NUDGED], want[NUDGED], paid))
            nudged_left.append(ae.nudge_score([x for x in raised if x[0]["rule"] == NUDGED
                                               and not (x[0].get("early") and x[0].get("cleared"))], want[NUDGED], paid))
        info = {"seed": video.seed, "look": video.look, "scanned_items": sum(bool(x["scanned"]) for x in ann["instances"]),
                "targets": {r: len(want[r]) for r in rules}}
        videos.append(info)
        scanned, hours = scanned + info["scanned_items"], hours + meta["video_s"] / 3600
        n_tx += sum(s["end"] < meta["video_s"] for s in ann["sessions"])
        left += sum(x["shrink"] == "left_in_basket" for x in ann["instances"])
    result = {"tool": "tools/accuracy/head_replay.py", "from": str(src), "bundle": meta["bundle"],
              "event_head_sha256": meta["event_head_sha256"], "threshold": threshold, "eval_seed": meta["eval_seed"],
              "shrink": meta["shrink"], "scans": args.scans, "handover_s": args.handover_s,
              "track_labels": not args.no_track_labels, "identity_weight": args.identity_weight,
              "frames": not args.no_frames, "light_zone": None if args.no_frames else args.light_zone, "rules": rules,
              "videos": videos,
              "scanned_items": scanned, "hours": round(hours, 3), "left_in_basket_items": left, "transactions": n_tx,
              "results": {"item tracks (replayed)": {r: ae.summarise(per[r], scanned, hours, n_tx) for r in rules}}}
    if standing:  # what is left for the attendant once alerts whose item was scanned or put back are cleared
        result["results"]["item tracks (replayed), not cleared"] = {r: ae.summarise(standing[r], scanned, hours, n_tx)
                                                                   for r in standing}
    if nudged:  # the kiosk screen's view: found by the first nudge, false early nudges
        result["results"]["nudges: early, else the alert's"] = {NUDGED: ae.summarise(nudged, scanned, hours, n_tx)}
        result["results"]["nudges, early ones not taken back"] = {NUDGED: ae.summarise(nudged_left, scanned, hours, n_tx)}
    print(ae.table(result))
    if args.list:
        for i, (video, ann, raised) in enumerate(runs):
            print("\n".join(alert_lines(i, ann, raised, rules)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.head_replay", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="stream held-out videos and keep the event head's outputs")
    s.add_argument("--bundle", default=str(REPO / "engines" / "lvm-tiny-fp32"),
                   help="an exported bundle with an event head (default engines/lvm-tiny-fp32)")
    s.add_argument("--eval-seed", type=int, default=1, help="heldout_video(seed, i) (default 1: the tuning seed)")
    s.add_argument("--videos", type=int, default=6)
    s.add_argument("--video-s", type=float, default=1800.0)
    s.add_argument("--shrink", default="default", metavar="RATES", help="default or B,P,L (as alerts_eval)")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--out", required=True, help="a folder for the outputs (video<i>.npz and meta.json)")
    r = sub.add_parser("replay", help="the item path and the rules over saved outputs")
    r.add_argument("folder", help="a folder written by save")
    r.add_argument("--scans", choices=("vision", "pos"), default="pos",
                   help="pos (default): the till's reads, as a point-of-sale feed gives them; vision: the scanner light")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="RULE.KEY=VALUE",
                   help="a rule's threshold instead of its default (repeatable)")
    r.add_argument("--threshold", type=float, help="detection threshold (default: the bundle's)")
    r.add_argument("--handover-s", type=float, default=1.0, metavar="S",
                   help="the rules run after every S seconds of frames (default 1: a file's hand-over; 0.4: a camera's)")
    r.add_argument("--no-track-labels", action="store_true", help="without the bundle's track labeler (its second "
                   "look at each track: the bags and pass-arounds the events decided as they happened missed, "
                   "and the long bags they leave to it)")
    r.add_argument("--identity-weight", type=float, metavar="W",
                   help="name detections by log p(class) + W x their identity's match with the class's drawn "
                        "pictures (outputs saved from a head with det_embed; default: the runtime's IDENTITY_WEIGHT)")
    r.add_argument("--no-frames", action="store_true", help="without the video's frames (drawn again beside the "
                   "saved outputs, a few seconds a video): the scanner light is the head's read alone, no light zone")
    r.add_argument("--light-zone", choices=("proposed", "early", "scene"), default="proposed",
                   help="the scanner light's zone: proposed as the stream runs (default, the runtime's way), early "
                        "(proposed over the whole video first, read from its start: a stream that proposed it "
                        "before), scene (the generator's light square from the start, as an installer marks it)")
    r.add_argument("--list", action="store_true", help="after the table, each alert of each video, right or "
                   "false (with its product's annotated events near it), and each target missed")
    r.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    return save(args) if args.cmd == "save" else replay(args)


if __name__ == "__main__":
    sys.exit(main())
